#pragma once
// One MoE block on one rank of N, the hot path of DESIGN.md, as a pipeline of backend ops. Every
// per-token index is made where the rows are (on the GPU for cuda); the host sees only counts.
//   route    : router GEMM, fp32 softmax, top-k, renormalise                   (linear, topk)
//   layout   : per destination rank its rows, one per (token, destination): a token whose
//              experts share a rank crosses once, carrying its k route slots  (dispatch_layout)
//              -> the one device-to-host copy of the layer: rows per rank and choices per expert
//   pack     : the rows in the run's precision with their slots, one payload   (pack_rows)
//   exchange : per-peer counts (host), then the payload (one all_to_all_v)
//   group    : received (row, slot) pairs by local expert, rows gathered       (group_by_expert,
//                                                                               unpack_rows)
//   experts  : SwiGLU FFN per local expert                                     (linear, silu_mul)
//   reduce   : per received row, sum of weight * expert output in slot order   (weighted_combine)
//   exchange : the reduced rows go back, in the run's precision (all_to_all_v)
//   combine  : out[t] = sum of t's returned rows in ascending rank             (weighted_combine)
//   account  : load statistics from the counts alone
// With N = 1 the exchanges are a rank sending to itself, through the same code.
#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "kernels/ops.h"
#include "runtime/expert_ffn.h"
#include "runtime/load_stats.h"
#include "runtime/model_config.h"
#include "runtime/placement.h"
#include "runtime/routing_trace.h"
#include "runtime/weights.h"

namespace moe::runtime {

using kernels::RouteSlot;

// Wall time spent in each phase, summed over calls (seconds). Host clocks: exact for the CPU
// backend, whose ops are synchronous; on cuda a phase is charged when the host next waits, unless
// timing barriers are on. permute counts both sides: layout and pack, and the receive-side
// grouping by expert.
struct MoePhaseTimes {
  double route = 0, permute = 0, exchange = 0, experts = 0, combine = 0;
  // With timing barriers on: time spent waiting for the slowest rank before each exchange
  // (otherwise that wait hides inside exchange).
  double wait = 0;
  double dispatch_combine() const { return permute + exchange + combine; }
};

class MoeLayer {
 public:
  // Puts the placement's routing tables on the backend (set_placement).
  MoeLayer(const ModelConfig& cfg, const Placement& placement, kernels::Ops& ops,
           comm::Communicator& comm, LoadStats* stats);

  // Makes `placement` the one this rank routes and receives by: its route wheels and local
  // indices uploaded to the backend, the only uploads the layer makes. Called at construction
  // and, between steps, when the experts were moved (runtime/expert_rebalancer); every rank
  // switches together, as every forward() must see the same placement on all ranks.
  void set_placement(const Placement& placement);

  // Sizes every workspace for steps of up to `max_tokens` tokens on any rank (the token budget,
  // the same on every rank), for the worst routing: all N ranks sending all their rows here.
  // After it no forward() allocates (a larger T still works, growing the workspace then).
  void reserve_for(int max_tokens);

  // out[T, hidden] = the MoE block of `layer` on h[T, hidden] (backend memory). Every rank
  // calls it for every layer of every step, T = 0 included.
  void forward(int layer, const LayerWeights& w, const float* h, int T, float* out);

  // The wire format of a dispatched row: hidden values in the run's precision, then k slots.
  kernels::RowLayout row_layout() const;
  // Bytes this rank sent in the last forward: the dispatch payload and the returned rows.
  size_t last_bytes_sent() const { return last_bytes_sent_; }

  const MoePhaseTimes& times() const { return times_; }
  void reset_times() { times_ = {}; }
  // For measuring, not serving: before each exchange, wait for the backend's queued work and
  // then for every rank (a barrier), charging the latter to MoePhaseTimes::wait, so each phase
  // holds only its own work. Off by default: it adds a sync and a barrier per exchange.
  void set_timing_barriers(bool on) { timing_barriers_ = on; }
  // Records every forward's top-k choices there (null: off). Costs one more copy back per layer.
  void set_trace(RoutingTraceRecorder* trace) { trace_ = trace; }

