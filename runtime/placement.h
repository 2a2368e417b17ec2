#pragma once
// Which ranks hold which expert of each layer. With more ranks than experts (or by an explicit
// map) an expert has replicas on several ranks: a token goes to the replica on its own rank
// where there is one, and is otherwise spread over the replicas by its source rank,
// deterministically, so the same run always routes the same way.
#include <string>
#include <vector>

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
  static Placement from_map(const std::vector<std::vector<std::vector<int>>>& ranks_of,
                            int world_size);
  static Kind parse_kind(const std::string& s);  // "contiguous", "round_robin", "explicit"

  int n_layers() const { return int(ranks_of_.size()); }
  int n_experts() const { return ranks_of_.empty() ? 0 : int(ranks_of_[0].size()); }
  int world_size() const { return world_size_; }

  const std::vector<int>& ranks_of(int layer, int expert) const { return ranks_of_[layer][expert]; }
  // The replica of `expert` that tokens from `src_rank` go to: src_rank's own where it holds
  // one, else ranks_of[src_rank % replicas].
  int route(int layer, int expert, int src_rank) const;
  // The experts of `layer` that `rank` holds, ascending.
  std::vector<int> local_experts(int layer, int rank) const;
  bool holds(int layer, int expert, int rank) const;

 private:
  std::vector<std::vector<std::vector<int>>> ranks_of_;  // [layer][expert] -> ranks
  int world_size_ = 1;
};

}  // namespace moe::runtime
