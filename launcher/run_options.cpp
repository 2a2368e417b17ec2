#include "launcher/run_options.h"

namespace moe::launcher {

void add_run_options(CLI::App& app, RunOptions& o) {
  runtime::RunConfig& r = o.flags;
  app.add_option("--config", o.config, "YAML run config (fields as in configs/*.yaml); flags override it (default: none, flags only)");
  app.add_option("--checkpoint", r.checkpoint, "Hugging Face model folder (config.json + safetensors); no default: required unless --config names one");
  app.add_option("--placement", r.placement, "expert placement: contiguous, round_robin or explicit (map in --config)");
  app.add_option("--placement-file", r.placement_file, "placement YAML (moe-plan's output: placement_map and placement_shares); implies explicit placement (default: none)");
  app.add_option("--backend", r.backend, "compute backend: cpu or cuda");
  app.add_option("--transport", r.transport, "all-to-all transport: mpi or nccl (cuda, one GPU per rank)");
  app.add_option("--dtype", r.dtype, "precision of weights, linear inputs and KV cache: auto (cpu f32, cuda bf16), f32 or bf16");
  app.add_option("--max-tokens-per-step", r.max_tokens_per_step, "token budget of one step on one rank");
  app.add_option("--max-seqs", r.max_seqs, "sequences in flight per rank, KV cache slots (0: 64 on cpu, as many as fit on cuda)");
  app.add_option("--max-seq-len", r.max_seq_len, "KV positions per sequence (0: the model's, at most 4096)");
  app.add_option("--gpu-memory-utilization", r.gpu_memory_utilization, "cuda: share of the GPU's memory the job may use; the KV cache takes the rest of it");
  app.add_flag("--ignore-eos", r.ignore_eos, "keep generating past the end-of-sequence token (default: off)");
  app.add_option("--threads", r.threads, "cpu: threads per rank (0: the node's cores shared evenly by its ranks)");
  app.add_flag("--synthetic", r.synthetic, "synthetic weights from --seed; the checkpoint folder needs only config.json (default: off)");
  app.add_option("--seed", r.seed, "seed of the synthetic weights");
  app.add_option("--num-layers", r.num_layers, "synthetic: keep only the first N layers (0: all of config.json's)");
  app.add_flag("--rebalance", r.rebalance, "live expert rebalancing while running: re-plan the placement and move expert weights between ranks (default: off)");
  app.add_option("--rebalance-interval", r.rebalance_interval, "rebalancing: check the load every this many steps");
  app.add_option("--rebalance-window", r.rebalance_window, "rebalancing: steps of load statistics a plan uses");
  app.add_option("--rebalance-threshold", r.rebalance_threshold, "rebalancing: predicted device imbalance (worst layer's max rank load / mean) at or below which nothing moves");
  app.add_option("--rebalance-redundant-slots", r.rebalance_redundant_slots, "rebalancing: expert slots per rank beyond ceil(experts / ranks), for replicas of hot experts");
}

runtime::RunConfig resolve_run_config(const CLI::App& app, const RunOptions& o) {
  if (o.config.empty()) return o.flags;
  runtime::RunConfig file = runtime::RunConfig::from_yaml_file(o.config);
  auto given = [&](const char* flag) { return app.count(flag) > 0; };
  const runtime::RunConfig& f = o.flags;
  if (given("--checkpoint")) file.checkpoint = f.checkpoint;
  if (given("--placement")) {
    file.placement = f.placement;
    if (file.placement != "explicit") {  // the flag wins whole
      file.placement_map.clear();
      file.placement_shares.clear();
      file.placement_file.clear();
    }
  }
  if (given("--placement-file")) {
    file.placement_file = f.placement_file;
    file.placement_map.clear();  // the file wins whole
    file.placement_shares.clear();
  }
  if (given("--backend")) file.backend = f.backend;
  if (given("--transport")) file.transport = f.transport;
  if (given("--max-tokens-per-step")) file.max_tokens_per_step = f.max_tokens_per_step;
  if (given("--max-seqs")) file.max_seqs = f.max_seqs;
  if (given("--max-seq-len")) file.max_seq_len = f.max_seq_len;
  if (given("--dtype")) file.dtype = f.dtype;
  if (given("--gpu-memory-utilization")) file.gpu_memory_utilization = f.gpu_memory_utilization;
  if (given("--ignore-eos")) file.ignore_eos = f.ignore_eos;
  if (given("--threads")) file.threads = f.threads;
  if (given("--synthetic")) file.synthetic = f.synthetic;
  if (given("--seed")) file.seed = f.seed;
  if (given("--num-layers")) file.num_layers = f.num_layers;
  if (given("--rebalance")) file.rebalance = f.rebalance;
  if (given("--rebalance-interval")) file.rebalance_interval = f.rebalance_interval;
  if (given("--rebalance-window")) file.rebalance_window = f.rebalance_window;
  if (given("--rebalance-threshold")) file.rebalance_threshold = f.rebalance_threshold;
  if (given("--rebalance-redundant-slots"))
    file.rebalance_redundant_slots = f.rebalance_redundant_slots;
  return file;
}

}  // namespace moe::launcher
