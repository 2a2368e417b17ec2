#include "comm/device_bootstrap.h"

#include <cuda_runtime.h>

#include <cstring>
#include <string>

#include "common/check.h"
#include "common/log.h"

namespace moe::comm {

int select_device(int local_rank) {
  MOE_CHECK(local_rank >= 0, "local rank " + std::to_string(local_rank));
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  // cudaErrorNoDevice and a missing or too old driver all mean the same to the caller.
  if (err != cudaSuccess || count == 0)
    MOE_THROW(std::string("no CUDA device") +
              (err != cudaSuccess
                   ? std::string(": ") + cudaGetErrorName(err) + ": " + cudaGetErrorString(err)
                   : std::string()));
  const int device = local_rank % count;
  CUDA_CHECK(cudaSetDevice(device));

  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  spdlog::info("local rank {} -> CUDA device {} of {} visible ({})", local_rank, device, count,
               prop.name);
  return device;
}

DeviceUuid device_uuid(int device) {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceUuid u{};
  static_assert(sizeof(prop.uuid.bytes) == sizeof(DeviceUuid));
  std::memcpy(u.data(), prop.uuid.bytes, u.size());
  return u;
}

}  // namespace moe::comm
