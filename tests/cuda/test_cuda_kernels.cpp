// Each CUDA op against its CPU reference on random inputs. Weights are rounded to bf16 once and
// the CPU op gets them widened back to fp32, so both sides see the same weights and differ only
// in the order of fp32 arithmetic. Skipped where no CUDA device is present.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/check.h"
#include "common/dtype.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/random_fill.h"
#include "tests/cuda/device_buffer.h"
#include "tests/support/random_values.h"
#include "tests/support/test_env.h"

namespace moe::kernels {
namespace {

// A device copy of a host vector, freed on scope exit (tests/cuda/device_buffer.h).
template <typename T>
using DeviceBuffer = test::DeviceVector<T>;

using test::random_floats;
using test::round_to_bf16;

// A KV cache (or any tensor) on the device as `dtype` (F32, or BF16 bits), made from `values`;
// for BF16 `values` is rounded in place, so the host keeps exactly what the device holds.
class DeviceCache {
 public:
  DeviceCache(std::vector<float>& values, DType dtype) {
    if (dtype == DType::kBF16) {
      bits_ = std::make_unique<DeviceBuffer<uint16_t>>(round_to_bf16(values));
    } else {
      f32_ = std::make_unique<DeviceBuffer<float>>(values);
    }
  }
  void* get() const { return f32_ ? static_cast<void*>(f32_->get()) : bits_->get(); }
  // The device's contents widened to fp32.
  std::vector<float> to_host() const {
    if (f32_) return f32_->to_host();
    const auto b = bits_->to_host();
    std::vector<float> v(b.size());
    for (size_t i = 0; i < b.size(); ++i) v[i] = bf16_to_f32(b[i]);
    return v;
  }

