#include "runtime/placement_planner.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "common/error.h"

namespace moe::runtime {

namespace {

// One layer's plan while it is made: per expert its ranks and their shares.
struct LayerMap {
  std::vector<std::vector<int>> ranks;      // [expert] -> ranks
  std::vector<std::vector<double>> shares;  // [expert] -> fraction per replica, summing to 1
};

struct Shape {
  int N = 1, S = 1, ranks_per_node = 1;
  int node(int r) const { return r / ranks_per_node; }
};

std::vector<double> rank_loads(const LayerMap& m, const std::vector<double>& w, int N) {
  std::vector<double> load(size_t(N), 0.0);
  for (size_t e = 0; e < m.ranks.size(); ++e)
    for (size_t i = 0; i < m.ranks[e].size(); ++i)
      load[size_t(m.ranks[e][i])] += w[e] * m.shares[e][i];
  return load;
}

double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

// The experts a rank holds, and how many.
std::vector<int> slots_used(const LayerMap& m, int N) {
  std::vector<int> used(size_t(N), 0);
  for (const auto& r : m.ranks)
    for (int x : r) ++used[size_t(x)];
  return used;
}

bool holds(const LayerMap& m, int e, int r) {
  const auto& v = m.ranks[size_t(e)];
  return std::find(v.begin(), v.end(), r) != v.end();
}

// Step 1: replicas per expert.
std::vector<int> replica_counts(const std::vector<double>& w, const Shape& s) {
  const int E = int(w.size());
  std::vector<int> rep(size_t(E), 1);
  for (int extra = s.N * s.S - E; extra > 0; --extra) {
    int best = -1;
    for (int e = 0; e < E; ++e) {
      if (rep[size_t(e)] >= s.N || w[size_t(e)] <= 0) continue;
      if (best < 0 || w[size_t(e)] / rep[size_t(e)] > w[size_t(best)] / rep[size_t(best)])
        best = e;
    }
    if (best < 0) break;
    ++rep[size_t(best)];
  }
  return rep;
}

// Step 2: replicas, heaviest first, onto the least loaded rank with room. With `sticky`, a rank
// in sticky[e] is taken instead when its load is within `slack` of the least loaded one's.
LayerMap pack(const std::vector<double>& w, const std::vector<int>& rep, const Shape& s,
              const std::vector<std::vector<int>>* sticky, double slack) {
  const int E = int(w.size()), N = s.N;
  struct Item {
    double load;
    int e;
  };
  std::vector<Item> items;
  for (int e = 0; e < E; ++e)
    for (int i = 0; i < rep[size_t(e)]; ++i) items.push_back({w[size_t(e)] / rep[size_t(e)], e});
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.load > b.load; });
  LayerMap m;
  m.ranks.assign(size_t(E), {});
  std::vector<double> load(size_t(N), 0.0), node_load(size_t(N / s.ranks_per_node), 0.0);
  std::vector<int> used(size_t(N), 0);
  auto place = [&](const Item& it, int r) {
    m.ranks[size_t(it.e)].push_back(r);
    load[size_t(r)] += it.load;
    node_load[size_t(s.node(r))] += it.load;
    ++used[size_t(r)];
  };
  for (const Item& it : items) {
    int best = -1;
    for (int r = 0; r < N; ++r) {
      if (used[size_t(r)] >= s.S || holds(m, it.e, r)) continue;
      if (best < 0 || load[size_t(r)] < load[size_t(best)] ||
          (load[size_t(r)] == load[size_t(best)] &&
           node_load[size_t(s.node(r))] < node_load[size_t(s.node(best))]))
        best = r;
    }
    if (best >= 0 && sticky) {
      for (int r : (*sticky)[size_t(it.e)]) {
        if (used[size_t(r)] >= s.S || holds(m, it.e, r)) continue;
        if (load[size_t(r)] <= load[size_t(best)] + slack) {
          best = r;
          break;
        }
      }
    }
    if (best < 0) {
      // Every rank with room holds this expert already: move another replica x from a full
      // rank q without it to such a rank r, and take its place on q.
      for (int q = 0; q < N && best < 0; ++q) {
        if (holds(m, it.e, q)) continue;
        for (int r = 0; r < N && best < 0; ++r) {
          if (used[size_t(r)] >= s.S) continue;
          for (int x = 0; x < E && best < 0; ++x) {
            if (x == it.e || !holds(m, x, q) || holds(m, x, r)) continue;
            auto& v = m.ranks[size_t(x)];
            *std::find(v.begin(), v.end(), q) = r;
            const double lx = w[size_t(x)] / rep[size_t(x)];
            load[size_t(q)] -= lx;
            load[size_t(r)] += lx;
            node_load[size_t(s.node(q))] -= lx;
            node_load[size_t(s.node(r))] += lx;
            --used[size_t(q)];
            ++used[size_t(r)];
            best = q;
          }
        }
      }
      MOE_CHECK(best >= 0, "planner: no rank can take a replica of expert " +
                               std::to_string(it.e));
    }
    place(it, best);
  }
  for (int e = 0; e < E; ++e) {
    std::sort(m.ranks[size_t(e)].begin(), m.ranks[size_t(e)].end());
    m.shares.push_back(std::vector<double>(m.ranks[size_t(e)].size(),
                                           1.0 / double(m.ranks[size_t(e)].size())));
  }
  return m;
}

