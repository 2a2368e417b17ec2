#pragma once
// Which ranks hold which expert of each layer. With more ranks than experts (or by an explicit
// map) an expert has replicas on several ranks. Without planned shares a token goes to the
// replica on its own rank where there is one, and is otherwise spread over the replicas by its
// source rank. With planned shares (a planner's output: the fraction of the expert's choices
// each replica takes) every source splits its choices of the expert over the replicas in those
// proportions. Either way the split is deterministic, so the same run always routes the same way.
//
// The split is a route wheel per (layer, source rank): kernels::kRouteWheel entries per expert,
// each a rank; the j-th choice of expert e in a step's batch (in (token, slot) order) goes to
// wheel[e][j % kRouteWheel]. A replica with share w fills about w * kRouteWheel entries, spread
// over the wheel (smooth weighted round-robin) so that a short batch is split in proportion too,
// and each source starts at its own point of the wheel.
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/params.h"

namespace moe::runtime {

class Placement {
 public:
  enum class Kind { kContiguous, kRoundRobin, kExplicit };

  // Contiguous: rank r holds the r-th of N consecutive blocks, of E / N experts each and one
  // more on the first E % N ranks; with N > E, expert e lives on ranks {r : r % E == e}.
  // Round-robin: expert e on rank e % N (and replicas likewise).
  static Placement make(Kind kind, int n_layers, int n_experts, int world_size);
  // ranks_of[layer][expert] = the ranks holding it. Refuses an expert on no rank or a rank out
  // of range, with a message naming the layer and expert.
  // shares[layer][expert][i] (optional, the shape of ranks_of): the planned fraction of the
  // expert's choices its i-th replica takes; each >= 0, summing to more than 0 per expert
  // (normalised here). Refused, naming layer and expert, where the shape or a value is wrong.
  static Placement from_map(const std::vector<std::vector<std::vector<int>>>& ranks_of,
                            int world_size,
                            const std::vector<std::vector<std::vector<double>>>& shares = {});
  static Kind parse_kind(const std::string& s);  // "contiguous", "round_robin", "explicit"

  int n_layers() const { return int(ranks_of_.size()); }
  int n_experts() const { return ranks_of_.empty() ? 0 : int(ranks_of_[0].size()); }
  int world_size() const { return world_size_; }

  const std::vector<int>& ranks_of(int layer, int expert) const { return ranks_of_[layer][expert]; }
  const std::vector<std::vector<std::vector<int>>>& map() const { return ranks_of_; }
  // Whether the replicas of `layer` split by planned shares (else by source rank, as route()
  // says).
  bool has_shares(int layer) const { return !shares_[layer].empty(); }
  // The planned share of the i-th replica of (layer, expert), normalised; 1 / replicas when the
  // placement has no shares.
  double share(int layer, int expert, int i) const;
  // [layer][expert][replica]; a layer without shares is empty.
  const std::vector<std::vector<std::vector<double>>>& shares() const { return shares_; }
  // Without shares: the replica of `expert` that tokens from `src_rank` go to: src_rank's own
  // where it holds one, else ranks_of[src_rank % replicas]. With shares: the first entry of
  // src_rank's wheel.
  int route(int layer, int expert, int src_rank) const;
  // [n_experts * kernels::kRouteWheel] the rank serving each wheel position of each expert,
  // for choices made on `src_rank` (see the head of this file).
  std::vector<int32_t> route_wheel(int layer, int src_rank) const;
  // The fraction of `expert`'s choices that `rank` computes, over sources sending alike: the
  // mean over source ranks of the share of their wheel pointing at `rank`.
  double expected_fraction(int layer, int expert, int rank) const;
  // Replaces one layer's map (and shares, empty for none); the same checks as from_map.
  void set_layer(int layer, const std::vector<std::vector<int>>& ranks_of,
                 const std::vector<std::vector<double>>& shares);
  // The experts of `layer` that `rank` holds, ascending.
  std::vector<int> local_experts(int layer, int rank) const;
  bool holds(int layer, int expert, int rank) const;

 private:
  std::vector<std::vector<std::vector<int>>> ranks_of_;  // [layer][expert] -> ranks
  std::vector<std::vector<std::vector<double>>> shares_;  // [layer][expert][replica]; a layer
                                                         // without shares is empty
  int world_size_ = 1;
};

}  // namespace moe::runtime
