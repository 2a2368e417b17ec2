#include "runtime/ep_simulator.h"

#include <algorithm>
#include <string>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::runtime {

namespace {

// One layer of one step as the runtime's dispatch plan lays it out: per source rank its tokens,
// the rows it sends each rank and the choices each rank computes.
struct LayerCounts {
  std::vector<int> tokens;           // [src]
  std::vector<int64_t> rows;         // [src * N + dst]
  std::vector<int64_t> computed;     // [rank]
  std::vector<int64_t> active;       // [rank] experts with rows on the rank
  std::vector<int64_t> per_expert;   // [expert * N + dst] choices of the expert sent to dst
};

class Planner {
 public:
  Planner(const SimModel& m, const Placement& p) : m_(m), N_(p.world_size()) {
    wheel_.resize(size_t(m.layers) * N_);
    for (int l = 0; l < m.layers; ++l)
      for (int s = 0; s < N_; ++s) wheel_[size_t(l) * N_ + s] = p.route_wheel(l, s);
  }

  const LayerCounts& layer(const SimSource& source, int step, int l) {
    const int N = N_, E = m_.experts, k = m_.top_k;
    c_.tokens.assign(size_t(N), 0);
    c_.rows.assign(size_t(N) * N, 0);
    c_.computed.assign(size_t(N), 0);
    c_.per_expert.assign(size_t(E) * N, 0);
    c_.active.assign(size_t(N), 0);
    for (int src = 0; src < N; ++src) {
      const std::vector<int32_t>& ex = source(step, l, src);
      const int T = int(ex.size()) / k;
      c_.tokens[size_t(src)] = T;
      counts_.assign(size_t(N + E * N), 0);
      slot_rank_.resize(ex.size());
      weight_.assign(ex.size(), 1.0f);
      const size_t s_max = size_t(T) * std::min(k, N);
      send_token_.resize(s_max);
      send_slots_.resize(s_max * k);
      home_.resize(ex.size());
      kernels::DispatchLayoutParams p;
      p.expert = ex.data();
      p.weight = weight_.data();
      p.route = wheel_[size_t(l) * N + src].data();
      p.counts = counts_.data();
      p.slot_rank = slot_rank_.data();
      p.send_token = send_token_.data();
      p.send_slots = send_slots_.data();
      p.home = home_.data();
      p.T = T;
      p.k = k;
      p.n_experts = E;
      p.n_ranks = N;
      kernels::cpu::dispatch_layout(p);
      for (int d = 0; d < N; ++d) c_.rows[size_t(src) * N + d] = counts_[size_t(d)];
      for (int e = 0; e < E; ++e)
        for (int d = 0; d < N; ++d) {
          const int32_t c = counts_[size_t(N + e * N + d)];
          c_.per_expert[size_t(e) * N + d] += c;
          c_.computed[size_t(d)] += c;
        }
    }
    for (size_t i = 0; i < c_.per_expert.size(); ++i) c_.active[i % N] += c_.per_expert[i] > 0;
    return c_;
  }

 private:
  const SimModel& m_;
  const int N_;
  std::vector<std::vector<int32_t>> wheel_;  // [layer * N + src]
  LayerCounts c_;
  std::vector<int32_t> counts_, slot_rank_, send_token_, home_;
  std::vector<kernels::RouteSlot> send_slots_;
  std::vector<float> weight_;
};

// Bytes rank r sends to and receives from other ranks in one exchange (dispatch, or the return
// with `back`), split by whether the peer is on r's node.
struct RankBytes {
  double intra[2] = {0, 0}, inter[2] = {0, 0};  // [out, in]
};
RankBytes rank_bytes(const LayerCounts& c, int N, int r, int64_t bytes_per_row, bool back,
                     int gpus_per_node) {
  RankBytes b;
  for (int q = 0; q < N; ++q) {
    if (q == r) continue;
    // Dispatch: r sends rows[r][q], receives rows[q][r]; the return swaps them.
    const double out_b = double(back ? c.rows[size_t(q) * N + r] : c.rows[size_t(r) * N + q]) * bytes_per_row;
    const double in_b = double(back ? c.rows[size_t(r) * N + q] : c.rows[size_t(q) * N + r]) * bytes_per_row;
    double* bucket = q / gpus_per_node == r / gpus_per_node ? b.intra : b.inter;
    bucket[0] += out_b;
    bucket[1] += in_b;
  }
  return b;
}

// The expert FFNs of rank r: their FLOPs, and their weights read once each.
double expert_seconds(const LayerCounts& c, const SimModel& m, int r, const CostModel& cost) {
  const double flops = double(c.computed[size_t(r)]) * 6.0 * m.hidden * double(m.intermediate);
  const double reads = cost.weight_bw > 0 ? double(c.active[size_t(r)]) * double(m.weight_bytes) / cost.weight_bw : 0;
  return flops / cost.expert_flops + reads;
}

// Rows rank r packs (all it sends, its own included) and receives.
int64_t rows_handled(const LayerCounts& c, int N, int r) {
  int64_t n = 0;
  for (int q = 0; q < N; ++q) n += c.rows[size_t(r) * N + q] + c.rows[size_t(q) * N + r];
  return n;
}

}  // namespace

