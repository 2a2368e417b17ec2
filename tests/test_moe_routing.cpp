// The MoE layer's exchange, with stamped payloads (run alone and under mpirun -np 2, 4, 8).
//
// Hidden size 3. Token t of rank r carries x = [1, a, z] with the stamp a = 1000 r + t + 1 and
// z a per-token random value that only the router reads (gate column 2), so tokens spread over
// all experts. Every expert e is built so that its SwiGLU output is exactly proportional to the
// stamp it received: w1 = [c, 0, 0] (silu(c) a constant), w3 = [0, 1, 0] (the stamp),
// w2 = [0, (e+1)/silu(c), 0]^T, so y_e(x) = [0, (e+1) a, 0]. The layer must return, for each
// token, [0, a * sum_s w_s (e_s + 1), 0] with (e_s, w_s) its own top-k routing. A row delivered
// to the wrong rank, combined into the wrong token or run through the wrong expert changes the
// stamp or the factor and fails; the rows sent per destination and computed per rank are
// checked against the placement's route wheel (the j-th choice of expert e goes to wheel entry
// j % kRouteWheel), which catches a row served by the wrong replica.
// Placements: contiguous, round_robin, (N > E) replicas, and planned: every expert e on ranks
// e % N and (e + 1) % N at shares 0.6 and 0.4, so each source splits every expert's choices.
#include <cmath>
#include <random>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/moe_layer.h"
#include "tests/support/counting_ops.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

constexpr int kH = 3, kI = 1;
constexpr float kC = 4.0f;

class MoeRoutingTest
    : public ::testing::TestWithParam<std::tuple<int, int, std::string, DType>> {};

