// The simulator's cost model fitted to measured times (runtime/ep_simulator.h calibrate): step
// times made exactly by a known cost model, on routings whose tokens and bytes vary from step to
// step, give back that model's terms; at one rank the link is left as given; a trace without
// measured times is refused; without weight bytes read the expert FLOP/s is a ratio of sums.
// Also the permute and per-step terms of simulate().
#include <cmath>
#include <random>

#include "common/error.h"
#include "runtime/ep_simulator.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

using runtime::CostModel;
using runtime::Placement;
using runtime::SimModel;

struct Routing {
  int steps = 0, ranks = 0, k = 2;
  std::vector<std::vector<int32_t>> choices;  // [(step * layers + layer) * ranks + src]
  int layers = 0;
  const std::vector<int32_t>& operator()(int step, int layer, int src) const {
    return choices[(size_t(step) * layers + layer) * ranks + src];
  }
};

Routing random_routing(int steps, int layers, int ranks, int experts, uint32_t seed) {
  Routing r;
  r.steps = steps;
  r.layers = layers;
  r.ranks = ranks;
  std::mt19937 rng(seed);
  for (int s = 0; s < steps; ++s)
    for (int l = 0; l < layers; ++l)
      for (int src = 0; src < ranks; ++src) {
        // Prefill-like and decode-like steps, and ranks with unequal tokens.
        const int T = (s % 3 == 0 ? 40 : 3) + int(rng() % 7) + 5 * src;
        std::vector<int32_t> c;
        for (int t = 0; t < T; ++t) {
          const int a = int(rng() % experts);
          int b = int(rng() % (experts - 1));
          if (b >= a) ++b;
          c.push_back(a);
          c.push_back(b);
        }
        r.choices.push_back(c);
      }
  return r;
}

// An f32 top-2 model's shape: rows of `hidden` fp32 values (dispatched with 2 route slots of 8
// bytes), and, with `weights`, an expert's three fp32 matrices.
SimModel f32_model(int layers, int experts, int hidden, int intermediate, bool weights) {
  SimModel m;
  m.layers = layers;
  m.experts = experts;
  m.top_k = 2;
  m.hidden = hidden;
  m.intermediate = intermediate;
  m.row_bytes = int64_t(hidden) * 4 + 2 * 8;
  m.back_row_bytes = int64_t(hidden) * 4;
  m.weight_bytes = weights ? 3 * int64_t(hidden) * intermediate * 4 : 0;
  return m;
}

// One rank's measured step, made exactly by `cost` from what simulate() says of that step alone.
std::vector<runtime::RoutingTrace::StepTime> times_of(const Routing& routing, const SimModel& m,
                                                      const Placement& p, const CostModel& cost) {
  std::vector<runtime::RoutingTrace::StepTime> out;
  const int N = p.world_size(), L = m.layers;
  const double flop_per_row = 6.0 * m.hidden * double(m.intermediate);
  for (int step = 0; step < routing.steps; ++step) {
    const runtime::SimSource one = [&](int, int layer, int src) -> const std::vector<int32_t>& {
      return routing(step, layer, src);
    };
    const auto res = runtime::simulate(one, 1, m, p, N, CostModel{});
    for (int r = 0; r < N; ++r) {
      double computed = 0, handled = 0, bytes = 0, tokens = double(routing(step, 0, r).size()) / 2;
      double active = 0;  // experts with rows on r: each held once (contiguous, N <= E)
      for (int l = 0; l < L; ++l) {
        computed += double(res.stats.computed(l, r));
        for (int e = 0; e < m.experts; ++e)
          active += p.holds(l, e, r) && res.stats.token_count(l, e) > 0;
        double out_d = 0, in_d = 0;  // rows to and from other ranks
        for (int q = 0; q < N; ++q) {
          handled += double(res.stats.row_count(l, r, q) + res.stats.row_count(l, q, r));
          if (q == r) continue;
          out_d += double(res.stats.row_count(l, r, q));
          in_d += double(res.stats.row_count(l, q, r));
        }
        bytes += std::max(out_d, in_d) * m.row_bytes + std::max(in_d, out_d) * m.back_row_bytes;
      }
      runtime::RoutingTrace::StepTime w;
      w.step = step;
      w.src = r;
      w.experts = computed * flop_per_row / cost.expert_flops +
                  (cost.weight_bw > 0 ? active * double(m.weight_bytes) / cost.weight_bw : 0);
      w.permute = 0.75 * handled * cost.permute_s_per_row;
      w.combine = 0.25 * handled * cost.permute_s_per_row;
      w.exchange = N > 1 ? 2.0 * L * cost.latency + bytes / cost.intra_bw : 1e-6;
      w.total = cost.step_s + tokens * L * cost.dense_s_per_token + w.experts + w.permute +
                w.combine + w.exchange;
      out.push_back(w);
    }
  }
  return out;
}

