#pragma once
// The values of synthetic weights: element i of a tensor with seed s is
//   offset + scale * u(s, i),   u uniform in [-1, 1) with 24 random bits (exact in fp32),
// computed with one correctly rounded fmaf, so the host and the device produce the same fp32
// value bit for bit, and so the same bf16 after rounding to nearest even. A counter-based
// generator (no state): any element can be made by any thread in any order, and a tensor's
// values do not depend on which rank makes it or how it is split.
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MOE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MOE_HOST_DEVICE inline
#endif

namespace moe::kernels {

// splitmix64's finaliser: a bijection of 64-bit words that scatters neighbouring inputs.
MOE_HOST_DEVICE uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

MOE_HOST_DEVICE float uniform_pm1(uint64_t seed, uint64_t i) {
  const uint64_t z = mix64(seed + (i + 1) * 0x9e3779b97f4a7c15ull);
  return float(int32_t(z >> 40) - (1 << 23)) * (1.0f / float(1 << 23));
}

MOE_HOST_DEVICE float random_value(uint64_t seed, uint64_t i, float scale, float offset) {
  return fmaf(scale, uniform_pm1(seed, i), offset);
}

}  // namespace moe::kernels
