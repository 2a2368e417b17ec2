// The CUDA backend against the CPU one, both driven only through the Ops interface (alloc,
// upload, the op, download), as the model drives them. The CPU side is given the weights the
// GPU stores (rounded to bf16 and widened back) and, for linear, the bf16-rounded x the GPU
// casts to, so the two differ only in the order of fp32 arithmetic. Skipped where no CUDA
// device is present.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/dtype.h"
#include "common/error.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"
#include "tests/support/test_env.h"

namespace moe::kernels {
namespace {

std::vector<float> random_floats(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// `v` rounded to bf16 and widened back: what the GPU holds after upload_weight or its cast.
std::vector<float> bf16_rounded(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = bf16_to_f32(f32_to_bf16(v[i]));
  return r;
}

// A backend buffer holding a copy of `h`.
template <typename T>
Buffer to_backend(Ops& ops, const std::vector<T>& h) {
  Buffer b = ops.alloc(h.size() * sizeof(T));
  ops.upload(b.data(), h.data(), h.size() * sizeof(T));
  return b;
}

template <typename T>
std::vector<T> to_host(Ops& ops, const Buffer& b, size_t n) {
  std::vector<T> h(n);
  ops.download(h.data(), b.data(), n * sizeof(T));
  return h;
}

// out = x @ W^T (+ y0 when accumulate) on `ops`, W already uploaded.
std::vector<float> run_linear(Ops& ops, const Weight& w, const std::vector<float>& x,
                              const std::vector<float>& y0, int M, bool accumulate) {
  Buffer bx = to_backend(ops, x);
  Buffer bout = to_backend(ops, y0);
  LinearParams p;
  p.x = bx.as<float>();
  p.w = w;
  p.out = bout.as<float>();
  p.M = M;
  p.accumulate = accumulate;
  ops.linear(p);
  return to_host<float>(ops, bout, y0.size());
}

class CudaOpsVsCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
      GTEST_SKIP() << "no CUDA device: CUDA Ops tests skipped";
    gpu_ = make_cuda_ops(0);
    cpu_ = make_cpu_ops();
  }
  std::unique_ptr<Ops> gpu_, cpu_;
  std::mt19937 rng_{1234};
};

TEST_F(CudaOpsVsCpu, NameAndDtypes) {
  EXPECT_EQ(gpu_->name(), "cuda");
  EXPECT_EQ(gpu_->precision(), DType::kBF16);
  EXPECT_EQ(gpu_->weight_dtype(), DType::kBF16);
  EXPECT_EQ(gpu_->kv_dtype(), DType::kBF16);
  auto f32 = make_cuda_ops(0, DType::kF32);
  EXPECT_EQ(f32->precision(), DType::kF32);
  EXPECT_EQ(f32->weight_dtype(), DType::kF32);
  EXPECT_EQ(f32->kv_dtype(), DType::kF32);
  EXPECT_THROW(make_cuda_ops(0, DType::kF16), Error);
  const Ops::MemoryInfo m = gpu_->memory_info();
  EXPECT_GT(m.total, size_t(0));
  EXPECT_LE(m.free, m.total);
  EXPECT_NE(cuda_stream(*gpu_), nullptr);
  EXPECT_THROW(cuda_stream(*cpu_), Error);
}

// Synthetic weights: the device makes exactly what the CPU backend at the same precision makes,
// bit for bit in the precision both store (bf16 weights are 2 bytes an element on both).
TEST_F(CudaOpsVsCpu, RandomWeightMatchesCpu) {
  constexpr int64_t kRows = 300, kCols = 77;
  constexpr size_t kN = size_t(kRows) * kCols;
  for (DType prec : {DType::kBF16, DType::kF32}) {
    auto gpu = make_cuda_ops(0, prec);
    auto cpu = make_cpu_ops(prec);
    Buffer gs, cs;
    const Weight gw = gpu->random_weight(gs, kRows, kCols, 99, 0.0346f, 0.0f);
    const Weight cw = cpu->random_weight(cs, kRows, kCols, 99, 0.0346f, 0.0f);
    ASSERT_EQ(gw.dtype, prec);
    ASSERT_EQ(cw.dtype, prec);
    ASSERT_EQ(gs.bytes(), kN * dtype_size(prec));
    ASSERT_EQ(cs.bytes(), kN * dtype_size(prec));
    if (prec == DType::kBF16)
      EXPECT_EQ(to_host<uint16_t>(*gpu, gs, kN), to_host<uint16_t>(*cpu, cs, kN));
    else
      EXPECT_EQ(to_host<float>(*gpu, gs, kN), to_host<float>(*cpu, cs, kN));
  }
}

// Precision f32: fp32 weights and fp32 cuBLAS GEMMs (no TF32), so only the order of the fp32
// sums differs from the CPU: ~1e-6 relative at these sizes, and 1e-5 would catch TF32 (~1e-3).
TEST_F(CudaOpsVsCpu, LinearAtF32MatchesCpuClosely) {
  auto gpu = make_cuda_ops(0, DType::kF32);
  for (int K : {48, 1024}) {
    const int N = 96;
    const auto w = random_floats(rng_, size_t(N) * K, 1.0f / std::sqrt(float(K)));
    Buffer gs, cs;
    const Weight gw = gpu->upload_weight(gs, w.data(), N, K);
    const Weight cw = cpu_->upload_weight(cs, w.data(), N, K);
    for (int M : {1, 33}) {
      const auto x = random_floats(rng_, size_t(M) * K);
      const auto y0 = random_floats(rng_, size_t(M) * N);
      const auto want = run_linear(*cpu_, cw, x, y0, M, true);
      const auto got = run_linear(*gpu, gw, x, y0, M, true);
      EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), 1e-5f, 1e-5f,
                                  "f32 linear K=" + std::to_string(K) + " M=" + std::to_string(M)));
    }
  }
}

