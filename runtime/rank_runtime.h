#pragma once
// Everything one rank needs to generate, assembled from a RunConfig: the checkpoint's config,
// the placement, the backend (cpu, or cuda with its GPU and device communicator), this rank's
// weights (read, or synthetic), the model and its workspace, the KV cache sized from what is
// left, the load statistics and the engine. Shared by moe-run, the serving worker and the
// benchmarks.
#include <memory>

#include "comm/communicator.h"
#include "kernels/ops.h"
#include "runtime/backend.h"
#include "runtime/engine.h"
#include "runtime/expert_rebalancer.h"
#include "runtime/load_stats.h"
#include "runtime/model.h"
#include "runtime/model_config.h"
#include "runtime/placement.h"
#include "runtime/run_config.h"

namespace moe::runtime {

class RankRuntime {
 public:
  // Collective over `host`'s ranks (a host-memory communicator, e.g. MpiCommunicator): every
  // rank constructs it together. A failure on any rank throws on every rank, with the lowest
  // failing rank's message (InputError where the config, checkpoint or sizes are at fault).
  // `local` is this rank's place on its node: it picks the GPU.
  RankRuntime(const RunConfig& run, comm::Communicator& host, LocalRank local = {});
  ~RankRuntime();

  const ModelConfig& model_config() const { return cfg_; }
  const Placement& placement() const { return placement_; }
  Backend& backend() { return *backend_; }
  Engine& engine() { return *engine_; }
  Model& model() { return *model_; }
  const Model& model() const { return *model_; }
  KvCache& cache() { return *cache_; }
  LoadStats& stats() { return stats_; }
  // Live rebalancing (run.rebalance), moving experts after the engine's steps; null when off.
  const ExpertRebalancer* rebalancer() const { return rebalancer_.get(); }
  size_t checkpoint_bytes_read() const { return bytes_read_; }
  // Longest prompt + generation a sequence may have.
  int max_context() const;

 private:
  // Members in construction order; destroyed in reverse, so the backend (its stream, its GPU
  // context and communicator) outlives every buffer allocated on it.
  ModelConfig cfg_;
  Placement placement_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<KvCache> cache_;
  LoadStats stats_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ExpertRebalancer> rebalancer_;
  size_t bytes_read_ = 0;
};

}  // namespace moe::runtime