 private:
  std::unique_ptr<DeviceBuffer<float>> f32_;
  std::unique_ptr<DeviceBuffer<uint16_t>> bits_;
};

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

// Rotation by each token's position, q heads and k heads. The device's cosf/sinf are within
// 2 ulp where the host's libm is within 1, so a rotated value may differ by a few ulp of the
// pair's magnitude; near-zero results (cancellation) need the small absolute term.
TEST_F(CudaKernels, RopeMatchesCpu) {
  constexpr float kRopeAtol = 1e-5f, kRopeRtol = 1e-4f;
  struct Shape {
    int n_heads, n_kv_heads, head_dim;
  };
  for (Shape s : {Shape{4, 2, 16}, Shape{4, 1, 32}, Shape{8, 2, 128}, Shape{2, 2, 256}}) {
    for (int T : {1, 7, 64}) {
      const std::string what = "rope heads=" + std::to_string(s.n_heads) + "/" +
                               std::to_string(s.n_kv_heads) + " head_dim=" +
                               std::to_string(s.head_dim) + " T=" + std::to_string(T);
      SCOPED_TRACE(what);
      // inv_freq as the model forms it (runtime/model.cpp), theta = 10000.
      const int half = s.head_dim / 2;
      std::vector<float> inv_freq(half);
      for (int i = 0; i < half; ++i)
        inv_freq[i] = 1.0f / std::pow(10000.0f, float(2 * i) / float(s.head_dim));
      std::uniform_int_distribution<int32_t> pick(0, 8191);
      std::vector<int32_t> pos(T);
      for (auto& x : pos) x = pick(rng_);
      pos[0] = 0;                       // the identity rotation
      if (T > 1) pos[T - 1] = 131071;  // a long position: large angles, full range reduction
      const auto q = random_floats(rng_, size_t(T) * s.n_heads * s.head_dim);
      const auto k = random_floats(rng_, size_t(T) * s.n_kv_heads * s.head_dim);

      std::vector<float> want_q = q, want_k = k;
      RopeParams cp;
      cp.q = want_q.data();
      cp.k = want_k.data();
      cp.pos = pos.data();
      cp.inv_freq = inv_freq.data();
      cp.T = T;
      cp.n_heads = s.n_heads;
      cp.n_kv_heads = s.n_kv_heads;
      cp.head_dim = s.head_dim;
      cpu::rope(cp);

      DeviceBuffer<float> dq(q), dk(k), dinv(inv_freq);
      DeviceBuffer<int32_t> dpos(pos);
      RopeParams gp = cp;
      gp.q = dq.get();
      gp.k = dk.get();
      gp.pos = dpos.get();
      gp.inv_freq = dinv.get();
      cuda::rope(gp, stream_);
      sync();
      const auto got_q = dq.to_host(), got_k = dk.to_host();
      EXPECT_TRUE(test::all_close(got_q.data(), want_q.data(), got_q.size(), kRopeAtol, kRopeRtol,
                                  what + " q"));
      EXPECT_TRUE(test::all_close(got_k.data(), want_k.data(), got_k.size(), kRopeAtol, kRopeRtol,
                                  what + " k"));
    }
  }
}

// Rows land at (slot, position); every other cache cell keeps its old contents. A copy: exact.
// A bf16 cache holds each value rounded to nearest even: the CPU op is given the rounded k, v
// (and the rounded old cache), so the device's cache widened back must equal it exactly.
TEST_F(CudaKernels, KvStoreMatchesCpu) {
  constexpr int kSlots = 3, kMaxLen = 16;
  for (DType cache : {DType::kF32, DType::kBF16})
  for (int kv_dim : {32, 256}) {
    for (int T : {1, 7, 40}) {
      const std::string what = std::string("kv_store ") + dtype_name(cache) + " kv_dim=" +
                               std::to_string(kv_dim) + " T=" + std::to_string(T);
      SCOPED_TRACE(what);
      // T distinct (slot, position) cells, in no particular order.
      std::vector<int32_t> cells(kSlots * kMaxLen);
      std::iota(cells.begin(), cells.end(), 0);
      std::shuffle(cells.begin(), cells.end(), rng_);
      std::vector<int32_t> slot(T), pos(T);
      for (int t = 0; t < T; ++t) {
        slot[t] = cells[t] / kMaxLen;
        pos[t] = cells[t] % kMaxLen;
      }
      const auto k = random_floats(rng_, size_t(T) * kv_dim);
      const auto v = random_floats(rng_, size_t(T) * kv_dim);
      auto k_cache = random_floats(rng_, size_t(kSlots) * kMaxLen * kv_dim);
      auto v_cache = random_floats(rng_, size_t(kSlots) * kMaxLen * kv_dim);
      DeviceCache dkc(k_cache, cache), dvc(v_cache, cache);  // rounds k_cache, v_cache for bf16
      std::vector<float> k_in = k, v_in = v;  // what the cache will hold of k and v
      if (cache == DType::kBF16) {
        round_to_bf16(k_in);
        round_to_bf16(v_in);
      }

      std::vector<float> want_k = k_cache, want_v = v_cache;
      KvStoreParams cp;
      cp.k = k_in.data();
      cp.v = v_in.data();
      cp.k_cache = want_k.data();
      cp.v_cache = want_v.data();
      cp.slot = slot.data();
      cp.pos = pos.data();
      cp.T = T;
      cp.kv_dim = kv_dim;
      cp.max_len = kMaxLen;
      cpu::kv_store(cp);

      DeviceBuffer<float> dk(k), dv(v);
      DeviceBuffer<int32_t> dslot(slot), dpos(pos);
      KvStoreParams gp = cp;
      gp.k = dk.get();  // unrounded: the device rounds on store
      gp.v = dv.get();
      gp.k_cache = dkc.get();
      gp.v_cache = dvc.get();
      gp.slot = dslot.get();
      gp.pos = dpos.get();
      gp.cache_dtype = cache;
      cuda::kv_store(gp, stream_);
      sync();
      const auto got_k = dkc.to_host(), got_v = dvc.to_host();
      EXPECT_TRUE(test::all_close(got_k.data(), want_k.data(), got_k.size(), 0.0f, 0.0f,
                                  what + " k_cache"));
      EXPECT_TRUE(test::all_close(got_v.data(), want_v.data(), got_v.size(), 0.0f, 0.0f,
                                  what + " v_cache"));
    }
  }
}

// One sequence's tokens in a batch: positions start .. start + len - 1 of cache slot `slot`.
// start 0 and len > 1 is a prefill, start > 0 and len 1 a decode step over a cache filled by
// earlier steps, start > 0 and len > 1 a chunk of a prefill.
struct AttnSeq {
  int slot, start, len;
};

// Each token over its own slot's cache, for prefill, decode and mixed batches, with and without
// a sliding window, MHA and GQA. The whole cache is random, so a kernel that read a position
// after the token's own (or before its window, or another slot's) would disagree. Tolerance:
// the device sums each dot product as a tree over lanes, splits the keys over warps with an
// online softmax (rescaled partial sums) and its expf is within 2 ulp where the CPU sums in
// order with an exact max first, so results agree to a few ulp of |v|, not bitwise.
TEST_F(CudaKernels, AttentionMatchesCpu) {
  constexpr float kAttnAtol = 1e-5f, kAttnRtol = 1e-4f;
  constexpr int kSlots = 4, kMaxLen = 80;
  struct Shape {
    int n_heads, n_kv_heads, head_dim;
  };
  struct Batch {
    const char* name;
    std::vector<AttnSeq> seqs;
    bool shuffle;  // tokens of different sequences interleaved in the batch
  };
  const std::vector<Batch> batches = {
      {"prefill", {{0, 0, 1}, {1, 0, 13}, {2, 0, 37}}, false},
      {"decode", {{0, 40, 1}, {1, 1, 1}, {2, kMaxLen - 1, 1}, {3, 0, 1}}, false},
      {"mixed", {{2, 0, 20}, {0, 50, 1}, {3, 10, 9}, {1, 70, 1}}, true},
  };
  for (DType cache : {DType::kF32, DType::kBF16})
  for (Shape s : {Shape{4, 2, 16}, Shape{4, 1, 32}, Shape{4, 4, 128}, Shape{8, 2, 128},
                  Shape{4, 2, 96}, Shape{2, 1, 256}}) {
    for (int window : {0, 1, 8}) {
      for (const Batch& b : batches) {
        const std::string what =
            std::string("attention ") + dtype_name(cache) + " " + b.name + " heads=" +
            std::to_string(s.n_heads) + "/" +
            std::to_string(s.n_kv_heads) + " head_dim=" + std::to_string(s.head_dim) +
            " window=" + std::to_string(window);
        SCOPED_TRACE(what);
        std::vector<int32_t> slot, pos;
        for (const AttnSeq& q : b.seqs) {
          for (int i = 0; i < q.len; ++i) {
            slot.push_back(q.slot);
            pos.push_back(q.start + i);
          }
        }
        const int T = int(slot.size());
        if (b.shuffle) {
          std::vector<int> order(T);
          std::iota(order.begin(), order.end(), 0);
          std::shuffle(order.begin(), order.end(), rng_);
          std::vector<int32_t> s2(T), p2(T);
          for (int t = 0; t < T; ++t) {
            s2[t] = slot[order[t]];
            p2[t] = pos[order[t]];
          }
          slot.swap(s2);
          pos.swap(p2);
        }
        const int q_dim = s.n_heads * s.head_dim, kv_dim = s.n_kv_heads * s.head_dim;
        // q scaled up so the softmax is peaked enough for the max subtraction to matter.
        const auto q = random_floats(rng_, size_t(T) * q_dim, 2.0f);
        auto k_cache = random_floats(rng_, size_t(kSlots) * kMaxLen * kv_dim);
        auto v_cache = random_floats(rng_, size_t(kSlots) * kMaxLen * kv_dim);
        // A bf16 cache: the CPU reads its fp32 widening (rounded in place here), the device
        // widens each element on load, so the arithmetic compared is the same.
        DeviceCache dkc(k_cache, cache), dvc(v_cache, cache);

        std::vector<float> want(size_t(T) * q_dim);
        AttentionParams cp;
        cp.q = q.data();
        cp.k_cache = k_cache.data();
        cp.v_cache = v_cache.data();
        cp.slot = slot.data();
        cp.pos = pos.data();
        cp.out = want.data();
        cp.T = T;
        cp.n_heads = s.n_heads;
        cp.n_kv_heads = s.n_kv_heads;
        cp.head_dim = s.head_dim;
        cp.max_len = kMaxLen;
        cp.sliding_window = window;
        cp.scale = 1.0f / std::sqrt(float(s.head_dim));
        cpu::attention(cp);

        DeviceBuffer<float> dq(q), dout(want.size());
        DeviceBuffer<int32_t> dslot(slot), dpos(pos);
        AttentionParams gp = cp;
        gp.q = dq.get();
        gp.k_cache = dkc.get();
        gp.v_cache = dvc.get();
        gp.slot = dslot.get();
        gp.pos = dpos.get();
        gp.out = dout.get();
        gp.cache_dtype = cache;
        cuda::attention(gp, stream_);
        sync();
        const auto got = dout.to_host();
        EXPECT_TRUE(
            test::all_close(got.data(), want.data(), got.size(), kAttnAtol, kAttnRtol, what));
      }
    }
  }
}

// A copy of rows, repeats allowed: exact.
TEST_F(CudaKernels, GatherRowsMatchesCpu) {
  constexpr int kSrcRows = 50;
  for (int cols : {1, 96, 4096}) {
    for (int M : {1, 7, 128}) {
      const std::string what = "gather_rows cols=" + std::to_string(cols) +
                               " M=" + std::to_string(M);
      SCOPED_TRACE(what);
      const auto src = random_floats(rng_, size_t(kSrcRows) * cols);
      std::uniform_int_distribution<int32_t> pick(0, kSrcRows - 1);
      std::vector<int32_t> index(M);
      for (auto& i : index) i = pick(rng_);
      index[0] = kSrcRows - 1;  // the last row too

      std::vector<float> want(size_t(M) * cols);
      GatherRowsParams cp;
      cp.src = src.data();
      cp.index = index.data();
      cp.out = want.data();
      cp.M = M;
      cp.cols = cols;
      cpu::gather_rows(cp);

      DeviceBuffer<float> dsrc(src), dout(want.size());
      DeviceBuffer<int32_t> dindex(index);
      GatherRowsParams gp = cp;
      gp.src = dsrc.get();
      gp.index = dindex.get();
      gp.out = dout.get();
      cuda::gather_rows(gp, stream_);
      sync();
      const auto got = dout.to_host();
      EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), 0.0f, 0.0f, what));
    }
  }
}

