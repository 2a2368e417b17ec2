#pragma once
// A placement on disk: the YAML that moe-plan writes and moe-run / moe-worker read
// (--placement-file, or placement_file: in a run config), and the "placement" object of the
// statistics JSON. Both hold the same two tables:
//   placement_map:    [layer][expert] -> ranks holding it
//   placement_shares: [layer][expert] -> the fraction of its choices each of those ranks takes
//                     (optional; without it replicas split by source rank)
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/placement.h"

namespace moe::runtime {

struct PlacementTables {
  std::vector<std::vector<std::vector<int>>> map;        // [layer][expert][replica] rank
  std::vector<std::vector<std::vector<double>>> shares;  // [layer][expert][replica] or empty
};

// Reads placement_map (required) and placement_shares (optional) from a YAML file; other fields
// (comments, moe-plan's summary) are ignored. Throws InputError naming the file and the field.
PlacementTables read_placement_yaml(const std::string& path);
// The YAML text of a placement, `comment` (lines without '#') put first as comments.
std::string placement_yaml(const Placement& p, const std::string& comment);

nlohmann::json placement_json(const Placement& p);  // {"map": ..., "shares": ...}
// Throws InputError naming `source` and what was wrong.
PlacementTables placement_tables_from_json(const nlohmann::json& j, const std::string& source);

}  // namespace moe::runtime
