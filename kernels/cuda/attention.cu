#include <climits>

#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/elem.cuh"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one block per (token, query head), 4 warps (128 threads). The block's keys are its
// token's visible cache positions [lo, pos]; warp w takes keys lo + w, lo + w + 4, ... so the
// four warps read neighbouring cache rows at the same time. Within a warp, lane l owns head
// dims l, l + 32, ... (kPerLane of them, in registers): a key's dot product is kPerLane
// coalesced loads, FMAs and one 5-step shuffle all-reduce, and the output accumulator stays in
// registers too. Each warp keeps an online softmax (running max m, running sum l, accumulator
// rescaled by exp(m_old - m_new) whenever the max grows), so any number of keys fits with no
// score buffer and no shared-memory limit on the sequence length; the four warps' partial
// states are merged once at the end through shared memory (at most 4 KiB).
//
// Prefill and decode are the same launch: a prefill token simply has more keys than a decode
// token at the same position would have. Sequences of different lengths only give blocks of
// different lengths.
//
// The cache is float or __nv_bfloat16 (Cache); a bf16 cache halves the bytes a decode step
// reads, and every element is widened to fp32 on load, so the arithmetic is the same.
//
// Limits: head_dim <= 256 (8 floats a lane; checked). n_heads % n_kv_heads == 0 (checked).
// Each query head of a GQA group re-reads its kv head's rows (L2 serves the repeats). A decode
// step with few tokens launches only T * n_heads blocks, each walking its whole window alone;
// splitting long windows over several blocks (flash-decoding) is the next step if that shows.
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxHeadDim = kCudaMaxHeadDim;

template <int kPerLane, class Cache>
__global__ void __launch_bounds__(kThreads)
    attention_kernel(const float* __restrict__ q,        // [T, n_heads * head_dim]
                     const Cache* __restrict__ k_cache,  // [slots, max_len, kv_dim]
                     const Cache* __restrict__ v_cache,  // [slots, max_len, kv_dim]
                     const int32_t* __restrict__ slot,   // [T]
                     const int32_t* __restrict__ pos,    // [T]
                     float* __restrict__ out,            // [T, n_heads * head_dim]
                     int n_heads, int n_kv_heads, int head_dim, int max_len, int sliding_window,
                     float scale) {
  __shared__ float warp_max[kWarps], warp_sum[kWarps];
  __shared__ float warp_acc[kWarps][kPerLane * 32];

  const int t = blockIdx.x / n_heads, h = blockIdx.x % n_heads;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int kvh = h / (n_heads / n_kv_heads);
  const int64_t kv_dim = int64_t(n_kv_heads) * head_dim;
  float* o = out + (int64_t(t) * n_heads + h) * head_dim;

  const int32_t p = pos[t], s = slot[t];
  // The scheduler hands out slots and positions (the CPU op trusts them too); a kernel cannot
  // throw, so a token outside the cache gets a zero output instead of reading out of bounds.
  // p and s are the same for the whole block, so the whole block returns together.
  if (s < 0 || p < 0 || p >= max_len) {
    for (int d = threadIdx.x; d < head_dim; d += kThreads) o[d] = 0.0f;
    return;
  }
  // Keys visible to a query at p: (p - window, p], as the CPU op and transformers' sliding mask.
  const int lo = sliding_window > 0 ? max(0, p - sliding_window + 1) : 0;

  const float* qh = q + (int64_t(t) * n_heads + h) * head_dim;
  float qr[kPerLane], acc[kPerLane];
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int d = r * 32 + lane;
    qr[r] = d < head_dim ? qh[d] : 0.0f;
    acc[r] = 0.0f;
  }

  const Cache* kb = k_cache + int64_t(s) * max_len * kv_dim + int64_t(kvh) * head_dim;
  const Cache* vb = v_cache + int64_t(s) * max_len * kv_dim + int64_t(kvh) * head_dim;
  float m = -INFINITY, l = 0.0f;
  for (int j = lo + warp; j <= p; j += kWarps) {
    const Cache* kr = kb + int64_t(j) * kv_dim;
    float dot = 0.0f;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int d = r * 32 + lane;
      if (d < head_dim) dot += qr[r] * load_f32(kr + d);
    }
    for (int off = 16; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    const float score = dot * scale;  // scaled after the dot, as the CPU op
    // expf (not __expf): the softmax weights stay within 2 ulp of the CPU's std::exp. The first
    // key has m = -inf, so corr = exp(-inf) = 0 and the (zero) state is simply replaced.
    const float m_new = fmaxf(m, score);
    const float corr = expf(m - m_new), w = expf(score - m_new);
    l = l * corr + w;
    const Cache* vr = vb + int64_t(j) * kv_dim;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int d = r * 32 + lane;
      if (d < head_dim) acc[r] = acc[r] * corr + w * load_f32(vr + d);
    }
    m = m_new;
  }

  // Merge the warps: rescale each warp's state to the block's max and add. A warp that had no
  // key (window shorter than kWarps) has m = -inf, l = 0 and a zero accumulator, so its factor
  // exp(-inf) = 0 drops it. Warp 0 always has key lo, so the block's max is finite.
  if (lane == 0) {
    warp_max[warp] = m;
    warp_sum[warp] = l;
  }
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) warp_acc[warp][r * 32 + lane] = acc[r];
  __syncthreads();
  float mx = warp_max[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) mx = fmaxf(mx, warp_max[w]);
  float factor[kWarps], sum = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    factor[w] = expf(warp_max[w] - mx);
    sum += warp_sum[w] * factor[w];  // every thread, same order
  }
  const float inv = 1.0f / sum;
  for (int d = threadIdx.x; d < head_dim; d += kThreads) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += warp_acc[w][d] * factor[w];
    o[d] = v * inv;
  }
}

}  // namespace

