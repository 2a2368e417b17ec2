#include "runtime/placement_file.h"

#include <yaml-cpp/yaml.h>

#include <sstream>

#include "common/error.h"
#include "runtime/yaml_bounds.h"

namespace moe::runtime {

PlacementTables read_placement_yaml(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw InputError(path + ": cannot open the placement file");
  } catch (const YAML::Exception& e) {
    throw InputError(path + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap() || !root["placement_map"])
    throw InputError(path + ": expected a mapping with 'placement_map' (as moe-plan writes)");
  check_placement_table_size(root, "placement_map", path);
  check_placement_table_size(root, "placement_shares", path);
  PlacementTables t;
  try {
    t.map = root["placement_map"].as<std::vector<std::vector<std::vector<int>>>>();
  } catch (const YAML::Exception&) {
    throw InputError(path + ": field 'placement_map' is not a list per layer of a list per "
                            "expert of rank lists, e.g. [[[0], [1], [0, 1]]]");
  }
  if (root["placement_shares"]) {
    try {
      t.shares = root["placement_shares"].as<std::vector<std::vector<std::vector<double>>>>();
    } catch (const YAML::Exception&) {
      throw InputError(path + ": field 'placement_shares' is not a list per layer of a list per "
                              "expert of fractions, e.g. [[[1], [1], [0.6, 0.4]]]");
    }
  }
  return t;
}

namespace {
template <class T>
void flow_list(std::ostringstream& os, const std::vector<std::vector<std::vector<T>>>& v) {
  os << "[";
  for (size_t l = 0; l < v.size(); ++l) {
    os << (l ? ",\n  [" : "\n  [");
    for (size_t e = 0; e < v[l].size(); ++e) {
      os << (e ? ", [" : "[");
      for (size_t i = 0; i < v[l][e].size(); ++i) os << (i ? ", " : "") << v[l][e][i];
      os << "]";
    }
    os << "]";
  }
  os << "]\n";
}
}  // namespace

std::string placement_yaml(const Placement& p, const std::string& comment) {
  std::ostringstream os;
  std::istringstream lines(comment);
  for (std::string line; std::getline(lines, line);) os << "# " << line << "\n";
  os << "placement: explicit\n";
  os << "# placement_map[layer][expert]: the ranks holding the expert\n";
  os << "placement_map: ";
  flow_list(os, p.map());
  bool any = false;
  for (int l = 0; l < p.n_layers(); ++l) any |= p.has_shares(l);
  if (any) {
    std::vector<std::vector<std::vector<double>>> shares(size_t(p.n_layers()));
    for (int l = 0; l < p.n_layers(); ++l)
      for (int e = 0; e < p.n_experts(); ++e) {
        shares[size_t(l)].emplace_back();
        for (size_t i = 0; i < p.ranks_of(l, e).size(); ++i)
          shares[size_t(l)].back().push_back(p.share(l, e, int(i)));
      }
    os << "# placement_shares[layer][expert]: the fraction of its tokens each of those ranks takes\n";
    os.precision(6);
    os << "placement_shares: ";
    flow_list(os, shares);
  }
  return os.str();
}

nlohmann::json placement_json(const Placement& p) {
  nlohmann::json j;
  j["map"] = p.map();
  bool any = false;
  for (int l = 0; l < p.n_layers(); ++l) any |= p.has_shares(l);
  if (any) {
    nlohmann::json s = nlohmann::json::array();
    for (int l = 0; l < p.n_layers(); ++l) {
      nlohmann::json layer = nlohmann::json::array();
      for (int e = 0; e < p.n_experts(); ++e) {
        std::vector<double> v;
        for (size_t i = 0; i < p.ranks_of(l, e).size(); ++i) v.push_back(p.share(l, e, int(i)));
        layer.push_back(v);
      }
      s.push_back(layer);
    }
    j["shares"] = s;
  }
  return j;
}

PlacementTables placement_tables_from_json(const nlohmann::json& j, const std::string& source) {
  PlacementTables t;
  if (!j.is_object() || !j.contains("map"))
    throw InputError(source + ": 'placement' is not an object with a 'map'");
  try {
    t.map = j.at("map").get<std::vector<std::vector<std::vector<int>>>>();
    if (j.contains("shares"))
      t.shares = j.at("shares").get<std::vector<std::vector<std::vector<double>>>>();
  } catch (const nlohmann::json::exception&) {
    throw InputError(source + ": 'placement' must hold 'map' as [layer][expert] rank lists and "
                              "'shares' as [layer][expert] fraction lists");
  }
  return t;
}

}  // namespace moe::runtime
