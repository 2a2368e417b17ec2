#pragma once
// The coordinator's store of sequences and batches, and the scheduling of them onto the worker
// job: which rank runs a sequence, and re-submitting unfinished ones to a new job after one is
// lost. One mutex guards it; waiters (streaming handlers) sleep on one condition variable that
// every change notifies.
// No I/O happens under that lock: sends to the worker go through a WorkerSink that only queues
// (the link's writer thread writes, see worker_link.h), prompts are tokenized and validated
// before the lock is taken (admission.h), and the statistics have a lock of their own
// (statistics.h).
// NOTES: nothing here may grow with the number of requests served. A batch's sequence is
// erased as soon as it finishes (its output moves into the batch's results); a Generate
// sequence when its handler returns; a finished batch after the retention time or past the
// retention cap. Work under the lock is O(what changed), never a scan of all sequences (a
// scan of the unfinished ones happens once per lost worker job).
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
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "launcher/coordinator/admission.h"
#include "launcher/coordinator/statistics.h"
#include "moe/v1/inference.pb.h"
#include "moe/v1/worker.pb.h"
#include "runtime/tokenizer.h"

namespace moe::coordinator {

struct Options {
  int max_queue = 4096;
  double rank_timeout_s = 10;
  double stats_window_s = 60;
  double batch_retention_s = 600;  // a finished batch's results are kept this long...
  int max_finished_batches = 1000;  // ...and at most this many finished batches at once
  // After a worker job is lost, its unfinished sequences wait this long for a new job (which
  // goes on from the tokens they have); 0 fails them at once.
  double recovery_wait_s = 120;
  // A sequence in flight at this many worker-job losses with no token made in between fails
  // instead of going to the next job: it may be what takes the jobs down (a poison request).
  // 0: never.
  int max_losses = 2;
};

// Batch items' priority where the item gives none: behind Generate and the OpenAI API (0).
constexpr int kBatchItemPriority = 1;

struct Sequence {
  int64_t id = 0;           // coordinator-wide
  int rank = 0;             // where it runs
  std::vector<int32_t> prompt;
  int max_new = 0;
  bool ignore_eos = false;
  moe::v1::SamplingParams sampling;  // as admitted (with the seed drawn here if none was given)
  std::vector<int32_t> output;
  std::vector<moe::v1::TokenLogprobs> logprobs;  // per output token, where asked
  std::string finish;       // "" while running
  grpc::Status error;       // not OK when it failed
  std::string batch;        // "" for Generate
  int64_t batch_index = -1; // its item's position in the batch (input order)
  bool text = false;        // the prompt came as text: outputs are decoded too
  int64_t owed = 0;         // what it adds to outstanding_[rank]: tokens its job still owes it
  int losses = 0;           // worker-job losses it was in flight at since its last token
  int priority = 0;         // admission order on its rank: lower first
  bool interactive = true;  // Generate or the OpenAI API (not a batch item)
  Clock::time_point admitted;
  bool done() const { return !finish.empty() || !error.ok(); }
};

struct Batch {
  std::string id;
  std::string owner;       // the API key that made it ("" when keys are off)
  int64_t total = 0;       // items
  int64_t remaining = 0;   // items not done
  int64_t failed = 0;      // items that ended in an error (not counted as completed)
  int64_t generated = 0;   // tokens made so far
  std::vector<moe::v1::BatchResult> results;  // [total], input order; filled as items finish
  grpc::Status error;      // the first item's failure
  Clock::time_point started;
  std::optional<Clock::time_point> finished;
  bool fetched = false;    // a GetBatch has returned its results (a drain waits for this)
};

// Queues a message for the attached worker job; false once its link is closed. Never blocks.
using WorkerSink = std::function<bool(const moe::v1::CoordinatorMessage&)>;

// What a sequence has made past the `seen` tokens a reader already has.
struct SequenceUpdate {
  bool found = false;  // false: no such sequence (forgotten)
  std::vector<int32_t> tokens;                   // output[seen:]
  std::vector<moe::v1::TokenLogprobs> logprobs;  // their logprobs, where asked
  size_t total = 0;                              // output tokens in all
  std::string finish;                            // "" while running
  grpc::Status error;
  bool done() const { return !finish.empty() || !error.ok(); }
};

// Told when its sequence changed (tokens made, finished, failed or cancelled), outside State's
// lock, by the thread that applied the step report or by State's dispatch thread: a streaming
// reply that writes without a thread of its own waiting (services.h's Generate).
class SequenceWatcher {
 public:
  virtual ~SequenceWatcher() = default;
  virtual void on_change() = 0;
};

class State {
 public:
  explicit State(Options o);
  ~State();
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  // ---- the worker link ----
  // Refuses a second job (FAILED_PRECONDITION). `kick` ends the link's stream from this side
  // (after a timeout). Sequences kept from a lost job are re-submitted to this one.
  // `accepted` runs under the lock once the job is taken, before any work is sent to it.
  grpc::Status attach(const moe::v1::WorkerHello& hello, WorkerSink sink,
                      std::function<void()> kick, const std::function<void()>& accepted = {});
  // A step report: tokens, finishes and errors. The calling thread then tells the changed
  // sequences' watchers itself (it must hold no watcher's lock).
  void on_step(const moe::v1::StepReport& step);
  // The job is gone (stream closed, error, timeout): unfinished sequences wait for a new job
  // (up to --recovery-wait-s), or fail with UNAVAILABLE and `why` when draining or when
  // recovery is off.
  void detach(const std::string& why);
  bool attached() const;
  // Detaches the job when it has sent no report for longer than the rank timeout while work is
  // in flight, and fails the sequences kept for a new job once --recovery-wait-s has passed.
  // Called periodically (every 100 ms). A gap between two calls longer than kSelfStallS means
  // the coordinator itself did not run (stopped, starved, swapped out): the job's silence over
  // that gap is not held against it.
  void check_timeout();
  static constexpr double kSelfStallS = 1.0;
  // Drops finished batches past --batch-retention-s. Called periodically.
  void expire_batches();

