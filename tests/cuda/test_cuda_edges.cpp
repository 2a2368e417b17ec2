// The CUDA ops at the edges of their shapes and on their guard paths, against the CPU reference
// (or, where the CPU op refuses the input, against the outcome the CUDA op documents):
//   attention  head_dim 33..64 (the kPerLane = 2 instantiation), head_dim in 129..255 and not a
//              power of two, GQA groups of 8, contexts of thousands of positions with a window
//              far shorter (and Mistral's 4096);
//   rows       gather_rows, kv_store and weighted_combine over more than 65,536 rows, where
//              the grid-stride loops take a second lap;
//   router     k = 1, expert counts that are not a multiple of 32, NaN and infinite logits;
//   linear     K not a multiple of 8 at bf16, fp32 weights under bf16 precision;
//   guards     slot < 0 and positions outside the cache (kv_store, attention), ids outside the
//              vocabulary (embedding), gather index -1.
// Tolerances are those of test_cuda_kernels.cpp and test_cuda_ops.cpp for the same ops, with the
// same reasons. Skipped where no CUDA device is present.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"
#include "tests/cuda/device_buffer.h"
#include "tests/support/random_values.h"
#include "tests/support/test_env.h"

namespace moe::kernels {
namespace {

using test::DeviceVector;

using test::random_floats;
using test::round_to_bf16;

class CudaEdges : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
      GTEST_SKIP() << "no CUDA device: GPU edge-shape tests skipped";
    CUDA_CHECK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  void sync() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  cudaStream_t stream_ = nullptr;
  std::mt19937 rng_{4321};
};

// ---- attention -------------------------------------------------------------------------------

constexpr float kAttnAtol = 1e-5f, kAttnRtol = 1e-4f;  // as AttentionMatchesCpu

struct AttnShape {
  int n_heads, n_kv_heads, head_dim;
};
struct AttnToken {
  int32_t slot, pos;
};

// Random q and a random cache of `slots` x `max_len`; the CPU op against the CUDA one (fp32 or
// bf16 cache) for the given tokens. Tokens with slot < 0 or a position outside the cache are
// not given to the CPU op (which trusts its input): the CUDA op must give them zero rows.
::testing::AssertionResult attention_case(std::mt19937& rng, cudaStream_t stream, AttnShape s,
                                          const std::vector<AttnToken>& tokens, int slots,
                                          int max_len, int window, DType cache) {
  const int T = int(tokens.size());
  const int q_dim = s.n_heads * s.head_dim, kv_dim = s.n_kv_heads * s.head_dim;
  const auto q = random_floats(rng, size_t(T) * q_dim, 2.0f);
  auto k_cache = random_floats(rng, size_t(slots) * max_len * kv_dim);
  auto v_cache = random_floats(rng, size_t(slots) * max_len * kv_dim);
  std::unique_ptr<DeviceVector<float>> kf, vf;
  std::unique_ptr<DeviceVector<uint16_t>> kb, vb;
  if (cache == DType::kBF16) {
    kb = std::make_unique<DeviceVector<uint16_t>>(round_to_bf16(k_cache));
    vb = std::make_unique<DeviceVector<uint16_t>>(round_to_bf16(v_cache));
  } else {
    kf = std::make_unique<DeviceVector<float>>(k_cache);
    vf = std::make_unique<DeviceVector<float>>(v_cache);
  }

  // The CPU op over the tokens inside the cache; zero rows for the others.
  std::vector<int32_t> slot(T), pos(T), in_slot, in_pos;
  std::vector<int> inside;
  for (int t = 0; t < T; ++t) {
    slot[t] = tokens[t].slot;
    pos[t] = tokens[t].pos;
    if (slot[t] >= 0 && slot[t] < slots && pos[t] >= 0 && pos[t] < max_len) {
      inside.push_back(t);
      in_slot.push_back(slot[t]);
      in_pos.push_back(pos[t]);
    }
  }
  std::vector<float> in_q(inside.size() * q_dim), in_want(in_q.size());
  for (size_t i = 0; i < inside.size(); ++i)
    std::copy_n(q.begin() + int64_t(inside[i]) * q_dim, q_dim, in_q.begin() + int64_t(i) * q_dim);
  AttentionParams cp;
  cp.q = in_q.data();
  cp.k_cache = k_cache.data();
  cp.v_cache = v_cache.data();
  cp.slot = in_slot.data();
  cp.pos = in_pos.data();
  cp.out = in_want.data();
  cp.T = int(inside.size());
  cp.n_heads = s.n_heads;
  cp.n_kv_heads = s.n_kv_heads;
  cp.head_dim = s.head_dim;
  cp.max_len = max_len;
  cp.sliding_window = window;
  cp.scale = 1.0f / std::sqrt(float(s.head_dim));
  if (cp.T > 0) cpu::attention(cp);
  std::vector<float> want(size_t(T) * q_dim, 0.0f);
  for (size_t i = 0; i < inside.size(); ++i)
    std::copy_n(in_want.begin() + int64_t(i) * q_dim, q_dim,
                want.begin() + int64_t(inside[i]) * q_dim);

  DeviceVector<float> dq(q);
  // NaN first, so a row the kernel did not write cannot pass as zeros.
  DeviceVector<float> dout(std::vector<float>(want.size(), std::nanf("")));
  DeviceVector<int32_t> dslot(slot), dpos(pos);
  AttentionParams gp = cp;
  gp.q = dq.get();
  gp.k_cache = kf ? static_cast<const void*>(kf->get()) : kb->get();
  gp.v_cache = vf ? static_cast<const void*>(vf->get()) : vb->get();
  gp.slot = dslot.get();
  gp.pos = dpos.get();
  gp.out = dout.get();
  gp.T = T;
  gp.cache_dtype = cache;
  cuda::attention(gp, stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto got = dout.to_host();
  const std::string what = std::string("attention ") + dtype_name(cache) + " heads=" +
                           std::to_string(s.n_heads) + "/" + std::to_string(s.n_kv_heads) +
                           " head_dim=" + std::to_string(s.head_dim) + " max_len=" +
                           std::to_string(max_len) + " window=" + std::to_string(window);
  return test::all_close(got.data(), want.data(), got.size(), kAttnAtol, kAttnRtol, what);
}

// A prefill of one sequence and decode steps of others, each token at its own slot.
std::vector<AttnToken> prefill_and_decodes(int prefill_len, std::vector<AttnToken> decodes) {
  std::vector<AttnToken> t;
  for (int i = 0; i < prefill_len; ++i) t.push_back({0, i});
  t.insert(t.end(), decodes.begin(), decodes.end());
  return t;
}

TEST_F(CudaEdges, AttentionHeadDim33To64) {
  const auto tokens = prefill_and_decodes(21, {{1, 40}, {2, 63}, {3, 0}});
  for (DType cache : {DType::kF32, DType::kBF16})
    for (int head_dim : {33, 40, 48, 62, 64})
      for (int window : {0, 5})
        EXPECT_TRUE(attention_case(rng_, stream_, {4, 2, head_dim}, tokens, 4, 64, window, cache));
}

TEST_F(CudaEdges, AttentionHeadDimAbove128NotAPowerOfTwo) {
  const auto tokens = prefill_and_decodes(17, {{1, 30}, {2, 47}});
  for (DType cache : {DType::kF32, DType::kBF16})
    for (int head_dim : {130, 160, 192, 200, 250, 254})
      for (int window : {0, 7})
        EXPECT_TRUE(attention_case(rng_, stream_, {4, 2, head_dim}, tokens, 3, 48, window, cache));
}

TEST_F(CudaEdges, AttentionGqaGroupsOf8) {
  const auto tokens = prefill_and_decodes(19, {{1, 50}, {2, 3}});
  for (DType cache : {DType::kF32, DType::kBF16})
    for (AttnShape s : {AttnShape{8, 1, 64}, AttnShape{32, 4, 128}, AttnShape{16, 2, 96}})
      for (int window : {0, 9})
        EXPECT_TRUE(attention_case(rng_, stream_, s, tokens, 3, 64, window, cache));
}

// Thousands of cached positions and windows far shorter, as Mistral's (4096): decode steps deep
// in the cache, a prefill chunk there, and the window edge itself (a token at position
// window - 1 and window sees the whole window, then one key fewer from the start).
TEST_F(CudaEdges, AttentionLongContextShortWindow) {
  constexpr int kMaxLen = 6000;
  const std::vector<AttnToken> tokens = {
      {0, 5999}, {1, 4095}, {1, 4096}, {2, 5000}, {2, 5001}, {2, 5002}, {3, 17}, {0, 2500}};
  for (DType cache : {DType::kF32, DType::kBF16})
    for (int window : {0, 64, 1000, 4096})
      EXPECT_TRUE(attention_case(rng_, stream_, {8, 2, 128}, tokens, 4, kMaxLen, window, cache));
}

// A token whose slot is negative or whose position is outside the cache gets a zero row (and
// reads nothing); the others in the batch are unaffected.
TEST_F(CudaEdges, AttentionOutsideTheCacheGivesZeroRows) {
  const std::vector<AttnToken> tokens = {{0, 5}, {-1, 3}, {1, 31}, {1, 32}, {2, -1}, {2, 9}};
  for (DType cache : {DType::kF32, DType::kBF16})
    EXPECT_TRUE(attention_case(rng_, stream_, {4, 2, 64}, tokens, 3, 32, 0, cache));
}

// ---- more than 65,536 rows ---------------------------------------------------------------------

constexpr int kManyRows = 65536 + 4467;  // past one full lap of the capped grid

TEST_F(CudaEdges, GatherRowsBeyond65536Rows) {
  constexpr int kSrcRows = 1000, kCols = 7;
  const auto src = random_floats(rng_, size_t(kSrcRows) * kCols);
  std::uniform_int_distribution<int32_t> pick(0, kSrcRows - 1);
  std::vector<int32_t> index(kManyRows);
  for (auto& i : index) i = pick(rng_);
  std::vector<float> want(size_t(kManyRows) * kCols);
  GatherRowsParams cp;
  cp.src = src.data();
  cp.index = index.data();
  cp.out = want.data();
  cp.M = kManyRows;
  cp.cols = kCols;
  cpu::gather_rows(cp);

  DeviceVector<float> dsrc(src), dout(std::vector<float>(want.size(), std::nanf("")));
  DeviceVector<int32_t> dindex(index);
  GatherRowsParams gp = cp;
  gp.src = dsrc.get();
  gp.index = dindex.get();
  gp.out = dout.get();
  cuda::gather_rows(gp, stream_);
  sync();
  const auto got = dout.to_host();
  EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), 0.0f, 0.0f,
                              "gather_rows M=" + std::to_string(kManyRows)));
}

