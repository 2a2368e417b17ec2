#include "runtime/rank_runtime.h"

#include <algorithm>

#include "common/error.h"
#include "common/log.h"
#include "runtime/checkpoint.h"
#include "runtime/collective_step.h"
#include "runtime/expert_rebalancer.h"
#include "runtime/memory_plan.h"
#include "runtime/placement_file.h"

namespace moe::runtime {

namespace {

// Sequences in flight per rank on cpu when max_seqs is 0 (auto).
constexpr int kDefaultSeqsCpu = 64;

Placement make_placement(const RunConfig& run, const ModelConfig& cfg, int world) {
  if (run.placement != "explicit" && run.placement_file.empty())
    return Placement::make(Placement::parse_kind(run.placement), cfg.num_hidden_layers,
                           cfg.num_local_experts, world);
  PlacementTables t{run.placement_map, run.placement_shares};
  std::string what = "config: placement_map";
  if (!run.placement_file.empty()) {
    t = read_placement_yaml(run.placement_file);
    what = run.placement_file + ": placement_map";
  }
  auto& map = t.map;
  if (map.size() == 1) map.assign(cfg.num_hidden_layers, map[0]);
  if (t.shares.size() == 1) t.shares.assign(cfg.num_hidden_layers, t.shares[0]);
  if (int(map.size()) != cfg.num_hidden_layers)
    throw InputError(what + " has " + std::to_string(map.size()) + " layers, expected 1 or " +
                     std::to_string(cfg.num_hidden_layers));
  for (size_t l = 0; l < map.size(); ++l)
    if (int(map[l].size()) != cfg.num_local_experts)
      throw InputError(what + " layer " + std::to_string(l) + " lists " +
                       std::to_string(map[l].size()) + " experts, expected " +
                       std::to_string(cfg.num_local_experts));
  return Placement::from_map(map, world, t.shares);
}

}  // namespace

RankRuntime::RankRuntime(const RunConfig& run, comm::Communicator& host, LocalRank local) {
  // NOTES: every phase that can fail on some ranks only ends in collective_step's agreement:
  // the next phase has collectives (the backend's, the KV sizing's), which a rank that threw
  // alone would leave the others waiting in.
  std::unique_ptr<Checkpoint> ckpt;
  collective_step(host, [&] {
    run.validate();
    ckpt = std::make_unique<Checkpoint>(run.synthetic ? Checkpoint::open_config_only(run.checkpoint)
                                                      : Checkpoint::open(run.checkpoint));
    cfg_ = ModelConfig::from_json(ckpt->config_json(), ckpt->dir() + "/config.json");
    cfg_.check_supported(run.backend, ckpt->dir() + "/config.json");
    if (run.synthetic && run.num_layers > 0) cfg_.num_hidden_layers = run.num_layers;
    placement_ = make_placement(run, cfg_, host.size());
  });
  backend_ = std::make_unique<Backend>(run, host, local);
  kernels::Ops& ops = backend_->ops();

  const auto device_memory = [&] {
    const kernels::Ops::MemoryInfo m = ops.memory_info();
    return DeviceMemory{m.free, m.total, backend_->device(), backend_->ranks_per_device()};
  };
  ModelWeights weights;
  collective_step(host, [&] {
    // On cpu, against the host's available memory shared by the node's ranks: a model too
    // large is refused now, naming the sizes, not by an allocation failing halfway through.
    DeviceMemory mem = device_memory();
    if (backend_->device() < 0) mem.ranks_sharing = std::max(1, local.size);
    if (mem.total > 0)
      check_weights_fit(ModelWeights::footprint(cfg_, placement_, host.rank(), ops.weight_dtype()),
                        mem, host.rank());
    weights = run.synthetic
                  ? ModelWeights::synthesize(cfg_, placement_, host.rank(), ops, run.seed)
                  : ModelWeights::load(*ckpt, cfg_, placement_, host.rank(), ops);
  });
  bytes_read_ = ckpt->bytes_read();

  const int max_len =
      run.max_seq_len > 0 ? run.max_seq_len : std::min(cfg_.max_position_embeddings, 4096);
  // KV slots: max_seqs where given; else 64 on cpu, and on cuda what fits, at most
  // kMaxAutoSeqsCuda (sized below, once the workspace is in place).
  const bool auto_cuda = backend_->device() >= 0 && run.max_seqs == 0;
  int slots = run.max_seqs > 0 ? run.max_seqs : kDefaultSeqsCpu;
  const int max_slots = auto_cuda ? RunConfig::kMaxAutoSeqsCuda : slots;
  cache_ = std::make_unique<KvCache>(ops, cfg_.num_hidden_layers, cfg_.kv_dim());
  stats_ = LoadStats(cfg_.num_hidden_layers, cfg_.num_local_experts, host.size());
  collective_step(host, [&] {
    // The workspace for a full step, allocated now so no step allocates.
    model_ = std::make_unique<Model>(
        cfg_, std::move(weights), placement_, ops, backend_->comm(), *cache_, &stats_,
        ModelLimits{run.max_tokens_per_step, std::min(run.max_tokens_per_step, max_slots)});
  });
  // Every rank has its weights and workspace in place (the agreement above is a barrier), so
  // what each reads now is what is left for the KV caches; agreed again before any allocates.
  // With live rebalancing, what its moves may add (more experts held, the move's buffers) is
  // kept free: the KV cache would otherwise take it, and the first rebalance fail for memory.
  Reserve reserve;
  if (run.rebalance) {
    reserve.bytes = rebalance_reserve_bytes(cfg_, placement_, host.rank(), ops.weight_dtype(),
                                            run.rebalance_redundant_slots);
    reserve.what = "live rebalancing (rebalance_redundant_slots " +
                   std::to_string(run.rebalance_redundant_slots) + ")";
  }
  if (backend_->device() >= 0)
    collective_step(host, [&] {
      slots = kv_cache_slots(device_memory(), run.gpu_memory_utilization,
                             KvCache::bytes_per_slot(cfg_.num_hidden_layers, max_len,
                                                     cfg_.kv_dim(), ops.kv_dtype()),
                             max_len, run.max_seqs, RunConfig::kMaxAutoSeqsCuda, reserve);
    });
  collective_step(host, [&] {
    if (backend_->device() < 0) {  // on cpu, against what the host has left
      DeviceMemory mem = device_memory();
      mem.ranks_sharing = std::max(1, local.size);
      if (mem.total > 0)
        check_host_kv_fits(KvCache::bytes_per_slot(cfg_.num_hidden_layers, max_len, cfg_.kv_dim(),
                                                   ops.kv_dtype()),
                           slots, max_len, mem, host.rank());
    }
    cache_->allocate(slots, max_len);
  });

  EngineOptions eo;
  eo.max_tokens_per_step = run.max_tokens_per_step;
  eo.ignore_eos = run.ignore_eos;
  const auto& j = ckpt->config_json();
  if (j.contains("eos_token_id") && j["eos_token_id"].is_number_integer())
    eo.eos_token_id = j["eos_token_id"].get<int>();
  engine_ = std::make_unique<Engine>(*model_, *cache_, backend_->comm(), eo);
  if (run.rebalance) {
    RebalanceOptions ro;
    ro.interval_steps = run.rebalance_interval;
    ro.window_steps = run.rebalance_window;
    ro.threshold = run.rebalance_threshold;
    ro.redundant_slots = run.rebalance_redundant_slots;
    rebalancer_ = std::make_unique<ExpertRebalancer>(ro, cfg_, placement_, *model_, ops,
                                                     backend_->comm(), stats_);
    engine_->set_after_step([this](int64_t step) { rebalancer_->after_step(step); });
  }
  spdlog::info("loaded {}{} on {} ranks, {}: {} layers, {} experts (top-{}), {} local to this "
               "rank, {:.1f} MB read, KV cache {} x {} positions ({:.1f} MB, {})",
               run.checkpoint, run.synthetic ? " (synthetic weights)" : "", host.size(),
               backend_->describe(), cfg_.num_hidden_layers, cfg_.num_local_experts,
               cfg_.num_experts_per_tok, placement_.local_experts(0, host.rank()).size(),
               bytes_read_ / 1e6, slots, max_len, cache_->bytes() / 1e6,
               dtype_name(cache_->dtype()));
}

RankRuntime::~RankRuntime() = default;

int RankRuntime::max_context() const {
  return std::min(cache_->max_len(), cfg_.max_position_embeddings);
}

}  // namespace moe::runtime
