#include <cmath>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

// As transformers' MixtralRMSNorm: x * rsqrt(ms + eps), then * weight. The sum of squares is
// taken in double (so its rounding hardly depends on hidden) and the mean square rounded to fp32;
// the CUDA op sums in an fp32 tree instead, so the two agree to a few fp32 ulps, not bit for bit.
void rmsnorm(const RmsNormParams& p) {
  MOE_CHECK(p.weight.dtype == DType::kF32 || p.weight.dtype == DType::kBF16,
            std::string("cpu rmsnorm weight dtype ") + dtype_name(p.weight.dtype) +
                " (expected F32 or BF16)");
  std::vector<float> wide;  // a bf16 weight widened once per call (hidden values)
  const float* w = static_cast<const float*>(p.weight.data);
  if (p.weight.dtype == DType::kBF16) {
    wide.resize(size_t(p.hidden));
    const auto* b = static_cast<const uint16_t*>(p.weight.data);
    for (int i = 0; i < p.hidden; ++i) wide[size_t(i)] = bf16_to_f32(b[i]);
    w = wide.data();
  }
#pragma omp parallel for schedule(static) if (int64_t(p.T) * p.hidden > (1 << 16))
  for (int t = 0; t < p.T; ++t) {
    const float* x = p.x + int64_t(t) * p.hidden;
    float* y = p.out + int64_t(t) * p.hidden;
    double ss = 0.0;
    for (int i = 0; i < p.hidden; ++i) ss += double(x[i]) * x[i];
    const float inv = 1.0f / std::sqrt(float(ss / p.hidden) + p.eps);
    for (int i = 0; i < p.hidden; ++i) y[i] = w[i] * (x[i] * inv);
  }
}

}  // namespace moe::kernels::cpu
