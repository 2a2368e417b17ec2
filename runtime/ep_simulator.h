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
#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/load_stats.h"
#include "runtime/placement.h"

namespace moe::runtime {

struct SimModel {
  int layers = 0, experts = 0, top_k = 0, hidden = 0, intermediate = 0;
  int64_t row_bytes = 0;       // a dispatched row on the wire (kernels::RowLayout::stride)
  int64_t back_row_bytes = 0;  // a returned row
};

struct CostModel {
  double expert_flops = 400e12;    // FLOP/s of one rank's expert FFNs
  double intra_bw = 150e9;         // bytes/s a rank moves within its node (NVLink)
  double inter_bw = 50e9;          // bytes/s a rank moves across nodes (InfiniBand)
  double latency = 10e-6;          // seconds per exchange
  double dense_s_per_token = 0;    // seconds per token per layer outside the MoE block
};

struct SimResult {
  LoadStats stats;                 // tokens, rows, rows computed and bytes, as the runtime counts
  int64_t bytes_intra = 0, bytes_inter = 0;  // between distinct ranks, within / across nodes
  std::vector<double> step_s;      // [step] predicted step time
  double dense_s = 0, exchange_s = 0, experts_s = 0;  // summed over steps
  double total_s() const { return dense_s + exchange_s + experts_s; }
};

// The choices of source rank `src` at (step, layer): experts [T, top_k], T = size / top_k.
using SimSource = std::function<const std::vector<int32_t>&(int step, int layer, int src)>;

// Simulates `steps` steps of `model.layers` layers on placement.world_size() ranks, nodes of
// `gpus_per_node` consecutive ranks.
SimResult simulate(const SimSource& source, int steps, const SimModel& model,
                   const Placement& placement, int gpus_per_node, const CostModel& cost);

}  // namespace moe::runtime
