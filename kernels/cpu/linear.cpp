#include <cblas.h>

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/lanes.h"

namespace moe::kernels::cpu {
namespace {

// Rows of x dotted with the rows of W of one pass (stream_block's kRows).
constexpr int kRowBlock = 3;

// Loaded once into a register: without this GCC folds each of x's loads into every FMA that
// uses it (kW loads instead of one), and the loop waited on the loads. Only where a Half fits
// one register (AVX and later).
template <bool kAvx2>
MOE_LANES_INLINE void in_register(Half& v) {
  if constexpr (kAvx2) asm("" : "+x"(v));
}

// The kernels below are built twice, for AVX2 + FMA (x86-64-v3, which AVX-512 machines run
// too) and for the baseline, and picked once at run time. Both do the same operations per lane.
inline bool has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#define MOE_AVX2_FMA __attribute__((target("arch=x86-64-v3")))

inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return bf16_to_f32(v); }

// out[m, n] (+)= x[m, :] . W[n, :] for kRows rows of x, W of fp32 or bf16 (widened exactly, so a
// bf16 weight gives the bits its fp32 widening would). Each dot product is summed the same way
// whatever the number of rows and whatever the instruction set: lane j takes the products of
// k = j, j + 16, ... in order, each with one fused multiply-add (fma_half: the same rounding
// on every instruction set), the lanes are then added in a fixed tree and the tail after them
// (fmaf again). So a row's result depends on nothing but its own values, at any batch size,
// thread count or rank count. The 16 lanes are kept as two halves of 8 (lanes.h's Half), one
// ymm register each on AVX2.
template <int kRows, class W, bool kAvx2>
MOE_LANES_INLINE void stream_block_body(const float* __restrict__ x, const W* __restrict__ w,
                                        float* __restrict__ out, int N, int K, int ldo,
                                        bool accumulate) {
  const int k_main = K / kLanes * kLanes;
  // Rows of W per pass: each x load serves all of them, each W load all kRows rows of x, and
  // their sums are independent chains of additions (a lane's own chain is in a fixed order).
  // kRows * kW dot products of two halves each: 8 or 12 accumulators, with the kW halves of W
  // and one of x within AVX2's 16 registers.
  constexpr int kW = kRows == 1 ? 4 : (kRows == 2 ? 3 : 2);
  // The kW rows of a pass come from kW separate runs of W's rows, [i * S, (i + 1) * S): each
  // run is read front to back, one long forward stream in pages of its own. Consecutive rows
  // would put two or more streams in one 4 KB page whenever a row is under 4 KB (a bf16 row of
  // 1024), and the hardware prefetcher follows one forward stream per page: those rows then
  // came from memory at half the rate.
  const int S = (N + kW - 1) / kW;
  for (int r = 0; r < S; ++r) {
    // Past N's last row, the last row again (computed, not stored).
    const W* wn[kW];
    int row[kW];
    for (int i = 0; i < kW; ++i) {
      row[i] = i * S + r;
      wn[i] = w + int64_t(std::min(row[i], N - 1)) * K;
    }
    Half lo[kW][kRows] = {}, hi[kW][kRows] = {};
    for (int k = 0; k < k_main; k += kLanes) {
      Half wv[kW];
      // Unrolled whole, so that the accumulators live in registers.
#pragma GCC unroll 8
      for (int i = 0; i < kW; ++i) wv[i] = load_half(wn[i] + k);
#pragma GCC unroll 8
      for (int m = 0; m < kRows; ++m) {
        Half xv = load_half(x + int64_t(m) * K + k);
        in_register<kAvx2>(xv);
#pragma GCC unroll 8
        for (int i = 0; i < kW; ++i) lo[i][m] = fma_half(xv, wv[i], lo[i][m]);
      }
#pragma GCC unroll 8
      for (int i = 0; i < kW; ++i) wv[i] = load_half(wn[i] + k + kHalf);
#pragma GCC unroll 8
      for (int m = 0; m < kRows; ++m) {
        Half xv = load_half(x + int64_t(m) * K + k + kHalf);
        in_register<kAvx2>(xv);
#pragma GCC unroll 8
        for (int i = 0; i < kW; ++i) hi[i][m] = fma_half(xv, wv[i], hi[i][m]);
      }
    }
    // The lanes' sums four at a time (sum_halves4: sum_lanes's additions), the last group
    // padded with zeros.
    constexpr int kSums = kW * kRows, kGroups = (kSums + 3) / 4;
    Half flo[kGroups * 4] = {}, fhi[kGroups * 4] = {};
    float sums[kGroups * 4];
#pragma GCC unroll 8
    for (int i = 0; i < kW; ++i)
#pragma GCC unroll 8
      for (int m = 0; m < kRows; ++m) {
        flo[i * kRows + m] = lo[i][m];
        fhi[i * kRows + m] = hi[i][m];
      }
#pragma GCC unroll 4
    for (int g = 0; g < kGroups; ++g) sum_halves4(flo + 4 * g, fhi + 4 * g, sums + 4 * g);
    for (int i = 0; i < kW; ++i) {
      if (row[i] >= N) continue;
      for (int m = 0; m < kRows; ++m) {
        float s = sums[i * kRows + m];
        for (int k = k_main; k < K; ++k)
          s = __builtin_fmaf(x[int64_t(m) * K + k], widen(wn[i][k]), s);
        float& o = out[int64_t(m) * ldo + row[i]];
        o = accumulate ? o + s : s;
      }
    }
  }
}

template <int kRows, class W>
MOE_AVX2_FMA void stream_block_avx2(const float* x, const W* w, float* out, int N, int K, int ldo,
                                    bool accumulate) {
  stream_block_body<kRows, W, true>(x, w, out, N, K, ldo, accumulate);
}

template <int kRows, class W>
void stream_block(const float* x, const W* w, float* out, int N, int K, int ldo, bool accumulate) {
  if (has_avx2_fma()) return stream_block_avx2<kRows, W>(x, w, out, N, K, ldo, accumulate);
  stream_block_body<kRows, W, false>(x, w, out, N, K, ldo, accumulate);
}

// Rows of x per chunk of W past which a bf16 chunk is widened once into fp32 for all of them
// (exact, so the same bits): each widening in the inner loop costs two instructions per half.
constexpr int kWidenMinRows = 2 * kRowBlock;

template <class W>
void stream_chunk(const LinearParams& p, const W* wc, int n0, int n) {
  const int N = int(p.w.rows), K = int(p.w.cols);
  for (int m0 = 0; m0 < p.M; m0 += kRowBlock) {
    const float* x = p.x + int64_t(m0) * K;
    float* out = p.out + int64_t(m0) * N + n0;
    switch (std::min(kRowBlock, p.M - m0)) {
      case 1: stream_block<1>(x, wc, out, n, K, N, p.accumulate); break;
      case 2: stream_block<2>(x, wc, out, n, K, N, p.accumulate); break;
      default: stream_block<3>(x, wc, out, n, K, N, p.accumulate); break;
    }
  }
}

template <class W>
void stream_rows(const LinearParams& p, const W* w) {
  const int N = int(p.w.rows), K = int(p.w.cols);
  // Chunks of W rows large enough that a thread's share is worth waking it for; every row of x
  // passes a chunk while it is in L2.
  constexpr int64_t kMinChunkElems = 1 << 15;
  const int chunk_rows = int(std::max<int64_t>(8, kMinChunkElems / std::max(K, 1)));
  const int n_chunks = (N + chunk_rows - 1) / chunk_rows;
#pragma omp parallel for schedule(dynamic, 1) if (n_chunks > 1)
  for (int c = 0; c < n_chunks; ++c) {
    const int n0 = c * chunk_rows, n = std::min(chunk_rows, N - n0);
    const W* wc = w + int64_t(n0) * K;
    if constexpr (std::is_same_v<W, uint16_t>) {
      if (p.M >= kWidenMinRows) {
        thread_local std::vector<float> wide;  // this thread's own
        const int64_t count = int64_t(n) * K;
        wide.resize(size_t(count));
        for (int64_t i = 0; i < count; ++i) wide[size_t(i)] = bf16_to_f32(wc[i]);
        stream_chunk(p, wide.data(), n0, n);
        continue;
      }
    }
    stream_chunk(p, wc, n0, n);
  }
}

void check_weight(const Weight& w) {
  MOE_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kBF16,
            std::string("cpu linear weight dtype ") + dtype_name(w.dtype) +
                " (expected F32 or BF16)");
}

}  // namespace