  // ---- requests ----
  // Validates and admits; returns the sequence ids or an error status, admitting nothing then.
  grpc::Status admit(const std::vector<moe::v1::BatchItem>& items, const std::string& batch,
                     bool ignore_eos, std::vector<int64_t>* ids);
  grpc::Status submit_batch(const moe::v1::SubmitBatchRequest& req, const std::string& owner,
                            std::string* batch_id);
  // Frees a sequence (client went away): tells the worker, marks it cancelled.
  void cancel(int64_t id);
  // Waits until sequence `id` has more than `seen` tokens or is done, or `deadline` passes.
  // Returns a copy.
  Sequence wait(int64_t id, size_t seen, Clock::time_point deadline);
  // What sequence `id` made past `seen` tokens, without waiting.
  SequenceUpdate read(int64_t id, size_t seen) const;
  // `w` is told of every change of sequence `id` from now until unwatch (one watcher a
  // sequence). A change before watch() is not told: read() after it.
  void watch(int64_t id, std::shared_ptr<SequenceWatcher> w);
  void unwatch(int64_t id);
  // PERMISSION_DENIED for a batch of another owner. Results (when asked) once it has ended,
  // done or failed; returning them marks the batch fetched.
  grpc::Status batch_status(const std::string& id, const std::string& owner, bool with_results,
                            moe::v1::BatchStatus* out);
  // Waits until something changes or `deadline` passes.
  void wait_change(Clock::time_point deadline);
  void forget(int64_t id);  // drop a Generate sequence once its handler is done with it
  // The worker's tokenizer, or null when its checkpoint has none.
  std::shared_ptr<const runtime::Tokenizer> tokenizer() const;

  // ---- draining ----
  // Refuses new work from now on; sequences kept for a new worker job fail at once.
  void start_draining();
  bool draining() const;
  size_t in_flight() const;
  // Finished batches whose results no GetBatch has returned yet.
  size_t unfetched_batches() const;
  void fail_all(const std::string& why);
  void shutdown_worker();

