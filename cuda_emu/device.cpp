#include "cuda_emu/device.h"

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace moe::emu {

namespace {

// MOE_EMU_DEVICE_MEMORY: bytes, with an optional K, M or G suffix.
size_t capacity_from_env() {
  constexpr size_t kDefault = size_t(8) << 30;
  const char* v = std::getenv("MOE_EMU_DEVICE_MEMORY");
  if (!v || !*v) return kDefault;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  size_t shift = 0;
  if (*end == 'K' || *end == 'k') shift = 10;
  if (*end == 'M' || *end == 'm') shift = 20;
  if (*end == 'G' || *end == 'g') shift = 30;
  return n == 0 ? kDefault : size_t(n) << shift;
}

}  // namespace

Device& Device::get() {
  static Device* d = new Device();  // never destroyed: streams and buffers may outlive main
  return *d;
}

Device::Device() : memory(capacity_from_env()) {
  std::strncpy(props.name, "CUDA emulation (H100 limits)", sizeof props.name - 1);
  // A UUID of its own in every process: each process's emulated device has its own memory, so
  // ranks do not share one (the staged MPI transport is still what moves their rows: the
  // emulation has no NCCL).
  char uuid[16] = {'m', 'o', 'e', '-', 'c', 'u', 'd', 'a', '-', 'e', 'm', 'u', 0, 0, 0, 0};
  const uint32_t pid = uint32_t(getpid());
  std::memcpy(uuid + 12, &pid, sizeof pid);
  std::memcpy(props.uuid.bytes, uuid, sizeof uuid);
  props.totalGlobalMem = memory.capacity();
  props.sharedMemPerBlock = kMaxSharedPerBlock;
  props.sharedMemPerBlockOptin = 227 * 1024;
  props.regsPerBlock = 65536;
  props.warpSize = 32;
  props.maxThreadsPerBlock = kMaxThreadsPerBlock;
  props.maxThreadsDim[0] = kMaxThreadsPerBlock;
  props.maxThreadsDim[1] = kMaxThreadsPerBlock;
  props.maxThreadsDim[2] = kMaxBlockDimZ;
  props.maxGridSize[0] = 0x7fffffff;
  props.maxGridSize[1] = int(kMaxGridDimYZ);
  props.maxGridSize[2] = int(kMaxGridDimYZ);
  props.major = 9;
  props.minor = 0;
  props.multiProcessorCount = 132;
  props.maxThreadsPerMultiProcessor = 2048;
  props.l2CacheSize = 50 << 20;
  props.memoryBusWidth = 5120;
  props.unifiedAddressing = 1;
  props.canMapHostMemory = 1;
}

cudaError_t Device::run_until(uint64_t seq) {
  queue.run_until(seq);
  return sticky;
}

cudaError_t& last_error() {
  static thread_local cudaError_t e = cudaSuccess;
  return e;
}

cudaError_t fail(cudaError_t e) {
  if (e != cudaSuccess) last_error() = e;
  return e;
}

}  // namespace moe::emu
