#pragma once
// The emulated device: its properties (an H100's limits), its memory, its work queue and its
// error state, behind one lock. One device per process, with a UUID of its own: each rank of a
// multi-rank test is a process with its own device and its own memory.
#include <cuda_runtime.h>

#include <mutex>

#include "cuda_emu/device_memory.h"
#include "cuda_emu/work_queue.h"

namespace moe::emu {

// The limits a launch is checked against (an H100's).
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMaxBlockDimZ = 64;
constexpr unsigned kMaxGridDimYZ = 65535;
constexpr size_t kMaxSharedPerBlock = 48 * 1024;  // without the per-kernel opt-in

class Device {
 public:
  static Device& get();

  std::recursive_mutex mu;
  DeviceMemory memory;
  WorkQueue queue;
  cudaDeviceProp props{};
  // A fault inside a kernel breaks the context, as on a GPU: the call that waits for it and
  // every call after returns this.
  cudaError_t sticky = cudaSuccess;

  // Runs the queued work up to `seq` and returns the sticky error, if any.
  cudaError_t run_until(uint64_t seq);

 private:
  Device();
};

// The calling host thread's last error (cudaGetLastError).
cudaError_t& last_error();
// Records a failed call's error as the last error and returns it.
cudaError_t fail(cudaError_t e);

}  // namespace moe::emu
