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

// Every helper here is inlined always, also in unoptimized and sanitized builds: an out-of-line
// copy is compiled for the file's baseline instruction set, while a target_clones caller built
// for AVX-512 passes a Lanes in a zmm register, so the two would disagree on where the vector
// is (the ABI change -Wpsabi warns of) and compute garbage.
#define MOE_LANES_INLINE inline __attribute__((always_inline))

MOE_LANES_INLINE Lanes load_lanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

MOE_LANES_INLINE void store_lanes(float* p, Lanes v) { std::memcpy(p, &v, sizeof v); }

// bf16 widened exactly: its bits are the high half of the fp32 value.
MOE_LANES_INLINE Lanes load_lanes(const uint16_t* p) {
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
MOE_LANES_INLINE Lanes fma_lanes(Lanes a, Lanes b, Lanes c) {
  Lanes r;
  for (int j = 0; j < kLanes; ++j) r[j] = __builtin_fmaf(a[j], b[j], c[j]);
  return r;
}

// e^x lane by lane, within 1 ulp of the exact value on [-87.33, 88.37] (0.92 at worst in
// test_cpu_exp's sweep; e^x up to about 2.4e38); 0 below that range (where e^x is subnormal),
// +inf above it, NaN stays NaN.
// x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts: the fused n * high part is exact), e^r
// by its Taylor series to r^7 (the next term is under 6e-9 of the result), times 2^n made
// straight in the exponent bits. The same operations in every clone, each multiply-add fused
// explicitly (fma_lanes): every machine gets the same bits.
MOE_LANES_INLINE Lanes exp_lanes(Lanes x) {
  typedef int32_t IntLanes __attribute__((vector_size(64)));
  const Lanes lo = Lanes{} - 87.33654f, hi = Lanes{} + 88.37626f;  // 2^-126 and 2^127.5
  const Lanes c = x < lo ? lo : (x > hi ? hi : x);
  Lanes n = c * 1.44269504f + 0.5f;  // x / ln2, to the nearest integer below
  for (int j = 0; j < kLanes; ++j) n[j] = __builtin_floorf(n[j]);
  Lanes r = fma_lanes(n, Lanes{} - 0.693359375f, c);
  r = fma_lanes(n, Lanes{} + 2.12194440e-4f, r);
  Lanes p = Lanes{} + 1.0f / 5040;
  p = fma_lanes(p, r, Lanes{} + 1.0f / 720);
  p = fma_lanes(p, r, Lanes{} + 1.0f / 120);
  p = fma_lanes(p, r, Lanes{} + 1.0f / 24);
  p = fma_lanes(p, r, Lanes{} + 1.0f / 6);
  p = fma_lanes(p, r, Lanes{} + 0.5f);
  p = fma_lanes(p, r, Lanes{} + 1.0f);
  p = fma_lanes(p, r, Lanes{} + 1.0f);
  const IntLanes bits = (__builtin_convertvector(n, IntLanes) + 127) << 23;
  Lanes scale;
  std::memcpy(&scale, &bits, sizeof scale);
  Lanes e = p * scale;
  e = x < lo ? Lanes{} : e;
  e = x > hi ? Lanes{} + __builtin_inff() : e;
  return x != x ? x : e;
}

// A Lanes vector as two halves of 8 (lanes 0-7 and 8-15), for loops that keep many of them in
// registers: GCC splits a 64-byte vector on an AVX2 machine into two ymm registers, but past a
// few of them live at once it spilled them through the stack lane by lane (the 4-row linear ran
// at 3.9 GFLOP/s). Written in halves, the same operations per lane stay in registers.
typedef float Half __attribute__((vector_size(32)));
constexpr int kHalf = 8;

MOE_LANES_INLINE Half load_half(const float* p) {
  Half v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

MOE_LANES_INLINE Half load_half(const uint16_t* p) {
  typedef uint16_t Bf16Half __attribute__((vector_size(16)));
  typedef uint32_t BitHalf __attribute__((vector_size(32)));
  Bf16Half h;
  std::memcpy(&h, p, sizeof h);
  const BitHalf bits = __builtin_convertvector(h, BitHalf) << 16;
  Half v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

MOE_LANES_INLINE Half fma_half(Half a, Half b, Half c) {
  Half r;
  for (int j = 0; j < kHalf; ++j) r[j] = __builtin_fmaf(a[j], b[j], c[j]);
  return r;
}

// sum_lanes of four Lanes vectors, each given as its halves lo and hi (lanes 0-7, 8-15), with
// sum_lanes's additions done in vector registers: lane j + lane j + 8, the halves' quarters
// added (lane j + lane j + 4), the four sums' quarters transposed, then j + (j + 2) and the two
// results added. No vector goes through memory to be summed lane by lane (store-forwarding
// stalls: about 12 ns per sum on the small weights' many short dot products).
MOE_LANES_INLINE void sum_halves4(const Half* lo, const Half* hi, float* out) {
  typedef float Quad __attribute__((vector_size(16)));
  Quad q[4];
  for (int e = 0; e < 4; ++e) {
    const Half v = lo[e] + hi[e];
    q[e] = Quad{v[0], v[1], v[2], v[3]} + Quad{v[4], v[5], v[6], v[7]};
  }
  const Quad t0 = {q[0][0], q[1][0], q[2][0], q[3][0]}, t1 = {q[0][1], q[1][1], q[2][1], q[3][1]};
  const Quad t2 = {q[0][2], q[1][2], q[2][2], q[3][2]}, t3 = {q[0][3], q[1][3], q[2][3], q[3][3]};
  const Quad d = (t0 + t2) + (t1 + t3);
  std::memcpy(out, &d, sizeof d);
}

// The sum of a vector's lanes in a fixed tree: halves added pairwise.
MOE_LANES_INLINE float sum_lanes(Lanes v) {
  float a[kLanes];
  std::memcpy(a, &v, sizeof a);
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) a[j] += a[j + width];
  return a[0];
}

}  // namespace moe::kernels::cpu
