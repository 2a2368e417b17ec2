#include <cblas.h>

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {
namespace {

// Rows of x dotted with one row of W per pass over it.
constexpr int kRowBlock = 4;

// 16 fp32 lanes: one AVX-512 register, two AVX2 ones, four SSE ones. GCC's vector extension
// keeps the lanes' arithmetic lane-wise whatever the instruction set.
typedef float Lanes __attribute__((vector_size(64)));
constexpr int kLanes = 16;
inline Lanes load_lanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// out[m, n] (+)= x[m, :] . W[n, :] for kRows rows of x. Each dot product is summed the same way
// whatever the number of rows and whatever the instruction set: lane j adds the products of
// k = j, j + 16, ... in order, the lanes are then added in a fixed tree and the tail after
// them; no FMA contraction (kernels/ is built with -ffp-contract=off). So a row's result depends
// on nothing but its own values, at any batch size, thread count or rank count.
template <int kRows>
__attribute__((target_clones("avx512f", "avx2", "default")))
void stream_block(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                  int N, int K, int ldo, bool accumulate) {
  const int k_main = K / kLanes * kLanes;
  // Two rows of W per pass: each x load serves both.
  constexpr int kW = 2;
  for (int n0 = 0; n0 < N; n0 += kW) {
    const int nw = std::min(kW, N - n0);
    const float* wn[kW] = {w + int64_t(n0) * K, w + int64_t(n0 + nw - 1) * K};
    Lanes acc[kW][kRows] = {};
    for (int k = 0; k < k_main; k += kLanes) {
      const Lanes w0 = load_lanes(wn[0] + k), w1 = load_lanes(wn[1] + k);
      for (int m = 0; m < kRows; ++m) {
        const Lanes xv = load_lanes(x + int64_t(m) * K + k);
        acc[0][m] += xv * w0;
        acc[1][m] += xv * w1;
      }
    }
    for (int i = 0; i < nw; ++i)
      for (int m = 0; m < kRows; ++m) {
        float a[kLanes];
        std::memcpy(a, &acc[i][m], sizeof a);
        for (int width = kLanes / 2; width > 0; width /= 2)
          for (int j = 0; j < width; ++j) a[j] += a[j + width];
        float s = a[0];
        for (int k = k_main; k < K; ++k) s += x[int64_t(m) * K + k] * wn[i][k];
        float& o = out[int64_t(m) * ldo + n0 + i];
        o = accumulate ? o + s : s;
      }
  }
}

}  // namespace

// Threads split W's rows (every thread streams its own share of the weight, the bandwidth-bound
// part); a row's result does not depend on which thread made it.
void linear_streamed(const LinearParams& p) {
  const int N = int(p.w.rows), K = int(p.w.cols);
  const auto* w = static_cast<const float*>(p.w.data);
  // Chunks of W rows large enough that a thread's share is worth waking it for.
  constexpr int64_t kMinChunkElems = 1 << 15;
  const int chunk_rows = int(std::max<int64_t>(8, kMinChunkElems / std::max(K, 1)));
  const int n_chunks = (N + chunk_rows - 1) / chunk_rows;
#pragma omp parallel for schedule(static) if (n_chunks > 1)
  for (int c = 0; c < n_chunks; ++c) {
    const int n0 = c * chunk_rows, n = std::min(chunk_rows, N - n0);
    for (int m0 = 0; m0 < p.M; m0 += kRowBlock) {
      const float* x = p.x + int64_t(m0) * K;
      const float* wc = w + int64_t(n0) * K;
      float* out = p.out + int64_t(m0) * N + n0;
      switch (std::min(kRowBlock, p.M - m0)) {
        case 1: stream_block<1>(x, wc, out, n, K, N, p.accumulate); break;
        case 2: stream_block<2>(x, wc, out, n, K, N, p.accumulate); break;
        case 3: stream_block<3>(x, wc, out, n, K, N, p.accumulate); break;
        default: stream_block<4>(x, wc, out, n, K, N, p.accumulate); break;
      }
    }
  }
}

void set_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

void linear_blas(const LinearParams& p) {
  // out[M, N] = x[M, K] @ W[N, K]^T: W is row-major [N, K], so it enters transposed.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.M, int(p.w.rows), int(p.w.cols), 1.0f,
              p.x, int(p.w.cols), static_cast<const float*>(p.w.data), int(p.w.cols),
              p.accumulate ? 1.0f : 0.0f, p.out, int(p.w.rows));
}

// Below kLinearStreamMaxRows rows a GEMM through the BLAS costs more in packing the weight
// (OpenBLAS copies W into its panel layout on every call: 80% of a decode step's cycles) than in
// the multiply, so the weight is streamed once instead, every row of x dotted with each row of W
// while it is in cache. Decode (one row per sequence), the router and the expert FFNs of decode
// steps (a handful of rows per expert) take that path; prefill takes the GEMM.
void linear(const LinearParams& p) {
  MOE_CHECK(p.w.dtype == DType::kF32, "cpu linear weight must be fp32");
  if (p.M == 0 || p.w.rows == 0) return;
  if (p.M <= kLinearStreamMaxRows) return linear_streamed(p);
  linear_blas(p);
}

}  // namespace moe::kernels::cpu
