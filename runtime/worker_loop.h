#pragma once
// The serving worker's loop on every rank. Rank 0 talks to the coordinator through a
// Controller (the gRPC link lives in launcher/, this file knows nothing of it). Each iteration
// has one exchange, an all_gather: rank 0's control (new sequences with their rank,
// cancellations, shutdown) to every rank, and from every rank the tokens it made in the step
// before, the step's timings and load-statistics delta, and whether it has work left (so the
// engine's step needs no agreement of its own). Then all ranks take one lockstep engine step.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "runtime/rank_runtime.h"

namespace moe::runtime {

struct WorkAssignment {
  Request request;
  int rank = 0;  // which rank runs it
};

// What rank 0 broadcasts before every step. Work is applied before cancellations: a client
// that gives up before its sequence reached the rank sends a cancel that can arrive in the same
// Control as the work.
struct Control {
  std::vector<WorkAssignment> work;
  std::vector<int64_t> cancels;
  bool shutdown = false;
  double waited_s = 0;  // set by the loop: rank 0's wait for work in poll(), not control time
};

// A token made, or a sequence refused by its rank (error set, no token). Typed end to end: the
// coordinator reads the finish as an enum, never by parsing text.
struct TokenEvent {
  int64_t id = 0;
  int32_t token = 0;
  std::optional<FinishReason> finish;  // set on the sequence's last token
  std::string error;                   // not empty: the rank refused the sequence (token -1)
  std::optional<TokenLogprob> logprob;  // where the sequence asked for logprobs
};

// One step's report over all ranks: counts summed; the step's wall time is the slowest rank's,
// and its split into phases is the mean over ranks (the phases of different ranks overlap).
// control_s is the loop's own time before the step (rank 0's poll, the exchange of the Control
// and the reports of the step before, their publication, applying the work), waiting for work
// excluded: step_s + control_s is what one step costs the loop. A report sent without a step
// (refused sequences) has zero timings and repeats the step count.
struct StepReport {
  int64_t step = 0;                              // engine steps so far
  double step_s = 0;                             // slowest rank
  double compute_s = 0, exchange_s = 0, schedule_s = 0;  // mean over ranks
  double control_s = 0;                                  // mean over ranks
  LoadStats delta;                      // counts made in this step, all ranks
  std::vector<TokenEvent> tokens;       // from every rank
  RebalanceTotals rebalance;            // live rebalancing so far (zeros when off)
  // [layers * experts] the first rank holding each expert, where the placement changed since
  // the last report; empty otherwise.
  std::vector<int32_t> expert_rank;
};

class Controller {
 public:
  virtual ~Controller() = default;
  // Rank 0 only: what arrived since the last call. May wait up to `wait_ms` for something when
  // there is no work anywhere (so an idle job does not spin).
  virtual Control poll(int wait_ms) = 0;
  // Rank 0 only: after every step that ran.
  virtual void publish(StepReport&& report) = 0;
};

class WorkerLoop {
 public:
  // `controller` is used on rank 0 only (nullptr elsewhere).
  WorkerLoop(RankRuntime& rt, comm::Communicator& comm, Controller* controller);
  // Until a shutdown arrives. Throws on failure (the caller aborts the job).
  void run();

 private:
  // This rank's part of the iteration's exchange: whether it has work, rank 0's control, and
  // the report of the step before (`ran`: one ran since the last exchange, else the timings are
  // zero; `control_s`: this rank's loop time before it). Takes the events out of `mine`.
  std::string encode(std::vector<TokenEvent>& mine, bool ran, double control_s,
                     const Control* control);
  // Every rank: the control, and whether any rank has work.
  void read_heads(const std::vector<std::string>& all, Control* control, bool* any_work) const;
  // Rank 0: the job's report from every rank's.
  StepReport read_reports(const std::vector<std::string>& all);

  RankRuntime& rt_;
  comm::Communicator& comm_;
  Controller* controller_;
  LoadStats reported_;  // this rank's counts already reported
  int64_t reported_placement_ = 0;  // the rebalancer's placement version last reported
  size_t chunk_;  // bytes a rank in the exchange's first all_gather (grows to fit)
};

}  // namespace moe::runtime