// Index -1 gives a zero row (the CPU op trusts its indices, so the expectation is built here).
TEST_F(CudaEdges, GatherRowsIndexMinusOneGivesZeroRow) {
  constexpr int kSrcRows = 5, kCols = 300;
  const auto src = random_floats(rng_, size_t(kSrcRows) * kCols);
  const std::vector<int32_t> index = {2, -1, 4, -1, 0};
  std::vector<float> want(index.size() * kCols, 0.0f);
  for (size_t r = 0; r < index.size(); ++r)
    if (index[r] >= 0)
      std::copy_n(src.begin() + int64_t(index[r]) * kCols, kCols, want.begin() + r * kCols);
  DeviceVector<float> dsrc(src), dout(std::vector<float>(want.size(), std::nanf("")));
  DeviceVector<int32_t> dindex(index);
  GatherRowsParams gp;
  gp.src = dsrc.get();
  gp.index = dindex.get();
  gp.out = dout.get();
  gp.M = int(index.size());
  gp.cols = kCols;
  cuda::gather_rows(gp, stream_);
  sync();
  EXPECT_EQ(dout.to_host(), want);
}

TEST_F(CudaEdges, KvStoreBeyond65536Tokens) {
  constexpr int kSlots = 36, kMaxLen = 2048, kKvDim = 6;
  static_assert(kSlots * kMaxLen >= kManyRows);
  for (DType cache : {DType::kF32, DType::kBF16}) {
    const std::string what = std::string("kv_store ") + dtype_name(cache) +
                             " T=" + std::to_string(kManyRows);
    std::vector<int32_t> cells(kSlots * kMaxLen);
    std::iota(cells.begin(), cells.end(), 0);
    std::shuffle(cells.begin(), cells.end(), rng_);
    std::vector<int32_t> slot(kManyRows), pos(kManyRows);
    for (int t = 0; t < kManyRows; ++t) {
      slot[t] = cells[t] / kMaxLen;
      pos[t] = cells[t] % kMaxLen;
    }
    const auto k = random_floats(rng_, size_t(kManyRows) * kKvDim);
    const auto v = random_floats(rng_, size_t(kManyRows) * kKvDim);
    std::vector<float> k_in = k, v_in = v;  // what the cache will hold
    std::vector<float> want_k(size_t(kSlots) * kMaxLen * kKvDim, 0.0f), want_v = want_k;
    if (cache == DType::kBF16) {
      round_to_bf16(k_in);
      round_to_bf16(v_in);
    }
    KvStoreParams cp;
    cp.k = k_in.data();
    cp.v = v_in.data();
    cp.k_cache = want_k.data();
    cp.v_cache = want_v.data();
    cp.slot = slot.data();
    cp.pos = pos.data();
    cp.T = kManyRows;
    cp.kv_dim = kKvDim;
    cp.max_len = kMaxLen;
    cpu::kv_store(cp);

    const size_t cache_elems = want_k.size();
    const size_t elem_bytes = cache == DType::kBF16 ? 2 : 4;
    void *dkc = nullptr, *dvc = nullptr;
    CUDA_CHECK(cudaMalloc(&dkc, cache_elems * elem_bytes));
    CUDA_CHECK(cudaMalloc(&dvc, cache_elems * elem_bytes));
    CUDA_CHECK(cudaMemset(dkc, 0, cache_elems * elem_bytes));  // zero in f32 and bf16 alike
    CUDA_CHECK(cudaMemset(dvc, 0, cache_elems * elem_bytes));
    DeviceVector<float> dk(k), dv(v);
    DeviceVector<int32_t> dslot(slot), dpos(pos);
    KvStoreParams gp = cp;
    gp.k = dk.get();
    gp.v = dv.get();
    gp.k_cache = dkc;
    gp.v_cache = dvc;
    gp.slot = dslot.get();
    gp.pos = dpos.get();
    gp.cache_dtype = cache;
    cuda::kv_store(gp, stream_);
    sync();
    std::vector<float> got_k(cache_elems), got_v(cache_elems);
    if (cache == DType::kBF16) {
      std::vector<uint16_t> bk(cache_elems), bv(cache_elems);
      CUDA_CHECK(cudaMemcpy(bk.data(), dkc, cache_elems * 2, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(bv.data(), dvc, cache_elems * 2, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < cache_elems; ++i) {
        got_k[i] = bf16_to_f32(bk[i]);
        got_v[i] = bf16_to_f32(bv[i]);
      }
    } else {
      CUDA_CHECK(cudaMemcpy(got_k.data(), dkc, cache_elems * 4, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(got_v.data(), dvc, cache_elems * 4, cudaMemcpyDeviceToHost));
    }
    cudaFree(dkc);
    cudaFree(dvc);
    EXPECT_TRUE(test::all_close(got_k.data(), want_k.data(), cache_elems, 0.0f, 0.0f, what + " k"));
    EXPECT_TRUE(test::all_close(got_v.data(), want_v.data(), cache_elems, 0.0f, 0.0f, what + " v"));
  }
}

// Tokens with slot < 0, a negative position or one past the cache are dropped: every cache cell
// keeps its old value, and the valid tokens in the same batch are stored.
TEST_F(CudaEdges, KvStoreOutsideTheCacheIsDropped) {
  constexpr int kSlots = 2, kMaxLen = 8, kKvDim = 40;
  const std::vector<int32_t> slot = {0, -1, 1, 1, 0, -5};
  const std::vector<int32_t> pos = {3, 2, kMaxLen, 7, -1, 0};
  const int T = int(slot.size());
  const auto k = random_floats(rng_, size_t(T) * kKvDim);
  const auto v = random_floats(rng_, size_t(T) * kKvDim);
  const auto k_cache = random_floats(rng_, size_t(kSlots) * kMaxLen * kKvDim);
  const auto v_cache = random_floats(rng_, size_t(kSlots) * kMaxLen * kKvDim);
  std::vector<float> want_k = k_cache, want_v = v_cache;
  for (int t = 0; t < T; ++t) {
    if (slot[t] < 0 || pos[t] < 0 || pos[t] >= kMaxLen) continue;
    const int64_t dst = (int64_t(slot[t]) * kMaxLen + pos[t]) * kKvDim;
    std::copy_n(k.begin() + int64_t(t) * kKvDim, kKvDim, want_k.begin() + dst);
    std::copy_n(v.begin() + int64_t(t) * kKvDim, kKvDim, want_v.begin() + dst);
  }
  DeviceVector<float> dk(k), dv(v), dkc(k_cache), dvc(v_cache);
  DeviceVector<int32_t> dslot(slot), dpos(pos);
  KvStoreParams gp;
  gp.k = dk.get();
  gp.v = dv.get();
  gp.k_cache = dkc.get();
  gp.v_cache = dvc.get();
  gp.slot = dslot.get();
  gp.pos = dpos.get();
  gp.T = T;
  gp.kv_dim = kKvDim;
  gp.max_len = kMaxLen;
  gp.cache_dtype = DType::kF32;
  cuda::kv_store(gp, stream_);
  sync();
  EXPECT_EQ(dkc.to_host(), want_k);
  EXPECT_EQ(dvc.to_host(), want_v);
}

TEST_F(CudaEdges, WeightedCombineBeyond65536Rows) {
  constexpr float kCombineTol = 1e-6f;  // as WeightedCombineMatchesCpu
  constexpr int kYRows = 3000, kK = 2, kCols = 5;
  const auto y = random_floats(rng_, size_t(kYRows) * kCols);
  std::uniform_int_distribution<int32_t> pick(0, kYRows - 1);
  std::bernoulli_distribution none(0.2);
  std::vector<int32_t> index(size_t(kManyRows) * kK);
  for (auto& i : index) i = none(rng_) ? -1 : pick(rng_);
  const auto weight = random_floats(rng_, index.size(), 0.5f);
  std::vector<float> want(size_t(kManyRows) * kCols);
  WeightedCombineParams cp;
  cp.y = y.data();
  cp.index = index.data();
  cp.weight = weight.data();
  cp.out = want.data();
  cp.R = kManyRows;
  cp.k = kK;
  cp.cols = kCols;
  cpu::weighted_combine(cp);

  DeviceVector<float> dy(y), dweight(weight), dout(std::vector<float>(want.size(), std::nanf("")));
  DeviceVector<int32_t> dindex(index);
  WeightedCombineParams gp = cp;
  gp.y = dy.get();
  gp.index = dindex.get();
  gp.weight = dweight.get();
  gp.out = dout.get();
  cuda::weighted_combine(gp, stream_);
  sync();
  const auto got = dout.to_host();
  EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), kCombineTol, kCombineTol,
                              "weighted_combine R=" + std::to_string(kManyRows)));
}

