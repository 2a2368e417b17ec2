#include <cstring>
#include <string>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void embedding(const EmbeddingParams& p) {
  MOE_CHECK(p.table.dtype == DType::kF32, "cpu embedding table must be fp32");
  const auto* table = static_cast<const float*>(p.table.data);
  const int64_t H = p.table.cols;
  for (int t = 0; t < p.T; ++t) {
    const int32_t id = p.ids[t];
    // Token ids are validated where requests enter; this guards the memory all the same.
    if (id < 0 || id >= p.table.rows)
      MOE_THROW("token id " + std::to_string(id) + " outside the vocabulary [0, " +
                std::to_string(p.table.rows) + ")");
    std::memcpy(p.out + int64_t(t) * H, table + int64_t(id) * H, H * sizeof(float));
  }
}

}  // namespace moe::kernels::cpu
