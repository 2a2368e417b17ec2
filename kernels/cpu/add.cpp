#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void add(const AddParams& p) {
#pragma omp parallel for schedule(static) if (p.n > (1 << 18))
  for (int64_t i = 0; i < p.n; ++i) p.x[i] += p.y[i];
}

}  // namespace moe::kernels::cpu
