#include "runtime/expert_rebalancer.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "common/error.h"
#include "common/log.h"
#include "runtime/model.h"
#include "runtime/placement_planner.h"

namespace moe::runtime {

std::vector<ExpertMove> plan_moves(const Placement& from, const Placement& to) {
  MOE_CHECK(from.n_layers() == to.n_layers() && from.n_experts() == to.n_experts() &&
                from.world_size() == to.world_size(),
            "plan_moves: placements of different shapes");
  std::vector<ExpertMove> moves;
  for (int l = 0; l < to.n_layers(); ++l)
    for (int e = 0; e < to.n_experts(); ++e) {
      std::vector<int> dsts = to.ranks_of(l, e);
      std::sort(dsts.begin(), dsts.end());
      const auto& holders = from.ranks_of(l, e);
      for (int dst : dsts) {
        if (from.holds(l, e, dst)) continue;
        moves.push_back({l, e, holders[size_t(dst) % holders.size()], dst});
      }
    }
  return moves;
}

size_t expert_weight_bytes(const ModelConfig& cfg, DType dtype) {
  return size_t(3) * size_t(cfg.hidden_size) * size_t(cfg.intermediate_size) * dtype_size(dtype);
}

size_t rebalance_reserve_bytes(const ModelConfig& cfg, const Placement& current, int rank,
                               DType dtype, int redundant_slots) {
  const int E = cfg.num_local_experts, N = current.world_size();
  const int64_t slots = std::min<int64_t>(E, (E + N - 1) / N + redundant_slots);
  int64_t grow = 0, most_held = 0;
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const int64_t held = int64_t(current.local_experts(l, rank).size());
    grow += std::max<int64_t>(0, slots - held);
    most_held = std::max(most_held, held);
  }
  return size_t(grow + most_held + 2 * slots) * expert_weight_bytes(cfg, dtype);
}

namespace {

// Frees the storage buffer that starts at `data`, if one does (a weight inside a larger buffer
// is freed with it).
void release(ModelWeights& w, const void* data) {
  auto& s = w.storage;
  const auto it = std::find_if(s.begin(), s.end(),
                               [&](const kernels::Buffer& b) { return b.data() == data; });
  if (it != s.end()) s.erase(it);
}

}  // namespace

MoveResult move_experts(const ModelConfig& cfg, const Placement& from, const Placement& to,
                        ModelWeights& weights, kernels::Ops& ops, comm::Communicator& comm) {
  const int N = comm.size(), me = comm.rank();
  MOE_CHECK(from.world_size() == N && to.world_size() == N,
            "move_experts: placements for " + std::to_string(from.world_size()) + " and " +
                std::to_string(to.world_size()) + " ranks on " + std::to_string(N));
  const DType dt = ops.weight_dtype();
  const int64_t H = cfg.hidden_size, I = cfg.intermediate_size;
  const size_t w13_bytes = size_t(2 * I * H) * dtype_size(dt);
  const size_t eb = expert_weight_bytes(cfg, dt);  // one element of the exchange
  const std::vector<ExpertMove> moves = plan_moves(from, to);

  MoveResult result;
  result.weights = int64_t(moves.size());
  result.bytes = int64_t(moves.size() * eb);
  std::vector<int64_t> send_counts(N), send_displs(N), recv_counts(N), recv_displs(N);
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    LayerWeights& lw = weights.layers[size_t(l)];
    // This layer's moves of this rank, by peer, then by expert (plan_moves' order): the order
    // in which a rank sends its elements to a peer is the one the peer expects them in.
    std::vector<ExpertMove> mine_out, mine_in;
    bool any = false;
    for (const auto& m : moves) {
      if (m.layer != l) continue;
      any = true;
      if (m.src == me) mine_out.push_back(m);
      if (m.dst == me) mine_in.push_back(m);
    }
    // Every rank knows every move: a layer that neither gains nor drops a replica is skipped
    // by all of them together.
    if (!any && from.map()[size_t(l)] == to.map()[size_t(l)]) continue;
    std::stable_sort(mine_out.begin(), mine_out.end(),
                     [](const ExpertMove& a, const ExpertMove& b) { return a.dst < b.dst; });
    std::stable_sort(mine_in.begin(), mine_in.end(),
                     [](const ExpertMove& a, const ExpertMove& b) { return a.src < b.src; });
    std::fill(send_counts.begin(), send_counts.end(), 0);
    std::fill(recv_counts.begin(), recv_counts.end(), 0);
    for (const auto& m : mine_out) ++send_counts[size_t(m.dst)];
    for (const auto& m : mine_in) ++recv_counts[size_t(m.src)];
    int64_t sent = 0, received = 0;
    for (int r = 0; r < N; ++r) {
      send_displs[size_t(r)] = sent;
      recv_displs[size_t(r)] = received;
      sent += send_counts[size_t(r)];
      received += recv_counts[size_t(r)];
    }

    // Pack: each expert sent is its w13 ([2I, H]) then its w2 ([H, I]), one element.
    kernels::Buffer send, recv;
    if (!mine_out.empty()) send = ops.alloc(mine_out.size() * eb);
    if (!mine_in.empty()) recv = ops.alloc(mine_in.size() * eb);
    for (size_t i = 0; i < mine_out.size(); ++i) {
      const auto& held = lw.local_experts;
      const auto it = std::find(held.begin(), held.end(), mine_out[i].expert);
      MOE_CHECK(it != held.end(), "layer " + std::to_string(l) + ": rank " + std::to_string(me) +
                                      " is to send expert " + std::to_string(mine_out[i].expert) +
                                      " but does not hold it");
      const size_t j = size_t(it - held.begin());
      char* dst = send.as<char>() + i * eb;
      ops.copy(dst, lw.w13[j].data, w13_bytes);
      ops.copy(dst + w13_bytes, lw.w2[j].data, eb - w13_bytes);
    }
    comm.all_to_all_v(send.data(), send_counts.data(), send_displs.data(), recv.data(),
                      recv_counts.data(), recv_displs.data(), eb);

    // The layer's experts under `to`: kept ones as they are, received ones in a buffer each.
    const std::vector<int> now = to.local_experts(l, me);
    LayerWeights next;
    next.local_experts = now;
    for (int e : now) {
      const auto& held = lw.local_experts;
      const auto it = std::find(held.begin(), held.end(), e);
      if (it != held.end()) {
        const size_t j = size_t(it - held.begin());
        next.w13.push_back(lw.w13[j]);
        next.w2.push_back(lw.w2[j]);
        continue;
      }
      const auto in = std::find_if(mine_in.begin(), mine_in.end(),
                                   [&](const ExpertMove& m) { return m.expert == e; });
      MOE_CHECK(in != mine_in.end(), "layer " + std::to_string(l) + ": rank " +
                                         std::to_string(me) + " gets expert " +
                                         std::to_string(e) + " from no rank");
      weights.storage.push_back(ops.alloc(eb));
      char* own = weights.storage.back().as<char>();
      ops.copy(own, recv.as<char>() + size_t(in - mine_in.begin()) * eb, eb);
      next.w13.push_back(kernels::Weight{own, dt, 2 * I, H});
      next.w2.push_back(kernels::Weight{own + w13_bytes, dt, H, I});
    }
    // The copies out of `recv` and into `send` finish before either is freed.
    ops.synchronize();
    for (size_t j = 0; j < lw.local_experts.size(); ++j) {
      if (std::find(now.begin(), now.end(), lw.local_experts[j]) != now.end()) continue;
      release(weights, lw.w13[j].data);
      release(weights, lw.w2[j].data);
    }
    lw.local_experts = std::move(next.local_experts);
    lw.w13 = std::move(next.w13);
    lw.w2 = std::move(next.w2);
  }
  return result;
}

