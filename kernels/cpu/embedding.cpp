#include <cstring>
#include <string>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void embedding(const EmbeddingParams& p) {
  MOE_CHECK(p.table.dtype == DType::kF32 || p.table.dtype == DType::kBF16,
            std::string("cpu embedding table dtype ") + dtype_name(p.table.dtype) +
                " (expected F32 or BF16)");
  const int64_t H = p.table.cols;
  for (int t = 0; t < p.T; ++t) {
    const int32_t id = p.ids[t];
    // Token ids are validated where requests enter; this guards the memory all the same.
    if (id < 0 || id >= p.table.rows)
      MOE_THROW("token id " + std::to_string(id) + " outside the vocabulary [0, " +
                std::to_string(p.table.rows) + ")");
    float* out = p.out + int64_t(t) * H;
    if (p.table.dtype == DType::kF32) {
      std::memcpy(out, static_cast<const float*>(p.table.data) + int64_t(id) * H, H * sizeof(float));
    } else {
      const auto* row = static_cast<const uint16_t*>(p.table.data) + int64_t(id) * H;
      for (int64_t i = 0; i < H; ++i) out[i] = bf16_to_f32(row[i]);
    }
  }
}

}  // namespace moe::kernels::cpu
