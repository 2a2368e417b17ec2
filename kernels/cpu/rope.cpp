#include <cmath>

#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

namespace {
// Rotate-half convention (transformers' rotate_half): element i pairs with i + d/2.
void rotate(float* v, int head_dim, const float* cosv, const float* sinv) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float a = v[i], b = v[i + half];
    v[i] = a * cosv[i] - b * sinv[i];
    v[i + half] = b * cosv[i] + a * sinv[i];
  }
}
}  // namespace

void rope(const RopeParams& p) {
  const int half = p.head_dim / 2;
  // Tokens split over the threads, each rotating its own rows.
#pragma omp parallel for schedule(static) if (p.T > 16)
  for (int t = 0; t < p.T; ++t) {
    float cosv[512], sinv[512];  // head_dim <= 1024 is checked where the model is built
    // The angle is formed in fp32 as transformers does (inv_freq * position in float), so large
    // positions round the same way.
    for (int i = 0; i < half; ++i) {
      const float angle = p.inv_freq[i] * float(p.pos[t]);
      cosv[i] = std::cos(angle);
      sinv[i] = std::sin(angle);
    }
    float* q = p.q + int64_t(t) * p.n_heads * p.head_dim;
    for (int h = 0; h < p.n_heads; ++h) rotate(q + h * p.head_dim, p.head_dim, cosv, sinv);
    float* k = p.k + int64_t(t) * p.n_kv_heads * p.head_dim;
    for (int h = 0; h < p.n_kv_heads; ++h) rotate(k + h * p.head_dim, p.head_dim, cosv, sinv);
  }
}

}  // namespace moe::kernels::cpu
