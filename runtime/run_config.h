#pragma once
// How a run is set up: which checkpoint, where the experts go, which backend and transport,
// and the scheduler's limits. Loaded from YAML; command-line flags override fields after.
#include <cstdint>
#include <string>
#include <vector>

namespace moe::runtime {

struct RunConfig {
  std::string checkpoint;                 // Hugging Face model folder
  std::string placement = "contiguous";   // contiguous | round_robin | explicit
  // For placement: explicit, placement_map[layer][expert] = ranks holding it. A single layer
  // entry applies to every layer.
  std::vector<std::vector<std::vector<int>>> placement_map;
  // With placement_map: placement_shares[layer][expert] = the fraction of the expert's tokens
  // each of its ranks takes (optional; without it replicas split by source rank).
  std::vector<std::vector<std::vector<double>>> placement_shares;
  // A placement YAML (as moe-plan writes: placement_map and placement_shares); implies
  // placement: explicit. Read by every rank, so every node must see it.
  std::string placement_file;
  std::string backend = "cpu";            // cpu | cuda
  std::string transport = "mpi";          // mpi | nccl (cuda only: one GPU per rank)
  // Precision of weights, linear inputs and the KV cache (Ops::precision): auto (cpu f32, cuda
  // bf16), f32, or bf16 (on cpu: the GPU's roundings reproduced, for checking).
  std::string dtype = "auto";
  int max_tokens_per_step = 512;          // token budget of one step on one rank
  // Sequences in flight per rank (KV cache slots). 0: 64 on cpu; on cuda as many as fit in
  // gpu_memory_utilization (at most 1024).
  int max_seqs = 0;
  int max_seq_len = 0;                    // KV positions per sequence; 0 = min(model's, 4096)
  // cuda: the share of the device's memory this job may use on it (weights, workspace, KV cache),
  // as vLLM's --gpu-memory-utilization; the KV cache takes what is left of it.
  double gpu_memory_utilization = 0.9;
  bool ignore_eos = false;
  // cpu: threads each rank computes with (the BLAS and the CPU kernels). 0: the node's cores
  // shared evenly by its ranks, at least 1 each.
  int threads = 0;
  // Synthetic weights: the checkpoint folder needs only config.json; every tensor is made on
  // the backend from `seed` and its name (the same values on every rank and backend), so
  // Mixtral-sized layers can be run and measured without the download. num_layers > 0 keeps
  // only the first layers (synthetic only).
  bool synthetic = false;
  uint64_t seed = 0;
  int num_layers = 0;
  // Live expert rebalancing (runtime/expert_rebalancer): every rebalance_interval steps the
  // ranks plan a placement from the last rebalance_window steps' loads and move the expert
  // weights, when the worst layer's predicted device imbalance (max rank load / mean) is above
  // rebalance_threshold; rebalance_redundant_slots expert slots per rank hold replicas of hot
  // experts. Off by default.
  bool rebalance = false;
  int rebalance_interval = 64;
  int rebalance_window = 64;
  double rebalance_threshold = 1.2;
  int rebalance_redundant_slots = 0;

  // Largest values validate() accepts: far past any real run, short of overflowing sizes.
  static constexpr int kMaxTokensPerStep = 1 << 20;
  static constexpr int kMaxSeqs = 1 << 16;
  static constexpr int kMaxSeqLen = 1 << 20;
  static constexpr int kMaxAutoSeqsCuda = 1024;
  static constexpr int kMaxThreads = 1024;
  static constexpr int kMaxRebalanceInterval = 1 << 30;
  // Each step of the window keeps a [layers, experts] snapshot of counts on every rank.
  static constexpr int kMaxRebalanceWindow = 4096;

  // dtype with auto resolved for the backend: "f32" or "bf16".
  std::string resolved_dtype() const;

  // Throws InputError naming the file, the field and what was expected.
  static RunConfig from_yaml_file(const std::string& path);
  // Throws InputError naming the first bad field and what is allowed.
  void validate() const;
};

}  // namespace moe::runtime