ExpertRebalancer::ExpertRebalancer(const RebalanceOptions& opts, const ModelConfig& cfg,
                                   Placement& placement, Model& model, kernels::Ops& ops,
                                   comm::Communicator& comm, const LoadStats& stats)
    : opts_(opts), cfg_(cfg), placement_(placement), model_(model), ops_(ops), comm_(comm),
      stats_(stats) {
  MOE_CHECK(opts_.interval_steps >= 1 && opts_.window_steps >= 1 && opts_.threshold >= 1.0 &&
                opts_.redundant_slots >= 0,
            "rebalance options out of range (RunConfig::validate refuses them)");
  history_.push_back(stats_.tokens);
}

bool ExpertRebalancer::after_step(int64_t step) {
  history_.push_back(stats_.tokens);
  while (history_.size() > size_t(opts_.window_steps) + 1) history_.pop_front();
  if (step % opts_.interval_steps != 0) return false;

  const auto t0 = std::chrono::steady_clock::now();
  const int L = cfg_.num_hidden_layers, E = cfg_.num_local_experts, N = comm_.size();
  // The window's choices per (layer, expert), over all ranks.
  std::vector<int64_t> window(history_.back());
  for (size_t i = 0; i < window.size(); ++i) window[i] -= history_.front()[i];
  comm_.all_reduce(window.data(), int(window.size()), comm::Communicator::Op::kSum);
  ++totals_.checks;
  PlanRequest req;
  req.load.assign(size_t(L), std::vector<double>(size_t(E)));
  bool any = false;
  for (int l = 0; l < L; ++l)
    for (int e = 0; e < E; ++e) {
      req.load[size_t(l)][size_t(e)] = double(window[size_t(l) * E + e]);
      any = any || window[size_t(l) * E + e] > 0;
    }
  if (!any) return false;
  double worst = 1.0;
  for (int l = 0; l < L; ++l)
    worst = std::max(worst, imbalance(predicted_rank_load(placement_, l, req.load[size_t(l)])));
  if (worst <= opts_.threshold) return false;

  req.n_ranks = N;
  req.redundant_per_rank = opts_.redundant_slots;
  req.current = &placement_;
  Plan plan = plan_placement(req);
  if (plan.placement.map() == placement_.map() && plan.placement.shares() == placement_.shares())
    return false;
  double after = 1.0;
  for (int l = 0; l < L; ++l)
    after = std::max(after, imbalance(predicted_rank_load(plan.placement, l, req.load[size_t(l)])));

  const MoveResult moved =
      move_experts(cfg_, placement_, plan.placement, model_.weights(), ops_, comm_);
  placement_ = std::move(plan.placement);
  model_.set_placement(placement_);
  ops_.synchronize();
  const double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++totals_.rebalances;
  totals_.weights_moved += moved.weights;
  totals_.bytes_moved += moved.bytes;
  totals_.seconds += s;
  totals_.last_seconds = s;
  totals_.last_imbalance_before = worst;
  totals_.last_imbalance_after = after;
  if (comm_.rank() == 0)
    spdlog::info("rebalanced at step {}: predicted imbalance {:.3f} -> {:.3f}, {} expert weights "
                 "moved ({:.2f} MB), {:.1f} ms",
                 step, worst, after, moved.weights, moved.bytes / 1e6, s * 1e3);
  return true;
}

}  // namespace moe::runtime
