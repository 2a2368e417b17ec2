#include "comm/device_bootstrap.h"

#include <cuda_runtime.h>

#include <string>

#include "common/check.h"
#include "common/log.h"

namespace moe::comm {

int select_device(int local_rank, int local_size) {
  MOE_CHECK(local_rank >= 0, "local rank " + std::to_string(local_rank));
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  // cudaErrorNoDevice and a missing or too old driver all mean the same to the caller.
  if (err != cudaSuccess || count == 0)
    MOE_THROW(std::string("no CUDA device") +
              (err != cudaSuccess ? std::string(": ") + cudaGetErrorName(err) + ": " +
                                        cudaGetErrorString(err)
                                  : std::string()));
  const int device = local_rank % count;
  CUDA_CHECK(cudaSetDevice(device));

  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  // Shared when another rank of this node lands on the same device: a later one (local_size
  // known) or an earlier one (this rank wrapped around).
  const bool shared = local_size > count || local_rank >= count;
  spdlog::info("local rank {} -> CUDA device {} of {} ({}){}", local_rank, device, count,
               prop.name, shared ? ", shared with other ranks" : "");
  if (shared)
    spdlog::warn("{} ranks on this node share {} CUDA device(s): NCCL needs one device per rank, "
                 "so device buffers go through MPI staged in pinned host memory",
                 local_size > 0 ? std::to_string(local_size) : "more", count);
  return device;
}

}  // namespace moe::comm
