// Synthetic weights (kernels/random_fill.h, Ops::random_weight, ModelWeights::synthesize) and
// the CPU backend's bf16 precision, which reproduces the GPU's roundings.
#include <cmath>
#include <map>
#include <numeric>

#include "common/dtype.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/random_fill.h"
#include "runtime/weights.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

using kernels::random_value;

TEST(RandomFill, UniformWithTheAskedScaleAndOffset) {
  const int n = 200000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    const float v = random_value(12345, uint64_t(i), 0.5f, 2.0f);
    ASSERT_GE(v, 1.5f);
    ASSERT_LT(v, 2.5f);
    sum += v;
    sq += double(v - 2.0f) * (v - 2.0f);
  }
  // Mean 2 and standard deviation 0.5 / sqrt(3): 200k samples put both within 1%.
  EXPECT_NEAR(sum / n, 2.0, 0.01);
  EXPECT_NEAR(std::sqrt(sq / n), 0.5 / std::sqrt(3.0), 0.003);
}

TEST(RandomFill, DeterministicPerSeedAndIndex) {
  EXPECT_EQ(random_value(7, 99, 1.0f, 0.0f), random_value(7, 99, 1.0f, 0.0f));
  int same_seed_neighbours = 0, other_seed = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    same_seed_neighbours += random_value(7, i, 1, 0) == random_value(7, i + 1, 1, 0);
    other_seed += random_value(7, i, 1, 0) == random_value(8, i, 1, 0);
  }
  EXPECT_LE(same_seed_neighbours, 1);
  EXPECT_LE(other_seed, 1);
}

TEST(RandomFill, CpuRandomWeightIsTheFormula) {
  for (DType prec : {DType::kF32, DType::kBF16}) {
    auto ops = kernels::make_cpu_ops(prec);
    kernels::Buffer b;
    const kernels::Weight w = ops->random_weight(b, 3, 5, 42, 0.1f, 0.0f);
    ASSERT_EQ(w.rows, 3);
    ASSERT_EQ(w.cols, 5);
    ASSERT_EQ(w.dtype, prec) << "weights are stored at the precision";
    for (int i = 0; i < 15; ++i) {
      const float want = random_value(42, uint64_t(i), 0.1f, 0.0f);
      const float got = prec == DType::kBF16 ? bf16_to_f32(static_cast<const uint16_t*>(w.data)[i])
                                             : static_cast<const float*>(w.data)[i];
      EXPECT_EQ(got, prec == DType::kBF16 ? bf16_to_f32(f32_to_bf16(want)) : want) << i;
    }
  }
}

runtime::ModelConfig tiny_config() {
  runtime::ModelConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.max_position_embeddings = 64;
  return c;
}

std::vector<float> values(const kernels::Weight& w) {
  const auto* p = static_cast<const float*>(w.data);
  return std::vector<float>(p, p + w.rows * w.cols);
}

TEST(Synthesize, AnExpertIsTheSameWhicheverRankHoldsIt) {
  const auto cfg = tiny_config();
  auto ops = kernels::make_cpu_ops();
  using runtime::Placement;
  const auto one = Placement::make(Placement::Kind::kContiguous, 2, 4, 1);
  const auto two = Placement::make(Placement::Kind::kRoundRobin, 2, 4, 2);
  const auto all = runtime::ModelWeights::synthesize(cfg, one, 0, *ops, 5);
  for (int rank = 0; rank < 2; ++rank) {
    const auto part = runtime::ModelWeights::synthesize(cfg, two, rank, *ops, 5);
    EXPECT_EQ(values(part.embed), values(all.embed));
    EXPECT_EQ(values(part.lm_head), values(all.lm_head));
    for (int l = 0; l < 2; ++l) {
      EXPECT_EQ(values(part.layers[l].wq), values(all.layers[l].wq));
      EXPECT_EQ(values(part.layers[l].gate), values(all.layers[l].gate));
      for (size_t i = 0; i < part.layers[l].local_experts.size(); ++i) {
        const int e = part.layers[l].local_experts[i];  // global id; index e in the 1-rank run
        EXPECT_EQ(values(part.layers[l].w13[i]), values(all.layers[l].w13[size_t(e)]));
        EXPECT_EQ(values(part.layers[l].w2[i]), values(all.layers[l].w2[size_t(e)]));
      }
    }
  }
  // Different tensors differ, norms are ones.
  EXPECT_NE(values(all.layers[0].wq), values(all.layers[1].wq));
  EXPECT_NE(values(all.layers[0].w2[0]), values(all.layers[0].w2[1]));
  for (float v : values(all.layers[1].moe_norm)) EXPECT_EQ(v, 1.0f);
  // A different seed, different weights.
  const auto other = runtime::ModelWeights::synthesize(cfg, one, 0, *ops, 6);
  EXPECT_NE(values(other.embed), values(all.embed));
}

