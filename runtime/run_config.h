#pragma once
// How a run is set up: which checkpoint, where the experts go, which backend and transport,
// and the scheduler's limits. Loaded from YAML; command-line flags override fields after.
#include <string>
#include <vector>

namespace moe::runtime {

struct RunConfig {
  std::string checkpoint;                 // Hugging Face model folder
  std::string placement = "contiguous";   // contiguous | round_robin | explicit
  // For placement: explicit, placement_map[layer][expert] = ranks holding it. A single layer
  // entry applies to every layer.
  std::vector<std::vector<std::vector<int>>> placement_map;
  std::string backend = "cpu";            // cpu | cuda
  std::string transport = "mpi";          // mpi | nccl
  int max_tokens_per_step = 512;          // token budget of one step on one rank
  int max_seqs = 64;                      // sequences in flight per rank (KV cache slots)
  int max_seq_len = 0;                    // KV positions per sequence; 0 = min(model's, 4096)
  bool ignore_eos = false;

  // Throws InputError naming the file, the field and what was expected.
  static RunConfig from_yaml_file(const std::string& path);
  // Throws InputError naming the first bad field and what is allowed.
  void validate() const;
};

}  // namespace moe::runtime
