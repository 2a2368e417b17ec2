#include <algorithm>

#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one block per output row (a grid-stride loop over rows, the grid capped at 65536
// blocks), 256 threads striding over cols. Each thread owns whole output elements and adds the
// k contributions itself in ascending s, so there is no reduction across threads and the order
// of additions is the CPU op's. A row's k indices and weights are the same address for every
// thread (broadcasts from L1); each y row is read contiguously (coalesced).
constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65536;

__global__ void __launch_bounds__(kThreads)
    weighted_combine_kernel(const float* __restrict__ y,          // [*, cols]
                            const int32_t* __restrict__ index,    // [R, k], -1 where none
                            const float* __restrict__ weight,     // [R, k]
                            float* __restrict__ out,              // [R, cols]
                            int R, int k, int cols) {
  for (int r = blockIdx.x; r < R; r += gridDim.x) {
    const int32_t* ir = index + int64_t(r) * k;
    const float* wr = weight + int64_t(r) * k;
    float* o = out + int64_t(r) * cols;
    for (int c = threadIdx.x; c < cols; c += kThreads) {
      float acc = 0.0f;
      for (int s = 0; s < k; ++s) {
        const int32_t i = ir[s];
        if (i < 0) continue;
        // Separate roundings (no FMA contraction) as the CPU op, built without FMA, computes
        // o += w * y: the sums then agree bit for bit on every backend and rank count.
        acc = __fadd_rn(acc, __fmul_rn(wr[s], y[int64_t(i) * cols + c]));
      }
      o[c] = acc;
    }
  }
}

}  // namespace

void weighted_combine(const WeightedCombineParams& p, cudaStream_t stream) {
  MOE_CHECK(p.R >= 0 && p.k > 0 && p.cols > 0,
            "cuda weighted_combine needs R >= 0, k > 0 and cols > 0");
  if (p.R == 0) return;
  MOE_CHECK(p.y && p.index && p.weight && p.out, "cuda weighted_combine given a null pointer");
  const int blocks = std::min(p.R, kMaxBlocks);
  weighted_combine_kernel<<<blocks, kThreads, 0, stream>>>(p.y, p.index, p.weight, p.out, p.R,
                                                           p.k, p.cols);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