TEST_F(CudaOpsVsCpu, AllocIsZeroInitialised) {
  Buffer empty = gpu_->alloc(0);
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.bytes(), 0u);
  for (size_t bytes : {size_t(1), size_t(4097), (size_t(3) << 20) + 5}) {
    SCOPED_TRACE("bytes=" + std::to_string(bytes));
    // Dirty an allocation of the same size first, so a reused block would show through.
    {
      Buffer dirty = gpu_->alloc(bytes);
      const std::vector<uint8_t> ones(bytes, 0xab);
      gpu_->upload(dirty.data(), ones.data(), bytes);
    }
    Buffer b = gpu_->alloc(bytes);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(b.bytes(), bytes);
    const auto got = to_host<uint8_t>(*gpu_, b, bytes);
    EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](uint8_t v) { return v == 0; }));
  }
}

TEST_F(CudaOpsVsCpu, AllocOutOfMemoryThrowsAndRecovers) {
  const size_t huge = size_t(1) << 50;  // 1 PiB: more than any GPU has
  try {
    Buffer b = gpu_->alloc(huge);
    FAIL() << "allocating 1 PiB did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(huge)), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("free of"), std::string::npos) << e.what();
  }
  // The failed cudaMalloc must not poison the next call.
  const std::vector<float> v = {1.0f, 2.0f, 3.0f};
  Buffer b = to_backend(*gpu_, v);
  EXPECT_EQ(to_host<float>(*gpu_, b, v.size()), v);
}

TEST_F(CudaOpsVsCpu, UploadDownloadRoundTrip) {
  std::uniform_int_distribution<int> byte(0, 255);
  for (size_t bytes : {size_t(1), size_t(12345), size_t(1) << 22}) {
    SCOPED_TRACE("bytes=" + std::to_string(bytes));
    std::vector<uint8_t> h(bytes);
    for (auto& v : h) v = uint8_t(byte(rng_));
    Buffer b = to_backend(*gpu_, h);
    EXPECT_EQ(to_host<uint8_t>(*gpu_, b, bytes), h);
  }
}

