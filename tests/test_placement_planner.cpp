// The placement planner (runtime/placement_planner.h): its properties over many random loads
// (every expert placed, slot limits kept, never worse than the placement it starts from,
// deterministic, cheap to keep), what redundant slots buy on a skewed layer, the optimum on
// cases small enough to enumerate, and the errors for bad requests. Also the placement's
// planned shares and the route wheel that splits by them.
#include <algorithm>
#include <map>
#include <random>

#include "common/error.h"
#include "runtime/placement.h"
#include "runtime/placement_planner.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

using runtime::Placement;
using runtime::PlanRequest;

std::vector<std::vector<double>> random_loads(std::mt19937& rng, int L, int E, double skew) {
  // Zipf-like: expert popularity ~ 1 / (rank ^ skew), shuffled per layer, some zero loads.
  std::vector<std::vector<double>> load(static_cast<size_t>(L),
                                         std::vector<double>(static_cast<size_t>(E)));
  std::uniform_real_distribution<double> jitter(0.5, 1.5);
  std::bernoulli_distribution zero(0.1);
  for (auto& layer : load) {
    std::vector<int> order(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e) order[size_t(e)] = e;
    std::shuffle(order.begin(), order.end(), rng);
    for (int i = 0; i < E; ++i)
      layer[size_t(order[size_t(i)])] =
          zero(rng) ? 0.0 : std::round(1000.0 * jitter(rng) / std::pow(i + 1, skew));
  }
  return load;
}