// ---- embedding guard ---------------------------------------------------------------------------

// An id outside the vocabulary gives a zero row on the device (the CPU op throws instead).
TEST_F(CudaEdges, EmbeddingOutOfVocabularyGivesZeroRow) {
  constexpr int kVocab = 30, kH = 70;
  auto table = random_floats(rng_, size_t(kVocab) * kH);
  const auto bits = round_to_bf16(table);
  const std::vector<int32_t> ids = {0, kVocab, 29, -1, 5, std::numeric_limits<int32_t>::max()};
  std::vector<float> want(ids.size() * kH, 0.0f);
  for (size_t t = 0; t < ids.size(); ++t)
    if (ids[t] >= 0 && ids[t] < kVocab)
      std::copy_n(table.begin() + int64_t(ids[t]) * kH, kH, want.begin() + t * kH);
  DeviceVector<uint16_t> dtable(bits);
  DeviceVector<int32_t> dids(ids);
  DeviceVector<float> dout(std::vector<float>(want.size(), std::nanf("")));
  EmbeddingParams gp;
  gp.ids = dids.get();
  gp.table = {dtable.get(), DType::kBF16, kVocab, kH};
  gp.out = dout.get();
  gp.T = int(ids.size());
  cuda::embedding(gp, stream_);
  sync();
  EXPECT_EQ(dout.to_host(), want);
}

