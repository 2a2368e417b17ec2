#pragma once
// Everything one rank needs to generate, assembled from a RunConfig: the checkpoint's config,
// the placement, the backend, this rank's weights, its KV cache, the load statistics, the
// model and the engine. Shared by moe-run and the serving worker.
#include <memory>

#include "comm/communicator.h"
#include "kernels/ops.h"
#include "runtime/engine.h"
#include "runtime/load_stats.h"
#include "runtime/model.h"
#include "runtime/model_config.h"
#include "runtime/placement.h"
#include "runtime/run_config.h"

namespace moe::runtime {

class RankRuntime {
 public:
  RankRuntime(const RunConfig& run, comm::Communicator& comm);

  const ModelConfig& model_config() const { return cfg_; }
  const Placement& placement() const { return placement_; }
  Engine& engine() { return *engine_; }
  Model& model() { return *model_; }
  KvCache& cache() { return *cache_; }
  LoadStats& stats() { return stats_; }
  size_t checkpoint_bytes_read() const { return bytes_read_; }
  // Longest prompt + generation a sequence may have.
  int max_context() const;

 private:
  ModelConfig cfg_;
  Placement placement_;
  std::unique_ptr<kernels::Ops> ops_;
  std::unique_ptr<KvCache> cache_;
  LoadStats stats_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Engine> engine_;
  size_t bytes_read_ = 0;
};

}  // namespace moe::runtime
