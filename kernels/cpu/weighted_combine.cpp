#include <algorithm>

#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void weighted_combine(const WeightedCombineParams& p) {
  for (int r = 0; r < p.R; ++r) {
    float* o = p.out + int64_t(r) * p.cols;
    std::fill(o, o + p.cols, 0.0f);
    for (int s = 0; s < p.k; ++s) {
      const int32_t i = p.index[int64_t(r) * p.k + s];
      if (i < 0) continue;
      const float w = p.weight[int64_t(r) * p.k + s];
      const float* y = p.y + int64_t(i) * p.cols;
      for (int c = 0; c < p.cols; ++c) o[c] += w * y[c];
    }
  }
}

}  // namespace moe::kernels::cpu
