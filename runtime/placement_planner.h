#pragma once
// The placement planner: from measured expert loads, where each expert of each layer should live
// so that the busiest rank computes as little as it can. A pure function of its inputs (no
// clocks, no randomness, ties to the lower id), so every rank that plans from the same loads
// gets the same placement.
//
// Per layer:
//   1. replicas: every expert gets one; each redundant slot (slots beyond one per expert) goes
//      to the expert with the largest load per replica (ties to the lower expert), at most one
//      replica per rank;
//   2. packing: replicas, heaviest first, each onto the least loaded rank with a free slot that
//      does not hold the expert yet (ties to the less loaded node, then the lower rank);
//   3. local search: moves and swaps of single replicas off the busiest rank while they lower it;
//   4. shares: the load of a replicated expert is shifted between its replicas (water-filling)
//      from the busiest rank towards the least loaded holder, which is what the route wheel then
//      splits in (runtime/placement.h).
// Given the current placement the planner also plans "sticky" (step 2 prefers a rank that
// already holds the expert when that costs at most keep_within of the mean rank load) and
// considers the current placement itself with re-planned shares (moves nothing). It keeps the
// cheapest candidate in moved weights whose largest rank load is within keep_within of the best
// candidate's, and never returns a layer whose largest rank load is above the current one's.
#include <cstdint>
#include <vector>

#include "runtime/placement.h"

namespace moe::runtime {

struct PlanRequest {
  std::vector<std::vector<double>> load;  // [layer][expert] routed choices (any unit >= 0)
  int n_ranks = 1;
  // Expert slots per rank, experts plus redundant ones. 0: ceil(experts / ranks) +
  // redundant_per_rank.
  int slots_per_rank = 0;
  int redundant_per_rank = 0;
  int nodes = 1;  // ranks are node-major: rank r is on node r / (n_ranks / nodes)
  // The placement now (its layer and expert counts must match `load`), or null.
  const Placement* current = nullptr;
  // A candidate that moves fewer weights wins while its largest rank load is within this
  // fraction of the best one's.
  double keep_within = 0.02;
};

struct LayerPlan {
  std::vector<double> before;  // [rank] predicted load under the current placement (empty if none)
  std::vector<double> after;   // [rank] predicted load under the plan
  int moved = 0;               // expert weights a rank must receive (replicas new to their rank)
  bool kept = false;           // the current map kept as it is (shares may change)
};

struct Plan {
  Placement placement;           // with shares on every layer
  std::vector<LayerPlan> layers;
  int64_t weights_moved = 0;     // sum of the layers' moved
  int slots_per_rank = 0;        // as resolved
};

// Throws InputError naming what is wrong (no layers, a negative load, too few slots, nodes not
// dividing the ranks, a current placement of another shape).
Plan plan_placement(const PlanRequest& req);

// [rank] the load each rank computes under `placement` for `load` [expert] of `layer`: each
// expert's load spread over its replicas as the routing spreads it (expected_fraction).
std::vector<double> predicted_rank_load(const Placement& placement, int layer,
                                        const std::vector<double>& load);
// max / mean; 1.0 for all zeros.
double imbalance(const std::vector<double>& v);

}  // namespace moe::runtime
