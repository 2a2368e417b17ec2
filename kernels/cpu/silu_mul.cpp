#include <algorithm>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/lanes.h"

namespace moe::kernels::cpu {
namespace {

MOE_LANES_INLINE Lanes silu_mul_lanes(Lanes g, Lanes u) { return g / (1.0f + exp_lanes(-g)) * u; }

// silu(g) * u = g / (1 + e^-g) * u over one row, 16 lanes at a time; the tail goes through the
// same lanes (padded), so an element's result does not depend on where it sits in the row.
__attribute__((target_clones("arch=x86-64-v4", "avx512f", "arch=x86-64-v3", "default")))
void silu_mul_row(const float* __restrict__ g, const float* __restrict__ u, float* __restrict__ o,
                  int n) {
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    store_lanes(o + i, silu_mul_lanes(load_lanes(g + i), load_lanes(u + i)));
  if (i == n) return;
  float gt[kLanes] = {}, ut[kLanes] = {}, ot[kLanes];
  std::copy(g + i, g + n, gt);
  std::copy(u + i, u + n, ut);
  store_lanes(ot, silu_mul_lanes(load_lanes(gt), load_lanes(ut)));
  std::copy(ot, ot + (n - i), o + i);
}

}  // namespace

// Rows split over the threads (a prefill step's expert rows); element-wise, so the result does
// not depend on the split.
void silu_mul(const SiluMulParams& p) {
#pragma omp parallel for schedule(static) if (int64_t(p.M) * p.I > (1 << 16))
  for (int m = 0; m < p.M; ++m) {
    const float* g = p.gate_up + int64_t(m) * 2 * p.I;
    silu_mul_row(g, g + p.I, p.out + int64_t(m) * p.I, p.I);
  }
}

}  // namespace moe::kernels::cpu
