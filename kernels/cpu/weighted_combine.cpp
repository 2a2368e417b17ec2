#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {
namespace {

inline float load(const float* y, int64_t i) { return y[i]; }
inline float load(const uint16_t* y, int64_t i) { return bf16_to_f32(y[i]); }
inline void store(uint16_t* o, int64_t i, float v) { o[i] = f32_to_bf16(v); }

template <class Y, class O>
void combine(const WeightedCombineParams& p) {
  const auto* y = static_cast<const Y*>(p.y);
  auto* out = static_cast<O*>(p.out);
  // fp32 out is its own accumulator; a bf16 one is rounded from an fp32 row at the end.
  constexpr bool kDirect = std::is_same_v<O, float>;
  std::vector<float> row(kDirect ? 0 : size_t(p.cols));
  for (int r = 0; r < p.R; ++r) {
    float* acc = kDirect ? reinterpret_cast<float*>(out) + int64_t(r) * p.cols : row.data();
    std::fill(acc, acc + p.cols, 0.0f);
    for (int s = 0; s < p.k; ++s) {
      const int32_t i = p.index[int64_t(r) * p.k + s];
      if (i < 0) continue;
      const float w = p.weight ? p.weight[int64_t(r) * p.k + s] : 1.0f;
      const int64_t base = int64_t(i) * p.cols;
      for (int c = 0; c < p.cols; ++c) acc[c] += w * load(y, base + c);
    }
    if constexpr (!kDirect)
      for (int c = 0; c < p.cols; ++c) store(out, int64_t(r) * p.cols + c, acc[c]);
  }
}

bool f32_or_bf16(DType t) { return t == DType::kF32 || t == DType::kBF16; }

}  // namespace

void weighted_combine(const WeightedCombineParams& p) {
  MOE_CHECK(f32_or_bf16(p.y_dtype) && f32_or_bf16(p.out_dtype),
            std::string("weighted_combine: y ") + dtype_name(p.y_dtype) + ", out " +
                dtype_name(p.out_dtype) + " (expected F32 or BF16 each)");
  const bool y32 = p.y_dtype == DType::kF32, o32 = p.out_dtype == DType::kF32;
  if (y32 && o32) return combine<float, float>(p);
  if (y32) return combine<float, uint16_t>(p);
  if (o32) return combine<uint16_t, float>(p);
  combine<uint16_t, uint16_t>(p);
}

}  // namespace moe::kernels::cpu
