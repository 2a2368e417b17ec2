#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one warp per token, 4 warps (128 threads) a block. A token's n_experts <= 256 logits
// fit in registers at kPerLane = 8 per lane (expert e lives in lane e % 32, slot e / 32), so
// the max, the sum and each of the k arg-max rounds is a 5-step warp shuffle reduction with no
// shared memory and no __syncthreads. Small blocks spread a decode step's few tokens over
// many SMs.
constexpr int kWarpsPerBlock = 4;
constexpr int kPerLane = kMaxRouterExperts / 32;
static_assert(kMaxRouterExperts % 32 == 0);

// The better of two (prob, expert) candidates: higher prob, ties to the lower expert id, as the
// CPU op's partial_sort comparator. Expert -1 (none) loses to everything.
__device__ inline bool better(float pa, int ea, float pb, int eb) {
  if (eb < 0) return ea >= 0;
  if (ea < 0) return false;
  return pa > pb || (pa == pb && ea < eb);
}

__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    topk_router_kernel(const float* __restrict__ logits, int32_t* __restrict__ expert,
                       float* __restrict__ weight, int T, int n_experts, int k) {
  const int lane = threadIdx.x % 32;
  const int t = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  if (t >= T) return;  // whole warps leave together: t is uniform across a warp
  const float* l = logits + int64_t(t) * n_experts;

  // NaN counts as -inf, +inf experts share everything, all -inf is uniform: the CPU op's rule
  // for logits that are not finite. It also keeps every comparison below ordered: a NaN
  // probability would let each lane keep its own arg-max, and the warp's "same winner in every
  // lane" would no longer hold.
  float v[kPerLane];
  float mx = -INFINITY;
#pragma unroll
  for (int s = 0; s < kPerLane; ++s) {
    const int e = s * 32 + lane;
    v[s] = e < n_experts && !isnan(l[e]) ? l[e] : -INFINITY;
    mx = fmaxf(mx, v[s]);
  }
  for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));

  // Softmax in fp32 as the CPU op: exp(l - max), summed, then divided by the sum. The sum is
  // a tree here (sequential on the CPU), so probabilities agree to an ulp or so, not bitwise.
  float sum = 0.0f;
#pragma unroll
  for (int s = 0; s < kPerLane; ++s) {
    const int e = s * 32 + lane;
    if (e >= n_experts)
      v[s] = 0.0f;
    else if (mx == INFINITY)
      v[s] = v[s] == INFINITY ? 1.0f : 0.0f;
    else if (mx == -INFINITY)
      v[s] = 1.0f;
    else
      v[s] = expf(v[s] - mx);
    sum += v[s];
  }
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  // Compare the divided probabilities, as the CPU does: the division can make two distinct
  // exponentials equal, and then the lower id must win.
#pragma unroll
  for (int s = 0; s < kPerLane; ++s) v[s] /= sum;

  // k rounds of warp arg-max; the winner's slot is taken out (expert id -1) for later rounds.
  bool taken[kPerLane] = {};
  float chosen_p[kMaxTopK];
  int chosen_e[kMaxTopK];
  for (int j = 0; j < k; ++j) {
    float bp = -INFINITY;
    int be = -1;
#pragma unroll
    for (int s = 0; s < kPerLane; ++s) {
      const int e = s * 32 + lane;
      if (e < n_experts && !taken[s] && better(v[s], e, bp, be)) {
        bp = v[s];
        be = e;
      }
    }
    for (int o = 16; o > 0; o /= 2) {
      const float op = __shfl_xor_sync(0xffffffffu, bp, o);
      const int oe = __shfl_xor_sync(0xffffffffu, be, o);
      if (better(op, oe, bp, be)) {
        bp = op;
        be = oe;
      }
    }
    // Every lane now holds the same winner; its owner marks it taken (an unrolled compare, so
    // `taken` stays in registers rather than being indexed at run time).
#pragma unroll
    for (int s = 0; s < kPerLane; ++s)
      if (s * 32 + lane == be) taken[s] = true;
    chosen_p[j] = bp;
    chosen_e[j] = be;
  }

  if (lane == 0) {
    float top = 0.0f;
    for (int j = 0; j < k; ++j) top += chosen_p[j];  // ascending j, as the CPU op
    for (int j = 0; j < k; ++j) {
      expert[int64_t(t) * k + j] = chosen_e[j];
      weight[int64_t(t) * k + j] = chosen_p[j] / top;
    }
  }
}

}  // namespace

void topk_router(const TopKRouterParams& p, cudaStream_t stream) {
  MOE_CHECK(p.T >= 0, "cuda topk_router needs T >= 0");
  MOE_CHECK(p.n_experts > 0 && p.n_experts <= kMaxRouterExperts,
            "cuda topk_router needs 0 < n_experts <= 256");
  MOE_CHECK(p.k > 0 && p.k <= kMaxTopK && p.k <= p.n_experts,
            "cuda topk_router needs 0 < k <= min(kMaxTopK, n_experts)");
  if (p.T == 0) return;
  MOE_CHECK(p.logits && p.expert && p.weight, "cuda topk_router given a null pointer");
  const int blocks = (p.T + kWarpsPerBlock - 1) / kWarpsPerBlock;
  topk_router_kernel<<<blocks, kWarpsPerBlock * 32, 0, stream>>>(p.logits, p.expert, p.weight,
                                                                  p.T, p.n_experts, p.k);
  MOE_CHECK_LAUNCH("topk_router", stream,
                   "T=" + std::to_string(p.T) + " experts=" + std::to_string(p.n_experts) +
                       " k=" + std::to_string(p.k));
}

}  // namespace moe::kernels::cuda
