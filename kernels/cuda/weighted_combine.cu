#include <algorithm>

#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/elem.cuh"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one block per output row (a grid-stride loop over rows, the grid capped at 65536
// blocks), 256 threads striding over cols. Each thread owns whole output elements and adds the
// k contributions itself in ascending s, so there is no reduction across threads and the order
// of additions is the CPU op's. A row's k indices and weights are the same address for every
// thread (broadcasts from L1); each y row is read contiguously (coalesced).
constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65536;

template <class Y, class O>
__global__ void __launch_bounds__(kThreads)
    weighted_combine_kernel(const Y* __restrict__ y,              // [*, cols]
                            const int32_t* __restrict__ index,    // [R, k], -1 where none
                            const float* __restrict__ weight,     // [R, k], null: all 1
                            O* __restrict__ out,                  // [R, cols]
                            int R, int k, int cols) {
  for (int r = blockIdx.x; r < R; r += gridDim.x) {
    const int32_t* ir = index + int64_t(r) * k;
    O* o = out + int64_t(r) * cols;
    for (int c = threadIdx.x; c < cols; c += kThreads) {
      float acc = 0.0f;
      for (int s = 0; s < k; ++s) {
        const int32_t i = ir[s];
        if (i < 0) continue;
        const float w = weight ? weight[int64_t(r) * k + s] : 1.0f;
        // Separate roundings (no FMA contraction) as the CPU op, built without FMA, computes
        // o += w * y: the sums then agree bit for bit on every backend and rank count.
        acc = __fadd_rn(acc, __fmul_rn(w, load_f32(y + int64_t(i) * cols + c)));
      }
      store_f32(o + c, acc);
    }
  }
}

}  // namespace

void weighted_combine(const WeightedCombineParams& p, cudaStream_t stream) {
  MOE_CHECK(p.R >= 0 && p.k > 0 && p.cols > 0,
            "cuda weighted_combine needs R >= 0, k > 0 and cols > 0");
  if (p.R == 0) return;
  MOE_CHECK(p.y && p.index && p.out, "cuda weighted_combine given a null pointer");
  const int blocks = std::min(p.R, kMaxBlocks);
  dispatch_f32_bf16(p.y_dtype, "cuda weighted_combine y", [&](auto y) {
    dispatch_f32_bf16(p.out_dtype, "cuda weighted_combine out", [&](auto o) {
      using Y = decltype(y);
      using O = decltype(o);
      weighted_combine_kernel<Y, O><<<blocks, kThreads, 0, stream>>>(
          static_cast<const Y*>(p.y), p.index, p.weight, static_cast<O*>(p.out), p.R, p.k,
          p.cols);
    });
  });
  MOE_CHECK_LAUNCH("weighted_combine", stream,
                   "R=" + std::to_string(p.R) + " k=" + std::to_string(p.k) +
                       " cols=" + std::to_string(p.cols));
}

}  // namespace moe::kernels::cuda