double peak(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

void expect_valid(const runtime::Plan& plan, int L, int E, int N, int S) {
  const Placement& p = plan.placement;
  ASSERT_EQ(p.n_layers(), L);
  ASSERT_EQ(p.n_experts(), E);
  ASSERT_EQ(p.world_size(), N);
  for (int l = 0; l < L; ++l) {
    std::vector<int> used(size_t(N), 0);
    for (int e = 0; e < E; ++e) {
      const auto& r = p.ranks_of(l, e);
      ASSERT_FALSE(r.empty()) << "layer " << l << " expert " << e << " on no rank";
      double sum = 0;
      for (size_t i = 0; i < r.size(); ++i) {
        ++used[size_t(r[i])];
        sum += p.share(l, e, int(i));
        EXPECT_EQ(std::count(r.begin(), r.end(), r[i]), 1) << "rank listed twice";
      }
      EXPECT_NEAR(sum, 1.0, 1e-9);
    }
    for (int r = 0; r < N; ++r)
      EXPECT_LE(used[size_t(r)], S) << "layer " << l << " rank " << r << " over its slots";
  }
}

TEST(PlacementPlanner, PropertiesOverRandomLoads) {
  std::mt19937 rng(11);
  struct Shape {
    int E, N, redundant, nodes;
  };
  for (const Shape sh : {Shape{8, 4, 0, 1}, Shape{8, 4, 1, 2}, Shape{8, 2, 1, 1},
                         Shape{16, 8, 2, 2}, Shape{60, 8, 1, 4}, Shape{8, 8, 1, 1},
                         Shape{6, 4, 0, 1}, Shape{4, 8, 0, 2}}) {
    for (int trial = 0; trial < 6; ++trial) {
      SCOPED_TRACE("E" + std::to_string(sh.E) + " N" + std::to_string(sh.N) + " r" +
                   std::to_string(sh.redundant) + " trial " + std::to_string(trial));
      const int L = 3;
      const auto load = random_loads(rng, L, sh.E, 0.5 + 0.3 * trial);
      for (auto kind : {Placement::Kind::kContiguous, Placement::Kind::kRoundRobin}) {
        const Placement cur = Placement::make(kind, L, sh.E, sh.N);
        PlanRequest req;
        req.load = load;
        req.n_ranks = sh.N;
        req.redundant_per_rank = sh.redundant;
        req.nodes = sh.nodes;
        req.current = &cur;
        const auto plan = runtime::plan_placement(req);
        const int S = (sh.E + sh.N - 1) / sh.N + sh.redundant;
        ASSERT_EQ(plan.slots_per_rank, S);
        expect_valid(plan, L, sh.E, sh.N, S);
        int64_t moved = 0;
        for (int l = 0; l < L; ++l) {
          const auto before = runtime::predicted_rank_load(cur, l, load[size_t(l)]);
          const auto after = runtime::predicted_rank_load(plan.placement, l, load[size_t(l)]);
          // Never worse than the input (the current map fits the slots here).
          EXPECT_LE(peak(after), peak(before) * (1 + 1e-9)) << "layer " << l;
          EXPECT_EQ(plan.layers[size_t(l)].after, after);
          EXPECT_EQ(plan.layers[size_t(l)].before, before);
          // Moved = replicas on a rank that did not hold the expert before.
          for (int e = 0; e < sh.E; ++e)
            for (int r : plan.placement.ranks_of(l, e)) moved += !cur.holds(l, e, r);
        }
        EXPECT_EQ(plan.weights_moved, moved);
        // Deterministic: the same request, the same plan.
        const auto again = runtime::plan_placement(req);
        EXPECT_EQ(again.placement.map(), plan.placement.map());
        EXPECT_EQ(again.placement.shares(), plan.placement.shares());
        // Cheap to keep: planning again from the plan's own placement moves nothing and is no
        // worse.
        req.current = &plan.placement;
        const auto stable = runtime::plan_placement(req);
        EXPECT_EQ(stable.weights_moved, 0);
        for (int l = 0; l < L; ++l)
          EXPECT_LE(peak(stable.layers[size_t(l)].after),
                    peak(plan.layers[size_t(l)].after) * (1 + 1e-9));
      }
    }
  }
}

TEST(PlacementPlanner, RedundantSlotsSplitAHotExpert) {
  // Expert 0 takes 8 of 15 units; 4 ranks. Without redundancy its rank also holds one more
  // expert (8 experts, 2 slots each): peak 9. With one redundant slot per rank expert 0 is on
  // every rank and its shares even the ranks out at the mean 3.75 (to the wheel's 1/64 of 8).
  PlanRequest req;
  req.load = {{8, 1, 1, 1, 1, 1, 1, 1}};
  req.n_ranks = 4;
  const auto flat = runtime::plan_placement(req);
  EXPECT_DOUBLE_EQ(peak(flat.layers[0].after), 9.0);
  req.redundant_per_rank = 1;
  const auto red = runtime::plan_placement(req);
  EXPECT_EQ(red.placement.ranks_of(0, 0), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_LE(peak(red.layers[0].after), 3.75 + 8.0 / 64 + 1e-9);
  EXPECT_NEAR(runtime::imbalance(red.layers[0].after), 1.0, 8.0 / 64 / 3.75 + 1e-9);
}

TEST(PlacementPlanner, FindsTheOptimumOfSmallCases) {
  // 4 experts on 2 ranks of 2 slots: 3 ways to pair them; the plan's peak is the best of them.
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> u(0, 100);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<double> w(4);
    for (auto& x : w) x = u(rng);
    double best = 1e18;
    for (int partner = 1; partner < 4; ++partner) {
      const double a = w[0] + w[size_t(partner)];
      const double total = w[0] + w[1] + w[2] + w[3];
      best = std::min(best, std::max(a, total - a));
    }
    PlanRequest req;
    req.load = {w};
    req.n_ranks = 2;
    EXPECT_DOUBLE_EQ(peak(runtime::plan_placement(req).layers[0].after), best) << trial;
  }
}

TEST(PlacementPlanner, KeepsExpertsWhereTheyAreWhenThatCostsLittle) {
  // Balanced load on a contiguous map: nothing worth moving.
  const Placement cur = Placement::make(Placement::Kind::kContiguous, 1, 8, 4);
  PlanRequest req;
  req.load = {{10, 10, 10, 10, 10, 10, 10, 11}};
  req.n_ranks = 4;
  req.current = &cur;
  auto plan = runtime::plan_placement(req);
  EXPECT_EQ(plan.weights_moved, 0);
  EXPECT_EQ(plan.placement.map(), cur.map());
  // A skewed load: experts 0 and 1 (on rank 0) hot. Some move, and the peak drops.
  req.load = {{50, 50, 10, 10, 10, 10, 10, 10}};
  plan = runtime::plan_placement(req);
  EXPECT_GT(plan.weights_moved, 0);
  EXPECT_LT(peak(plan.layers[0].after), peak(plan.layers[0].before));
  EXPECT_DOUBLE_EQ(peak(plan.layers[0].after), 60.0);
  // Two swaps reach it (4 replicas move), not a reshuffle of everything.
  EXPECT_LE(plan.weights_moved, 4);
}

TEST(PlacementPlanner, RefusesBadRequestsSayingWhy) {
  auto message = [](const PlanRequest& r) {
    try {
      runtime::plan_placement(r);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  PlanRequest r;
  r.load = {{1, 2, 3, 4}};
  r.n_ranks = 2;
  r.slots_per_rank = 1;
  EXPECT_NE(message(r).find("cannot hold 4 experts"), std::string::npos) << message(r);
  r.slots_per_rank = 0;
  r.nodes = 3;
  EXPECT_NE(message(r).find("nodes do not divide"), std::string::npos) << message(r);
  r.nodes = 1;
  r.load = {{1, -2, 3, 4}};
  EXPECT_NE(message(r).find("layer 0 expert 1 has load"), std::string::npos) << message(r);
  r.load = {{1, 2, 3, 4}, {1, 2}};
  EXPECT_NE(message(r).find("layer 1 has 2 expert loads"), std::string::npos) << message(r);
  r.load = {};
  EXPECT_NE(message(r).find("no layers"), std::string::npos) << message(r);
  const Placement other = Placement::make(Placement::Kind::kContiguous, 1, 8, 2);
  r.load = {{1, 2, 3, 4}};
  r.current = &other;
  EXPECT_NE(message(r).find("current placement has"), std::string::npos) << message(r);
}

// ---- shares and the route wheel ------------------------------------------------------------

TEST(PlacementShares, WheelSplitsInTheGivenProportions) {
  const Placement p = Placement::from_map({{{0, 1, 2}, {3}}}, 4, {{{0.5, 0.25, 0.25}, {1.0}}});
  constexpr int Q = kernels::kRouteWheel;
  for (int src = 0; src < 4; ++src) {
    const auto w = p.route_wheel(0, src);
    ASSERT_EQ(w.size(), size_t(2 * Q));
    std::map<int, int> n;
    for (int q = 0; q < Q; ++q) ++n[w[size_t(q)]];
    EXPECT_EQ(n[0], Q / 2);
    EXPECT_EQ(n[1], Q / 4);
    EXPECT_EQ(n[2], Q / 4);
    // Spread, not in blocks: any 4 consecutive entries hold replica 0 twice.
    for (int q = 0; q + 4 <= Q; ++q)
      EXPECT_EQ(std::count(w.begin() + q, w.begin() + q + 4, 0), 2) << "src " << src << " q " << q;
    for (int q = Q; q < 2 * Q; ++q) EXPECT_EQ(w[size_t(q)], 3);
  }
  // Sources start at different points of the wheel.
  EXPECT_NE(p.route_wheel(0, 0), p.route_wheel(0, 1));
  EXPECT_DOUBLE_EQ(p.expected_fraction(0, 0, 0), 0.5);
  EXPECT_DOUBLE_EQ(p.expected_fraction(0, 0, 3), 0.0);
}

TEST(PlacementShares, WithoutSharesTheWheelIsTheSourceRoute) {
  const Placement p = Placement::make(Placement::Kind::kContiguous, 1, 4, 8);
  for (int src = 0; src < 8; ++src) {
    const auto w = p.route_wheel(0, src);
    for (int e = 0; e < 4; ++e)
      for (int q = 0; q < kernels::kRouteWheel; ++q)
        EXPECT_EQ(w[size_t(e) * kernels::kRouteWheel + q], p.route(0, e, src));
  }
}

TEST(PlacementShares, RefusesBadShares) {
  auto message = [](const std::vector<std::vector<std::vector<double>>>& shares) {
    try {
      Placement::from_map({{{0, 1}, {1}}}, 2, shares);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{{0.5}, {1}}}).find("layer 0 expert 0 has 1 shares for 2 replicas"),
            std::string::npos);
  EXPECT_NE(message({{{0.5, -1}, {1}}}).find("expected a number >= 0"), std::string::npos);
  EXPECT_NE(message({{{0, 0}, {1}}}).find("summing to 0"), std::string::npos);
  EXPECT_NE(message({{{1, 1}}}).find("shares for 1 experts, expected 2"), std::string::npos);
  EXPECT_EQ(message({{{1, 3}, {1}}}), "no error");
}

}  // namespace
}  // namespace moe::test
