#include "runtime/run_config.h"

#include <yaml-cpp/yaml.h>

#include <set>

#include "common/error.h"

namespace moe::runtime {

namespace {

template <class T>
void read(const YAML::Node& root, const char* key, T& out, const std::string& path,
          const char* expected) {
  const YAML::Node n = root[key];
  if (!n) return;
  try {
    out = n.as<T>();
  } catch (const YAML::Exception&) {
    throw InputError(path + ": field '" + key + "' is '" + YAML::Dump(n) + "', expected " +
                     expected);
  }
}

}  // namespace

RunConfig RunConfig::from_yaml_file(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw InputError(path + ": cannot open the config file");
  } catch (const YAML::Exception& e) {
    throw InputError(path + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap()) throw InputError(path + ": expected a YAML mapping of fields at the top");
  static const std::set<std::string> known = {
      "checkpoint", "placement", "placement_map", "backend", "transport",
      "max_tokens_per_step", "max_seqs", "max_seq_len", "ignore_eos"};
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (!known.count(key))
      throw InputError(path + ": unknown field '" + key +
                       "' (expected one of checkpoint, placement, placement_map, backend, "
                       "transport, max_tokens_per_step, max_seqs, max_seq_len, ignore_eos)");
  }
  RunConfig c;
  read(root, "checkpoint", c.checkpoint, path, "a folder path");
  read(root, "placement", c.placement, path, "contiguous, round_robin or explicit");
  read(root, "placement_map", c.placement_map, path,
       "a list per layer of a list per expert of rank lists, e.g. [[[0], [1], [0, 1]]]");
  read(root, "backend", c.backend, path, "cpu or cuda");
  read(root, "transport", c.transport, path, "mpi or nccl");
  read(root, "max_tokens_per_step", c.max_tokens_per_step, path, "an integer >= 1");
  read(root, "max_seqs", c.max_seqs, path, "an integer >= 1");
  read(root, "max_seq_len", c.max_seq_len, path, "an integer >= 0");
  read(root, "ignore_eos", c.ignore_eos, path, "true or false");
  // A relative checkpoint path is relative to the config file's folder.
  if (!c.checkpoint.empty() && c.checkpoint[0] != '/') {
    const auto slash = path.find_last_of('/');
    if (slash != std::string::npos) c.checkpoint = path.substr(0, slash + 1) + c.checkpoint;
  }
  return c;
}

void RunConfig::validate() const {
  auto bad = [](const std::string& field, const std::string& value, const std::string& allowed) {
    throw InputError("config: " + field + " is " + value + ", expected " + allowed);
  };
  if (checkpoint.empty()) bad("checkpoint", "empty", "the path of a model folder");
  if (placement != "contiguous" && placement != "round_robin" && placement != "explicit")
    bad("placement", "'" + placement + "'", "contiguous, round_robin or explicit");
  if (placement == "explicit" && placement_map.empty())
    bad("placement_map", "empty", "a map when placement is explicit");
  if (placement != "explicit" && !placement_map.empty())
    bad("placement_map", "given", "no map unless placement is explicit");
  if (backend != "cpu" && backend != "cuda") bad("backend", "'" + backend + "'", "cpu or cuda");
  if (transport != "mpi" && transport != "nccl")
    bad("transport", "'" + transport + "'", "mpi or nccl");
  if (backend == "cpu" && transport == "nccl")
    bad("transport", "nccl with backend cpu", "mpi (NCCL moves device memory only)");
  if (max_tokens_per_step < 1)
    bad("max_tokens_per_step", std::to_string(max_tokens_per_step), "an integer >= 1");
  if (max_seqs < 1) bad("max_seqs", std::to_string(max_seqs), "an integer >= 1");
  if (max_seq_len < 0) bad("max_seq_len", std::to_string(max_seq_len), "an integer >= 0");
}

}  // namespace moe::runtime
