#pragma once
// One MoE block on one rank of N, the hot path of DESIGN.md:
//   route    : router GEMM, fp32 softmax, top-k, renormalise
//   permute  : one row per (token, destination rank), ordered by destination then token; a token
//              whose experts share a rank crosses once, carrying the k (expert, weight) slots
//              meant for that rank
//   exchange : counts, then rows and their slots (all-to-all-v)
//   experts  : received rows grouped by local expert -> SwiGLU FFN
//   reduce   : per received row, sum of weight * expert output over its slots, in slot order
//   exchange : the reduced rows go back along the reverse counts
//   combine  : out[t] = sum of the partial rows of t's destinations, in ascending rank
//   account  : tokens per (layer, expert), rows per (layer, src, dst), rows computed per rank
// With N = 1 the exchanges are a rank sending to itself, through the same code.
#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "kernels/ops.h"
#include "runtime/expert_ffn.h"
#include "runtime/load_stats.h"
#include "runtime/model_config.h"
#include "runtime/placement.h"
#include "runtime/weights.h"

namespace moe::runtime {

// What travels with a dispatched row: for each of the token's k slots, the expert it wants on
// the receiving rank (-1 when that slot's expert is served by another rank) and its weight.
struct RouteSlot {
  int32_t expert;
  float weight;
};

// Wall time spent in each phase, summed over calls (seconds). Host clocks: exact for the CPU
// backend, whose ops are synchronous; on cuda a phase is charged when the host next waits, unless
// timing barriers are on. permute counts both sides: the send-side plan and gather, and the
// receive-side grouping by expert.
struct MoePhaseTimes {
  double route = 0, permute = 0, exchange = 0, experts = 0, combine = 0;
  // With timing barriers on: time spent waiting for the slowest rank before each exchange
  // (otherwise that wait hides inside exchange).
  double wait = 0;
  double dispatch_combine() const { return permute + exchange + combine; }
};

class MoeLayer {
 public:
  MoeLayer(const ModelConfig& cfg, const Placement& placement, kernels::Ops& ops,
           comm::Communicator& comm, LoadStats* stats);

  // Sizes every workspace for steps of up to `max_tokens` tokens on any rank (the token budget,
  // the same on every rank), for the worst routing: all N ranks sending all their rows here.
  // After it no forward() allocates (a larger T still works, growing the workspace then).
  void reserve_for(int max_tokens);

  // out[T, hidden] = the MoE block of `layer` on h[T, hidden] (backend memory). Every rank
  // calls it for every layer of every step, T = 0 included.
  void forward(int layer, const LayerWeights& w, const float* h, int T, float* out);

  const MoePhaseTimes& times() const { return times_; }
  void reset_times() { times_ = {}; }
  // For measuring, not serving: before each exchange, wait for the backend's queued work and
  // then for every rank (a barrier), charging the latter to MoePhaseTimes::wait, so each phase
  // holds only its own work. Off by default: it adds a sync and a barrier per exchange.
  void set_timing_barriers(bool on) { timing_barriers_ = on; }

 private:
  // Grows `buf` to at least `bytes` (the step never shrinks its workspace).
  void reserve(kernels::Buffer& buf, size_t bytes);
  // Closes the phase timed into `into` before an exchange (see set_timing_barriers).
  template <class Lap>
  void before_exchange(Lap& lap, double* into);

  const ModelConfig& cfg_;
  const Placement& placement_;
  kernels::Ops& ops_;
  comm::Communicator& comm_;
  LoadStats* stats_;
  MoePhaseTimes times_;
  bool timing_barriers_ = false;

  // Backend workspace.
  kernels::Buffer logits_;    // [T, E] router logits
  kernels::Buffer expert_;    // [T, k] int32
  kernels::Buffer weight_;    // [T, k] fp32
  kernels::Buffer send_x_;    // [S, H] rows to send
  kernels::Buffer send_meta_; // [S, k] RouteSlot
  kernels::Buffer recv_x_;    // [R, H] rows received
  kernels::Buffer recv_meta_; // [R, k] RouteSlot
  kernels::Buffer grouped_x_; // [G, H] received rows, one per (row, local expert), by expert
  kernels::Buffer gate_up_;   // [min(G, kExpertChunkRows), 2I]
  kernels::Buffer act_;       // [min(G, kExpertChunkRows), I]
  kernels::Buffer grouped_y_; // [G, H]
  kernels::Buffer partial_;   // [R, H] per received row, its experts' weighted sum
  kernels::Buffer back_;      // [S, H] partial rows returned to this rank
  kernels::Buffer index_;     // int32 indices for gather / combine
  kernels::Buffer cweight_;   // fp32 weights for combine

  // Host copies and plans, reused across steps.
  std::vector<int32_t> h_expert_;       // [T, k]
  std::vector<float> h_weight_;         // [T, k]
  std::vector<int32_t> h_send_token_;   // [S] the token of each sent row
  std::vector<RouteSlot> h_send_meta_;  // [S, k]
  std::vector<int32_t> h_home_index_;   // [T, k] rows of back_ to sum per token, -1 padded
  std::vector<float> h_ones_;           // [T, k]
  std::vector<RouteSlot> h_recv_meta_;  // [R, k]
  std::vector<int32_t> h_group_row_;    // [G] received row of each grouped row
  std::vector<int32_t> h_slot_index_;   // [R, k] grouped row of each (row, slot), -1 if none
  std::vector<float> h_slot_weight_;    // [R, k]
  std::vector<int32_t> h_dest_of_;      // [T, k] destination rank of each routed slot
  std::vector<int64_t> h_next_row_;     // [N] next free send row per destination
  std::vector<int64_t> h_group_begin_;  // [local + 1] first grouped row of each local expert
  std::vector<int64_t> send_counts_, recv_counts_, send_displs_, recv_displs_;
};

}  // namespace moe::runtime
