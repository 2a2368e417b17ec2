// The CPU backend's linear: the streamed path (few rows) and the BLAS path (many) both against a
// double-precision sum, and the streamed path's promise that a row's result depends on nothing
// but the row: the same bits at any row count, thread count and position in the batch.
#include <cmath>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/support/random_values.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {


// K = 53 and 1024 + 7: lane tails; N = 37: a tail for the loop that takes 2 or 4 rows of W a pass.
TEST(CpuLinear, BothPathsMatchADoubleSum) {
  std::mt19937 rng(11);
  for (int K : {53, 1031}) {
    const int N = 37;
    const auto w = random_floats(rng, size_t(N) * K);
    for (int M : {1, 3, 4, 5, 8, 9, 40}) {
      for (bool acc : {false, true}) {
        SCOPED_TRACE("K " + std::to_string(K) + " M " + std::to_string(M) +
                     (acc ? " accumulate" : ""));
        const auto x = random_floats(rng, size_t(M) * K);
        const auto init = random_floats(rng, size_t(M) * N);
        std::vector<float> want(size_t(M) * N);
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < N; ++n) {
            double s = acc ? init[size_t(m) * N + n] : 0.0;
            for (int k = 0; k < K; ++k) s += double(x[size_t(m) * K + k]) * w[size_t(n) * K + k];
            want[size_t(m) * N + n] = float(s);
          }
        for (auto path : {&kernels::cpu::linear_streamed, &kernels::cpu::linear_blas,
                          &kernels::cpu::linear}) {
          std::vector<float> out = init;
          path({x.data(), {w.data(), DType::kF32, N, K}, out.data(), M, acc});
          EXPECT_TRUE(all_close(out.data(), want.data(), out.size(), 1e-4f, 1e-5f, "linear"));
        }
      }
    }
  }
}

// The streamed path's sum in its documented order, in scalar code: lane j takes k = j, j + 16,
// ... with one fused multiply-add each, the 16 lanes are added pairwise (halves), then the tail
// k >= K / 16 * 16 with fmaf. Every instruction-set clone must give exactly these bits (this
// machine runs one of them; the order is what makes them agree).
float documented_dot(const float* x, const float* w, int K) {
  constexpr int L = 16;
  float lane[L] = {};
  const int k_main = K / L * L;
  for (int k = 0; k < k_main; k += L)
    for (int j = 0; j < L; ++j) lane[j] = std::fmaf(x[k + j], w[k + j], lane[j]);
  for (int width = L / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) lane[j] += lane[j + width];
  float s = lane[0];
  for (int k = k_main; k < K; ++k) s = std::fmaf(x[k], w[k], s);
  return s;
}

TEST(CpuLinear, StreamedSumIsTheDocumentedOrderBitForBit) {
  std::mt19937 rng(13);
  for (int K : {16, 53, 1031}) {
    const int N = 29;
    const auto w = random_floats(rng, size_t(N) * K);
    for (int M : {1, 2, 3, 4, 6}) {
      const auto x = random_floats(rng, size_t(M) * K);
      std::vector<float> out(size_t(M) * N);
      kernels::cpu::linear_streamed({x.data(), {w.data(), DType::kF32, N, K}, out.data(), M});
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n)
          ASSERT_EQ(out[size_t(m) * N + n],
                    documented_dot(x.data() + size_t(m) * K, w.data() + size_t(n) * K, K))
              << "K " << K << ", M " << M << ", row " << m << ", column " << n;
    }
  }
}

TEST(CpuLinear, StreamedRowsDoNotDependOnTheBatchOrThreads) {
  std::mt19937 rng(12);
  const int N = 301, K = 1000, M = 11;
  const auto w = random_floats(rng, size_t(N) * K);
  const auto x = random_floats(rng, size_t(M) * K);
  // Each row alone, one thread.
  kernels::cpu::set_threads(1);
  std::vector<float> alone(size_t(M) * N);
  for (int m = 0; m < M; ++m)
    kernels::cpu::linear_streamed(
        {x.data() + size_t(m) * K, {w.data(), DType::kF32, N, K}, alone.data() + size_t(m) * N, 1});
  for (int threads : {1, 2, 3}) {
    kernels::cpu::set_threads(threads);
    for (int first = 0; first < M; ++first) {  // every suffix of the batch, so rows change blocks
      const int rows = M - first;
      std::vector<float> out(size_t(rows) * N);
      kernels::cpu::linear_streamed(
          {x.data() + size_t(first) * K, {w.data(), DType::kF32, N, K}, out.data(), rows});
      for (size_t i = 0; i < out.size(); ++i)
        ASSERT_EQ(out[i], alone[size_t(first) * N + i])
            << "threads " << threads << ", batch from row " << first << ", element " << i;
    }
  }
  kernels::cpu::set_threads(1);
}