// Step 3: single moves and swaps of replicas between the busiest rank and another, while the
// pair's larger load drops. Shares are equal here (step 4 comes after).
void local_search(LayerMap& m, const std::vector<double>& w, const Shape& s) {
  const int E = int(w.size()), N = s.N;
  const double eps = 1e-12 * (std::accumulate(w.begin(), w.end(), 0.0) + 1.0);
  auto item = [&](int e) { return w[size_t(e)] / double(m.ranks[size_t(e)].size()); };
  for (int iter = 0; iter < 64 * (E + N); ++iter) {
    const auto load = rank_loads(m, w, N);
    const auto used = slots_used(m, N);
    const int top = int(std::max_element(load.begin(), load.end()) - load.begin());
    double best_peak = load[size_t(top)] - eps;
    int best_a = -1, best_b = -1, best_r = -1;  // move a: top -> r (b = -1), or swap a <-> b
    for (int r = 0; r < N; ++r) {
      if (r == top) continue;
      for (int a = 0; a < E; ++a) {
        if (!holds(m, a, top) || holds(m, a, r)) continue;
        const double la = item(a);
        if (used[size_t(r)] < s.S) {
          const double peak = std::max(load[size_t(top)] - la, load[size_t(r)] + la);
          if (peak < best_peak) best_peak = peak, best_a = a, best_b = -1, best_r = r;
        }
        for (int b = 0; b < E; ++b) {
          if (b == a || !holds(m, b, r) || holds(m, b, top)) continue;
          const double lb = item(b);
          const double peak = std::max(load[size_t(top)] - la + lb, load[size_t(r)] + la - lb);
          if (peak < best_peak) best_peak = peak, best_a = a, best_b = b, best_r = r;
        }
      }
    }
    if (best_a < 0) return;
    auto move = [&](int e, int from, int to) {
      auto& v = m.ranks[size_t(e)];
      *std::find(v.begin(), v.end(), from) = to;
      std::sort(v.begin(), v.end());
    };
    move(best_a, top, best_r);
    if (best_b >= 0) move(best_b, best_r, top);
  }
}

// Fills the free slots of a map with replicas, hottest per replica first, each on the least
// loaded rank with room that lacks the expert (the current map's start towards a plan).
void fill_free_slots(LayerMap& m, const std::vector<double>& w, const Shape& s) {
  const int E = int(w.size()), N = s.N;
  for (;;) {
    for (size_t e = 0; e < m.ranks.size(); ++e)
      m.shares[e].assign(m.ranks[e].size(), 1.0 / double(m.ranks[e].size()));
    const auto load = rank_loads(m, w, N);
    const auto used = slots_used(m, N);
    int best_e = -1, best_r = -1;
    for (int e = 0; e < E; ++e) {
      const auto rep = double(m.ranks[size_t(e)].size());
      if (w[size_t(e)] <= 0 || (best_e >= 0 && w[size_t(e)] / rep <=
                                    w[size_t(best_e)] / double(m.ranks[size_t(best_e)].size())))
        continue;
      int r_pick = -1;
      for (int r = 0; r < N; ++r)
        if (used[size_t(r)] < s.S && !holds(m, e, r) &&
            (r_pick < 0 || load[size_t(r)] < load[size_t(r_pick)]))
          r_pick = r;
      if (r_pick >= 0) best_e = e, best_r = r_pick;
    }
    if (best_e < 0) return;
    auto& v = m.ranks[size_t(best_e)];
    v.push_back(best_r);
    std::sort(v.begin(), v.end());
  }
}

