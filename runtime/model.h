#pragma once
// The Mixtral forward pass on one rank: its own tokens through attention over its own KV cache,
// the MoE blocks through the expert-parallel exchange. Every rank calls forward() for every
// step, with zero tokens if it has none.
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "kernels/ops.h"
#include "runtime/kv_cache.h"
#include "runtime/load_stats.h"
#include "runtime/model_config.h"
#include "runtime/moe_layer.h"
#include "runtime/placement.h"
#include "runtime/weights.h"

namespace moe::runtime {

// One step's tokens on this rank: prefill chunks and decodes of any number of sequences.
struct StepBatch {
  std::vector<int32_t> tokens;      // [T]
  std::vector<int32_t> slot;        // [T] KV cache slot of each token's sequence
  std::vector<int32_t> pos;         // [T] absolute position of each token
  std::vector<int32_t> logit_rows;  // rows of [0, T) whose logits are wanted
  int size() const { return int(tokens.size()); }
  void clear() { tokens.clear(); slot.clear(); pos.clear(); logit_rows.clear(); }
};

// What one step may hold, so the workspace is allocated once, at construction.
struct ModelLimits {
  int max_tokens = 512;     // tokens of one step on any rank (the engine's token budget)
  int max_logit_rows = 64;  // rows whose logits one step wants (at most one per sequence)
};

class Model {
 public:
  Model(const ModelConfig& cfg, ModelWeights weights, const Placement& placement,
        kernels::Ops& ops, comm::Communicator& comm, KvCache& cache, LoadStats* stats,
        ModelLimits limits = {});

  // Runs one step. logits (host) receives [logit_rows.size(), vocab] fp32.
  void forward(const StepBatch& batch, std::vector<float>& logits);

  const ModelConfig& config() const { return cfg_; }
  // Time in the MoE layers' phases since reset_times(), summed over layers.
  const MoePhaseTimes& moe_times() const { return moe_.times(); }
  // Time in the attention blocks (norm, q/k/v, RoPE, KV store, attention, o) since
  // reset_times(), summed over layers: measured only with timing barriers on.
  double attention_seconds() const { return attention_s_; }
  void reset_times() {
    moe_.reset_times();
    attention_s_ = 0;
  }
  // For measuring, not serving: the backend's queue is waited for around every attention block,
  // and the MoE layers wait (and meet every rank) before each exchange, so that each phase's time
  // holds only its own work (MoeLayer::set_timing_barriers).
  void set_timing_barriers(bool on) {
    timing_barriers_ = on;
    moe_.set_timing_barriers(on);
  }
  // The MoE layer's routing trace (null: off); see runtime/routing_trace.h.
  void set_routing_trace(RoutingTraceRecorder* trace) {
    trace_ = trace;
    moe_.set_trace(trace);
  }
  RoutingTraceRecorder* routing_trace() const { return trace_; }
  const kernels::RowLayout row_layout() const { return moe_.row_layout(); }
  // The weights this rank holds; their experts change only between steps, together with
  // set_placement (runtime/expert_rebalancer).
  ModelWeights& weights() { return w_; }
  // Routes by `placement` from the next step on (MoeLayer::set_placement).
  void set_placement(const Placement& placement) { moe_.set_placement(placement); }

 private:
  RoutingTraceRecorder* trace_ = nullptr;
  bool timing_barriers_ = false;
  double attention_s_ = 0;
  // Grow the step's buffers to T tokens and L logit rows. Done once for the limits at
  // construction; a larger step (a caller past its limits) grows them then.
  void reserve(int T);
  void reserve_logits(int L);

  const ModelConfig& cfg_;
  ModelWeights w_;
  kernels::Ops& ops_;
  KvCache& cache_;
  MoeLayer moe_;
  int capacity_ = -1, logit_capacity_ = -1;

  kernels::Buffer inv_freq_;  // [head_dim / 2]
  kernels::Buffer tokens_, slot_, pos_, rows_;  // [T] int32
  kernels::Buffer x_;     // [T, H] residual stream
  kernels::Buffer h_;     // [T, H] normed
  kernels::Buffer q_;     // [T, q_dim]
  kernels::Buffer k_;     // [T, kv_dim]
  kernels::Buffer v_;     // [T, kv_dim]
  kernels::Buffer attn_;  // [T, q_dim]
  kernels::Buffer moe_out_;  // [T, H]
  kernels::Buffer logits_;   // [L, vocab]
};

}  // namespace moe::runtime
