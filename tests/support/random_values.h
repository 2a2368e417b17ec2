#pragma once
// Test inputs shared by the kernel tests: normal random values, and values rounded to bf16.
#include <cstdint>
#include <random>
#include <vector>

#include "common/dtype.h"

namespace moe::test {

inline std::vector<float> random_floats(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Rounds `v` to bf16: the bf16 bits for the device and, in place, their fp32 widening.
inline std::vector<uint16_t> round_to_bf16(std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    b[i] = f32_to_bf16(v[i]);
    v[i] = bf16_to_f32(b[i]);
  }
  return b;
}

}  // namespace moe::test
