#pragma once
// Live expert rebalancing: between two steps, every `interval` steps, the ranks re-plan where
// the experts live from the load of the last `window` steps, move the expert weights that
// change rank through the communicator, and switch to the new placement together.
//
//   loads  : each rank's routed choices per (layer, expert) over the window, summed over the
//            ranks by one all-reduce, so every rank holds the same loads;
//   decide : the worst layer's predicted device imbalance (max rank load / mean) under the
//            current placement; at or below the threshold nothing more happens;
//   plan   : runtime/placement_planner on every rank (pure and deterministic: the same loads
//            give the same placement everywhere, so no plan is broadcast), keeping moves few;
//   move   : per layer one all_to_all_v of whole experts (w1, w3, w2 of one expert is one
//            element), in backend memory (MPI on cpu, NCCL or staged MPI on cuda);
//   switch : the layer weights hold the new local experts (ascending ids), the MoE layer's
//            routing tables are uploaded again, experts no longer held are freed.
// NOTES: generation goes on across a switch (KV caches are per rank and untouched), and with the
// same tokens only where the placement does not change the numbers: each rank reduces a row's
// slots in slot order and the home rank sums the returned rows in ascending rank, so with top-2
// routing at f32 the sum is the same whichever ranks hold the two experts (a + b == b + a).
// With top-k above 2, or bf16 rows on the wire (each returned row is rounded once), a new
// grouping of a token's experts may change the last bit, as between an N-rank and a 1-rank run. tests/cli/test_rebalance_cli.sh holds rebalanced runs to the 1-rank tokens.
#include <cstdint>
#include <deque>
#include <vector>

#include "comm/communicator.h"
#include "kernels/ops.h"
#include "runtime/load_stats.h"
#include "runtime/model_config.h"
#include "runtime/placement.h"
#include "runtime/weights.h"

namespace moe::runtime {

class Model;

struct RebalanceOptions {
  int interval_steps = 64;   // a check every this many engine steps
  int window_steps = 64;     // the steps of load statistics a plan uses
  double threshold = 1.2;    // worst layer's max rank load / mean at or below which nothing moves
  int redundant_slots = 0;   // expert slots per rank beyond ceil(experts / ranks), for replicas
};

// One expert weight (w1, w3 and w2 of one expert of one layer) sent from `src` to `dst`.
struct ExpertMove {
  int layer = 0, expert = 0, src = 0, dst = 0;
};

// The weights that take `from` to `to`: every (layer, expert) replica of `to` on a rank that
// does not hold it in `from`, sent by one of the expert's holders in `from` (picked by the
// destination rank, to spread the sending). Ordered by layer, then expert, then destination.
std::vector<ExpertMove> plan_moves(const Placement& from, const Placement& to);

struct MoveResult {
  int64_t weights = 0;  // expert weights moved, over all ranks
  int64_t bytes = 0;    // their bytes, over all ranks
};

// Bytes of one expert's weights (w1, w3 and w2) at `dtype`.
size_t expert_weight_bytes(const ModelConfig& cfg, DType dtype);

// The most memory a live rebalance can add on `rank` beyond what `current` has it hold: the
// experts it may come to hold (a plan gives a rank at most ceil(E / N) + redundant_slots per
// layer), plus, while one layer moves, its send buffer (at most the experts it holds there), its
// receive buffer and the received experts' own copies before the dropped ones are freed (each at
// most a layer's slots). On a GPU the KV cache is sized to leave this free (RankRuntime).
size_t rebalance_reserve_bytes(const ModelConfig& cfg, const Placement& current, int rank,
                               DType dtype, int redundant_slots);

// Moves the expert weights from the placement `from` to `to` (a collective: every rank calls it
// with the same two placements) and rebuilds `weights`' per-layer experts for `to` on this rank.
// Weights kept stay where they are; those no longer held are freed.
MoveResult move_experts(const ModelConfig& cfg, const Placement& from, const Placement& to,
                        ModelWeights& weights, kernels::Ops& ops, comm::Communicator& comm);

// Since the run started, the same on every rank.
struct RebalanceTotals {
  int64_t checks = 0;         // times the loads were looked at
  int64_t rebalances = 0;     // times a new placement was switched to
  int64_t weights_moved = 0;  // expert weights moved, over all ranks
  int64_t bytes_moved = 0;
  double seconds = 0;         // wall time of the rebalances (this rank), checks excluded
  double last_seconds = 0;    // of the last one
  double last_imbalance_before = 0, last_imbalance_after = 0;  // predicted, worst layer
};

class ExpertRebalancer {
 public:
  // `placement` is the run's, changed in place on a switch; `stats` the rank's own counts.
  ExpertRebalancer(const RebalanceOptions& opts, const ModelConfig& cfg, Placement& placement,
                   Model& model, kernels::Ops& ops, comm::Communicator& comm,
                   const LoadStats& stats);

  // After each engine step, on every rank, with the engine's step count (the same on every
  // rank). A collective on the steps that are a multiple of the interval. Returns whether the
  // placement changed.
  bool after_step(int64_t step);

  const RebalanceTotals& totals() const { return totals_; }
  // Bumped on every switch, so a reporter can tell the placement changed.
  int64_t placement_version() const { return totals_.rebalances; }

 private:
  RebalanceOptions opts_;
  const ModelConfig& cfg_;
  Placement& placement_;
  Model& model_;
  kernels::Ops& ops_;
  comm::Communicator& comm_;
  const LoadStats& stats_;
  // This rank's cumulative routed choices [layer * experts] after each of the last
  // window_steps steps, oldest first (the first one: before the window).
  std::deque<std::vector<int64_t>> history_;
  RebalanceTotals totals_;
};

}  // namespace moe::runtime
