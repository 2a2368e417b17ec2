#pragma once
// The check after every kernel launch (and cuBLAS call) of the CUDA ops. Always: the launch's
// own error (a bad configuration), as CUDA_CHECK_LAUNCH did. With the switch on
// (MOE_CUDA_SYNC_CHECK=1 in the environment, or set_sync_check(true)): also a
// cudaStreamSynchronize, so that a fault inside the kernel (an illegal address, a device assert)
// is reported by the op that made it, with its shapes, and not later by whichever upload(),
// download() or synchronize() happens to wait on the stream next. It serialises the host with
// the GPU after every op: for finding a fault, not for runs that are timed.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"

namespace moe::kernels::cuda {

// "1", "true", "yes", "on" (any case of the first letter) turn it on; unset, empty, "0" and
// anything else leave it off. Reads no CUDA state, so it is tested without a GPU.
inline bool sync_check_requested(const char* value) {
  if (!value) return false;
  for (const char* on : {"1", "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"})
    if (std::strcmp(value, on) == 0) return true;
  return false;
}

inline std::atomic<bool>& sync_check_flag() {
  static std::atomic<bool> on{sync_check_requested(std::getenv("MOE_CUDA_SYNC_CHECK"))};
  return on;
}
inline bool sync_check() { return sync_check_flag().load(std::memory_order_relaxed); }
inline void set_sync_check(bool on) { sync_check_flag().store(on, std::memory_order_relaxed); }

// Throws moe::Error "cuda <op> [<shapes>]: <error name>: <text>", saying whether the launch
// itself failed or the kernel did while it ran. `shapes` is a callable returning a string,
// called only on failure.
template <class Shapes>
void check_launch(const char* op, cudaStream_t stream, Shapes&& shapes, const char* file,
                  int line) {
  cudaError_t err = cudaGetLastError();
  const char* when = "at launch";
  if (err == cudaSuccess && sync_check()) {
    err = cudaStreamSynchronize(stream);
    when = "while it ran (MOE_CUDA_SYNC_CHECK)";
  }
  if (err != cudaSuccess)
    throw Error(std::string("cuda ") + op + " [" + std::string(shapes()) + "] failed " + when +
                    ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err),
                file, line);
}

}  // namespace moe::kernels::cuda

// After the launch of op `op` on `stream`; `shapes` is an expression giving its shapes as a
// std::string (evaluated only on failure), e.g. "T=" + std::to_string(p.T).
#define MOE_CHECK_LAUNCH(op, stream, shapes)                                              \
  ::moe::kernels::cuda::check_launch((op), (stream), [&] { return std::string(shapes); }, \
                                     __FILE__, __LINE__)
