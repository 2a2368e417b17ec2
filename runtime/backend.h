#pragma once
// The compute backend of a run and the communicator its rows move through: for cpu, the Ops
// reference and the host communicator itself; for cuda, the GPU this rank is bound to (from its
// node-local rank), its Ops, and a communicator for device memory on the Ops' stream: NCCL
// (transport: nccl, one GPU per rank) or MPI staged through pinned host memory (transport: mpi,
// the only choice when ranks share a GPU).
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "kernels/ops.h"
#include "runtime/run_config.h"

namespace moe::runtime {

// Where this rank sits on its node (comm::MpiContext::local_rank / local_size).
struct LocalRank {
  int rank = 0;
  int size = 1;
};

class Backend {
 public:
  // Collective over `host`'s ranks (the cuda transport is agreed by all of them). Throws
  // InputError for a choice this build or this machine cannot serve, naming it and the way out.
  Backend(const RunConfig& run, comm::Communicator& host, LocalRank local);
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  kernels::Ops& ops() { return *ops_; }
  // The communicator the model's collectives go through: host memory for cpu, device rows for
  // cuda. Outlives nothing: the model and engine built on it must go first.
  comm::Communicator& comm() { return device_comm_ ? *device_comm_ : host_; }
  int device() const { return device_; }  // the CUDA device, -1 on cpu
  // Ranks of this node on this rank's GPU (1 unless GPUs are shared).
  int ranks_per_device() const { return ranks_per_device_; }
  // "cpu (f32)", "cuda:0 (bf16, nccl)" and the like, for the start-up log line.
  std::string describe() const;

 private:
  comm::Communicator& host_;
  // Declared in this order so the communicator (which enqueues on the Ops' stream) is destroyed
  // before the Ops.
  std::unique_ptr<kernels::Ops> ops_;
  std::unique_ptr<comm::Communicator> device_comm_;
  int device_ = -1;
  int ranks_per_device_ = 1;
};

}  // namespace moe::runtime