// linear() itself, at every row count (the BLAS's sums would depend on the call's shape): a row
// gives the same bits alone and inside batches of any size, for weights small and large, fp32
// and bf16 (bf16 is widened once per chunk past a few rows: the same bits again).
TEST(CpuLinear, RowsDoNotDependOnTheBatchAtAnyRowCount) {
  std::mt19937 rng(14);
  struct Shape { int N, K; };
  for (Shape sh : {Shape{37, 53}, Shape{300, 1031}}) {
    const int M = 70;
    const auto w = random_floats(rng, size_t(sh.N) * sh.K);
    std::vector<uint16_t> w16(w.size());
    for (size_t i = 0; i < w.size(); ++i) w16[i] = f32_to_bf16(w[i]);
    const auto x = random_floats(rng, size_t(M) * sh.K);
    for (bool bf16 : {false, true}) {
      const kernels::Weight weight = bf16 ? kernels::Weight{w16.data(), DType::kBF16, sh.N, sh.K}
                                          : kernels::Weight{w.data(), DType::kF32, sh.N, sh.K};
      kernels::cpu::set_threads(1);
      std::vector<float> alone(size_t(M) * sh.N);
      for (int m = 0; m < M; ++m)
        kernels::cpu::linear({x.data() + size_t(m) * sh.K, weight, alone.data() + size_t(m) * sh.N, 1});
      for (int threads : {1, 2}) {
        kernels::cpu::set_threads(threads);
        for (int rows : {2, 5, 9, 16, 17, 33, 64, 70}) {
          const int first = M - rows;  // the last `rows` rows: each row sits elsewhere in its block
          std::vector<float> out(size_t(rows) * sh.N);
          kernels::cpu::linear({x.data() + size_t(first) * sh.K, weight, out.data(), rows});
          for (size_t i = 0; i < out.size(); ++i)
            ASSERT_EQ(out[i], alone[size_t(first) * sh.N + i])
                << "N " << sh.N << ", K " << sh.K << (bf16 ? ", bf16" : ", f32") << ", threads "
                << threads << ", " << rows << " rows, element " << i;
        }
      }
    }
  }
  kernels::cpu::set_threads(1);
}

}  // namespace
}  // namespace moe::test

namespace moe::test {
namespace {

// bf16 weights give the bits of their fp32 widening, on both paths, and in embedding and rmsnorm.
TEST(CpuLinear, Bf16WeightsComputeAsTheirWidening) {
  std::mt19937 rng(13);
  // 14000 rows of 77: two of linear_blas's widened blocks (1M elements each).
  const int N = 14000, K = 77;
  auto w = random_floats(rng, size_t(N) * K);
  std::vector<uint16_t> bits(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    bits[i] = f32_to_bf16(w[i]);
    w[i] = bf16_to_f32(bits[i]);
  }
  // Each path on its own (linear() switches from one to the other at a row count that depends
  // on the dtype), at 1 and 2 threads: the GEMM's threads widen their own rows of W, each into
  // its own buffer.
  using Path = void (*)(const kernels::LinearParams&);
  for (int threads : {1, 2}) {
    kernels::cpu::set_threads(threads);
    for (int M : {1, 5, 9, 33})
      for (Path path : {Path(kernels::cpu::linear_streamed), Path(kernels::cpu::linear_blas)}) {
        // The GEMM only past 8 rows, as linear() uses it: below, OpenBLAS may switch to kernels
        // whose sums depend on the width of the call, which the bf16 path cuts into blocks.
        if (path == Path(kernels::cpu::linear_blas) && M <= 8) continue;
        const auto x = random_floats(rng, size_t(M) * K);
        std::vector<float> want(size_t(M) * N), got(size_t(M) * N);
        path({x.data(), {w.data(), DType::kF32, N, K}, want.data(), M});
        path({x.data(), {bits.data(), DType::kBF16, N, K}, got.data(), M});
        EXPECT_EQ(got, want) << "M " << M << ", " << threads << " threads, "
                             << (path == Path(kernels::cpu::linear_blas) ? "GEMM" : "streamed");
      }
  }
  kernels::cpu::set_threads(1);
  std::vector<float> e32(2 * K), e16(2 * K), n32(2 * K), n16(2 * K);
  const int32_t ids[2] = {3, N - 1};
  kernels::cpu::embedding({ids, {w.data(), DType::kF32, N, K}, e32.data(), 2});
  kernels::cpu::embedding({ids, {bits.data(), DType::kBF16, N, K}, e16.data(), 2});
  EXPECT_EQ(e16, e32);
  kernels::cpu::rmsnorm({e32.data(), {w.data(), DType::kF32, 1, K}, n32.data(), 2, K});
  kernels::cpu::rmsnorm({e32.data(), {bits.data(), DType::kBF16, 1, K}, n16.data(), 2, K});
  EXPECT_EQ(n16, n32);
}

}  // namespace
}  // namespace moe::test
