#include "runtime/ep_simulator.h"

#include <algorithm>
#include <string>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::runtime {

SimResult simulate(const SimSource& source, int steps, const SimModel& m,
                   const Placement& placement, int gpus_per_node, const CostModel& cost) {
  const int N = placement.world_size(), E = m.experts, k = m.top_k, L = m.layers;
  MOE_CHECK(placement.n_experts() == E && placement.n_layers() >= L,
            "simulate: the placement has " + std::to_string(placement.n_experts()) +
                " experts and " + std::to_string(placement.n_layers()) + " layers, the model " +
                std::to_string(E) + " and " + std::to_string(L));
  if (gpus_per_node < 1) throw InputError("simulator: GPUs per node must be >= 1");
  SimResult out;
  out.stats = LoadStats(L, E, N);
  out.stats.steps = steps;
  // Route wheels per (layer, source), made once.
  std::vector<std::vector<int32_t>> wheel(size_t(L) * N);
  for (int l = 0; l < L; ++l)
    for (int s = 0; s < N; ++s) wheel[size_t(l) * N + s] = placement.route_wheel(l, s);
  const double flop_per_row = 6.0 * m.hidden * double(m.intermediate);
  auto node = [&](int r) { return r / gpus_per_node; };

  std::vector<int32_t> counts, slot_rank, send_token, home;
  std::vector<kernels::RouteSlot> send_slots;
  std::vector<float> weight;
  std::vector<int64_t> rows(static_cast<size_t>(N) * N), computed(static_cast<size_t>(N));
  std::vector<int> tokens(static_cast<size_t>(N));
  for (int step = 0; step < steps; ++step) {
    double step_s = 0;
    for (int l = 0; l < L; ++l) {
      std::fill(rows.begin(), rows.end(), 0);
      std::fill(computed.begin(), computed.end(), 0);
      for (int src = 0; src < N; ++src) {
        const std::vector<int32_t>& ex = source(step, l, src);
        const int T = int(ex.size()) / k;
        tokens[size_t(src)] = T;
        counts.assign(size_t(N + E * N), 0);
        slot_rank.resize(ex.size());
        weight.assign(ex.size(), 1.0f);
        const size_t s_max = size_t(T) * std::min(k, N);
        send_token.resize(s_max);
        send_slots.resize(s_max * k);
        home.resize(ex.size());
        kernels::DispatchLayoutParams p;
        p.expert = ex.data();
        p.weight = weight.data();
        p.route = wheel[size_t(l) * N + src].data();
        p.counts = counts.data();
        p.slot_rank = slot_rank.data();
        p.send_token = send_token.data();
        p.send_slots = send_slots.data();
        p.home = home.data();
        p.T = T;
        p.k = k;
        p.n_experts = E;
        p.n_ranks = N;
        kernels::cpu::dispatch_layout(p);
        for (int d = 0; d < N; ++d) {
          rows[size_t(src) * N + d] = counts[size_t(d)];
          out.stats.row_count(l, src, d) += counts[size_t(d)];
          out.stats.byte_count(l, src, d) += counts[size_t(d)] * m.row_bytes;
          out.stats.byte_count(l, d, src) += counts[size_t(d)] * m.back_row_bytes;
        }
        for (int e = 0; e < E; ++e)
          for (int d = 0; d < N; ++d) {
            const int32_t c = counts[size_t(N + e * N + d)];
            out.stats.token_count(l, e) += c;
            computed[size_t(d)] += c;
          }
      }
      for (int r = 0; r < N; ++r) out.stats.computed(l, r) += computed[size_t(r)];

      // The cost of this layer: each phase waits for its slowest rank.
      double dense = 0, experts = 0;
      for (int r = 0; r < N; ++r) {
        dense = std::max(dense, tokens[size_t(r)] * cost.dense_s_per_token);
        experts = std::max(experts, double(computed[size_t(r)]) * flop_per_row / cost.expert_flops);
      }
      auto exchange = [&](int64_t bytes_per_row, bool back) {
        double worst = 0;
        for (int r = 0; r < N; ++r) {
          double intra[2] = {0, 0}, inter[2] = {0, 0};  // [out, in]
          for (int q = 0; q < N; ++q) {
            if (q == r) continue;
            // Dispatch: r sends rows[r][q], receives rows[q][r]; the return swaps them.
            const double out_b = double(back ? rows[size_t(q) * N + r] : rows[size_t(r) * N + q]) * bytes_per_row;
            const double in_b = double(back ? rows[size_t(r) * N + q] : rows[size_t(q) * N + r]) * bytes_per_row;
            double* bucket = node(q) == node(r) ? intra : inter;
            bucket[0] += out_b;
            bucket[1] += in_b;
            if (node(q) == node(r)) out.bytes_intra += int64_t(out_b);
            else out.bytes_inter += int64_t(out_b);
          }
          // A rank that exchanges nothing with another waits for no link.
          if (intra[0] + intra[1] + inter[0] + inter[1] == 0) continue;
          const double t = cost.latency + std::max(std::max(intra[0], intra[1]) / cost.intra_bw,
                                                   std::max(inter[0], inter[1]) / cost.inter_bw);
          worst = std::max(worst, t);
        }
        return worst;
      };
      const double ex = exchange(m.row_bytes, false) + exchange(m.back_row_bytes, true);
      out.dense_s += dense;
      out.experts_s += experts;
      out.exchange_s += ex;
      step_s += dense + experts + ex;
    }
    out.step_s.push_back(step_s);
  }
  return out;
}

}  // namespace moe::runtime
