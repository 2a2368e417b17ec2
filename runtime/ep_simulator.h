#pragma once
// The expert-parallel simulator: what a routing (a recorded trace, replayed or spread over more
// ranks) does under a placement on N ranks of nodes x GPUs per node, without running it.
// Rows and bytes come from the runtime's own dispatch plan (kernels::cpu::dispatch_layout with
// the placement's route wheels), so for the run a trace was recorded from they are the measured
// ones exactly; the step time comes from a cost model (CostModel) of the lockstep layer:
//   per layer: dense part (slowest rank's tokens x dense_s_per_token)
//            + dispatch exchange + experts + return exchange, each the slowest rank's
//   an exchange on rank r: latency + max(bytes r sends or receives within its node / intra_bw,
//                                        across nodes / inter_bw)   (its own rows stay local)
//   experts on rank r: rows computed x 6 x hidden x intermediate FLOP / expert_flops
//              + experts with rows on r x one expert's weight bytes / weight_bw (each expert
//              computed reads its weights once a step: what bounds a decode step)
//   permute on rank r: (rows r packs + rows r receives) x permute_s_per_row (the passes over
//              the rows that lay out, pack, group and combine them; small on a GPU)
//   per step: step_s (what does not grow with the tokens: scheduling, the step's control)
// calibrate() fits these terms to the times a trace measured (its W lines).
#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/load_stats.h"
#include "runtime/placement.h"
#include "runtime/routing_trace.h"

namespace moe::runtime {

struct SimModel {
  int layers = 0, experts = 0, top_k = 0, hidden = 0, intermediate = 0;
  int64_t row_bytes = 0;       // a dispatched row on the wire (kernels::RowLayout::stride)
  int64_t back_row_bytes = 0;  // a returned row
  int64_t weight_bytes = 0;    // one expert's FFN weights (3 x hidden x intermediate x dtype)
};

struct CostModel {
  double expert_flops = 400e12;    // FLOP/s of one rank's expert FFNs
  double weight_bw = 0;            // bytes/s a rank reads expert weights at; 0: not modelled
  double intra_bw = 150e9;         // bytes/s a rank moves within its node (NVLink)
  double inter_bw = 50e9;          // bytes/s a rank moves across nodes (InfiniBand)
  double latency = 10e-6;          // seconds per exchange
  double dense_s_per_token = 0;    // seconds per token per layer outside the MoE block
  double permute_s_per_row = 0;    // seconds per row packed or received, per layer
  double step_s = 0;               // seconds per step, whatever its tokens
};

struct SimResult {
  LoadStats stats;                 // tokens, rows, rows computed and bytes, as the runtime counts
  int64_t bytes_intra = 0, bytes_inter = 0;  // between distinct ranks, within / across nodes
  std::vector<double> step_s;      // [step] predicted step time
  double dense_s = 0, exchange_s = 0, experts_s = 0, permute_s = 0;  // summed over steps
  double total_s() const { return dense_s + exchange_s + experts_s + permute_s; }
};

// The choices of source rank `src` at (step, layer): experts [T, top_k], T = size / top_k.
using SimSource = std::function<const std::vector<int32_t>&(int step, int layer, int src)>;

// Simulates `steps` steps of `model.layers` layers on placement.world_size() ranks, nodes of
// `gpus_per_node` consecutive ranks.
SimResult simulate(const SimSource& source, int steps, const SimModel& model,
                   const Placement& placement, int gpus_per_node, const CostModel& cost);

// The cost model fitted to a run's measured times (RoutingTrace::times: one sample per rank and
// step), the run replayed (`source`) on its own placement (`recorded`):
//   expert_flops,     = least squares of expert time = rows computed x FLOP per row / flops
//   weight_bw           + experts computed x weight bytes / weight_bw (no weight term where
//                       that fit is not positive: rows alone, as a ratio of sums)
//   permute_s_per_row = (permute + combine time) / (rows packed + rows received)
//   latency, intra_bw = least squares of exchange time = 2 x layers x latency + bytes / bw over
//                       the samples (bytes: the larger of those sent and received to other
//                       ranks); kept as `given` with one rank, or where the fit is not positive
//   step_s, dense     = least squares of the rest of the step = step_s + tokens x layers x dense
//                       (each kept >= 0)
// inter_bw stays as given. Samples of steps the source has no routing for are left out.
struct Calibration {
  CostModel cost;
  bool link_fitted = false;  // latency and intra_bw came from the fit
  int samples = 0;
};
Calibration calibrate(const SimSource& source, const SimModel& model, const Placement& recorded,
                      const std::vector<RoutingTrace::StepTime>& samples, const CostModel& given);

}  // namespace moe::runtime
