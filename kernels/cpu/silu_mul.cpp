#include <cmath>

#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

// Rows split over the threads (a prefill step's expert rows); element-wise, so the result does
// not depend on the split.
void silu_mul(const SiluMulParams& p) {
#pragma omp parallel for schedule(static) if (int64_t(p.M) * p.I > (1 << 16))
  for (int m = 0; m < p.M; ++m) {
    const float* g = p.gate_up + int64_t(m) * 2 * p.I;
    const float* u = g + p.I;
    float* o = p.out + int64_t(m) * p.I;
    for (int i = 0; i < p.I; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

}  // namespace moe::kernels::cpu