TEST_F(CudaOpsVsCpu, UploadWeightStoresBf16) {
  constexpr int64_t kRows = 37, kCols = 129;
  const auto w = random_floats(rng_, size_t(kRows * kCols));
  Buffer storage;
  const Weight wt = gpu_->upload_weight(storage, w.data(), kRows, kCols);
  EXPECT_EQ(wt.data, storage.data());
  EXPECT_EQ(wt.dtype, DType::kBF16);
  EXPECT_EQ(wt.rows, kRows);
  EXPECT_EQ(wt.cols, kCols);
  EXPECT_EQ(storage.bytes(), size_t(kRows * kCols) * 2);
  const auto got = to_host<uint16_t>(*gpu_, storage, w.size());
  for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(got[i], f32_to_bf16(w[i])) << "at " << i;
}

// Tolerance: both sides multiply the same bf16 values exactly in fp32 and differ only in the
// order the K products are summed (cuBLAS's tensor-core tiling vs OpenBLAS's blocking). With
// W ~ N(0, 1/K) the outputs and partial sums are O(1), so reordering moves a result by a few
// fp32 ulps times sqrt(K): ~1e-6 at K = 1024, well inside 1e-4 + 1e-3 * |ref|, while a wrong
// transposition or a missed accumulate is off by O(1).
constexpr float kLinearAtol = 1e-4f, kLinearRtol = 1e-3f;

TEST_F(CudaOpsVsCpu, LinearMatchesCpu) {
  struct Shape {
    int N, K;
  };
  for (Shape s : {Shape{64, 48}, Shape{128, 96}, Shape{4096, 1024}}) {
    const auto w = random_floats(rng_, size_t(s.N) * s.K, 1.0f / std::sqrt(float(s.K)));
    const auto w_cpu = bf16_rounded(w);
    // The GPU converts the unrounded weights itself, so upload_weight's rounding is tested too.
    Buffer gw_storage, cw_storage;
    const Weight gw = gpu_->upload_weight(gw_storage, w.data(), s.N, s.K);
    const Weight cw = cpu_->upload_weight(cw_storage, w_cpu.data(), s.N, s.K);
    for (int M : {1, 7, 128, 300}) {
      for (bool accumulate : {false, true}) {
        const std::string what = "linear M=" + std::to_string(M) + " N=" + std::to_string(s.N) +
                                 " K=" + std::to_string(s.K) + (accumulate ? " accumulate" : "");
        SCOPED_TRACE(what);
        const auto x = random_floats(rng_, size_t(M) * s.K);
        // Without accumulate, out must be overwritten: start it at garbage, not zero.
        const auto y0 = random_floats(rng_, size_t(M) * s.N);
        const auto want = run_linear(*cpu_, cw, bf16_rounded(x), y0, M, accumulate);
        const auto got = run_linear(*gpu_, gw, x, y0, M, accumulate);
        EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), kLinearAtol,
                                    kLinearRtol, what));
      }
    }
  }
}

TEST_F(CudaOpsVsCpu, LinearEdgeCases) {
  constexpr int kN = 16, kK = 32;
  const auto w = random_floats(rng_, size_t(kN) * kK);
  Buffer storage;
  const Weight gw = gpu_->upload_weight(storage, w.data(), kN, kK);
  // M == 0: nothing is read or written.
  const std::vector<float> sentinel(kN, 42.0f);
  Buffer out = to_backend(*gpu_, sentinel);
  LinearParams p;
  p.w = gw;
  p.out = out.as<float>();
  p.M = 0;
  EXPECT_NO_THROW(gpu_->linear(p));
  EXPECT_EQ(to_host<float>(*gpu_, out, kN), sentinel);
  // fp16 is no storage dtype of this backend.
  Buffer f16(gpu_->alloc(w.size() * sizeof(uint16_t)));
  Buffer x = gpu_->alloc(kK * sizeof(float));
  p.x = x.as<float>();
  p.M = 1;
  p.w = Weight{f16.data(), DType::kF16, kN, kK};
  EXPECT_THROW(gpu_->linear(p), Error);
}

