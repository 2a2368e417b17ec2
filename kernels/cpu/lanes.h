#pragma once
// 16 fp32 lanes for the CPU kernels' inner loops: one AVX-512 register, two AVX2 ones, four SSE
// ones. GCC's vector extension keeps the arithmetic lane-wise whatever the instruction set a
// function is cloned for (target_clones), and kernels/ is built without FMA contraction (a
// fused multiply-add is asked for explicitly, fma_lanes), so a lane's sum rounds the same on
// every machine.
#include <cstdint>
#include <cstring>

namespace moe::kernels::cpu {

typedef float Lanes __attribute__((vector_size(64)));
constexpr int kLanes = 16;

inline Lanes load_lanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store_lanes(float* p, Lanes v) { std::memcpy(p, &v, sizeof v); }

// bf16 widened exactly: its bits are the high half of the fp32 value.
inline Lanes load_lanes(const uint16_t* p) {
  typedef uint16_t Bf16Lanes __attribute__((vector_size(32)));
  typedef uint32_t BitLanes __attribute__((vector_size(64)));
  Bf16Lanes h;
  std::memcpy(&h, p, sizeof h);
  const BitLanes bits = __builtin_convertvector(h, BitLanes) << 16;
  Lanes v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// a * b + c lane by lane, each rounded once (a fused multiply-add): one instruction where the
// function's instruction set has FMA (x86-64-v3 and later, AVX-512F), a correctly rounded fmaf
// call per lane elsewhere, the same bits either way.
inline Lanes fma_lanes(Lanes a, Lanes b, Lanes c) {
  Lanes r;
  for (int j = 0; j < kLanes; ++j) r[j] = __builtin_fmaf(a[j], b[j], c[j]);
  return r;
}

// The sum of a vector's lanes in a fixed tree: halves added pairwise.
inline float sum_lanes(Lanes v) {
  float a[kLanes];
  std::memcpy(a, &v, sizeof a);
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) a[j] += a[j + width];
  return a[0];
}

}  // namespace moe::kernels::cpu
