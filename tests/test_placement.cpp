// Placement maps, and a rank reading only the tensors it holds.
#include <set>

#include "common/error.h"
#include "runtime/checkpoint.h"
#include "runtime/placement.h"
#include "runtime/weights.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

using runtime::Placement;

TEST(PlacementTest, ContiguousBlocks) {
  const auto p = Placement::make(Placement::Kind::kContiguous, 2, 8, 4);
  for (int e = 0; e < 8; ++e) EXPECT_EQ(p.ranks_of(1, e), std::vector<int>{e / 2});
  EXPECT_EQ(p.local_experts(0, 3), (std::vector<int>{6, 7}));
}

TEST(PlacementTest, ContiguousUnevenBlocks) {
  // 6 experts over 4 ranks: 2, 2, 1, 1; no rank is left without experts.
  auto p = Placement::make(Placement::Kind::kContiguous, 1, 6, 4);
  EXPECT_EQ(p.local_experts(0, 0), (std::vector<int>{0, 1}));
  EXPECT_EQ(p.local_experts(0, 1), (std::vector<int>{2, 3}));
  EXPECT_EQ(p.local_experts(0, 2), (std::vector<int>{4}));
  EXPECT_EQ(p.local_experts(0, 3), (std::vector<int>{5}));
  // Mixtral's 8 experts on 6 GPUs: 2, 2, 1, 1, 1, 1.
  p = Placement::make(Placement::Kind::kContiguous, 1, 8, 6);
  const std::vector<size_t> sizes = {2, 2, 1, 1, 1, 1};
  int next = 0;
  for (int r = 0; r < 6; ++r) {
    const auto mine = p.local_experts(0, r);
    ASSERT_EQ(mine.size(), sizes[size_t(r)]) << "rank " << r;
    for (int e : mine) EXPECT_EQ(e, next++) << "rank " << r;  // consecutive, in rank order
  }
}

TEST(PlacementTest, RoundRobin) {
  const auto p = Placement::make(Placement::Kind::kRoundRobin, 1, 8, 3);
  for (int e = 0; e < 8; ++e) EXPECT_EQ(p.ranks_of(0, e), std::vector<int>{e % 3});
}

TEST(PlacementTest, MoreRanksThanExpertsMakesReplicas) {
  // 4 experts, 8 ranks: expert e on ranks e and e + 4. A rank holding a replica keeps its tokens
  // for it; the others alternate between the replicas by source rank.
  const auto p = Placement::make(Placement::Kind::kContiguous, 1, 4, 8);
  for (int e = 0; e < 4; ++e) {
    EXPECT_EQ(p.ranks_of(0, e), (std::vector<int>{e, e + 4}));
    for (int src = 0; src < 8; ++src) {
      const int want = src % 4 == e ? src : (src % 2 == 0 ? e : e + 4);
      EXPECT_EQ(p.route(0, e, src), want) << "expert " << e << " from rank " << src;
    }
  }
  for (int r = 0; r < 8; ++r) EXPECT_EQ(p.local_experts(0, r), std::vector<int>{r % 4});
}

TEST(PlacementTest, ExplicitMapRefusesExpertOnNoRank) {
  try {
    Placement::from_map({{{0}, {}, {1}}}, 2);
    FAIL() << "accepted an expert on no rank";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 0 expert 1 is on no rank"), std::string::npos)
        << e.what();
  }
}

TEST(PlacementTest, ExplicitMapRefusesRankOutOfRange) {
  try {
    Placement::from_map({{{0}, {5}}}, 2);
    FAIL() << "accepted rank 5 of 2";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 5, outside [0, 2)"), std::string::npos) << e.what();
  }
}

// The table is layers x experts: counts outside config.json's bounds are refused before it is
// built (no experts at all would divide by zero spreading the ranks over them).
TEST(PlacementTest, CountsOutsideTheConfigBoundsRefused) {
  const struct {
    int layers, experts;
    const char* says;
  } cases[] = {{2, 0, "0 experts, expected [1, 1024]"},
               {2, 1025, "1025 experts, expected [1, 1024]"},
               {0, 8, "0 layers, expected [1, 1024]"},
               {1025, 8, "1025 layers, expected [1, 1024]"}};
  for (const auto& c : cases) {
    try {
      Placement::make(Placement::Kind::kContiguous, c.layers, c.experts, 4);
      FAIL() << "accepted " << c.layers << " layers of " << c.experts << " experts";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.says), std::string::npos) << e.what();
    }
  }
}

TEST(PlacementTest, UnknownKind) {
  EXPECT_THROW(Placement::parse_kind("random"), InputError);
}

// Each of 4 ranks reads the shared tensors and only its experts of each layer (2 of 8 in tiny_a,
// 4 of 16 in the sharded tiny_b): the bytes it touched are exactly those, counted by the
// checkpoint.
class RankReadsOnlyItsExperts : public ::testing::TestWithParam<std::string> {};

TEST_P(RankReadsOnlyItsExperts, BytesReadAreSharedPlusLocalExperts) {
  const std::string dir = data_dir(GetParam()) + "/checkpoint";
  auto kops = kernels::make_cpu_ops();
  size_t shared = 0, per_expert = 0;
  {
    const auto ck = runtime::Checkpoint::open(dir);
    for (const auto& name : ck.tensor_names()) {
      const size_t b = ck.get(name).nbytes;
      if (name.find(".experts.") == std::string::npos) shared += b;
      if (name.find("layers.0.block_sparse_moe.experts.0.") != std::string::npos) per_expert += b;
    }
  }
  const auto cfg_ck = runtime::Checkpoint::open(dir);
  const auto cfg = runtime::ModelConfig::from_json(cfg_ck.config_json(), dir);
  const auto p = Placement::make(Placement::Kind::kContiguous, cfg.num_hidden_layers,
                                 cfg.num_local_experts, 4);
  size_t total = 0;
  for (int r = 0; r < 4; ++r) {
    const auto ck = runtime::Checkpoint::open(dir);
    const auto w = runtime::ModelWeights::load(ck, cfg, p, r, *kops);
    const int mine = cfg.num_local_experts / 4;
    EXPECT_EQ(ck.bytes_read(), shared + size_t(cfg.num_hidden_layers) * mine * per_expert)
        << "rank " << r;
    std::vector<int> want(static_cast<size_t>(mine));
    for (int i = 0; i < mine; ++i) want[size_t(i)] = mine * r + i;
    EXPECT_EQ(w.layers[0].local_experts, want);
    total += ck.bytes_read();
  }
  // Over all ranks: the shared part 4 times, every expert once.
  EXPECT_EQ(total, 4 * shared + size_t(cfg.num_hidden_layers) * cfg.num_local_experts * per_expert);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, RankReadsOnlyItsExperts,
                         ::testing::Values("tiny_a", "tiny_b"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace moe::test
