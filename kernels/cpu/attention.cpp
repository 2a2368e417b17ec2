#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/lanes.h"

namespace moe::kernels::cpu {
namespace {

// One query head of one token over its visible keys: scores, softmax, the weighted sum of
// values. The score is a dot product summed in 16 lanes then a fixed tree (the same result on
// every instruction set: kernels/ is built without FMA contraction); the output accumulates
// element-wise over positions in order, as a scalar loop would.
__attribute__((target_clones("arch=x86-64-v4", "avx512f", "arch=x86-64-v3", "default")))
void attend_head(const float* __restrict__ q, const float* __restrict__ kbase,
                 const float* __restrict__ vbase, int64_t stride, int n, int head_dim,
                 float scale, float* __restrict__ score, float* __restrict__ o) {
  const int d_main = head_dim / kLanes * kLanes;
  float mx = -INFINITY;
  for (int j = 0; j < n; ++j) {
    const float* k = kbase + int64_t(j) * stride;
    Lanes acc = {};
    for (int d = 0; d < d_main; d += kLanes) acc += load_lanes(q + d) * load_lanes(k + d);
    float s = sum_lanes(acc);
    for (int d = d_main; d < head_dim; ++d) s += q[d] * k[d];
    score[j] = s * scale;
    mx = std::max(mx, score[j]);
  }
  // e^(s - max) 16 scores at a time (exp_lanes; a tail padded), then summed in order.
  const Lanes mxv = Lanes{} + mx;
  int j0 = 0;
  for (; j0 + kLanes <= n; j0 += kLanes)
    store_lanes(score + j0, exp_lanes(load_lanes(score + j0) - mxv));
  if (j0 < n) {
    float tail[kLanes] = {};
    std::copy(score + j0, score + n, tail);
    store_lanes(tail, exp_lanes(load_lanes(tail) - mxv));
    std::copy(tail, tail + (n - j0), score + j0);
  }
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) sum += score[j];
  const float inv = 1.0f / sum;
  std::fill(o, o + head_dim, 0.0f);
  for (int j = 0; j < n; ++j) {
    const float* v = vbase + int64_t(j) * stride;
    const float w = score[j] * inv;
    const Lanes wv = {w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w};
    for (int d = 0; d < d_main; d += kLanes)
      store_lanes(o + d, load_lanes(o + d) + wv * load_lanes(v + d));
    for (int d = d_main; d < head_dim; ++d) o[d] += w * v[d];
  }
}

}  // namespace

// Every (token, head) pair is independent: threads take them in static shares (a prefill
// chunk's rows and heads), each with its own score buffer.
void attention(const AttentionParams& p) {
  MOE_CHECK(p.cache_dtype == DType::kF32, "cpu attention needs an fp32 cache");
  const auto* k_cache = static_cast<const float*>(p.k_cache);
  const auto* v_cache = static_cast<const float*>(p.v_cache);
  const int group = p.n_heads / p.n_kv_heads;  // query heads sharing one kv head
  const int kv_dim = p.n_kv_heads * p.head_dim;
  const int64_t pairs = int64_t(p.T) * p.n_heads;
#pragma omp parallel if (pairs > 1)
  {
    std::vector<float> score;
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < pairs; ++i) {
      const int t = int(i / p.n_heads), h = int(i % p.n_heads);
      const int pos = p.pos[t];
      // Keys visible to a query at `pos`: (pos - window, pos], as transformers' sliding mask.
      const int lo = p.sliding_window > 0 ? std::max(0, pos - p.sliding_window + 1) : 0;
      const int n = pos - lo + 1;
      score.resize(size_t(n));
      const int64_t first = (int64_t(p.slot[t]) * p.max_len + lo) * kv_dim + (h / group) * p.head_dim;
      attend_head(p.q + (int64_t(t) * p.n_heads + h) * p.head_dim, k_cache + first,
                  v_cache + first, kv_dim, n, p.head_dim, p.scale, score.data(),
                  p.out + (int64_t(t) * p.n_heads + h) * p.head_dim);
    }
  }
}

}  // namespace moe::kernels::cpu
