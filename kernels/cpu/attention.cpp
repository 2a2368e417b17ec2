#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void attention(const AttentionParams& p) {
  MOE_CHECK(p.cache_dtype == DType::kF32, "cpu attention needs an fp32 cache");
  const auto* k_cache = static_cast<const float*>(p.k_cache);
  const auto* v_cache = static_cast<const float*>(p.v_cache);
  const int group = p.n_heads / p.n_kv_heads;  // query heads sharing one kv head
  const int kv_dim = p.n_kv_heads * p.head_dim;
  std::vector<float> score;
  for (int t = 0; t < p.T; ++t) {
    const int pos = p.pos[t];
    // Keys visible to a query at `pos`: (pos - window, pos], as transformers' sliding mask.
    const int lo = p.sliding_window > 0 ? std::max(0, pos - p.sliding_window + 1) : 0;
    const int n = pos - lo + 1;
    score.resize(n);
    const float* kbase = k_cache + int64_t(p.slot[t]) * p.max_len * kv_dim;
    const float* vbase = v_cache + int64_t(p.slot[t]) * p.max_len * kv_dim;
    for (int h = 0; h < p.n_heads; ++h) {
      const int kvh = h / group;
      const float* q = p.q + (int64_t(t) * p.n_heads + h) * p.head_dim;
      float mx = -INFINITY;
      for (int j = 0; j < n; ++j) {
        const float* k = kbase + int64_t(lo + j) * kv_dim + kvh * p.head_dim;
        float s = 0.0f;
        for (int d = 0; d < p.head_dim; ++d) s += q[d] * k[d];
        score[j] = s * p.scale;
        mx = std::max(mx, score[j]);
      }
      float sum = 0.0f;
      for (int j = 0; j < n; ++j) {
        score[j] = std::exp(score[j] - mx);
        sum += score[j];
      }
      const float inv = 1.0f / sum;
      float* o = p.out + (int64_t(t) * p.n_heads + h) * p.head_dim;
      std::fill(o, o + p.head_dim, 0.0f);
      for (int j = 0; j < n; ++j) {
        const float* v = vbase + int64_t(lo + j) * kv_dim + kvh * p.head_dim;
        const float w = score[j] * inv;
        for (int d = 0; d < p.head_dim; ++d) o[d] += w * v[d];
      }
    }
  }
}

}  // namespace moe::kernels::cpu