// Index -1 skipped, contributions summed in ascending s on both sides. The kernel keeps the CPU
// op's separate multiply and add roundings, so the results should be identical; the 1e-6 leaves
// room for a host build that contracts to FMA.
TEST_F(CudaKernels, WeightedCombineMatchesCpu) {
  constexpr float kCombineTol = 1e-6f;
  constexpr int kYRows = 64;
  for (int cols : {96, 4096}) {
    for (int k : {1, 2, 8}) {
      for (int R : {1, 7, 128}) {
        const std::string what = "weighted_combine cols=" + std::to_string(cols) +
                                 " k=" + std::to_string(k) + " R=" + std::to_string(R);
        SCOPED_TRACE(what);
        const auto y = random_floats(rng_, size_t(kYRows) * cols);
        std::uniform_int_distribution<int32_t> pick(0, kYRows - 1);
        std::bernoulli_distribution none(0.25);  // a quarter of the slots empty
        std::vector<int32_t> index(size_t(R) * k);
        for (auto& i : index) i = none(rng_) ? -1 : pick(rng_);
        std::fill(index.begin(), index.begin() + k, -1);  // a row no slot contributes to: zeros
        if (R > 1) index[k] = kYRows - 1;                  // the last row of y too
        std::vector<float> weight = random_floats(rng_, size_t(R) * k, 0.5f);

        std::vector<float> want(size_t(R) * cols);
        WeightedCombineParams cp;
        cp.y = y.data();
        cp.index = index.data();
        cp.weight = weight.data();
        cp.out = want.data();
        cp.R = R;
        cp.k = k;
        cp.cols = cols;
        cpu::weighted_combine(cp);

        DeviceBuffer<float> dy(y), dweight(weight);
        DeviceBuffer<int32_t> dindex(index);
        // Filled with NaN so a row the kernel forgot to write cannot pass as zeros.
        DeviceBuffer<float> dout(
            std::vector<float>(want.size(), std::numeric_limits<float>::quiet_NaN()));
        WeightedCombineParams gp = cp;
        gp.y = dy.get();
        gp.index = dindex.get();
        gp.weight = dweight.get();
        gp.out = dout.get();
        cuda::weighted_combine(gp, stream_);
        sync();
        const auto got = dout.to_host();
        EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), kCombineTol, kCombineTol,
                                    what));
      }
    }
  }
}

