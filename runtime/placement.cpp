#include "runtime/placement.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/error.h"
#include "runtime/model_config.h"

namespace moe::runtime {

Placement Placement::make(Kind kind, int n_layers, int n_experts, int world_size) {
  if (world_size < 1) throw InputError("placement: world size must be >= 1");
  // The table is n_layers x n_experts: sized only from counts config.json's bounds allow.
  if (n_layers < 1 || n_layers > ModelConfig::kMaxLayers)
    throw InputError("placement: " + std::to_string(n_layers) + " layers, expected [1, " +
                     std::to_string(ModelConfig::kMaxLayers) + "]");
  if (n_experts < 1 || n_experts > ModelConfig::kMaxExperts)
    throw InputError("placement: " + std::to_string(n_experts) + " experts, expected [1, " +
                     std::to_string(ModelConfig::kMaxExperts) + "]");
  std::vector<std::vector<int>> layer(n_experts);
  if (world_size <= n_experts) {
    // Contiguous blocks as even as they can be: the first E % N ranks hold one expert more, so
    // no rank is left without experts (8 over 6 ranks: 2, 2, 1, 1, 1, 1).
    const int base = n_experts / world_size, extra = n_experts % world_size;
    for (int r = 0; r < world_size; ++r) {
      const int first = r * base + std::min(r, extra), count = base + (r < extra);
      for (int e = first; e < first + count; ++e)
        layer[e].push_back(kind == Kind::kRoundRobin ? e % world_size : r);
    }
  } else {
    // More ranks than experts: every rank holds one expert, each expert has replicas.
    for (int r = 0; r < world_size; ++r) layer[r % n_experts].push_back(r);
  }
  Placement p;
  p.ranks_of_.assign(n_layers, layer);
  p.shares_.assign(n_layers, {});
  p.world_size_ = world_size;
  return p;
}

namespace {

std::string where(size_t l, size_t e) {
  return "placement: layer " + std::to_string(l) + " expert " + std::to_string(e);
}

// Refuses a bad layer of a map (and its shares, when given); returns the shares normalised.
std::vector<std::vector<double>> checked_layer(size_t l, const std::vector<std::vector<int>>& map,
                                               const std::vector<std::vector<double>>& shares,
                                               int world_size) {
  for (size_t e = 0; e < map.size(); ++e) {
    const auto& r = map[e];
    if (r.empty())
      throw InputError(where(l, e) + " is on no rank (each expert needs at least one)");
    for (size_t i = 0; i < r.size(); ++i) {
      if (r[i] < 0 || r[i] >= world_size)
        throw InputError(where(l, e) + " is placed on rank " + std::to_string(r[i]) +
                         ", outside [0, " + std::to_string(world_size) + ")");
      if (std::find(r.begin(), r.begin() + long(i), r[i]) != r.begin() + long(i))
        throw InputError(where(l, e) + " lists rank " + std::to_string(r[i]) +
                         " twice (a rank holds an expert once)");
    }
  }
  if (shares.empty()) return {};
  if (shares.size() != map.size())
    throw InputError("placement: layer " + std::to_string(l) + " has shares for " +
                     std::to_string(shares.size()) + " experts, expected " +
                     std::to_string(map.size()) + " (one list per expert, as the map)");
  std::vector<std::vector<double>> out(shares.size());
  for (size_t e = 0; e < map.size(); ++e) {
    if (shares[e].size() != map[e].size())
      throw InputError(where(l, e) + " has " + std::to_string(shares[e].size()) +
                       " shares for " + std::to_string(map[e].size()) +
                       " replicas, expected one share per replica");
    double sum = 0;
    for (double w : shares[e]) {
      if (!(w >= 0.0) || !std::isfinite(w))
        throw InputError(where(l, e) + " has share " + std::to_string(w) +
                         ", expected a number >= 0");
      sum += w;
    }
    if (!(sum > 0.0))
      throw InputError(where(l, e) + " has shares summing to 0, expected a positive sum");
    for (double w : shares[e]) out[e].push_back(w / sum);
  }
  return out;
}

// kRouteWheel entries for replicas of fractions w (summing to 1): entries apportioned by largest
// remainder (ties to the lower replica), spread by smooth weighted round-robin, so that every
// stretch of the wheel splits close to w.
std::vector<int> wheel_of(const std::vector<double>& w) {
  constexpr int Q = kernels::kRouteWheel;
  const size_t R = w.size();
  std::vector<int> count(R);
  std::vector<std::pair<double, size_t>> rest;
  int used = 0;
  for (size_t i = 0; i < R; ++i) {
    count[i] = int(std::floor(w[i] * Q));
    used += count[i];
    rest.push_back({w[i] * Q - count[i], i});
  }
  std::stable_sort(rest.begin(), rest.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t j = 0; used < Q; ++j, ++used) ++count[rest[j % R].second];
  std::vector<int> current(R, 0), wheel(Q);
  for (int q = 0; q < Q; ++q) {
    size_t best = 0;
    for (size_t i = 0; i < R; ++i) {
      current[i] += count[i];
      if (current[i] > current[best]) best = i;
    }
    wheel[q] = int(best);
    current[best] -= Q;
  }
  return wheel;
}

}  // namespace

Placement Placement::from_map(const std::vector<std::vector<std::vector<int>>>& ranks_of,
                              int world_size,
                              const std::vector<std::vector<std::vector<double>>>& shares) {
  if (world_size < 1) throw InputError("placement: world size must be >= 1");
  if (!shares.empty() && shares.size() != ranks_of.size())
    throw InputError("placement: shares for " + std::to_string(shares.size()) +
                     " layers, expected " + std::to_string(ranks_of.size()) + " (as the map)");
  Placement p;
  p.world_size_ = world_size;
  p.ranks_of_ = ranks_of;
  p.shares_.assign(ranks_of.size(), {});
  for (size_t l = 0; l < ranks_of.size(); ++l) {
    if (ranks_of[l].size() != ranks_of[0].size())
      throw InputError("placement: layer " + std::to_string(l) + " lists " +
                       std::to_string(ranks_of[l].size()) + " experts, layer 0 " +
                       std::to_string(ranks_of[0].size()) + " (every layer needs the same)");
    p.shares_[l] = checked_layer(l, ranks_of[l], shares.empty() ? std::vector<std::vector<double>>{}
                                                               : shares[l],
                                 world_size);
  }
  return p;
}

void Placement::set_layer(int layer, const std::vector<std::vector<int>>& ranks_of,
                          const std::vector<std::vector<double>>& shares) {
  MOE_CHECK(layer >= 0 && layer < n_layers() && int(ranks_of.size()) == n_experts(),
            "placement: set_layer " + std::to_string(layer) + " with " +
                std::to_string(ranks_of.size()) + " experts");
  auto checked = checked_layer(size_t(layer), ranks_of, shares, world_size_);
  ranks_of_[layer] = ranks_of;
  shares_[layer] = std::move(checked);
}

double Placement::share(int layer, int expert, int i) const {
  if (!has_shares(layer)) return 1.0 / double(ranks_of_[layer][expert].size());
  return shares_[layer][expert][i];
}

std::vector<int32_t> Placement::route_wheel(int layer, int src_rank) const {
  constexpr int Q = kernels::kRouteWheel;
  const int E = n_experts();
  std::vector<int32_t> out(size_t(E) * Q);
  for (int e = 0; e < E; ++e) {
    int32_t* w = out.data() + size_t(e) * Q;
    const auto& r = ranks_of_[layer][e];
    if (!has_shares(layer) || r.size() == 1) {
      std::fill(w, w + Q, int32_t(route(layer, e, src_rank)));
      continue;
    }
    // Each source starts at its own point, so that sources with few tokens do not all begin
    // on the same replica.
    const std::vector<int> wheel = wheel_of(shares_[layer][e]);
    // (+ src_rank: a wheel of a short period, such as 1/2, 1/4, 1/4, would otherwise repeat at
    // every multiple of Q / world_size.)
    const int start = int((int64_t(src_rank) * Q / world_size_ + src_rank) % Q);
    for (int q = 0; q < Q; ++q) w[q] = int32_t(r[size_t(wheel[size_t((q + start) % Q)])]);
  }
  return out;
}

double Placement::expected_fraction(int layer, int expert, int rank) const {
  const auto& r = ranks_of_[layer][expert];
  const auto it = std::find(r.begin(), r.end(), rank);
  if (it == r.end()) return 0.0;
  if (has_shares(layer) && r.size() > 1) {
    // A rotation of the wheel holds the same entries: every source sends the wheel's count.
    const std::vector<int> wheel = wheel_of(shares_[layer][expert]);
    const auto i = int(it - r.begin());
    return double(std::count(wheel.begin(), wheel.end(), i)) / double(kernels::kRouteWheel);
  }
  int hits = 0;
  for (int src = 0; src < world_size_; ++src) hits += route(layer, expert, src) == rank;
  return double(hits) / double(world_size_);
}

Placement::Kind Placement::parse_kind(const std::string& s) {
  if (s == "contiguous") return Kind::kContiguous;
  if (s == "round_robin") return Kind::kRoundRobin;
  if (s == "explicit") return Kind::kExplicit;
  throw InputError("placement: unknown kind '" + s +
                   "' (expected contiguous, round_robin or explicit)");
}

std::vector<int> Placement::local_experts(int layer, int rank) const {
  std::vector<int> out;
  for (int e = 0; e < n_experts(); ++e)
    if (holds(layer, e, rank)) out.push_back(e);
  return out;
}

int Placement::route(int layer, int expert, int src_rank) const {
  const auto& r = ranks_of_[layer][expert];
  if (has_shares(layer) && r.size() > 1)
    return route_wheel(layer, src_rank)[size_t(expert) * kernels::kRouteWheel];
  // A replica on the source rank itself costs no exchange; otherwise the source rank picks one.
  if (r.size() > 1 && std::find(r.begin(), r.end(), src_rank) != r.end()) return src_rank;
  return r[size_t(src_rank) % r.size()];
}

bool Placement::holds(int layer, int expert, int rank) const {
  const auto& r = ranks_of_[layer][expert];
  return std::find(r.begin(), r.end(), rank) != r.end();
}

}  // namespace moe::runtime