TEST_P(MoeRoutingTest, StampedRowsComeBackToTheirTokens) {
  const auto [E, k, kind, precision] = GetParam();
  comm::Communicator& comm = world();
  const int me = comm.rank(), N = comm.size();
  runtime::ModelConfig cfg;
  cfg.hidden_size = kH;
  cfg.intermediate_size = kI;
  cfg.num_local_experts = E;
  cfg.num_experts_per_tok = k;
  cfg.num_hidden_layers = 1;
  const auto placement = [&, E = E, kind = kind] {
    if (kind != "planned")
      return runtime::Placement::make(runtime::Placement::parse_kind(kind), 1, E, N);
    std::vector<std::vector<int>> map(static_cast<size_t>(E));
    std::vector<std::vector<double>> shares(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e) {
      map[size_t(e)] = {e % N};
      shares[size_t(e)] = {0.6};
      if (N > 1) {
        map[size_t(e)].push_back((e + 1) % N);
        shares[size_t(e)].push_back(0.4);
      }
    }
    return runtime::Placement::from_map({map}, N, {shares});
  }();
  auto cpu = kernels::make_cpu_ops(precision);
  // Counts the layer's host <-> backend copies: each is a stream sync on cuda.
  CountingOps counting(*cpu);
  kernels::Ops* ops = &counting;

  std::vector<kernels::Buffer> storage;
  runtime::LayerWeights lw;
  std::mt19937 shared(7);  // the router is shared: the same on every rank
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> gate(size_t(E) * kH, 0.0f);
  for (int e = 0; e < E; ++e) gate[size_t(e) * kH + 2] = nd(shared);
  storage.emplace_back();
  lw.gate = ops->upload_weight(storage.back(), gate.data(), E, kH);
  const float silu_c = kC / (1.0f + std::exp(-kC));
  lw.local_experts = placement.local_experts(0, me);
  for (int e : lw.local_experts) {
    const float w13[2 * kH] = {kC, 0, 0, 0, 1, 0};  // w1 row, then w3 row
    const float w2[kH] = {0, float(e + 1) / silu_c, 0};
    storage.emplace_back();
    lw.w13.push_back(ops->upload_weight(storage.back(), w13, 2 * kI, kH));
    storage.emplace_back();
    lw.w2.push_back(ops->upload_weight(storage.back(), w2, kH, kI));
  }

  // Ranks hold different numbers of tokens, rank 1 none at all.
  const int T = me == 1 ? 0 : 5 + 7 * me;
  std::mt19937 rng(100 + me);
  std::vector<float> x(size_t(T) * kH), out(size_t(T) * kH, -1.0f);
  for (int t = 0; t < T; ++t) {
    x[size_t(t) * kH + 0] = 1.0f;
    x[size_t(t) * kH + 1] = float(1000 * me + t + 1);
    x[size_t(t) * kH + 2] = 3.0f * nd(rng);
  }
  runtime::LoadStats stats(1, E, N);
  runtime::MoeLayer layer(cfg, placement, *ops, comm, &stats);
  counting.reset_counts();
  layer.forward(0, lw, x.data(), T, out.data());
  // The layer's only copy: the counts back to the host (rows per rank, choices per expert).
  EXPECT_EQ(counting.downloads, 1);
  EXPECT_EQ(counting.uploads, 0);

  // The expected result from this rank's own routing, computed apart from the layer.
  std::vector<float> logits(size_t(T) * E);
  std::vector<float> xr = x;  // the router's input as the layer's linear sees it
  if (precision == DType::kBF16)
    for (auto& v : xr) v = bf16_to_f32(f32_to_bf16(v));
  kernels::cpu::linear({xr.data(), lw.gate, logits.data(), T});
  std::vector<int32_t> ex(size_t(T) * k);
  std::vector<float> wt(size_t(T) * k);
  kernels::cpu::topk_router({logits.data(), ex.data(), wt.data(), T, E, k});
  std::vector<float> want(size_t(T) * kH, 0.0f);
  for (int t = 0; t < T; ++t) {
    double f = 0;
    for (int s = 0; s < k; ++s) f += double(wt[size_t(t) * k + s]) * (ex[size_t(t) * k + s] + 1);
    want[size_t(t) * kH + 1] = float(x[size_t(t) * kH + 1] * f);
  }
  // At bf16 the rows cross the exchange rounded to bf16 both ways and every GEMM input is
  // rounded (8-bit mantissa, 2^-9 relative each): x and the weights in, the activation, the
  // returned partial sum; 2e-2 bounds those few roundings, while a row combined into the wrong
  // token or run through the wrong expert is off by far more (stamps differ by >= 1 in 1000s,
  // expert factors by >= 1 in 8).
  const float rtol = precision == DType::kBF16 ? 2e-2f : 1e-5f;
  const float atol = precision == DType::kBF16 ? 1e-2f : 1e-3f;
  EXPECT_TRUE(all_close(out.data(), want.data(), want.size(), atol, rtol,
                        kind + " E" + std::to_string(E) + " k" + std::to_string(k) + " rank " +
                            std::to_string(me)));

  // Where the rows went, predicted from this rank's routing and the placement: one row per
  // (token, destination rank), and each (token, slot) computed on the rank route() names. A row
  // sent to another replica of the right expert gives the right values, so only this catches it.
  std::vector<int64_t> want_rows(size_t(N), 0), want_computed(size_t(N), 0);
  const auto wheel = placement.route_wheel(0, me);
  std::vector<int64_t> chosen(static_cast<size_t>(E), 0);  // choices of each expert so far
  for (int t = 0; t < T; ++t) {
    std::vector<bool> seen(size_t(N), false);
    for (int s = 0; s < k; ++s) {
      const int e = ex[size_t(t) * k + s];
      const int d = wheel[size_t(e) * kernels::kRouteWheel +
                          size_t(chosen[size_t(e)]++ % kernels::kRouteWheel)];
      ++want_computed[size_t(d)];
      if (!seen[size_t(d)]) ++want_rows[size_t(d)];
      seen[size_t(d)] = true;
    }
  }
  for (int d = 0; d < N; ++d)
    EXPECT_EQ(stats.row_count(0, me, d), want_rows[size_t(d)]) << "rows " << me << " -> " << d;
  comm.all_reduce(want_computed.data(), N, comm::Communicator::Op::kSum);

  // Every routed choice was computed exactly once, where the placement says.
  stats.reduce(comm);
  for (int r = 0; r < N; ++r)
    EXPECT_EQ(stats.computed(0, r), want_computed[size_t(r)]) << "rows computed on rank " << r;
  int64_t routed = 0, computed = 0;
  for (int e = 0; e < E; ++e) routed += stats.token_count(0, e);
  for (int r = 0; r < N; ++r) computed += stats.computed(0, r);
  EXPECT_EQ(routed, computed);
}

INSTANTIATE_TEST_SUITE_P(
    Placements, MoeRoutingTest,
    ::testing::Values(std::tuple{8, 2, std::string("contiguous"), DType::kF32},
                      std::tuple{8, 2, std::string("round_robin"), DType::kF32},
                      std::tuple{16, 4, std::string("contiguous"), DType::kF32},
                      std::tuple{4, 1, std::string("contiguous"), DType::kF32},  // replicas from N = 8
                      std::tuple{8, 2, std::string("planned"), DType::kF32},
                      std::tuple{4, 1, std::string("planned"), DType::kF32},
                      std::tuple{3, 2, std::string("round_robin"), DType::kF32},
                      std::tuple{8, 2, std::string("contiguous"), DType::kBF16},
                      std::tuple{3, 2, std::string("round_robin"), DType::kBF16}),
    [](const auto& info) {
      return std::get<2>(info.param) + "_E" + std::to_string(std::get<0>(info.param)) + "_k" +
             std::to_string(std::get<1>(info.param)) + "_" + dtype_name(std::get<3>(info.param));
    });

}  // namespace
}  // namespace moe::test
