#include <algorithm>

#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/elem.cuh"
#include "kernels/cuda/launch_check.h"
#include "kernels/random_fill.h"

namespace moe::kernels::cuda {
namespace {

// Launch: elementwise over n with a grid-stride loop, 256 threads a block, the grid capped at
// 65536 blocks. Each element is made from its own index (kernels/random_fill.h), so no thread
// depends on another and the values match the host's make of the same tensor bit for bit.
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

template <class T>
__global__ void __launch_bounds__(kThreads)
    random_fill_kernel(T* __restrict__ out, int64_t n, uint64_t seed, float scale, float offset) {
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kThreads)
    store_f32(out + i, random_value(seed, uint64_t(i), scale, offset));
}

}  // namespace

void random_fill(void* out, DType dtype, int64_t n, uint64_t seed, float scale, float offset,
                 cudaStream_t stream) {
  MOE_CHECK(n >= 0, "cuda random_fill needs n >= 0");
  if (n == 0) return;
  MOE_CHECK(out, "cuda random_fill given a null pointer");
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks);
  dispatch_f32_bf16(dtype, "cuda random_fill", [&](auto zero) {
    using T = decltype(zero);
    random_fill_kernel<T><<<unsigned(blocks), kThreads, 0, stream>>>(static_cast<T*>(out), n, seed,
                                                                    scale, offset);
  });
  MOE_CHECK_LAUNCH("random_fill", stream, "n=" + std::to_string(n));
}

}  // namespace moe::kernels::cuda
