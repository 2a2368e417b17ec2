#pragma once
// The coordinator's state: the sequences it admitted, the batches they belong to, the worker
// job that runs them, and the load statistics it reported. One mutex guards all of it; waiters
// (streaming handlers) sleep on one condition variable that every change notifies.
// NOTES: nothing here may grow with the number of requests served. A batch's sequence is
// erased as soon as it finishes (its output moves into the batch's results); a Generate
// sequence when its handler returns; a finished batch after the retention time or past the
// retention cap. Work under the lock is O(what changed), never a scan of all sequences.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "moe/v1/inference.pb.h"
#include "moe/v1/worker.pb.h"
#include "runtime/tokenizer.h"

namespace moe::coordinator {

using Clock = std::chrono::steady_clock;

struct Options {
  int max_queue = 4096;
  double rank_timeout_s = 10;
  double stats_window_s = 60;
  double batch_retention_s = 600;  // a finished batch's results are kept this long...
  int max_finished_batches = 1000;  // ...and at most this many finished batches at once
};

struct Sequence {
  int64_t id = 0;           // coordinator-wide
  int rank = 0;             // where it runs
  std::vector<int32_t> prompt;
  int max_new = 0;
  std::vector<int32_t> output;
  std::vector<moe::v1::TokenLogprobs> logprobs;  // per output token, where asked
  std::string finish;       // "" while running
  grpc::Status error;       // not OK when it failed
  std::string batch;        // "" for Generate
  int64_t batch_index = -1; // its item's position in the batch (input order)
  bool text = false;        // the prompt came as text: outputs are decoded too
  bool done() const { return !finish.empty() || !error.ok(); }
};

struct Batch {
  std::string id;
  int64_t total = 0;       // items
  int64_t remaining = 0;   // items not done
  int64_t failed = 0;      // items that ended in an error (not counted as completed)
  int64_t generated = 0;   // tokens made so far
  std::vector<moe::v1::BatchResult> results;  // [total], input order; filled as items finish
  grpc::Status error;      // the first item's failure
  Clock::time_point started;
  std::optional<Clock::time_point> finished;
};

// What the worker said about the model when it attached.
struct ModelInfo {
  int world = 0, vocab = 0, max_context = 0, experts = 0, layers = 0;
};

// Sends to the attached worker job (the WorkerLink stream); set while one is attached.
using WorkerSink = std::function<bool(const moe::v1::CoordinatorMessage&)>;

class State {
 public:
  explicit State(Options o);

  // ---- the worker link ----
  // Refuses a second job (FAILED_PRECONDITION).
  // `kick` ends the link's stream from this side (after a timeout).
  grpc::Status attach(const moe::v1::WorkerHello& hello, WorkerSink sink,
                      std::function<void()> kick);
  void on_step(const moe::v1::StepReport& step);
  // The job is gone (stream closed, error, timeout): every unfinished sequence fails with
  // UNAVAILABLE and `why`.
  void detach(const std::string& why);
  bool attached() const;
  // Fails everything in flight and detaches when the job has sent no report for longer than
  // the rank timeout while work is in flight. Called periodically.
  void check_timeout();
  // Drops finished batches past --batch-retention-s. Called periodically.
  void expire_batches();

  // ---- requests ----
  // Validates and admits; returns the sequence ids or an error status, admitting nothing then.
  grpc::Status admit(const std::vector<moe::v1::BatchItem>& items, const std::string& batch,
                     bool ignore_eos, std::vector<int64_t>* ids);
  grpc::Status submit_batch(const moe::v1::SubmitBatchRequest& req, std::string* batch_id);
  // Frees a sequence (client went away): tells the worker, marks it cancelled.
  void cancel(int64_t id);
  // Waits until sequence `id` has more than `seen` tokens or is done, or `deadline` passes.
  // Returns a copy.
  Sequence wait(int64_t id, size_t seen, Clock::time_point deadline);
  grpc::Status batch_status(const std::string& id, bool with_results, moe::v1::BatchStatus* out);
  // Waits until something changes or `deadline` passes.
  void wait_change(Clock::time_point deadline);
  void forget(int64_t id);  // drop a Generate sequence once its handler is done with it
  // The worker's tokenizer, or null when its checkpoint has none.
  std::shared_ptr<const runtime::Tokenizer> tokenizer() const;

  // ---- draining ----
  void start_draining();
  bool draining() const;
  size_t in_flight() const;
  void fail_all(const std::string& why);
  void shutdown_worker();

  // ---- statistics ----
  // False until a worker job has attached (there is nothing to count yet). After the job is
  // lost the statistics gathered so far stay readable, with worker_attached false.
  bool load_stats(bool recent, moe::v1::LoadStatsResponse* out) const;
  std::string prometheus() const;  // text exposition format

 private:
  struct StepDelta {
    Clock::time_point at;
    std::vector<int64_t> tokens, rows_computed, rows_sent;
  };
  int pick_rank() const;  // least outstanding tokens
  void fail_locked(const std::string& why);
  // Accounts a sequence that just became done, once: in-flight count, its batch's result; a
  // batch's sequence is erased here (`it` is invalid afterwards).
  void finished_locked(std::map<int64_t, Sequence>::iterator it);
  void expire_batches_locked(Clock::time_point now);
  grpc::Status admit_locked(const std::vector<moe::v1::BatchItem>& items,
                            const std::string& batch, bool ignore_eos, std::vector<int64_t>* ids);
  void detach_locked(const std::string& why);
  grpc::Status validate_locked(const moe::v1::BatchItem& item, const std::string& who) const;

  Options opt_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  ModelInfo model_;
  WorkerSink sink_;
  std::function<void()> kick_;
  std::shared_ptr<const runtime::Tokenizer> tokenizer_;
  Clock::time_point last_report_;
  bool draining_ = false;
  std::string lost_;  // why the last worker job went away; "" while one is attached
  // Batch ids are "batch-<n>" with n dense over admitted batches (a refused one gives its n
  // back), so an absent id below next_batch_ is one that expired.
  int64_t next_id_ = 1, next_batch_ = 1;
  int64_t in_flight_ = 0;             // sequences admitted and not done
  std::map<int64_t, Sequence> seqs_;  // running ones, and Generate ones until forgotten
  std::map<std::string, Batch> batches_;
  std::deque<std::pair<Clock::time_point, std::string>> finished_batches_;  // oldest first
  std::vector<int64_t> outstanding_;  // per rank, as the worker last reported plus admissions

  // statistics
  std::optional<Clock::time_point> stats_since_;  // the first attach
  std::vector<int64_t> tokens_, rows_computed_, rows_sent_;  // whole run
  std::deque<StepDelta> window_;                 // step deltas of the last stats_window_s
  int64_t last_step_ = 0;  // the attached job's step counter at its last report
  int64_t steps_ = 0, requests_ = 0, failed_ = 0, generated_ = 0, refused_ = 0;
  double step_s_ = 0, compute_s_ = 0, exchange_s_ = 0, schedule_s_ = 0, control_s_ = 0;
};

}  // namespace moe::coordinator
