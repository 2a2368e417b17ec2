#include <cstring>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void pack_rows(const PackRowsParams& p) {
  const RowLayout& L = p.layout;
  MOE_CHECK(L.dtype == DType::kF32 || L.dtype == DType::kBF16,
            std::string("pack_rows: wire dtype ") + dtype_name(L.dtype) + " (expected F32 or BF16)");
  const size_t stride = L.stride(), value_bytes = size_t(L.hidden) * dtype_size(L.dtype);
  for (int i = 0; i < p.S; ++i) {
    auto* row = static_cast<char*>(p.payload) + size_t(i) * stride;
    const float* x = p.x + int64_t(p.token[i]) * L.hidden;
    if (L.dtype == DType::kF32) {
      std::memcpy(row, x, value_bytes);
    } else {
      auto* v = reinterpret_cast<uint16_t*>(row);
      for (int c = 0; c < L.hidden; ++c) v[c] = f32_to_bf16(x[c]);
    }
    // The padding travels too: zero it, so no uninitialised byte is sent.
    std::memset(row + value_bytes, 0, L.values_bytes() - value_bytes);
    std::memcpy(row + L.slots_offset(), p.slots + int64_t(i) * L.k, size_t(L.k) * sizeof(RouteSlot));
  }
}

void unpack_rows(const UnpackRowsParams& p) {
  const RowLayout& L = p.layout;
  MOE_CHECK(L.dtype == DType::kF32 || L.dtype == DType::kBF16,
            std::string("unpack_rows: wire dtype ") + dtype_name(L.dtype) +
                " (expected F32 or BF16)");
  const size_t stride = L.stride();
  for (int i = 0; i < p.M; ++i) {
    float* out = p.out + int64_t(i) * L.hidden;
    if (p.index[i] < 0) {
      std::memset(out, 0, size_t(L.hidden) * sizeof(float));
      continue;
    }
    const auto* row = static_cast<const char*>(p.payload) + size_t(p.index[i]) * stride;
    if (L.dtype == DType::kF32) {
      std::memcpy(out, row, size_t(L.hidden) * sizeof(float));
    } else {
      const auto* v = reinterpret_cast<const uint16_t*>(row);
      for (int c = 0; c < L.hidden; ++c) out[c] = bf16_to_f32(v[c]);
    }
  }
}

}  // namespace moe::kernels::cpu
