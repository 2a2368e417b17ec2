#pragma once
// The two ceilings a GPU benchmark is measured against, measured in the same run on the same
// device (datasheet figures are only leads): device memory bandwidth and bf16 GEMM throughput;
// and the timing loop the GPU benchmarks share.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "common/check.h"

namespace moe::launcher {

// Bytes per second of a device-to-device copy of `bytes` (2 GiB: far past the 50 MB L2),
// counting bytes read plus bytes written (median of `repeats` after warm-up, CUDA events).
double measure_copy_bandwidth(int device, size_t bytes = size_t(2) << 30, int repeats = 20);

// FLOP/s of one cuBLAS GEMM m x n x k with bf16 inputs and fp32 accumulation and output (the
// configuration the runtime's linear uses), on random data (zeros run faster than real data).
double measure_gemm_flops(int device, int m, int n, int k, int repeats = 20);

// Median elapsed time (ms) of `repeats` runs of `body` on `stream`, after `warmup` untimed runs;
// CUDA events around each run.
template <class F>
double time_on_stream(cudaStream_t stream, int warmup, int repeats, F&& body) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) body();
  std::vector<float> ms;
  for (int i = 0; i < repeats; ++i) {
    CUDA_CHECK(cudaEventRecord(a, stream));
    body();
    CUDA_CHECK(cudaEventRecord(b, stream));
    CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace moe::launcher
