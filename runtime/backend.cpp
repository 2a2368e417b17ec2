#include "runtime/backend.h"

#include <algorithm>
#include <thread>

#include "common/error.h"
#include "common/log.h"
#include "runtime/collective_step.h"

#ifdef MOE_HAVE_CUDA
#include <cuda_runtime.h>

#include "comm/device_bootstrap.h"
#include "comm/staged_mpi_communicator.h"
#include "kernels/cuda/cuda_ops.h"
#ifdef MOE_HAVE_NCCL
#include "comm/nccl_communicator.h"
#endif
#endif

namespace moe::runtime {

namespace {
DType precision_of(const RunConfig& run) {
  return run.resolved_dtype() == "bf16" ? DType::kBF16 : DType::kF32;
}

// threads, or the node's cores shared evenly by its ranks: more threads than cores would make
// ranks that wait in an exchange compete with the ones still computing.
int cpu_threads(const RunConfig& run, LocalRank local) {
  if (run.threads > 0) return run.threads;
  const int cores = int(std::thread::hardware_concurrency());
  return std::max(1, cores / std::max(1, local.size));
}
}  // namespace

Backend::Backend(const RunConfig& run, comm::Communicator& host, LocalRank local) : host_(host) {
  if (run.backend == "cpu") {
    ops_ = kernels::make_cpu_ops(precision_of(run), cpu_threads(run, local));
    return;
  }
  MOE_CHECK(run.backend == "cuda", "backend '" + run.backend + "'");
#ifndef MOE_HAVE_CUDA
  (void)local;
  throw InputError("config: backend is cuda, but this build has no CUDA backend (built without "
                   "nvcc or with -DMOE_CUDA=OFF); expected backend: cpu");
#else
  // Each step that can fail on one rank alone is agreed before the next collective.
  int count = 0;
  collective_step(host, [&] {
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0)
      throw InputError(std::string("config: backend is cuda, but this rank sees no CUDA device (") +
                       (err != cudaSuccess ? cudaGetErrorString(err) : "0 devices") +
                       "); expected one GPU per rank, or backend: cpu");
  });
  collective_step(host, [&] {
    device_ = comm::select_device(local.rank, local.size);
    ranks_per_device_ = (local.size + count - 1) / count;
    ops_ = kernels::make_cuda_ops(device_, precision_of(run));
  });
  cudaStream_t stream = kernels::cuda_stream(*ops_);

  if (run.transport == "mpi") {
    collective_step(host, [&] {
      device_comm_ = std::make_unique<comm::StagedMpiCommunicator>(host, stream);
    });
    return;
  }
#ifndef MOE_HAVE_NCCL
  throw InputError("config: transport is nccl, but this build found no NCCL (set NCCL_HOME and "
                   "rebuild); expected transport: mpi");
#else
  int64_t usable = comm::NcclCommunicator::usable(local.size, count);
  host.all_reduce(&usable, 1, comm::Communicator::Op::kMin);
  if (!usable)
    throw InputError("config: transport is nccl, but ranks share a GPU (" +
                     std::to_string(local.size) + " ranks on " + std::to_string(count) +
                     " GPU(s) on rank " + std::to_string(host.rank()) +
                     "'s node, or on another node) and NCCL refuses two ranks on one GPU; "
                     "expected one GPU per rank, or transport: mpi");
  device_comm_ = std::make_unique<comm::NcclCommunicator>(host, stream);
#endif
#endif
}

Backend::~Backend() = default;

std::string Backend::describe() const {
  const std::string prec = ops_->precision() == DType::kBF16 ? "bf16" : "f32";
  if (device_ < 0) return "cpu (" + prec + ")";
  return "cuda:" + std::to_string(device_) + " (" + prec + ", " +
         (device_comm_ ? device_comm_->name() : host_.name()) +
         (ranks_per_device_ > 1 ? ", " + std::to_string(ranks_per_device_) + " ranks per GPU"
                                : std::string()) +
         ")";
}

}  // namespace moe::runtime