// One correctly rounded fp32 add per element on both sides (1e-6 as weighted_combine), also
// with x and y the same buffer.
TEST_F(CudaKernels, AddMatchesCpu) {
  constexpr float kAddTol = 1e-6f;
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(1 << 20) + 3}) {
    for (bool aliased : {false, true}) {
      const std::string what = "add n=" + std::to_string(n) + (aliased ? " x += x" : "");
      SCOPED_TRACE(what);
      const auto x = random_floats(rng_, size_t(n));
      const auto y = random_floats(rng_, size_t(n));
      std::vector<float> want = x;
      AddParams cp;
      cp.x = want.data();
      cp.y = aliased ? want.data() : y.data();
      cp.n = n;
      cpu::add(cp);

      DeviceBuffer<float> dx(x), dy(y);
      AddParams gp = cp;
      gp.x = dx.get();
      gp.y = aliased ? dx.get() : dy.get();
      cuda::add(gp, stream_);
      sync();
      const auto got = dx.to_host();
      EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), kAddTol, kAddTol, what));
    }
  }
}

// Round to nearest even, bit for bit against the host's f32_to_bf16 (common/dtype.h), on random
// values and on the cases rounding gets wrong: exact ties to even (both directions), overflow to
// infinity, subnormals, signed zeros, infinities. NaN need only stay NaN (payloads may differ).
TEST_F(CudaKernels, CastF32ToBf16MatchesHost) {
  auto from_bits = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(1 << 20) + 3}) {
    const std::string what = "cast_f32_to_bf16 n=" + std::to_string(n);
    SCOPED_TRACE(what);
    auto in = random_floats(rng_, size_t(n), 100.0f);
    const std::vector<float> special = {
        from_bits(0x3f808000u),  // 1 + 2^-8: a tie, rounds down to the even 1.0
        from_bits(0x3f818000u),  // a tie, rounds up to the even 0x3f82
        from_bits(0xbf818000u),  // the same, negative
        from_bits(0x3f80ffffu),  // just below a step up
        from_bits(0x7f7fffffu),  // FLT_MAX: rounds to infinity
        from_bits(0x00000001u),  // smallest subnormal: to zero
        from_bits(0x00018000u),  // subnormal tie: rounds up to the even 0x0002
        0.0f, -0.0f, std::numeric_limits<float>::infinity(),
        -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
        from_bits(0x7fa12345u),   // a signalling NaN with a payload
        from_bits(0xffc00001u)};  // a negative quiet NaN with a payload
    for (size_t i = 0; i < special.size() && i < in.size(); ++i) in[i] = special[i];

    DeviceBuffer<float> din(in);
    DeviceBuffer<uint16_t> dout(in.size());
    cuda::cast_f32_to_bf16(din.get(), dout.get(), n, stream_);
    sync();
    const auto got = dout.to_host();
    int bad = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      // Bit for bit, NaNs too: the GPU's cvt.rn.bf16.f32 gives the canonical 0x7fff for any NaN,
      // and the host's conversion (what the CPU backend stores) must give the same.
      const uint16_t want = f32_to_bf16(in[i]);
      const bool ok = got[i] == want;
      if (!ok && ++bad <= 10)
        ADD_FAILURE() << what << ": [" << i << "] " << in[i] << " gave 0x" << std::hex << got[i]
                      << ", want 0x" << want << std::dec;
    }
    EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << in.size() << " differ";
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

  RopeParams ro;
  ro.n_heads = 4;
  ro.n_kv_heads = 2;
  ro.head_dim = 64;
  EXPECT_NO_THROW(cuda::rope(ro, stream_));
  ro.head_dim = 63;  // rotate-half needs pairs
  EXPECT_ANY_THROW(cuda::rope(ro, stream_));
  KvStoreParams kv;
  kv.kv_dim = 64;
  kv.max_len = 16;
  EXPECT_NO_THROW(cuda::kv_store(kv, stream_));
  AttentionParams ap;
  ap.n_heads = 4;
  ap.n_kv_heads = 2;
  ap.head_dim = 64;
  ap.max_len = 16;
  EXPECT_NO_THROW(cuda::attention(ap, stream_));
  ap.head_dim = 512;  // above the kernel's 256
  EXPECT_ANY_THROW(cuda::attention(ap, stream_));
  ap.head_dim = 64;
  ap.n_kv_heads = 3;  // 4 query heads do not split over 3 kv heads
  EXPECT_ANY_THROW(cuda::attention(ap, stream_));
  GatherRowsParams gr;
  gr.cols = 64;
  EXPECT_NO_THROW(cuda::gather_rows(gr, stream_));
  WeightedCombineParams wc;
  wc.k = 2;
  wc.cols = 64;
  EXPECT_NO_THROW(cuda::weighted_combine(wc, stream_));
  EXPECT_NO_THROW(cuda::add(AddParams{}, stream_));
  EXPECT_NO_THROW(cuda::cast_f32_to_bf16(nullptr, nullptr, 0, stream_));
  sync();
}