// ---- router --------------------------------------------------------------------------------------

// Experts and weights of the CUDA router against the CPU's; weights to 1e-6 as
// TopKRouterMatchesCpu.
::testing::AssertionResult router_matches(cudaStream_t stream, const std::vector<float>& logits,
                                          int T, int n_experts, int k) {
  std::vector<int32_t> want_e(size_t(T) * k);
  std::vector<float> want_w(want_e.size());
  TopKRouterParams cp;
  cp.logits = logits.data();
  cp.expert = want_e.data();
  cp.weight = want_w.data();
  cp.T = T;
  cp.n_experts = n_experts;
  cp.k = k;
  cpu::topk_router(cp);
  DeviceVector<float> dlogits(logits);
  DeviceVector<int32_t> de(want_e.size());
  DeviceVector<float> dw(want_w.size());
  TopKRouterParams gp = cp;
  gp.logits = dlogits.get();
  gp.expert = de.get();
  gp.weight = dw.get();
  cuda::topk_router(gp, stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  const std::string what = "topk_router experts=" + std::to_string(n_experts) +
                           " k=" + std::to_string(k) + " T=" + std::to_string(T);
  const auto got_e = de.to_host();
  if (got_e != want_e) {
    for (size_t i = 0; i < got_e.size(); ++i)
      if (got_e[i] != want_e[i])
        return ::testing::AssertionFailure() << what << ": token " << i / k << " choice " << i % k
                                             << " is expert " << got_e[i] << ", want "
                                             << want_e[i];
  }
  const auto got_w = dw.to_host();
  return test::all_close(got_w.data(), want_w.data(), got_w.size(), 1e-6f, 0.0f, what);
}

TEST_F(CudaEdges, TopKRouterK1AndExpertCountsNotMultiplesOf32) {
  for (int n_experts : {1, 2, 33, 60, 100, 255, 256})
    for (int k : {1, 2, 6})
      if (k <= n_experts)
        for (int T : {1, 5, 131}) {
          const auto logits = random_floats(rng_, size_t(T) * n_experts, 2.0f);
          EXPECT_TRUE(router_matches(stream_, logits, T, n_experts, k));
        }
}

// The outcome the CPU op defines for logits that are not finite (kernels/cpu/topk_router.cpp):
// NaN counts as -inf, +inf experts share equally, all -inf or NaN is uniform.
TEST_F(CudaEdges, TopKRouterNanAndInfiniteLogits) {
  const float nan = std::nanf(""), inf = std::numeric_limits<float>::infinity();
  for (int n_experts : {8, 60}) {
    std::vector<float> logits;
    auto row = [&](std::vector<std::pair<int, float>> set) {
      std::vector<float> r = random_floats(rng_, n_experts);
      for (auto [e, v] : set) r[e] = v;
      logits.insert(logits.end(), r.begin(), r.end());
    };
    row({{1, nan}});                          // a NaN among finite logits
    row({{0, nan}, {3, nan}, {5, 50.0f}});    // NaN beside a clear winner
    row({{2, inf}});                          // one +inf
    row({{2, inf}, {6, inf}, {4, nan}});      // two +inf and a NaN
    row({{1, -inf}, {7, -inf}});              // -inf beside finite logits
    std::vector<float> all_minus(n_experts, -inf), all_nan(n_experts, nan);
    logits.insert(logits.end(), all_minus.begin(), all_minus.end());
    logits.insert(logits.end(), all_nan.begin(), all_nan.end());
    const int T = int(logits.size()) / n_experts;
    for (int k : {1, 2, 4}) EXPECT_TRUE(router_matches(stream_, logits, T, n_experts, k));
  }
}

// ---- linear through the Ops ---------------------------------------------------------------------

template <typename T>
Buffer to_backend(Ops& ops, const std::vector<T>& h) {
  Buffer b = ops.alloc(h.size() * sizeof(T));
  ops.upload(b.data(), h.data(), h.size() * sizeof(T));
  return b;
}

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
  std::vector<float> out(y0.size());
  ops.download(out.data(), bout.data(), out.size() * sizeof(float));
  return out;
}