TEST(Synthesize, FootprintCountsEveryByteHeld) {
  auto cfg = tiny_config();
  auto ops = kernels::make_cpu_ops();
  for (bool tied : {false, true}) {
    cfg.tie_word_embeddings = tied;
    const auto p = runtime::Placement::make(runtime::Placement::Kind::kContiguous, 2, 4, 2);
    for (int rank = 0; rank < 2; ++rank) {
      const auto mw = runtime::ModelWeights::synthesize(cfg, p, rank, *ops, 1);
      size_t held = 0;
      for (const auto& b : mw.storage) held += b.bytes();
      const auto f = runtime::ModelWeights::footprint(cfg, p, rank, DType::kF32);
      EXPECT_EQ(f.total(), held) << "tied " << tied << " rank " << rank;
      EXPECT_EQ(f.n_experts, 2 * 2);  // 2 of 4 experts in each of 2 layers
      EXPECT_EQ(runtime::ModelWeights::footprint(cfg, p, rank, DType::kBF16).total(), held / 2);
    }
  }
}

TEST(CpuBf16, LinearRoundsItsInputAndWeights) {
  // x and W chosen with bits below bf16's 8-bit mantissa, so the rounding shows.
  const int M = 3, K = 5, N = 2;
  std::vector<float> x(M * K), w(N * K);
  for (int i = 0; i < M * K; ++i) x[size_t(i)] = 1.0f + float(i) / 1024.0f + 1.0f / 4096.0f;
  for (int i = 0; i < N * K; ++i) w[size_t(i)] = 0.5f - float(i) / 512.0f + 1.0f / 8192.0f;
  auto round = [](std::vector<float> v) {
    for (auto& f : v) f = bf16_to_f32(f32_to_bf16(f));
    return v;
  };
  std::vector<float> want(M * N), got(M * N), exact(M * N);
  const auto xr = round(x), wr = round(w);
  kernels::cpu::linear({xr.data(), {wr.data(), DType::kF32, N, K}, want.data(), M});
  kernels::cpu::linear({x.data(), {w.data(), DType::kF32, N, K}, exact.data(), M});
  auto ops = kernels::make_cpu_ops(DType::kBF16);
  kernels::Buffer wb;
  const kernels::Weight wt = ops->upload_weight(wb, w.data(), N, K);
  ops->linear({x.data(), wt, got.data(), M});
  EXPECT_EQ(got, want);
  EXPECT_NE(got, exact) << "the inputs were chosen so that bf16 rounding changes the result";
}

TEST(CpuBf16, KvStoreKeepsRoundedValues) {
  auto ops = kernels::make_cpu_ops(DType::kBF16);
  const std::vector<float> k = {1.0f + 1.0f / 4096, -3.0f - 1.0f / 1024},
                           v = {0.1f, 1e-3f};
  std::vector<float> kc(2 * 2, 0.0f), vc(2 * 2, 0.0f);
  const int32_t slot = 1, pos = 0;
  ops->kv_store({k.data(), v.data(), kc.data(), vc.data(), &slot, &pos, 1, 2, 1, DType::kF32});
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(kc[size_t(2 + i)], bf16_to_f32(f32_to_bf16(k[size_t(i)])));
    EXPECT_EQ(vc[size_t(2 + i)], bf16_to_f32(f32_to_bf16(v[size_t(i)])));
  }
}

}  // namespace
}  // namespace moe::test
