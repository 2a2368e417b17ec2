#include "runtime/placement.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace moe::runtime {

Placement Placement::make(Kind kind, int n_layers, int n_experts, int world_size) {
  if (world_size < 1) throw InputError("placement: world size must be >= 1");
  std::vector<std::vector<int>> layer(n_experts);
  if (world_size <= n_experts) {
    const int block = (n_experts + world_size - 1) / world_size;
    for (int e = 0; e < n_experts; ++e)
      layer[e].push_back(kind == Kind::kRoundRobin ? e % world_size : e / block);
  } else {
    // More ranks than experts: every rank holds one expert, each expert has replicas.
    for (int r = 0; r < world_size; ++r) layer[r % n_experts].push_back(r);
  }
  Placement p;
  p.ranks_of_.assign(n_layers, layer);
  p.world_size_ = world_size;
  return p;
}

Placement Placement::from_map(const std::vector<std::vector<std::vector<int>>>& ranks_of,
                              int world_size) {
  for (size_t l = 0; l < ranks_of.size(); ++l) {
    for (size_t e = 0; e < ranks_of[l].size(); ++e) {
      const auto& r = ranks_of[l][e];
      if (r.empty())
        throw InputError("placement: layer " + std::to_string(l) + " expert " +
                         std::to_string(e) + " is on no rank (each expert needs at least one)");
      for (int x : r)
        if (x < 0 || x >= world_size)
          throw InputError("placement: layer " + std::to_string(l) + " expert " +
                           std::to_string(e) + " is placed on rank " + std::to_string(x) +
                           ", outside [0, " + std::to_string(world_size) + ")");
    }
  }
  Placement p;
  p.ranks_of_ = ranks_of;
  p.world_size_ = world_size;
  return p;
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

bool Placement::holds(int layer, int expert, int rank) const {
  const auto& r = ranks_of_[layer][expert];
  return std::find(r.begin(), r.end(), rank) != r.end();
}

}  // namespace moe::runtime