 private:
  // The phases of forward(), in order.
  void route(const LayerWeights& w, const float* h, int T);
  void layout(int layer, int T);
  void pack(const float* h);
  void exchange_counts(int layer);
  void exchange_rows();
  void group(int layer, const LayerWeights& w);
  void experts(const LayerWeights& w);
  void reduce();
  void exchange_back();
  void combine(int T, float* out);
  void account(int layer);

  // Grows `buf` to at least `bytes` (the step never shrinks its workspace).
  void reserve(kernels::Buffer& buf, size_t bytes);
  // Closes the phase timed into `into` before an exchange (see set_timing_barriers).
  template <class Lap>
  void before_exchange(Lap& lap, double* into);

  const ModelConfig& cfg_;
  kernels::Ops& ops_;
  comm::Communicator& comm_;
  LoadStats* stats_;
  MoePhaseTimes times_;
  bool timing_barriers_ = false;
  RoutingTraceRecorder* trace_ = nullptr;
  std::vector<int32_t> trace_experts_;  // [T, k] host copy of the choices, when tracing
  const int n_ranks_, me_, n_experts_, k_;
  const kernels::RowLayout rows_;  // the dispatch payload's row format
  const size_t back_row_bytes_;    // a returned row: hidden values in the run's precision
  size_t last_bytes_sent_ = 0;

  // The placement, as this rank routes and receives.
  std::vector<int32_t> route_host_;        // [layers, E, kRouteWheel] my route wheels
  std::vector<int32_t> local_index_host_;  // [layers, E] index among mine, -1 if not held
  kernels::Buffer route_;                  // [layers, E, kRouteWheel] int32, on the backend
  kernels::Buffer local_index_;            // [layers, E] int32, on the backend

  // Backend workspace; S = rows sent, R = rows received, G = (row, local expert) pairs.
  kernels::Buffer logits_;        // [T, E] router logits
  kernels::Buffer expert_;        // [T, k] int32
  kernels::Buffer weight_;        // [T, k] fp32
  kernels::Buffer counts_;        // [N + E * N] int32: rows per rank, choices per (expert, rank)
  kernels::Buffer slot_rank_;     // [T, k] int32: the rank serving each choice
  kernels::Buffer send_token_;    // [S] int32
  kernels::Buffer send_slots_;    // [S, k] RouteSlot
  kernels::Buffer home_;          // [T, k] int32
  kernels::Buffer send_payload_;  // [S, rows_.stride()] bytes
  kernels::Buffer recv_payload_;  // [R, rows_.stride()] bytes
  kernels::Buffer offsets_;       // [local + 1] int32
  kernels::Buffer gather_;        // [R * k] int32
  kernels::Buffer slot_row_;      // [R, k] int32
  kernels::Buffer slot_weight_;   // [R, k] fp32
  kernels::Buffer grouped_x_;     // [G, H] fp32
  kernels::Buffer gate_up_;       // [min(G, kExpertChunkRows), 2I] fp32
  kernels::Buffer act_;           // [min(G, kExpertChunkRows), I] fp32
  kernels::Buffer grouped_y_;     // [G, H] fp32
  kernels::Buffer partial_;       // [R, back_row_bytes_] reduced rows, to send back
  kernels::Buffer back_;          // [S, back_row_bytes_] this rank's rows, returned

  // Host: the counts and what follows from them, reused across steps.
  std::vector<int32_t> h_counts_;                    // [N + E * N] as downloaded
  std::vector<int64_t> send_blocks_, recv_blocks_;   // [N, 1 + E] per peer: rows, choices per expert
  std::vector<int64_t> send_counts_, recv_counts_, send_displs_, recv_displs_;  // [N] rows
  std::vector<int64_t> group_begin_;                 // [local + 1] first grouped row per expert
  int64_t S_ = 0, R_ = 0, G_ = 0;
};

}  // namespace moe::runtime
