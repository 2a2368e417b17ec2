#pragma once
// The routing trace: per step and layer, the tokens each source rank routed to each expert, as
// each token's top-k expert ids (from which tokens per (source, expert) follow, and also which
// of a token's experts share a destination, which the rows and bytes of the exchange depend on).
// `moe-run --trace FILE` and `moe-worker --trace FILE` write it; `moe-sim` replays it.
//
// Format (text, one record per line; documented in docs/ARCHITECTURE.md):
//   moe-routing-trace 1
//   {JSON header: layers, experts, top_k, ranks, hidden, intermediate, row_bytes (a dispatched
//    row: values in the wire dtype padded to 8 bytes, then k route slots), back_row_bytes (a
//    returned row), wire_dtype, placement ({"map", "shares"}: the run's placement)}
//   S step layer src T e(0,0) e(0,1) ... e(T-1,k-1)
//   W step src total route permute exchange experts combine wait
// S lines come in (step, layer, src) order; a (step, layer, src) with no tokens has no line.
// W lines (measured: moe-sim calibrates its cost model from them and states its error against
// them) follow each step's S lines, one per rank: the rank's wall time of the engine step and
// its MoE blocks' phases summed over the layers (runtime/moe_layer.h MoePhaseTimes), seconds.
// Steps count from 0 at the first engine step; every rank takes part in every step.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/params.h"

namespace moe::comm {
class Communicator;
}

namespace moe::runtime {

class Placement;
struct ModelConfig;
struct MoePhaseTimes;

// Records this rank's routing as the MoE layer makes it (MoeLayer::set_trace).
class RoutingTraceRecorder {
 public:
  explicit RoutingTraceRecorder(int rank) : rank_(rank) {}
  // The choices of `layer` this step: experts [T, k]. A call for layer 0 starts a new step.
  void record(int layer, const int32_t* experts, int T, int k);
  // The step's measured times, after its last layer.
  void record_step_time(double total_s, const MoePhaseTimes& moe);
  int steps() const { return step_ + 1; }
  // Collective: every rank's records to rank 0, which writes `path` with `header` (and a line
  // order independent of the rank count's timing). Throws InputError on rank 0 if it cannot
  // write.
  void write(comm::Communicator& comm, const std::string& path,
             const nlohmann::json& header) const;

 private:
  int rank_;
  int step_ = -1;
  std::string lines_;
};

// The header of a run's trace: the model's MoE shape, the wire format (`rows`: the dispatched
// row layout) and the placement.
nlohmann::json trace_header(const ModelConfig& cfg, const kernels::RowLayout& rows,
                            const Placement& placement);

struct RoutingTrace {
  nlohmann::json header;
  int layers = 0, experts = 0, top_k = 0, ranks = 0, steps = 0;
  struct Record {
    int step = 0, layer = 0, src = 0;
    std::vector<int32_t> experts;  // [T, top_k]
  };
  std::vector<Record> records;  // in (step, layer, src) order
  // Measured, where the trace has W lines: one rank's wall time of one step, and its MoE
  // blocks' phases summed over the layers.
  struct StepTime {
    int step = 0, src = 0;
    double total = 0, route = 0, permute = 0, exchange = 0, experts = 0, combine = 0, wait = 0;
  };
  std::vector<StepTime> times;  // in (step, src) order

  // Throws InputError naming the file, line and what was expected.
  static RoutingTrace read(const std::string& path);
};

}  // namespace moe::runtime