// Step 4: water-filling of the replicated experts' shares. Each round takes the busiest rank
// and moves load of one of its replicated experts to that expert's least loaded other holder,
// half the gap (less if the share runs out), while that lowers the peak.
void balance_shares(LayerMap& m, const std::vector<double>& w, const Shape& s) {
  const int E = int(w.size()), N = s.N;
  const double total = std::accumulate(w.begin(), w.end(), 0.0);
  if (total <= 0) return;
  for (int iter = 0; iter < 256 * (E + N); ++iter) {
    const auto load = rank_loads(m, w, N);
    const int top = int(std::max_element(load.begin(), load.end()) - load.begin());
    double best_gain = 1e-9 * total / N;
    int best_e = -1;
    size_t from = 0, to = 0;
    double amount = 0;
    for (int e = 0; e < E; ++e) {
      const auto& r = m.ranks[size_t(e)];
      if (r.size() < 2 || w[size_t(e)] <= 0) continue;
      const auto it = std::find(r.begin(), r.end(), top);
      if (it == r.end()) continue;
      const size_t i = size_t(it - r.begin());
      for (size_t j = 0; j < r.size(); ++j) {
        if (j == i) continue;
        const double gap = load[size_t(top)] - load[size_t(r[j])];
        const double x = std::min(gap / 2, w[size_t(e)] * m.shares[size_t(e)][i]);
        if (x > best_gain) best_gain = x, best_e = e, from = i, to = j, amount = x;
      }
    }
    if (best_e < 0) return;
    auto& sh = m.shares[size_t(best_e)];
    const double f = amount / w[size_t(best_e)];
    sh[from] = std::max(0.0, sh[from] - f);
    sh[to] += f;
  }
}

int moved_between(const LayerMap& now, const std::vector<std::vector<int>>& before) {
  int moved = 0;
  for (size_t e = 0; e < now.ranks.size(); ++e)
    for (int r : now.ranks[e])
      if (std::find(before[e].begin(), before[e].end(), r) == before[e].end()) ++moved;
  return moved;
}

// What the current placement's routing does, as a LayerMap (shares as expected_fraction).
LayerMap current_map(const Placement& p, int layer) {
  LayerMap m;
  for (int e = 0; e < p.n_experts(); ++e) {
    m.ranks.push_back(p.ranks_of(layer, e));
    std::vector<double> sh;
    for (int r : m.ranks.back()) sh.push_back(p.expected_fraction(layer, e, r));
    m.shares.push_back(sh);
  }
  return m;
}

}  // namespace

std::vector<double> predicted_rank_load(const Placement& placement, int layer,
                                        const std::vector<double>& load) {
  return rank_loads(current_map(placement, layer), load, placement.world_size());
}

double imbalance(const std::vector<double>& v) {
  if (v.empty()) return 1.0;
  const double sum = std::accumulate(v.begin(), v.end(), 0.0);
  if (sum <= 0) return 1.0;
  return max_of(v) * double(v.size()) / sum;
}