std::vector<float> bf16_rounded(std::vector<float> v) {
  round_to_bf16(v);
  return v;
}

// bf16 GEMMs whose rows (K) are not a multiple of 8 elements (16 bytes), so the operands are not
// aligned as tensor-core kernels prefer: cuBLAS must still give the right product. Tolerance as
// LinearMatchesCpu (test_cuda_ops.cpp), for the same reason.
TEST_F(CudaEdges, LinearKNotAMultipleOf8) {
  constexpr float kLinearAtol = 1e-4f, kLinearRtol = 1e-3f;
  auto gpu = make_cuda_ops(0, DType::kBF16);
  auto cpu = make_cpu_ops();
  for (int K : {1, 3, 13, 37, 1001}) {
    const int N = 24;
    const auto w = random_floats(rng_, size_t(N) * K, 1.0f / std::sqrt(float(K)));
    Buffer gs, cs;
    const Weight gw = gpu->upload_weight(gs, w.data(), N, K);
    const Weight cw = cpu->upload_weight(cs, bf16_rounded(w).data(), N, K);
    for (int M : {1, 7, 129}) {
      for (bool accumulate : {false, true}) {
        const std::string what = "bf16 linear M=" + std::to_string(M) + " N=" +
                                 std::to_string(N) + " K=" + std::to_string(K) +
                                 (accumulate ? " accumulate" : "");
        const auto x = random_floats(rng_, size_t(M) * K);
        const auto y0 = random_floats(rng_, size_t(M) * N);
        const auto want = run_linear(*cpu, cw, bf16_rounded(x), y0, M, accumulate);
        const auto got = run_linear(*gpu, gw, x, y0, M, accumulate);
        EXPECT_TRUE(
            test::all_close(got.data(), want.data(), got.size(), kLinearAtol, kLinearRtol, what));
      }
    }
  }
}

