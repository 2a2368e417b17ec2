#pragma once
// Element types found in checkpoints, and the conversions the CPU backend needs (it computes
// in fp32 whatever the checkpoint stores).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace moe {

enum class DType : uint8_t { kF32, kF16, kBF16 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: "F32", "F16", "BF16"
std::optional<DType> parse_safetensors_dtype(std::string_view s);

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch does; every NaN becomes the canonical 0x7fff, as the GPU's
// cvt.rn.bf16.f32 (and cuda_bf16.h's __float2bfloat16_rn) makes it, so that both backends store
// the same bits.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Widen `n` elements of type `t` at `src` into fp32 `dst`.
void convert_to_f32(const void* src, DType t, size_t n, float* dst);

}  // namespace moe
