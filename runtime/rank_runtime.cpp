#include "runtime/rank_runtime.h"

#include <algorithm>

#include "common/error.h"
#include "common/log.h"
#include "runtime/checkpoint.h"

namespace moe::runtime {

namespace {
Placement make_placement(const RunConfig& run, const ModelConfig& cfg, int world) {
  if (run.placement != "explicit")
    return Placement::make(Placement::parse_kind(run.placement), cfg.num_hidden_layers,
                           cfg.num_local_experts, world);
  auto map = run.placement_map;
  if (map.size() == 1) map.assign(cfg.num_hidden_layers, map[0]);
  if (int(map.size()) != cfg.num_hidden_layers)
    throw InputError("config: placement_map has " + std::to_string(map.size()) +
                     " layers, expected 1 or " + std::to_string(cfg.num_hidden_layers));
  for (size_t l = 0; l < map.size(); ++l)
    if (int(map[l].size()) != cfg.num_local_experts)
      throw InputError("config: placement_map layer " + std::to_string(l) + " lists " +
                       std::to_string(map[l].size()) + " experts, expected " +
                       std::to_string(cfg.num_local_experts));
  return Placement::from_map(map, world);
}
}  // namespace

RankRuntime::RankRuntime(const RunConfig& run, comm::Communicator& comm) {
  run.validate();
  if (run.backend != "cpu")
    throw InputError("config: backend '" + run.backend +
                     "' is not built into this runtime yet (expected cpu)");
  const Checkpoint ckpt = Checkpoint::open(run.checkpoint);
  cfg_ = ModelConfig::from_json(ckpt.config_json(), ckpt.dir() + "/config.json");
  placement_ = make_placement(run, cfg_, comm.size());
  ops_ = kernels::make_cpu_ops();
  auto weights = ModelWeights::load(ckpt, cfg_, placement_, comm.rank(), *ops_);
  bytes_read_ = ckpt.bytes_read();
  const int max_len = run.max_seq_len > 0 ? run.max_seq_len
                                          : std::min(cfg_.max_position_embeddings, 4096);
  cache_ = std::make_unique<KvCache>(*ops_, cfg_.num_hidden_layers, run.max_seqs, max_len,
                                     cfg_.kv_dim());
  stats_ = LoadStats(cfg_.num_hidden_layers, cfg_.num_local_experts, comm.size());
  model_ = std::make_unique<Model>(cfg_, std::move(weights), placement_, *ops_, comm, *cache_,
                                   &stats_);
  EngineOptions eo;
  eo.max_tokens_per_step = run.max_tokens_per_step;
  eo.ignore_eos = run.ignore_eos;
  const auto& j = ckpt.config_json();
  if (j.contains("eos_token_id") && j["eos_token_id"].is_number_integer())
    eo.eos_token_id = j["eos_token_id"].get<int>();
  engine_ = std::make_unique<Engine>(*model_, *cache_, comm, eo);
  spdlog::info("loaded {} on {} ranks: {} layers, {} experts (top-{}), {} local to this rank, "
               "{:.1f} MB read, KV cache {} x {} positions ({:.1f} MB)",
               run.checkpoint, comm.size(), cfg_.num_hidden_layers, cfg_.num_local_experts,
               cfg_.num_experts_per_tok, placement_.local_experts(0, comm.rank()).size(),
               bytes_read_ / 1e6, run.max_seqs, max_len, cache_->bytes() / 1e6);
}

int RankRuntime::max_context() const {
  return std::min(cache_->max_len(), cfg_.max_position_embeddings);
}

}  // namespace moe::runtime