TEST_F(CudaOpsVsCpu, RmsNormMatchesCpu) {
  for (int hidden : {64, 4096}) {
    for (int T : {1, 7, 128}) {
      const std::string what = "rmsnorm hidden=" + std::to_string(hidden) +
                               " T=" + std::to_string(T);
      SCOPED_TRACE(what);
      const auto x = random_floats(rng_, size_t(T) * hidden);
      auto w = random_floats(rng_, hidden, 0.5f);
      for (auto& v : w) v += 1.0f;
      const auto w_cpu = bf16_rounded(w);
      Buffer gws, cws;
      const Weight gw = gpu_->upload_weight(gws, w.data(), 1, hidden);
      const Weight cw = cpu_->upload_weight(cws, w_cpu.data(), 1, hidden);

      auto run = [&](Ops& ops, const Weight& wt) {
        Buffer bx = to_backend(ops, x);
        RmsNormParams p;
        p.x = bx.as<float>();
        p.weight = wt;
        p.out = bx.as<float>();  // in place, as the model runs it
        p.T = T;
        p.hidden = hidden;
        ops.rmsnorm(p);
        return to_host<float>(ops, bx, x.size());
      };
      const auto want = run(*cpu_, cw);
      const auto got = run(*gpu_, gw);
      EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), 1e-5f, 1e-5f, what));
    }
  }
}

