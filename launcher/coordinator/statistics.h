#pragma once
// The coordinator's statistics: the load the worker job reports every step (per layer and
// expert, per rank, per rank pair; whole run and a recent window), the step's time split, and
// the request counters. A lock of its own, so a GetLoadStats or a Prometheus scrape never waits
// on admission or on the worker link, and none of them waits on it for long.
#include <array>
#include <atomic>
#include <iterator>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "moe/v1/inference.pb.h"
#include "moe/v1/worker.pb.h"

namespace moe::coordinator {

using Clock = std::chrono::steady_clock;

// What the worker said about the model when it attached.
struct ModelInfo {
  int world = 0, vocab = 0, max_context = 0, experts = 0, layers = 0;
  std::vector<int> expert_rank;  // [layers * experts] where each expert lives (first replica)
  int64_t row_bytes = 0, back_row_bytes = 0;  // a dispatched and a returned row; 0: unknown
  bool operator==(const ModelInfo& o) const {
    return world == o.world && vocab == o.vocab && max_context == o.max_context &&
           experts == o.experts && layers == o.layers;
  }
};

// The sequence store's side of a snapshot, taken under its own lock.
struct LiveState {
  bool attached = false;
  std::string lost;  // why the last worker job went away; "" while one is attached
  int64_t in_flight = 0;
  std::vector<int64_t> outstanding;  // per rank
  int64_t batches_retained = 0;
  int64_t waiting_for_worker = 0;  // sequences kept for a new worker job
};

class Statistics {
 public:
  explicit Statistics(double window_s) : window_s_(window_s) {}

  // A job attached: counts of a new shape start over; the job counts its steps from 0.
  void on_attach(const ModelInfo& m);
  void on_step(const moe::v1::StepReport& st);
  // False until a worker job has attached (there is nothing to count yet).
  bool load_stats(bool recent, const LiveState& live, moe::v1::LoadStatsResponse* out) const;
  std::string prometheus(const LiveState& live) const;  // text exposition format
  // A sequence's first token came `seconds` after its admission (time queued on its rank plus
  // its prefill): interactive (Generate, the OpenAI API) or a batch item.
  void on_first_token(bool interactive, double seconds);

  // Counters the sequence store bumps.
  std::atomic<int64_t> requests{0}, refused{0}, failed{0}, generated{0};
  std::atomic<int64_t> worker_attaches{0}, worker_losses{0}, resubmitted{0}, quarantined{0};

 private:
  struct StepDelta {
    Clock::time_point at;
    std::vector<int64_t> tokens, rows_computed, rows_sent;
  };
  const double window_s_;
  mutable std::mutex mu_;
  ModelInfo model_;
  std::optional<Clock::time_point> since_;        // the first attach
  std::vector<int64_t> tokens_, rows_computed_, rows_sent_;  // whole run
  std::deque<StepDelta> window_;                 // step deltas of the last window_s_
  int64_t last_step_ = 0;  // the attached job's step counter at its last report
  int64_t steps_ = 0;
  double step_s_ = 0, compute_s_ = 0, exchange_s_ = 0, schedule_s_ = 0, control_s_ = 0;
  // Live rebalancing: the attached job reports its totals; jobs before it are summed in `done`.
  struct Rebalancing {
    int64_t rebalances = 0, weights = 0, bytes = 0;
    double seconds = 0, last_seconds = 0;
  };
  Rebalancing rebalance_done_, rebalance_job_;
  // Time to first token per class (0 interactive, 1 batch): counts per bucket of kTtftBuckets
  // (not cumulative; the last is +Inf), and their sum.
  static constexpr double kTtftBuckets[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  static constexpr size_t kTtftSlots = std::size(kTtftBuckets) + 1;
  std::array<std::array<int64_t, kTtftSlots>, 2> ttft_{};
  std::array<double, 2> ttft_sum_{};
};

}  // namespace moe::coordinator
