#include "runtime/placement.h"

#include <algorithm>
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

int Placement::route(int layer, int expert, int src_rank) const {
  const auto& r = ranks_of_[layer][expert];
  // A replica on the source rank itself costs no exchange; otherwise the source rank picks one.
  if (r.size() > 1 && std::find(r.begin(), r.end(), src_rank) != r.end()) return src_rank;
  return r[size_t(src_rank) % r.size()];
}

bool Placement::holds(int layer, int expert, int rank) const {
  const auto& r = ranks_of_[layer][expert];
  return std::find(r.begin(), r.end(), rank) != r.end();
}

}  // namespace moe::runtime