void attention(const AttentionParams& p, cudaStream_t stream) {
  MOE_CHECK(p.T >= 0 && p.n_heads > 0 && p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0,
            "cuda attention needs T >= 0 and n_heads a positive multiple of n_kv_heads > 0");
  MOE_CHECK(p.head_dim > 0 && p.head_dim <= kMaxHeadDim,
            "cuda attention needs 0 < head_dim <= 256");
  MOE_CHECK(p.max_len > 0 && p.sliding_window >= 0,
            "cuda attention needs max_len > 0 and sliding_window >= 0");
  MOE_CHECK(int64_t(p.T) * p.n_heads <= INT_MAX, "cuda attention: T * n_heads exceeds the grid");
  if (p.T == 0) return;
  MOE_CHECK(p.q && p.k_cache && p.v_cache && p.slot && p.pos && p.out,
            "cuda attention given a null pointer");
  // The fewest registers a lane needs for its share of head_dim (a power of two, so four
  // instantiations cover 1..256); small heads leave no idle unrolled work behind.
  const int blocks = p.T * p.n_heads;
  dispatch_f32_bf16(p.cache_dtype, "cuda attention cache", [&](auto zero) {
    using Cache = decltype(zero);
    const auto* kc = static_cast<const Cache*>(p.k_cache);
    const auto* vc = static_cast<const Cache*>(p.v_cache);
    auto launch = [&](auto kernel) {
      kernel<<<blocks, kThreads, 0, stream>>>(p.q, kc, vc, p.slot, p.pos, p.out, p.n_heads,
                                              p.n_kv_heads, p.head_dim, p.max_len,
                                              p.sliding_window, p.scale);
    };
    if (p.head_dim <= 32)
      launch(attention_kernel<1, Cache>);
    else if (p.head_dim <= 64)
      launch(attention_kernel<2, Cache>);
    else if (p.head_dim <= 128)
      launch(attention_kernel<4, Cache>);
    else
      launch(attention_kernel<8, Cache>);
  });
  MOE_CHECK_LAUNCH("attention", stream,
                   "T=" + std::to_string(p.T) + " heads=" + std::to_string(p.n_heads) + "/" +
                       std::to_string(p.n_kv_heads) + " head_dim=" + std::to_string(p.head_dim) +
                       " max_len=" + std::to_string(p.max_len) +
                       " window=" + std::to_string(p.sliding_window));
}

}  // namespace moe::kernels::cuda