// An fp32 weight under bf16 precision (a caller may keep a small weight, such as the router's,
// in fp32): the fp32 GEMM path with fp32 activations, so as close to the CPU as
// LinearAtF32MatchesCpuClosely.
TEST_F(CudaEdges, LinearF32WeightAtBf16Precision) {
  auto gpu = make_cuda_ops(0, DType::kBF16);
  auto cpu = make_cpu_ops();
  for (int K : {8, 13, 1024}) {
    const int N = 60;
    const auto w = random_floats(rng_, size_t(N) * K, 1.0f / std::sqrt(float(K)));
    Buffer gs = to_backend(*gpu, w), cs;
    const Weight gw{gs.data(), DType::kF32, N, K};
    const Weight cw = cpu->upload_weight(cs, w.data(), N, K);
    for (int M : {1, 33}) {
      const auto x = random_floats(rng_, size_t(M) * K);
      const auto y0 = random_floats(rng_, size_t(M) * N);
      const auto want = run_linear(*cpu, cw, x, y0, M, false);
      const auto got = run_linear(*gpu, gw, x, y0, M, false);
      EXPECT_TRUE(test::all_close(got.data(), want.data(), got.size(), 1e-5f, 1e-5f,
                                  "f32 weight at bf16 K=" + std::to_string(K) +
                                      " M=" + std::to_string(M)));
    }
  }
}

}  // namespace
}  // namespace moe::kernels