// Threads split W's rows (every thread streams its own share of the weight, the bandwidth-bound
// part); a row's result does not depend on which thread made it. Chunks are handed out
// dynamically: a thread that loses its core to another process (ranks sharing cores, a busy
// machine) then holds up only its current chunk, not a fixed half of the work.
void linear_streamed(const LinearParams& p) {
  check_weight(p.w);
  if (p.w.dtype == DType::kBF16) return stream_rows(p, static_cast<const uint16_t*>(p.w.data));
  stream_rows(p, static_cast<const float*>(p.w.data));
}

// OpenBLAS runs single-threaded: linear_blas splits the work over OpenMP's threads itself. Its
// own pthreads would compete for the cores with OpenMP's, which spin for a while after each
// parallel region: on 2 cores that made a 16-row GEMM 5x and a 512-row one 2x slower.
void set_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(1);
}

namespace {

// out[:, n0:n0+n] (+)= x @ W[n0:n0+n, :]^T, one thread's share, one sgemm per block of W's rows.
// A bf16 W is widened into fp32 a block at a time (the BLAS has no bf16 GEMM here), so the
// scratch stays a few MB per thread whatever the weight's size; an fp32 W is cut into the same
// blocks. NOTES: the same blocks for both dtypes, because an sgemm's sums may depend on the
// width of the call (OpenBLAS's Zen/Haswell kernels block N differently by width): cut alike, a
// bf16 weight gives exactly the bits of its fp32 widening.
void gemm_rows(const LinearParams& p, int n0, int n, float beta) {
  const int N = int(p.w.rows), K = int(p.w.cols);
  constexpr int64_t kBlockElems = 1 << 20;  // 4 MB of widened weight
  const int block_rows = int(std::max<int64_t>(64, kBlockElems / std::max(K, 1)));
  thread_local std::vector<float> wide;  // this thread's own
  if (p.w.dtype != DType::kF32) wide.resize(size_t(std::min(block_rows, n)) * K);
  for (int b0 = n0; b0 < n0 + n; b0 += block_rows) {
    const int rows = std::min(block_rows, n0 + n - b0);
    const float* block;
    if (p.w.dtype == DType::kF32) {
      block = static_cast<const float*>(p.w.data) + int64_t(b0) * K;
    } else {
      const int64_t count = int64_t(rows) * K;
      const uint16_t* src = static_cast<const uint16_t*>(p.w.data) + int64_t(b0) * K;
      for (int64_t i = 0; i < count; ++i) wide[size_t(i)] = bf16_to_f32(src[i]);
      block = wide.data();
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.M, rows, K, 1.0f, p.x, K, block, K,
                beta, p.out + b0, N);
  }
}

}  // namespace

