#include "launcher/run_options.h"

namespace moe::launcher {

void add_run_options(CLI::App& app, RunOptions& o) {
  runtime::RunConfig& r = o.flags;
  app.add_option("--config", o.config, "YAML run config (fields as in configs/*.yaml); flags override it");
  app.add_option("--checkpoint", r.checkpoint, "Hugging Face model folder (config.json + safetensors)");
  app.add_option("--placement", r.placement, "expert placement: contiguous, round_robin or explicit (map in --config)");
  app.add_option("--backend", r.backend, "compute backend: cpu or cuda");
  app.add_option("--transport", r.transport, "all-to-all transport: mpi or nccl");
  app.add_option("--max-tokens-per-step", r.max_tokens_per_step, "token budget of one step on one rank");
  app.add_option("--max-seqs", r.max_seqs, "sequences in flight per rank (KV cache slots)");
  app.add_option("--max-seq-len", r.max_seq_len, "KV positions per sequence (0: the model's, at most 4096)");
  app.add_flag("--ignore-eos", r.ignore_eos, "keep generating past the end-of-sequence token");
}

runtime::RunConfig resolve_run_config(const CLI::App& app, const RunOptions& o) {
  if (o.config.empty()) return o.flags;
  runtime::RunConfig file = runtime::RunConfig::from_yaml_file(o.config);
  auto given = [&](const char* flag) { return app.count(flag) > 0; };
  const runtime::RunConfig& f = o.flags;
  if (given("--checkpoint")) file.checkpoint = f.checkpoint;
  if (given("--placement")) {
    file.placement = f.placement;
    if (file.placement != "explicit") file.placement_map.clear();  // the flag wins whole
  }
  if (given("--backend")) file.backend = f.backend;
  if (given("--transport")) file.transport = f.transport;
  if (given("--max-tokens-per-step")) file.max_tokens_per_step = f.max_tokens_per_step;
  if (given("--max-seqs")) file.max_seqs = f.max_seqs;
  if (given("--max-seq-len")) file.max_seq_len = f.max_seq_len;
  if (given("--ignore-eos")) file.ignore_eos = f.ignore_eos;
  return file;
}

}  // namespace moe::launcher
