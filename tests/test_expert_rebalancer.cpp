// Moving expert weights between ranks for a new placement (runtime/expert_rebalancer), run alone
// and under mpirun -np 2 and 4 on tiny_a (2 layers, 8 experts of [2I, H] = [256, 64] and
// [H, I] = [64, 128]).
//
// From contiguous (rank r holds the r-th block of 8 / N experts) to:
//   planned : runtime/placement_planner's plan for loads where expert 0 takes half of every
//             layer's choices, one redundant slot per rank (hot experts replicated);
//   shifted : every expert one rank further on (rank (r + 1) % N), and expert 7 of layer 1 on
//             every rank: every expert moves, some to several ranks.
// After the move each rank's experts must be, byte for byte, what it reads from the checkpoint
// for the new placement, the weights moved must be the replicas new to their rank (and their
// bytes), and the buffers of experts no longer held must be freed.
#include <algorithm>
#include <cstring>

#include "runtime/checkpoint.h"
#include "runtime/expert_rebalancer.h"
#include "runtime/placement_planner.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

using runtime::Placement;

Placement shifted(int L, int E, int N) {
  const Placement c = Placement::make(Placement::Kind::kContiguous, L, E, N);
  std::vector<std::vector<std::vector<int>>> map(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l)
    for (int e = 0; e < E; ++e) {
      std::vector<int> ranks;
      for (int r : c.ranks_of(l, e)) ranks.push_back((r + 1) % N);
      if (l == 1 && e == E - 1)
        for (int r = 0; r < N; ++r)
          if (std::find(ranks.begin(), ranks.end(), r) == ranks.end()) ranks.push_back(r);
      map[size_t(l)].push_back(ranks);
    }
  return Placement::from_map(map, N);
}

Placement planned(const Placement& from, int L, int E, int N) {
  runtime::PlanRequest req;
  req.load.assign(size_t(L), std::vector<double>(size_t(E), 1.0));
  for (int l = 0; l < L; ++l) req.load[size_t(l)][0] = double(E - 1);  // half of the choices
  req.n_ranks = N;
  req.redundant_per_rank = 1;
  req.current = &from;
  return runtime::plan_placement(req).placement;
}

std::vector<char> bytes_of(kernels::Ops& ops, const kernels::Weight& w) {
  std::vector<char> out(size_t(w.rows * w.cols) * dtype_size(w.dtype));
  ops.download(out.data(), w.data, out.size());
  return out;
}

class ExpertMoveTest : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(ExpertMoveTest, EveryRankHoldsTheCheckpointsExpertsOfTheNewPlacement) {
  const auto [target, precision] = GetParam();
  comm::Communicator& comm = world();
  const int me = comm.rank(), N = comm.size();
  const runtime::Checkpoint ckpt = runtime::Checkpoint::open(data_dir("tiny_a") + "/checkpoint");
  const runtime::ModelConfig cfg =
      runtime::ModelConfig::from_json(ckpt.config_json(), ckpt.dir() + "/config.json");
  const int L = cfg.num_hidden_layers, E = cfg.num_local_experts;
  const Placement from = Placement::make(Placement::Kind::kContiguous, L, E, N);
  const Placement to = target == "planned" ? planned(from, L, E, N) : shifted(L, E, N);
  auto ops = kernels::make_cpu_ops(precision, 1);

  // What must move: every (layer, expert, rank) of `to` that `from` lacks.
  int64_t want_moved = 0, dropped = 0, received = 0;
  for (int l = 0; l < L; ++l)
    for (int e = 0; e < E; ++e)
      for (int r = 0; r < N; ++r) {
        want_moved += to.holds(l, e, r) && !from.holds(l, e, r);
        if (r != me) continue;
        dropped += from.holds(l, e, r) && !to.holds(l, e, r);
        received += to.holds(l, e, r) && !from.holds(l, e, r);
      }
  // A single rank holds every expert: nothing can move.
  if (N > 1) {
    ASSERT_GT(want_moved, 0) << "the target placement moves nothing";
  }
  EXPECT_EQ(int64_t(runtime::plan_moves(from, to).size()), want_moved);

  runtime::ModelWeights w = runtime::ModelWeights::load(ckpt, cfg, from, me, *ops);
  const size_t buffers_before = w.storage.size();
  const runtime::MoveResult moved = runtime::move_experts(cfg, from, to, w, *ops, comm);
  EXPECT_EQ(moved.weights, want_moved);
  const size_t per_expert = size_t(3) * cfg.hidden_size * cfg.intermediate_size *
                            dtype_size(ops->weight_dtype());
  EXPECT_EQ(moved.bytes, want_moved * int64_t(per_expert));
  // Loaded experts own two buffers (w13, w2), received ones one.
  EXPECT_EQ(int64_t(w.storage.size()), int64_t(buffers_before) - 2 * dropped + received);

  const runtime::ModelWeights want = runtime::ModelWeights::load(ckpt, cfg, to, me, *ops);
  for (int l = 0; l < L; ++l) {
    const auto& got = w.layers[size_t(l)];
    const auto& ref = want.layers[size_t(l)];
    ASSERT_EQ(got.local_experts, ref.local_experts) << "layer " << l << " rank " << me;
    ASSERT_EQ(got.w13.size(), ref.w13.size());
    ASSERT_EQ(got.w2.size(), ref.w2.size());
    for (size_t i = 0; i < ref.local_experts.size(); ++i) {
      const std::string where = "layer " + std::to_string(l) + " expert " +
                                std::to_string(ref.local_experts[i]) + " on rank " +
                                std::to_string(me);
      for (auto [g, r] : {std::pair{&got.w13[i], &ref.w13[i]}, std::pair{&got.w2[i], &ref.w2[i]}}) {
        EXPECT_EQ(g->rows, r->rows) << where;
        EXPECT_EQ(g->cols, r->cols) << where;
        EXPECT_EQ(g->dtype, r->dtype) << where;
        EXPECT_TRUE(bytes_of(*ops, *g) == bytes_of(*ops, *r)) << where << ": weights differ";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, ExpertMoveTest,
                         ::testing::Combine(::testing::Values("planned", "shifted"),
                                            ::testing::Values(DType::kF32, DType::kBF16)),
                         [](const auto& info) {
                           return std::get<0>(info.param) +
                                  (std::get<1>(info.param) == DType::kF32 ? "_f32" : "_bf16");
                         });

TEST(ExpertMoves, SentByAHolderOrderedAndOnlyNewReplicas) {
  // 4 ranks, 1 layer, 4 experts: expert 0 from rank 0 to ranks 1 and 2; expert 3 stays on 3.
  const Placement from = Placement::from_map({{{0}, {1}, {2}, {3}}}, 4);
  const Placement to = Placement::from_map({{{0, 1, 2}, {1}, {2}, {3}}}, 4);
  const auto moves = runtime::plan_moves(from, to);
  ASSERT_EQ(moves.size(), 2u);
  EXPECT_EQ(moves[0].expert, 0);
  EXPECT_EQ(moves[0].src, 0);
  EXPECT_EQ(moves[0].dst, 1);
  EXPECT_EQ(moves[1].dst, 2);
  EXPECT_TRUE(runtime::plan_moves(to, to).empty());
  // Dropping a replica moves nothing.
  EXPECT_TRUE(runtime::plan_moves(to, from).empty());
}

}  // namespace
}  // namespace moe::test
