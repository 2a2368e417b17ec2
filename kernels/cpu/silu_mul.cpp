#include <cmath>

#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void silu_mul(const SiluMulParams& p) {
  for (int m = 0; m < p.M; ++m) {
    const float* g = p.gate_up + int64_t(m) * 2 * p.I;
    const float* u = g + p.I;
    float* o = p.out + int64_t(m) * p.I;
    for (int i = 0; i < p.I; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

}  // namespace moe::kernels::cpu
