// Each CUDA op against its CPU reference on random inputs. Weights are rounded to bf16 once and
// the CPU op gets them widened back to fp32, so both sides see the same weights and differ only
// in the order of fp32 arithmetic. Skipped where no CUDA device is present.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/check.h"
#include "common/dtype.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "tests/support/test_env.h"

namespace moe::kernels {
namespace {

// A device copy of a host vector, freed on scope exit.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& h) : DeviceBuffer(h.size()) {
    CUDA_CHECK(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  std::vector<T> to_host() const {
    std::vector<T> h(n_);
    CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

std::vector<float> random_floats(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Rounds `w` to bf16: the bf16 bits for the device and, in place, their fp32 widening.
std::vector<uint16_t> round_to_bf16(std::vector<float>& w) {
  std::vector<uint16_t> b(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    b[i] = f32_to_bf16(w[i]);
    w[i] = bf16_to_f32(b[i]);
  }
  return b;
}

constexpr float kAtol = 1e-5f, kRtol = 1e-5f;

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
      GTEST_SKIP() << "no CUDA device: GPU kernel tests skipped";
    CUDA_CHECK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  void sync() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  cudaStream_t stream_ = nullptr;
  std::mt19937 rng_{1234};
};

TEST_F(CudaKernels, RmsNormMatchesCpu) {
  for (int hidden : {64, 96, 4096}) {
    for (int T : {1, 7, 128}) {
      for (bool in_place : {false, true}) {
        const std::string what = "rmsnorm hidden=" + std::to_string(hidden) +
                                 " T=" + std::to_string(T) + (in_place ? " in place" : "");
        SCOPED_TRACE(what);
        auto x = random_floats(rng_, size_t(T) * hidden);
        auto w = random_floats(rng_, hidden, 0.5f);
        for (auto& v : w) v += 1.0f;
        const auto w_bf16 = round_to_bf16(w);

        std::vector<float> want(x.size());
        RmsNormParams cp;
        cp.x = x.data();
        cp.weight = {w.data(), DType::kF32, 1, hidden};
        cp.out = want.data();
        cp.T = T;
        cp.hidden = hidden;
        cpu::rmsnorm(cp);

        DeviceBuffer<float> dx(x);
        DeviceBuffer<uint16_t> dw(w_bf16);
        DeviceBuffer<float> dout(x.size());
        RmsNormParams gp = cp;
        gp.x = dx.get();
        gp.weight = {dw.get(), DType::kBF16, 1, hidden};
        gp.out = in_place ? dx.get() : dout.get();
        cuda::rmsnorm(gp, stream_);
        sync();
        const auto got = in_place ? dx.to_host() : dout.to_host();
        EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), kAtol, kRtol, what));
      }
    }
  }
}

TEST_F(CudaKernels, SiluMulMatchesCpu) {
  for (int I : {64, 96, 4096}) {
    for (int M : {1, 7, 128}) {
      const std::string what = "silu_mul I=" + std::to_string(I) + " M=" + std::to_string(M);
      SCOPED_TRACE(what);
      const auto gate_up = random_floats(rng_, size_t(M) * 2 * I, 2.0f);
      std::vector<float> want(size_t(M) * I);
      SiluMulParams cp;
      cp.gate_up = gate_up.data();
      cp.out = want.data();
      cp.M = M;
      cp.I = I;
      cpu::silu_mul(cp);

      DeviceBuffer<float> dgu(gate_up);
      DeviceBuffer<float> dout(want.size());
      SiluMulParams gp = cp;
      gp.gate_up = dgu.get();
      gp.out = dout.get();
      cuda::silu_mul(gp, stream_);
      sync();
      const auto got = dout.to_host();
      EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), kAtol, kRtol, what));
    }
  }
}

