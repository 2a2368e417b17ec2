#pragma once
// Bounds on YAML read into nested lists (placement_map, placement_shares), checked before the
// conversion. NOTES: a YAML alias names a node already read, and yaml-cpp's conversion to
// vectors copies it at every use, so a few kilobytes of lists of aliases of lists expand to
// billions of entries (2.4 KB made 27M entries, taking tens of seconds; 12 KB reach 4 GB). The
// count visits each use of an alias too, and stops as soon as the bound is spent.
#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <string>

#include "common/error.h"

namespace moe::runtime {

// Lists and numbers of a placement table, aliases counted at each use: far past layers x
// experts x replicas of any real placement.
constexpr size_t kMaxPlacementNodes = size_t(1) << 20;

// Spends one unit of `budget` per node of `n`, down to `depth` levels of lists; false once it
// runs out.
inline bool yaml_nodes_within(const YAML::Node& n, int depth, size_t& budget) {
  if (budget == 0) return false;
  --budget;
  if (depth == 0 || !n.IsSequence()) return true;
  for (const auto& child : n)
    if (!yaml_nodes_within(child, depth - 1, budget)) return false;
  return true;
}

// Throws InputError naming the file and the field when `root[field]` (a [layer][expert][replica]
// table) holds more than kMaxPlacementNodes nodes.
inline void check_placement_table_size(const YAML::Node& root, const char* field,
                                       const std::string& path) {
  size_t budget = kMaxPlacementNodes;
  if (root[field] && !yaml_nodes_within(root[field], 3, budget))
    throw InputError(path + ": field '" + field + "' has more than " +
                     std::to_string(kMaxPlacementNodes) +
                     " lists and entries (YAML aliases counted at each use), expected a list per "
                     "layer of a list per expert of lists (one layer entry serves them all)");
}

}  // namespace moe::runtime