// fp32 weights (precision f32) in the ops that read weights directly: a copy and the same
// arithmetic as with bf16 weights.
TEST_F(CudaKernels, EmbeddingAndRmsNormTakeF32Weights) {
  constexpr int kVocab = 50, kH = 200, kT = 9;
  const auto table = random_floats(rng_, size_t(kVocab) * kH);
  auto w = random_floats(rng_, kH, 0.2f);
  for (auto& x : w) x += 1.0f;
  std::vector<int32_t> ids(kT);
  std::uniform_int_distribution<int32_t> pick(0, kVocab - 1);
  for (auto& id : ids) id = pick(rng_);

  std::vector<float> want_e(size_t(kT) * kH), want_n(size_t(kT) * kH);
  cpu::embedding({ids.data(), {table.data(), DType::kF32, kVocab, kH}, want_e.data(), kT});
  cpu::rmsnorm({want_e.data(), {w.data(), DType::kF32, 1, kH}, want_n.data(), kT, kH, 1e-5f});

  DeviceBuffer<float> dtable(table), dw(w), de(want_e.size()), dn(want_n.size());
  DeviceBuffer<int32_t> dids(ids);
  cuda::embedding({dids.get(), {dtable.get(), DType::kF32, kVocab, kH}, de.get(), kT}, stream_);
  cuda::rmsnorm({de.get(), {dw.get(), DType::kF32, 1, kH}, dn.get(), kT, kH, 1e-5f}, stream_);
  sync();
  const auto got_e = de.to_host(), got_n = dn.to_host();
  EXPECT_TRUE(test::all_close(got_e.data(), want_e.data(), got_e.size(), 0.0f, 0.0f,
                              "embedding, fp32 table"));
  EXPECT_TRUE(test::all_close(got_n.data(), want_n.data(), got_n.size(), 1e-5f, 1e-5f,
                              "rmsnorm, fp32 weight"));
  // Only F32 and BF16 are storage dtypes on the device.
  EXPECT_ANY_THROW(cuda::embedding({dids.get(), {dtable.get(), DType::kF16, kVocab, kH}, de.get(),
                                    kT}, stream_));
}

// Synthetic weights made on the device are the host's formula bit for bit, in both dtypes, over
// more elements than the grid covers in one pass (the grid-stride loop).
TEST_F(CudaKernels, RandomFillMatchesHost) {
  const int64_t n = (int64_t(1) << 24) + 12345;  // > 65536 blocks x 256 threads
  const uint64_t seed = 0x1234abcdull;
  const float scale = 0.0346f, offset = 0.25f;
  DeviceBuffer<float> f(size_t(n), true);
  DeviceBuffer<uint16_t> b(size_t(n), true);
  cuda::random_fill(f.get(), DType::kF32, n, seed, scale, offset, stream_);
  cuda::random_fill(b.get(), DType::kBF16, n, seed, scale, offset, stream_);
  sync();
  const auto got_f = f.to_host();
  const auto got_b = b.to_host();
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float want = random_value(seed, uint64_t(i), scale, offset);
    if (got_f[size_t(i)] != want || got_b[size_t(i)] != f32_to_bf16(want)) {
      if (++bad <= 10)
        ADD_FAILURE() << "element " << i << ": f32 " << got_f[size_t(i)] << " bf16 bits "
                      << got_b[size_t(i)] << ", want " << want;
    }
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace
}  // namespace moe::kernels