TEST_F(CudaKernels, EmbeddingMatchesCpu) {
  constexpr int kVocab = 1000;
  for (int hidden : {64, 96, 4096}) {
    for (int T : {1, 7, 128}) {
      const std::string what = "embedding hidden=" + std::to_string(hidden) +
                               " T=" + std::to_string(T);
      SCOPED_TRACE(what);
      auto table = random_floats(rng_, size_t(kVocab) * hidden);
      const auto table_bf16 = round_to_bf16(table);
      std::uniform_int_distribution<int32_t> pick(0, kVocab - 1);
      std::vector<int32_t> ids(T);
      for (auto& id : ids) id = pick(rng_);
      ids[0] = kVocab - 1;  // the last row too

      std::vector<float> want(size_t(T) * hidden);
      EmbeddingParams cp;
      cp.ids = ids.data();
      cp.table = {table.data(), DType::kF32, kVocab, hidden};
      cp.out = want.data();
      cp.T = T;
      cpu::embedding(cp);

      DeviceBuffer<int32_t> dids(ids);
      DeviceBuffer<uint16_t> dtable(table_bf16);
      DeviceBuffer<float> dout(want.size());
      EmbeddingParams gp = cp;
      gp.ids = dids.get();
      gp.table = {dtable.get(), DType::kBF16, kVocab, hidden};
      gp.out = dout.get();
      cuda::embedding(gp, stream_);
      sync();
      const auto got = dout.to_host();
      // bf16 -> fp32 is exact: the rows must be identical.
      EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), 0.0f, 0.0f, what));
    }
  }
}

TEST_F(CudaKernels, TopKRouterMatchesCpu) {
  struct Shape {
    int n_experts, k;
  };
  for (Shape s : {Shape{8, 2}, Shape{16, 4}, Shape{256, 8}}) {
    for (int T : {1, 7, 128}) {
      const std::string what = "topk_router experts=" + std::to_string(s.n_experts) +
                               " k=" + std::to_string(s.k) + " T=" + std::to_string(T);
      SCOPED_TRACE(what);
      auto logits = random_floats(rng_, size_t(T) * s.n_experts, 2.0f);
      // One token with tied logits: the lower expert ids must win.
      for (int e = 0; e < s.n_experts; ++e) logits[e] = float(e % 3);

      std::vector<int32_t> want_e(size_t(T) * s.k);
      std::vector<float> want_w(want_e.size());
      TopKRouterParams cp;
      cp.logits = logits.data();
      cp.expert = want_e.data();
      cp.weight = want_w.data();
      cp.T = T;
      cp.n_experts = s.n_experts;
      cp.k = s.k;
      cpu::topk_router(cp);

      DeviceBuffer<float> dlogits(logits);
      DeviceBuffer<int32_t> de(want_e.size());
      DeviceBuffer<float> dw(want_w.size());
      TopKRouterParams gp = cp;
      gp.logits = dlogits.get();
      gp.expert = de.get();
      gp.weight = dw.get();
      cuda::topk_router(gp, stream_);
      sync();
      EXPECT_EQ(de.to_host(), want_e);
      const auto got_w = dw.to_host();
      EXPECT_TRUE(test::all_close(got_w.data(), want_w.data(), got_w.size(), 1e-6f, 0.0f, what));
    }
  }
}

TEST_F(CudaKernels, EmptyBatchIsANoOp) {
  RmsNormParams rp;
  rp.weight.dtype = DType::kBF16;
  rp.weight.rows = 1;
  rp.weight.cols = rp.hidden = 64;
  EXPECT_NO_THROW(cuda::rmsnorm(rp, stream_));
  SiluMulParams sp;
  sp.I = 64;
  EXPECT_NO_THROW(cuda::silu_mul(sp, stream_));
  TopKRouterParams tp;
  tp.n_experts = 8;
  tp.k = 2;
  EXPECT_NO_THROW(cuda::topk_router(tp, stream_));
  tp.k = kMaxTopK + 1;
  EXPECT_ANY_THROW(cuda::topk_router(tp, stream_));
  sync();
}

}  // namespace
}  // namespace moe::kernels