SimResult simulate(const SimSource& source, int steps, const SimModel& m,
                   const Placement& placement, int gpus_per_node, const CostModel& cost) {
  const int N = placement.world_size(), E = m.experts, L = m.layers;
  MOE_CHECK(placement.n_experts() == E && placement.n_layers() >= L,
            "simulate: the placement has " + std::to_string(placement.n_experts()) +
                " experts and " + std::to_string(placement.n_layers()) + " layers, the model " +
                std::to_string(E) + " and " + std::to_string(L));
  if (gpus_per_node < 1) throw InputError("simulator: GPUs per node must be >= 1");
  SimResult out;
  out.stats = LoadStats(L, E, N);
  out.stats.steps = steps;
  Planner plan(m, placement);

  for (int step = 0; step < steps; ++step) {
    double step_s = cost.step_s;
    out.dense_s += cost.step_s;
    for (int l = 0; l < L; ++l) {
      const LayerCounts& c = plan.layer(source, step, l);
      for (int s = 0; s < N; ++s)
        for (int d = 0; d < N; ++d) {
          const int64_t rows = c.rows[size_t(s) * N + d];
          out.stats.row_count(l, s, d) += rows;
          out.stats.byte_count(l, s, d) += rows * m.row_bytes;
          out.stats.byte_count(l, d, s) += rows * m.back_row_bytes;
        }
      for (int e = 0; e < E; ++e)
        for (int d = 0; d < N; ++d) out.stats.token_count(l, e) += c.per_expert[size_t(e) * N + d];
      for (int r = 0; r < N; ++r) out.stats.computed(l, r) += c.computed[size_t(r)];

      // The cost of this layer: each phase waits for its slowest rank.
      double dense = 0, experts = 0, permute = 0;
      for (int r = 0; r < N; ++r) {
        dense = std::max(dense, c.tokens[size_t(r)] * cost.dense_s_per_token);
        experts = std::max(experts, expert_seconds(c, m, r, cost));
        permute = std::max(permute, double(rows_handled(c, N, r)) * cost.permute_s_per_row);
      }
      auto exchange = [&](int64_t bytes_per_row, bool back) {
        double worst = 0;
        for (int r = 0; r < N; ++r) {
          const RankBytes b = rank_bytes(c, N, r, bytes_per_row, back, gpus_per_node);
          out.bytes_intra += int64_t(b.intra[0]);
          out.bytes_inter += int64_t(b.inter[0]);
          // A rank that exchanges nothing with another waits for no link.
          if (b.intra[0] + b.intra[1] + b.inter[0] + b.inter[1] == 0) continue;
          const double t = cost.latency + std::max(std::max(b.intra[0], b.intra[1]) / cost.intra_bw,
                                                   std::max(b.inter[0], b.inter[1]) / cost.inter_bw);
          worst = std::max(worst, t);
        }
        return worst;
      };
      const double ex = exchange(m.row_bytes, false) + exchange(m.back_row_bytes, true);
      out.dense_s += dense;
      out.experts_s += experts;
      out.permute_s += permute;
      out.exchange_s += ex;
      step_s += dense + experts + permute + ex;
    }
    out.step_s.push_back(step_s);
  }
  return out;
}

namespace {
// Least squares of y = a + b x; false where x does not vary.
bool fit_line(const std::vector<double>& x, const std::vector<double>& y, double* a, double* b) {
  const double n = double(x.size());
  if (n < 2) return false;
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sx += x[i];
    sy += y[i];
    sxx += x[i] * x[i];
    sxy += x[i] * y[i];
  }
  const double den = n * sxx - sx * sx;
  if (!(den > 1e-12 * std::max(1.0, n * sxx))) return false;
  *b = (n * sxy - sx * sy) / den;
  *a = (sy - *b * sx) / n;
  return true;
}
}  // namespace