TEST(SimCalibration, RecoversTheCostModelThatMadeTheTimes) {
  const SimModel m = f32_model(3, 8, 64, 128, true);
  CostModel truth;
  truth.expert_flops = 3.5e10;
  truth.weight_bw = 9e9;
  truth.permute_s_per_row = 420e-9;
  truth.latency = 35e-6;
  truth.intra_bw = 2.5e9;
  truth.dense_s_per_token = 7e-6;
  truth.step_s = 300e-6;
  for (int N : {2, 4}) {
    const Routing routing = random_routing(12, m.layers, N, m.experts, 5u + N);
    const Placement p = Placement::make(Placement::Kind::kContiguous, m.layers, m.experts, N);
    const auto times = times_of(routing, m, p, truth);
    CostModel given;  // the defaults: none of truth's values
    const auto fit = runtime::calibrate(std::cref(routing), m, p, times, given);
    EXPECT_EQ(fit.samples, 12 * N);
    ASSERT_TRUE(fit.link_fitted) << N << " ranks";
    auto near = [](double got, double want) { return std::abs(got / want - 1) < 1e-6; };
    EXPECT_PRED2(near, fit.cost.expert_flops, truth.expert_flops) << N << " ranks";
    EXPECT_PRED2(near, fit.cost.weight_bw, truth.weight_bw) << N << " ranks";
    EXPECT_PRED2(near, fit.cost.permute_s_per_row, truth.permute_s_per_row) << N << " ranks";
    EXPECT_PRED2(near, fit.cost.latency, truth.latency) << N << " ranks";
    EXPECT_PRED2(near, fit.cost.intra_bw, truth.intra_bw) << N << " ranks";
    EXPECT_PRED2(near, fit.cost.dense_s_per_token, truth.dense_s_per_token) << N << " ranks";
    EXPECT_PRED2(near, fit.cost.step_s, truth.step_s) << N << " ranks";
    EXPECT_EQ(fit.cost.inter_bw, given.inter_bw);
  }
}

TEST(SimCalibration, OneRankLeavesTheLinkAsGiven) {
  const SimModel m = f32_model(2, 4, 32, 64, false);
  CostModel truth;
  truth.expert_flops = 1e10;
  truth.permute_s_per_row = 1e-6;
  truth.dense_s_per_token = 2e-6;
  truth.step_s = 1e-4;
  const Routing routing = random_routing(9, m.layers, 1, m.experts, 3);
  const Placement p = Placement::make(Placement::Kind::kContiguous, m.layers, m.experts, 1);
  CostModel given;
  given.latency = 123e-6;
  given.intra_bw = 7e9;
  const auto fit = runtime::calibrate(std::cref(routing), m, p, times_of(routing, m, p, truth), given);
  EXPECT_FALSE(fit.link_fitted);
  EXPECT_EQ(fit.cost.latency, given.latency);
  EXPECT_EQ(fit.cost.intra_bw, given.intra_bw);
  EXPECT_NEAR(fit.cost.expert_flops / truth.expert_flops, 1.0, 1e-6);
  EXPECT_EQ(fit.cost.weight_bw, 0) << "no weight bytes: FLOPs alone";
  // The measured exchange (a rank sending to itself) is left in neither fit term.
  EXPECT_NEAR(fit.cost.step_s / truth.step_s, 1.0, 1e-6);
  EXPECT_NEAR(fit.cost.dense_s_per_token / truth.dense_s_per_token, 1.0, 1e-6);
}

TEST(SimCalibration, NoMeasuredTimesIsRefused) {
  const SimModel m = f32_model(1, 4, 8, 8, false);
  const Routing routing = random_routing(1, 1, 1, 4, 1);
  const Placement p = Placement::make(Placement::Kind::kContiguous, 1, 4, 1);
  EXPECT_THROW(runtime::calibrate(std::cref(routing), m, p, {}, CostModel{}), InputError);
}

TEST(SimCalibration, PermuteAndPerStepTermsAddToThePrediction) {
  const SimModel m = f32_model(2, 4, 16, 16, false);
  const Routing routing = random_routing(3, m.layers, 2, m.experts, 9);
  const Placement p = Placement::make(Placement::Kind::kContiguous, m.layers, m.experts, 2);
  CostModel base;
  const auto a = runtime::simulate(std::cref(routing), 3, m, p, 2, base);
  CostModel more = base;
  more.step_s = 1e-3;
  more.permute_s_per_row = 1e-6;
  const auto b = runtime::simulate(std::cref(routing), 3, m, p, 2, more);
  // Per step and layer, the slowest rank's rows packed and received, from each step alone.
  double rows = 0;
  for (int step = 0; step < 3; ++step) {
    const runtime::SimSource one = [&](int, int layer, int src) -> const std::vector<int32_t>& {
      return routing(step, layer, src);
    };
    const auto st = runtime::simulate(one, 1, m, p, 2, base);
    for (int l = 0; l < m.layers; ++l) {
      double worst = 0;
      for (int r = 0; r < 2; ++r) {
        double n = 0;
        for (int q = 0; q < 2; ++q) n += double(st.stats.row_count(l, r, q) + st.stats.row_count(l, q, r));
        worst = std::max(worst, n);
      }
      rows += worst;
    }
  }
  EXPECT_GT(rows, 0);
  EXPECT_NEAR(b.permute_s, rows * 1e-6, 1e-12);
  EXPECT_NEAR(b.total_s() - a.total_s(), 3 * 1e-3 + b.permute_s, 1e-12);
  ASSERT_EQ(b.step_s.size(), 3u);
}

}  // namespace
}  // namespace moe::test