// out[M, N] = x[M, K] @ W[N, K]^T: W is row-major [N, K], so it enters transposed. The threads
// take contiguous ranges of W's rows (of out's columns), at least 64 rows each, one sgemm each.
void linear_blas(const LinearParams& p) {
  check_weight(p.w);
  const int N = int(p.w.rows);
  const float beta = p.accumulate ? 1.0f : 0.0f;
  const int parts = std::max(1, std::min(omp_get_max_threads(), N / 64));
#pragma omp parallel for num_threads(parts) schedule(static) if (parts > 1)
  for (int t = 0; t < parts; ++t) {
    const int n0 = int(int64_t(N) * t / parts), n1 = int(int64_t(N) * (t + 1) / parts);
    gemm_rows(p, n0, n1 - n0, beta);
  }
}

// Every row count takes the streamed kernels, so that a row's result is the same bits whatever
// else is in the batch: a seeded sample near a tie must not flip because its sequence was
// decoded beside others, prefilled again after a lost rank, or placed on another rank. The
// BLAS path (linear_blas) is about 1.7x (fp32) and 1.2x (bf16) as fast at 512 rows
// (moe-bench-cpu-linear): its sums' order depends on the call's shape, and the bits with it.
void linear(const LinearParams& p) {
  if (p.M == 0 || p.w.rows == 0) return;
  linear_streamed(p);
}

}  // namespace moe::kernels::cpu
