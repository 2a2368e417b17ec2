#include "runtime/run_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <vector>

#include "common/error.h"
#include "runtime/model_config.h"
#include "runtime/yaml_bounds.h"

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
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw InputError(path + ": is a folder, expected a YAML config file (see configs/)");
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw InputError(path + ": cannot open the config file");
  } catch (const YAML::Exception& e) {
    throw InputError(path + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap()) throw InputError(path + ": expected a YAML mapping of fields at the top");
  static const std::vector<std::string> known = {
      "checkpoint", "placement", "placement_map", "placement_shares", "placement_file", "backend", "transport", "dtype",
      "max_tokens_per_step", "max_seqs", "max_seq_len", "gpu_memory_utilization",
      "ignore_eos", "threads", "synthetic", "seed", "num_layers", "rebalance", "rebalance_interval",
      "rebalance_window", "rebalance_threshold", "rebalance_redundant_slots"};
  for (const auto& kv : root) {
    if (!kv.first.IsScalar())
      throw InputError(path + ": line " + std::to_string(kv.first.Mark().line + 1) +
                       ": a field name must be a plain word, found a " +
                       (kv.first.IsSequence() ? "list" : "mapping"));
    const std::string key = kv.first.as<std::string>();
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw InputError(path + ": unknown field '" + key + "' (expected one of " + list + ")");
    }
  }
  RunConfig c;
  read(root, "checkpoint", c.checkpoint, path, "a folder path");
  read(root, "placement", c.placement, path, "contiguous, round_robin or explicit");
  check_placement_table_size(root, "placement_map", path);
  check_placement_table_size(root, "placement_shares", path);
  read(root, "placement_map", c.placement_map, path,
       "a list per layer of a list per expert of rank lists, e.g. [[[0], [1], [0, 1]]]");
  read(root, "placement_shares", c.placement_shares, path,
       "a list per layer of a list per expert of fractions, e.g. [[[1], [1], [0.6, 0.4]]]");
  read(root, "placement_file", c.placement_file, path, "a placement YAML path (moe-plan's output)");
  read(root, "backend", c.backend, path, "cpu or cuda");
  read(root, "transport", c.transport, path, "mpi or nccl");
  read(root, "dtype", c.dtype, path, "auto, f32 or bf16");
  read(root, "max_tokens_per_step", c.max_tokens_per_step, path, "an integer >= 1");
  read(root, "max_seqs", c.max_seqs, path, "an integer >= 0");
  read(root, "max_seq_len", c.max_seq_len, path, "an integer >= 0");
  read(root, "gpu_memory_utilization", c.gpu_memory_utilization, path, "a number in (0, 1]");
  read(root, "ignore_eos", c.ignore_eos, path, "true or false");
  read(root, "threads", c.threads, path, "an integer >= 0");
  read(root, "synthetic", c.synthetic, path, "true or false");
  read(root, "seed", c.seed, path, "an integer >= 0");
  read(root, "num_layers", c.num_layers, path, "an integer >= 0");
  read(root, "rebalance", c.rebalance, path, "true or false");
  read(root, "rebalance_interval", c.rebalance_interval, path, "an integer >= 1 (steps)");
  read(root, "rebalance_window", c.rebalance_window, path, "an integer >= 1 (steps)");
  read(root, "rebalance_threshold", c.rebalance_threshold, path, "a number >= 1 (max / mean)");
  read(root, "rebalance_redundant_slots", c.rebalance_redundant_slots, path, "an integer >= 0");
  // A relative checkpoint or placement path is relative to the config file's folder.
  for (std::string* rel : {&c.checkpoint, &c.placement_file}) {
    if (rel->empty() || (*rel)[0] == '/') continue;
    const auto slash = path.find_last_of('/');
    if (slash != std::string::npos) *rel = path.substr(0, slash + 1) + *rel;
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
  if (!placement_file.empty() && !placement_map.empty())
    bad("placement_file", "given with placement_map", "one of the two");
  if (placement == "explicit" && placement_map.empty() && placement_file.empty())
    bad("placement_map", "empty", "a map (or a placement_file) when placement is explicit");
  if (placement != "explicit" && !placement_map.empty())
    bad("placement_map", "given", "no map unless placement is explicit");
  if (!placement_shares.empty() && placement_map.empty())
    bad("placement_shares", "given without placement_map", "shares beside an explicit map");
  if (backend != "cpu" && backend != "cuda") bad("backend", "'" + backend + "'", "cpu or cuda");
  if (transport != "mpi" && transport != "nccl")
    bad("transport", "'" + transport + "'", "mpi or nccl");
  if (backend == "cpu" && transport == "nccl")
    bad("transport", "nccl with backend cpu", "mpi (NCCL moves device memory only)");
  if (dtype != "auto" && dtype != "f32" && dtype != "bf16")
    bad("dtype", "'" + dtype + "'", "auto, f32 or bf16");
  const auto range = [&](const char* field, long long v, long long lo, long long hi) {
    if (v < lo || v > hi)
      bad(field, std::to_string(v),
          "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  };
  range("max_tokens_per_step", max_tokens_per_step, 1, kMaxTokensPerStep);
  range("max_seqs", max_seqs, 0, kMaxSeqs);
  range("max_seq_len", max_seq_len, 0, kMaxSeqLen);
  // The layers a synthetic run builds replace config.json's count, so they are held to its bound.
  range("num_layers", num_layers, 0, ModelConfig::kMaxLayers);
  range("threads", threads, 0, kMaxThreads);
  if (!(gpu_memory_utilization > 0.0 && gpu_memory_utilization <= 1.0))
    bad("gpu_memory_utilization", std::to_string(gpu_memory_utilization), "a number in (0, 1]");
  range("rebalance_interval", rebalance_interval, 1, kMaxRebalanceInterval);
  range("rebalance_window", rebalance_window, 1, kMaxRebalanceWindow);
  range("rebalance_redundant_slots", rebalance_redundant_slots, 0, ModelConfig::kMaxExperts);
  if (!(rebalance_threshold >= 1.0) || !std::isfinite(rebalance_threshold))
    bad("rebalance_threshold", std::to_string(rebalance_threshold),
        "a number >= 1 (the worst layer's max rank load / mean, 1 being balanced)");
  if (num_layers > 0 && !synthetic)
    bad("num_layers", std::to_string(num_layers),
        "0 unless synthetic is true (a checkpoint's layers are all read)");
}

std::string RunConfig::resolved_dtype() const {
  if (dtype != "auto") return dtype;
  return backend == "cuda" ? "bf16" : "f32";
}

}  // namespace moe::runtime