// A dense FFN block and a router, op after op on the backend with no synchronize in between,
// as a layer runs: embedding -> rmsnorm -> gate_up linear -> silu_mul -> down linear
// accumulated onto the residual -> rmsnorm -> router linear -> topk_router. This checks the
// ops' wiring and stream order end to end. Each linear on the GPU casts its input to bf16 where
// the CPU keeps fp32 (2^-9 relative per element), so the tolerance here is 1e-2: it catches a
// wrong op or ordering, not ulps.
TEST_F(CudaOpsVsCpu, FfnAndRouterChainMatchesCpu) {
  constexpr int kVocab = 100, kH = 256, kI = 512, kE = 16, kTopK = 4, kT = 7;
  // Weights bf16-exact up front, the same values to both backends.
  const auto table = bf16_rounded(random_floats(rng_, size_t(kVocab) * kH));
  auto norm_w = random_floats(rng_, kH, 0.1f);
  for (auto& v : norm_w) v += 1.0f;
  norm_w = bf16_rounded(norm_w);
  const auto w_gu = bf16_rounded(random_floats(rng_, size_t(2 * kI) * kH, 1.0f / 16.0f));
  const auto w_down = bf16_rounded(random_floats(rng_, size_t(kH) * kI, 1.0f / 22.6f));
  const auto w_router = bf16_rounded(random_floats(rng_, size_t(kE) * kH, 1.0f / 16.0f));
  std::vector<int32_t> ids(kT);
  std::uniform_int_distribution<int32_t> pick(0, kVocab - 1);
  for (auto& id : ids) id = pick(rng_);

  struct Result {
    std::vector<float> h, logits, weight;
    std::vector<int32_t> expert;
  };
  auto run = [&](Ops& ops) {
    Buffer s_table, s_norm, s_gu, s_down, s_router;
    const Weight table_w = ops.upload_weight(s_table, table.data(), kVocab, kH);
    const Weight norm = ops.upload_weight(s_norm, norm_w.data(), 1, kH);
    const Weight gu = ops.upload_weight(s_gu, w_gu.data(), 2 * kI, kH);
    const Weight down = ops.upload_weight(s_down, w_down.data(), kH, kI);
    const Weight router = ops.upload_weight(s_router, w_router.data(), kE, kH);
    Buffer b_ids = to_backend(ops, ids);
    Buffer h = ops.alloc(size_t(kT) * kH * sizeof(float));       // [T, H] residual
    Buffer xn = ops.alloc(size_t(kT) * kH * sizeof(float));      // [T, H] normed
    Buffer g = ops.alloc(size_t(kT) * 2 * kI * sizeof(float));   // [T, 2I]
    Buffer act = ops.alloc(size_t(kT) * kI * sizeof(float));     // [T, I]
    Buffer logits = ops.alloc(size_t(kT) * kE * sizeof(float));  // [T, E]
    Buffer expert = ops.alloc(size_t(kT) * kTopK * sizeof(int32_t));
    Buffer weight = ops.alloc(size_t(kT) * kTopK * sizeof(float));

    ops.embedding({b_ids.as<int32_t>(), table_w, h.as<float>(), kT});
    ops.rmsnorm({h.as<float>(), norm, xn.as<float>(), kT, kH});
    ops.linear({xn.as<float>(), gu, g.as<float>(), kT, false});
    ops.silu_mul({g.as<float>(), act.as<float>(), kT, kI});
    ops.linear({act.as<float>(), down, h.as<float>(), kT, true});
    ops.rmsnorm({h.as<float>(), norm, xn.as<float>(), kT, kH});
    ops.linear({xn.as<float>(), router, logits.as<float>(), kT, false});
    ops.topk_router({logits.as<float>(), expert.as<int32_t>(), weight.as<float>(), kT, kE, kTopK});
    ops.synchronize();
    return Result{to_host<float>(ops, h, size_t(kT) * kH),
                  to_host<float>(ops, logits, size_t(kT) * kE),
                  to_host<float>(ops, weight, size_t(kT) * kTopK),
                  to_host<int32_t>(ops, expert, size_t(kT) * kTopK)};
  };
  const Result want = run(*cpu_);
  const Result got = run(*gpu_);
  // The CPU at bf16 precision rounds each linear's input as the GPU does: then only the order
  // of fp32 sums differs, and an input landing on the other side of a bf16 rounding boundary
  // (one bf16 ulp, 2^-9 relative, times a weight ~1/16): 1e-3 holds.
  const Result emulated = run(*make_cpu_ops(DType::kBF16));
  EXPECT_TRUE(test::all_close(got.h.data(), emulated.h.data(), got.h.size(), 1e-3f, 1e-3f,
                              "residual after the FFN vs the CPU at bf16"));
  EXPECT_TRUE(test::all_close(got.logits.data(), emulated.logits.data(), got.logits.size(), 1e-3f,
                              1e-3f, "router logits vs the CPU at bf16"));
  EXPECT_TRUE(test::all_close(got.h.data(), want.h.data(), got.h.size(), 1e-2f, 1e-2f,
                              "residual after the FFN"));
  EXPECT_TRUE(test::all_close(got.logits.data(), want.logits.data(), got.logits.size(), 1e-2f,
                              1e-2f, "router logits"));
  // Expert choice only where the CPU's k-th and (k+1)-th logits are further apart than the
  // bf16 noise; elsewhere either order is right.
  int compared = 0;
  for (int t = 0; t < kT; ++t) {
    std::vector<float> l(want.logits.begin() + t * kE, want.logits.begin() + (t + 1) * kE);
    std::sort(l.begin(), l.end(), std::greater<float>());
    if (l[kTopK - 1] - l[kTopK] < 0.05f) continue;
    ++compared;
    for (int j = 0; j < kTopK; ++j) {
      EXPECT_EQ(got.expert[t * kTopK + j], want.expert[t * kTopK + j]) << "token " << t;
      EXPECT_NEAR(got.weight[t * kTopK + j], want.weight[t * kTopK + j], 1e-2f) << "token " << t;
    }
  }
  EXPECT_GT(compared, 0) << "every token had a near-tie: pick another seed";
}

}  // namespace
}  // namespace moe::kernels
