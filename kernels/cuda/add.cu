#include <algorithm>

#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: elementwise over n, 256 threads a block, a grid-stride loop with the grid capped at
// 65536 blocks (16M threads, far more than an H100 keeps resident) so a huge n reuses threads
// rather than growing the grid without bound. Neighbouring threads touch neighbouring floats
// (coalesced).
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

__global__ void __launch_bounds__(kThreads)
    add_kernel(float* x,        // [n]
               const float* y,  // [n], may alias x (x += x doubles it)
               int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kThreads)
    x[i] += y[i];
}

}  // namespace

void add(const AddParams& p, cudaStream_t stream) {
  MOE_CHECK(p.n >= 0, "cuda add needs n >= 0");
  if (p.n == 0) return;
  MOE_CHECK(p.x && p.y, "cuda add given a null pointer");
  const int64_t blocks = std::min<int64_t>((p.n + kThreads - 1) / kThreads, kMaxBlocks);
  add_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(p.x, p.y, p.n);
  MOE_CHECK_LAUNCH("add", stream, "n=" + std::to_string(p.n));
}

}  // namespace moe::kernels::cuda