  // ---- statistics ----
  // False until a worker job has attached (there is nothing to count yet). After the job is
  // lost the statistics gathered so far stay readable, with worker_attached false.
  bool load_stats(bool recent, moe::v1::LoadStatsResponse* out) const;
  std::string prometheus() const;  // text exposition format

 private:
  LiveState live() const;
  int pick_rank() const;  // least outstanding tokens
  void fail_locked(const std::string& why);
  // Accounts a sequence that just became done, once: in-flight count, its batch's result; a
  // batch's sequence is erased here (`it` is invalid afterwards).
  void finished_locked(std::map<int64_t, Sequence>::iterator it);
  void expire_batches_locked(Clock::time_point now);
  // Assigns a rank and queues the work (with the tokens it already has) for the job.
  bool send_work_locked(Sequence& s);
  // Sets what `s` adds to its rank's outstanding tokens.
  void owe_locked(Sequence& s, int64_t tokens);
  grpc::Status admit_locked(const std::vector<moe::v1::BatchItem>& items,
                            const std::vector<bool>& is_text, uint64_t job,
                            const std::string& batch, bool ignore_eos, std::vector<int64_t>* ids);
  // Text prompts to ids and validation against the job `*job` serves, outside the lock.
  grpc::Status prepare(std::vector<moe::v1::BatchItem>& items, const std::string& batch,
                       std::vector<bool>* is_text, uint64_t* job);
  void detach_locked(const std::string& why);
  // Sequence `id` changed: its watcher, if any, is told after the lock, by dispatch_loop or (in
  // on_step) by the reporting thread.
  void touch_locked(int64_t id);
  // The watchers of the touched sequences, each once; touched_ is emptied.
  void take_touched_locked(std::vector<std::shared_ptr<SequenceWatcher>>* tell);
  void apply_step_locked(const moe::v1::StepReport& st);
  void dispatch_loop();

  Options opt_;
  Statistics stats_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  ModelInfo model_;
  uint64_t job_ = 0;  // counts attaches: admission checks it validated against this job
  WorkerSink sink_;
  std::function<void()> kick_;
  std::shared_ptr<const runtime::Tokenizer> tokenizer_;
  Clock::time_point last_report_;
  std::optional<Clock::time_point> last_check_;  // check_timeout's previous call
  bool draining_ = false;
  std::string lost_;  // why the last worker job went away; "" while one is attached
  std::optional<Clock::time_point> lost_at_;  // while unfinished sequences wait for a new job
  int64_t next_id_ = 1;
  int64_t in_flight_ = 0;             // sequences admitted and not done
  std::map<int64_t, Sequence> seqs_;  // running ones, and Generate ones until forgotten
  std::map<std::string, Batch> batches_;  // ids are random (128 bits): no one guesses another's
  std::deque<std::pair<Clock::time_point, std::string>> finished_batches_;  // oldest first
  // Ids of expired batches, for a better NOT_FOUND (bounded: the oldest are forgotten).
  std::set<std::string> expired_;
  std::deque<std::string> expired_order_;
  // Per rank: the tokens (prompt to prefill, new ones to make) of the sequences sent to it and
  // not done, counted here as work is sent and tokens come back. A count from the ranks would
  // lag: it misses the sequences still on their way to them, so a burst of new work would all
  // go to the rank that looked least loaded.
  std::vector<int64_t> outstanding_;
  // Watched sequences, and those changed since their watchers were last told: a step report's
  // thread tells them itself; other changes wake the dispatch thread, once however many.
  std::map<int64_t, std::shared_ptr<SequenceWatcher>> watchers_;
  std::vector<int64_t> touched_;
  std::condition_variable dispatch_cv_;
  bool stop_dispatch_ = false;
  bool telling_inline_ = false;  // on_step tells its touches itself: no dispatch wake-up
  std::thread dispatcher_;  // last: started once the rest is built
};

}  // namespace moe::coordinator