Calibration calibrate(const SimSource& source, const SimModel& m, const Placement& recorded,
                      const std::vector<RoutingTrace::StepTime>& samples, const CostModel& given) {
  const int N = recorded.world_size(), L = m.layers;
  Calibration out;
  out.cost = given;
  Planner plan(m, recorded);
  const double flop_per_row = 6.0 * m.hidden * double(m.intermediate);
  double rows_computed = 0, expert_s = 0, rows_moved = 0, permute_s = 0;
  // Expert time against FLOPs and weight bytes read: the sums of a two-term least squares.
  double ff = 0, fw = 0, ww = 0, fy = 0, wy = 0;
  std::vector<double> link_x, link_y, tok_x, rest_y;
  int cached_step = -1;
  // Per rank, for the step in `cached_step`: tokens, rows computed and handled over the layers,
  // bytes to other ranks (the larger of sent and received, both exchanges).
  const size_t n_ranks = static_cast<size_t>(N);
  std::vector<double> tokens(n_ranks), computed(n_ranks), handled(n_ranks), bytes(n_ranks),
      active(n_ranks);
  for (const auto& w : samples) {
    if (w.src >= N) continue;
    if (w.step != cached_step) {
      std::fill(tokens.begin(), tokens.end(), 0.0);
      std::fill(computed.begin(), computed.end(), 0.0);
      std::fill(handled.begin(), handled.end(), 0.0);
      std::fill(bytes.begin(), bytes.end(), 0.0);
      std::fill(active.begin(), active.end(), 0.0);
      for (int l = 0; l < L; ++l) {
        const LayerCounts& c = plan.layer(source, w.step, l);
        for (int r = 0; r < N; ++r) {
          if (l == 0) tokens[size_t(r)] = c.tokens[size_t(r)];
          computed[size_t(r)] += double(c.computed[size_t(r)]);
          active[size_t(r)] += double(c.active[size_t(r)]);
          handled[size_t(r)] += double(rows_handled(c, N, r));
          for (bool back : {false, true}) {
            const RankBytes b = rank_bytes(c, N, r, back ? m.back_row_bytes : m.row_bytes, back, N);
            bytes[size_t(r)] += std::max(b.intra[0], b.intra[1]);
          }
        }
      }
      cached_step = w.step;
    }
    const size_t r = size_t(w.src);
    ++out.samples;
    rows_computed += computed[r];
    expert_s += w.experts;
    const double f = computed[r] * flop_per_row, wb = active[r] * double(m.weight_bytes);
    ff += f * f;
    fw += f * wb;
    ww += wb * wb;
    fy += f * w.experts;
    wy += wb * w.experts;
    rows_moved += handled[r];
    permute_s += w.permute + w.combine;
    link_x.push_back(bytes[r]);
    link_y.push_back(w.exchange / (2.0 * L));  // per exchange: latency + bytes / (2 L bw)
    tok_x.push_back(tokens[r] * double(L));
    rest_y.push_back(std::max(0.0, w.total - w.permute - w.exchange - w.experts - w.combine));
  }
  if (out.samples == 0) throw InputError("calibration: the trace has no measured step (W lines)");
  // expert time = f / flops + wb / weight_bw: solve the 2 x 2 normal equations; where either
  // coefficient is not positive (or there are no weight bytes), FLOPs alone as a ratio of sums.
  const double det = ff * ww - fw * fw;
  const double u = det > 1e-12 * ff * ww ? (fy * ww - wy * fw) / det : 0;  // 1 / flops
  const double v = det > 1e-12 * ff * ww ? (wy * ff - fy * fw) / det : 0;  // 1 / weight_bw
  if (m.weight_bytes > 0 && u > 0 && v > 0) {
    out.cost.expert_flops = 1.0 / u;
    out.cost.weight_bw = 1.0 / v;
  } else if (rows_computed > 0 && expert_s > 0) {
    out.cost.expert_flops = rows_computed * flop_per_row / expert_s;
    out.cost.weight_bw = 0;
  }
  if (rows_moved > 0) out.cost.permute_s_per_row = permute_s / rows_moved;
  double a = 0, b = 0;
  if (N > 1) {
    for (auto& x : link_x) x /= 2.0 * L;  // per exchange, as y
    if (fit_line(link_x, link_y, &a, &b) && a >= 0 && b > 0) {
      out.cost.latency = a;
      out.cost.intra_bw = 1.0 / b;
      out.link_fitted = true;
    }
  }
  if (fit_line(tok_x, rest_y, &a, &b)) {
    if (b < 0) {  // no growth with the tokens: all of it per step
      b = 0;
      a = 0;
      for (double y : rest_y) a += y / double(rest_y.size());
    }
    out.cost.step_s = std::max(0.0, a);
    out.cost.dense_s_per_token = b;
  } else {  // one token count throughout: split as the mean per token
    double y = 0, x = 0;
    for (size_t i = 0; i < rest_y.size(); ++i) y += rest_y[i], x += tok_x[i];
    out.cost.step_s = 0;
    out.cost.dense_s_per_token = x > 0 ? y / x : 0;
  }
  return out;
}

}  // namespace moe::runtime