Plan plan_placement(const PlanRequest& req) {
  const int L = int(req.load.size());
  if (L == 0) throw InputError("planner: no layers in the load");
  const int E = int(req.load[0].size());
  if (E == 0) throw InputError("planner: layer 0 has no experts");
  const int N = req.n_ranks;
  if (N < 1) throw InputError("planner: " + std::to_string(N) + " ranks, expected >= 1");
  for (int l = 0; l < L; ++l) {
    if (int(req.load[size_t(l)].size()) != E)
      throw InputError("planner: layer " + std::to_string(l) + " has " +
                       std::to_string(req.load[size_t(l)].size()) + " expert loads, layer 0 " +
                       std::to_string(E));
    for (int e = 0; e < E; ++e) {
      const double x = req.load[size_t(l)][size_t(e)];
      if (!(x >= 0) || !std::isfinite(x))
        throw InputError("planner: layer " + std::to_string(l) + " expert " + std::to_string(e) +
                         " has load " + std::to_string(x) + ", expected a number >= 0");
    }
  }
  if (req.redundant_per_rank < 0)
    throw InputError("planner: redundant slots per rank is " +
                     std::to_string(req.redundant_per_rank) + ", expected >= 0");
  Shape s;
  s.N = N;
  s.S = req.slots_per_rank > 0 ? req.slots_per_rank : (E + N - 1) / N + req.redundant_per_rank;
  if (int64_t(s.S) * N < E)
    throw InputError("planner: " + std::to_string(N) + " ranks x " + std::to_string(s.S) +
                     " slots cannot hold " + std::to_string(E) + " experts (expected slots per "
                     "rank >= " + std::to_string((E + N - 1) / N) + ")");
  if (req.nodes < 1 || N % req.nodes != 0)
    throw InputError("planner: " + std::to_string(req.nodes) + " nodes do not divide " +
                     std::to_string(N) + " ranks evenly (expected a divisor of the rank count)");
  s.ranks_per_node = N / req.nodes;
  if (!(req.keep_within >= 0))
    throw InputError("planner: keep_within is " + std::to_string(req.keep_within) +
                     ", expected >= 0");
  const Placement* cur = req.current;
  if (cur && (cur->n_layers() < L || cur->n_experts() != E || cur->world_size() != N))
    throw InputError("planner: the current placement has " + std::to_string(cur->n_layers()) +
                     " layers, " + std::to_string(cur->n_experts()) + " experts and " +
                     std::to_string(cur->world_size()) + " ranks; the load " +
                     std::to_string(L) + " layers, " + std::to_string(E) + " experts and " +
                     std::to_string(N) + " ranks are planned for");

  Plan plan;
  plan.slots_per_rank = s.S;
  std::vector<std::vector<std::vector<int>>> map;
  std::vector<std::vector<std::vector<double>>> shares;
  for (int l = 0; l < L; ++l) {
    const std::vector<double>& w = req.load[size_t(l)];
    const double mean = std::accumulate(w.begin(), w.end(), 0.0) / N;
    const auto rep = replica_counts(w, s);
    struct Candidate {
      LayerMap m;
      double peak;
      int moved;
      bool kept;
    };
    std::vector<Candidate> cands;
    auto finish = [&](LayerMap m, bool kept) {
      balance_shares(m, w, s);
      // As the route wheel will split it: shares in steps of 1 / kRouteWheel.
      m = current_map(Placement::from_map({m.ranks}, N, {m.shares}), 0);
      const double peak = max_of(rank_loads(m, w, N));
      const int moved = cur ? moved_between(m, cur->map()[size_t(l)]) : 0;
      cands.push_back({std::move(m), peak, moved, kept});
    };
    {
      LayerMap fresh = pack(w, rep, s, nullptr, 0.0);
      local_search(fresh, w, s);
      finish(std::move(fresh), false);
    }
    LayerPlan lp;
    double cur_peak = 0;
    bool cur_fits = false;
    if (cur) {
      const LayerMap now = current_map(*cur, l);
      lp.before = rank_loads(now, w, N);
      cur_peak = max_of(lp.before);
      const auto used = slots_used(now, N);
      cur_fits = *std::max_element(used.begin(), used.end()) <= s.S;
      LayerMap sticky = pack(w, rep, s, &cur->map()[size_t(l)], req.keep_within * mean);
      local_search(sticky, w, s);
      finish(std::move(sticky), false);
      if (cur_fits) {
        // The current map improved by a few moves: its free slots filled, then moves and swaps.
        LayerMap improved = now;
        fill_free_slots(improved, w, s);
        local_search(improved, w, s);
        finish(std::move(improved), false);
        // The current map with its shares re-planned (the routing may change, no weight moves),
        // and as it is.
        LayerMap reshared = now;
        for (auto& sh : reshared.shares) std::fill(sh.begin(), sh.end(), 1.0 / double(sh.size()));
        finish(std::move(reshared), true);
        cands.push_back({now, cur_peak, 0, true});
      }
    }
    double best_peak = cands[0].peak;
    for (const auto& c : cands) best_peak = std::min(best_peak, c.peak);
    const Candidate* pick = nullptr;
    for (const auto& c : cands) {
      if (c.peak > best_peak * (1 + req.keep_within) + 1e-12) continue;
      if (cur_fits && c.peak > cur_peak + 1e-9 * (cur_peak + 1)) continue;  // never worse
      if (!pick || c.moved < pick->moved || (c.moved == pick->moved && c.peak < pick->peak))
        pick = &c;
    }
    if (!pick) pick = &cands.back();  // only the current map as it is satisfies every rule
    lp.after = rank_loads(pick->m, w, N);
    lp.moved = pick->moved;
    lp.kept = pick->kept;
    plan.weights_moved += lp.moved;
    plan.layers.push_back(std::move(lp));
    map.push_back(pick->m.ranks);
    shares.push_back(pick->m.shares);
  }
  plan.placement = Placement::from_map(map, N, shares);
  return plan;
}

}  // namespace moe::runtime
