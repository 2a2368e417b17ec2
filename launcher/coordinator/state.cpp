#include "launcher/coordinator/state.h"

#include <sys/random.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "common/error.h"
#include "common/log.h"
#include "launcher/coordinator/auth.h"

namespace moe::coordinator {

namespace {
grpc::Status invalid(const std::string& m) { return {grpc::StatusCode::INVALID_ARGUMENT, m}; }
grpc::Status unavailable(const std::string& m) { return {grpc::StatusCode::UNAVAILABLE, m}; }
Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}
double since(Clock::time_point t, Clock::time_point now) {
  return std::chrono::duration<double>(now - t).count();
}
constexpr size_t kExpiredIdsKept = 100000;
// The client-facing name of a finish (as runtime::finish_reason_name).
std::string finish_name(moe::v1::Finish f) {
  switch (f) {
    case moe::v1::FINISH_LENGTH: return "length";
    case moe::v1::FINISH_EOS: return "eos";
    case moe::v1::FINISH_CONTEXT: return "context";
    case moe::v1::FINISH_CANCELLED: return "cancelled";
    case moe::v1::FINISH_STOP: return "stop";
    default: return "error";
  }
}
uint64_t random_seed() {
  uint64_t s = 0;
  MOE_CHECK(getrandom(&s, sizeof s, 0) == sizeof s, "getrandom failed");
  return s;
}
}  // namespace

State::State(Options o) : opt_(o), stats_(o.stats_window_s) {
  dispatcher_ = std::thread([this] { dispatch_loop(); });
}

State::~State() {
  {
    std::lock_guard lk(mu_);
    stop_dispatch_ = true;
  }
  dispatch_cv_.notify_all();
  dispatcher_.join();
}

// ---- watchers ---------------------------------------------------------------------------------

void State::touch_locked(int64_t id) {
  if (!watchers_.count(id)) return;
  touched_.push_back(id);
  if (touched_.size() == 1 && !telling_inline_) dispatch_cv_.notify_one();
}

void State::take_touched_locked(std::vector<std::shared_ptr<SequenceWatcher>>* tell) {
  std::sort(touched_.begin(), touched_.end());
  touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
  for (int64_t id : touched_)
    if (auto it = watchers_.find(id); it != watchers_.end()) tell->push_back(it->second);
  touched_.clear();
}

void State::dispatch_loop() {
  std::unique_lock lk(mu_);
  std::vector<std::shared_ptr<SequenceWatcher>> tell;
  for (;;) {
    dispatch_cv_.wait(lk, [&] { return !touched_.empty() || stop_dispatch_; });
    if (stop_dispatch_) return;
    take_touched_locked(&tell);
    lk.unlock();
    for (auto& w : tell) w->on_change();
    tell.clear();  // a watcher dropped meanwhile is destroyed here, outside the lock
    lk.lock();
  }
}

void State::watch(int64_t id, std::shared_ptr<SequenceWatcher> w) {
  std::lock_guard lk(mu_);
  watchers_[id] = std::move(w);
}

void State::unwatch(int64_t id) {
  std::shared_ptr<SequenceWatcher> gone;  // destroyed after the lock
  std::lock_guard lk(mu_);
  if (auto it = watchers_.find(id); it != watchers_.end()) {
    gone = std::move(it->second);
    watchers_.erase(it);
  }
}

SequenceUpdate State::read(int64_t id, size_t seen) const {
  std::lock_guard lk(mu_);
  SequenceUpdate u;
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return u;
  const Sequence& s = it->second;
  u.found = true;
  u.total = s.output.size();
  if (seen < s.output.size()) u.tokens.assign(s.output.begin() + long(seen), s.output.end());
  if (seen < s.logprobs.size())
    u.logprobs.assign(s.logprobs.begin() + long(seen), s.logprobs.end());
  u.finish = s.finish;
  u.error = s.error;
  return u;
}

// ---- the worker link -------------------------------------------------------------------------

grpc::Status State::attach(const moe::v1::WorkerHello& h, WorkerSink sink,
                           std::function<void()> kick, const std::function<void()>& accepted) {
  if (h.world_size() < 1 || h.vocab_size() < 1 || h.max_context() < 1 || h.experts() < 1 ||
      h.layers() < 1)
    return invalid("worker hello with impossible model info: " + h.ShortDebugString());
  // Parsed before the lock: a tokenizer model is megabytes.
  std::shared_ptr<const runtime::Tokenizer> tok;
  if (!h.tokenizer_model().empty()) {
    try {
      tok = runtime::Tokenizer::from_serialized(h.tokenizer_model());
    } catch (const std::exception& e) {
      return invalid(std::string("worker hello: ") + e.what());
    }
    if (tok->vocab_size() > h.vocab_size())
      return invalid("the tokenizer has " + std::to_string(tok->vocab_size()) +
                     " pieces, more than the model's vocabulary of " +
                     std::to_string(h.vocab_size()));
  }
  ModelInfo m{h.world_size(), h.vocab_size(), h.max_context(), h.experts(), h.layers(), {}};
  if (h.row_bytes() < 0 || h.back_row_bytes() < 0)
    return invalid("worker hello: negative row sizes");
  m.row_bytes = h.row_bytes();
  m.back_row_bytes = h.back_row_bytes();
  if (h.expert_rank_size() == h.layers() * h.experts()) {
    for (int r : h.expert_rank())
      if (r < 0 || r >= h.world_size())
        return invalid("worker hello: an expert on rank " + std::to_string(r) + " of " +
                       std::to_string(h.world_size()));
    m.expert_rank.assign(h.expert_rank().begin(), h.expert_rank().end());
  }
  std::lock_guard lk(mu_);
  if (sink_)
    return {grpc::StatusCode::FAILED_PRECONDITION,
            "a worker job is already attached; one coordinator serves one mpirun job"};
  if (lost_at_ && !(m.vocab == model_.vocab && m.max_context >= model_.max_context)) {
    char msg[300];
    std::snprintf(msg, sizeof msg,
                  "the new worker job serves another model (vocabulary %d, context %d; the lost "
                  "job's: %d, %d): its sequences cannot go on there",
                  m.vocab, m.max_context, model_.vocab, model_.max_context);
    fail_locked(msg);
  }
  if (accepted) accepted();
  tokenizer_ = std::move(tok);
  model_ = m;
  ++job_;
  sink_ = std::move(sink);
  kick_ = std::move(kick);
  lost_.clear();
  last_report_ = Clock::now();
  outstanding_.assign(model_.world, 0);
  stats_.on_attach(model_);
  ++stats_.worker_attaches;
  spdlog::info("worker job attached: {} ranks, vocab {}, context {}, {} layers x {} experts, {}",
               model_.world, model_.vocab, model_.max_context, model_.layers, model_.experts,
               tokenizer_ ? "with a tokenizer (text prompts accepted)" : "no tokenizer (ids only)");
  if (lost_at_) {
    // The lost job's unfinished sequences go on here from the tokens they have.
    int64_t n = 0, made = 0;
    for (auto& [id, s] : seqs_) {
      if (s.done()) continue;
      if (!send_work_locked(s)) break;  // the new link broke already: detach follows
      ++n;
      made += int64_t(s.output.size());
    }
    stats_.resubmitted += n;
    spdlog::info("re-submitted {} unfinished sequences to the new worker job ({} tokens already "
                 "made, {:.1f} s after the loss)",
                 n, made, since(*lost_at_, Clock::now()));
    lost_at_.reset();
  }
  cv_.notify_all();
  return grpc::Status::OK;
}

bool State::attached() const {
  std::lock_guard lk(mu_);
  return bool(sink_);
}

void State::owe_locked(Sequence& s, int64_t tokens) {
  if (size_t(s.rank) < outstanding_.size()) outstanding_[size_t(s.rank)] += tokens - s.owed;
  s.owed = tokens;
}

bool State::send_work_locked(Sequence& s) {
  s.owed = 0;  // owed to no job until now
  s.rank = pick_rank();
  owe_locked(s, int64_t(s.prompt.size()) + s.max_new - int64_t(s.output.size()));
  moe::v1::CoordinatorMessage m;
  auto* w = m.mutable_work();
  w->set_seq_id(s.id);
  w->set_rank(s.rank);
  *w->mutable_prompt_ids() = {s.prompt.begin(), s.prompt.end()};
  *w->mutable_resumed_ids() = {s.output.begin(), s.output.end()};
  w->set_max_new_tokens(s.max_new);
  w->set_ignore_eos(s.ignore_eos);
  w->set_priority(s.priority);
  *w->mutable_sampling() = s.sampling;
  return sink_(m);
}

void State::finished_locked(std::map<int64_t, Sequence>::iterator it) {
  touch_locked(it->first);
  Sequence& s = it->second;
  owe_locked(s, 0);
  --in_flight_;
  if (s.batch.empty()) return;  // a Generate handler reads it, then forgets it
  if (auto b = batches_.find(s.batch); b != batches_.end()) {
    Batch& B = b->second;
    moe::v1::BatchResult& r = B.results[size_t(s.batch_index)];
    if (!s.error.ok()) {
      ++B.failed;
      if (B.error.ok()) B.error = s.error;
      r.set_error(s.error.error_message());
    }
    *r.mutable_output_ids() = {s.output.begin(), s.output.end()};
    *r.mutable_logprobs() = {s.logprobs.begin(), s.logprobs.end()};
    r.set_finish_reason(s.finish);
    if (s.text && tokenizer_) r.set_output_text(tokenizer_->decode(s.output));
    if (--B.remaining == 0) {
      B.finished = Clock::now();
      finished_batches_.emplace_back(*B.finished, B.id);
      expire_batches_locked(*B.finished);  // the cap on retained batches
    }
  }
  seqs_.erase(it);
}

void State::on_step(const moe::v1::StepReport& st) {
  stats_.on_step(st);
  std::vector<std::shared_ptr<SequenceWatcher>> tell;
  {
    std::lock_guard lk(mu_);
    telling_inline_ = true;
    apply_step_locked(st);
    telling_inline_ = false;
    take_touched_locked(&tell);
  }
  cv_.notify_all();
  // This thread tells the streams itself, after the lock: the step's tokens reach the clients
  // without waking the dispatch thread.
  for (auto& w : tell) w->on_change();
}

void State::apply_step_locked(const moe::v1::StepReport& st) {
  last_report_ = Clock::now();
  for (const auto& t : st.tokens()) {
    auto it = seqs_.find(t.seq_id());
    if (it == seqs_.end() || it->second.done()) continue;  // cancelled, finished or forgotten
    Sequence& s = it->second;
    if (t.finish() == moe::v1::FINISH_ERROR) {
      s.error = invalid(t.error());
      ++stats_.failed;
      finished_locked(it);
      continue;
    }
    if (s.output.empty())
      stats_.on_first_token(s.interactive,
                            std::chrono::duration<double>(Clock::now() - s.admitted).count());
    s.output.push_back(t.token_id());
    s.losses = 0;
    touch_locked(s.id);
    owe_locked(s, std::max<int64_t>(0, s.max_new - int64_t(s.output.size())));
    if (t.has_logprob()) {
      moe::v1::TokenLogprobs lp;
      lp.set_token_id(t.token_id());
      lp.set_logprob(t.logprob());
      *lp.mutable_top_logprobs() = t.top_logprobs();
      s.logprobs.push_back(std::move(lp));
    }
    ++stats_.generated;
    if (!s.batch.empty())
      if (auto b = batches_.find(s.batch); b != batches_.end()) ++b->second.generated;
    if (t.finish() != moe::v1::FINISH_NONE) {
      s.finish = finish_name(t.finish());
      finished_locked(it);
    }
  }
}

void State::fail_locked(const std::string& why) {
  for (auto it = seqs_.begin(); it != seqs_.end();) {
    auto cur = it++;  // finished_locked may erase cur
    if (cur->second.done()) continue;
    cur->second.error = unavailable(why);
    ++stats_.failed;
    finished_locked(cur);
  }
  std::fill(outstanding_.begin(), outstanding_.end(), 0);
  lost_at_.reset();
  cv_.notify_all();
}

void State::detach_locked(const std::string& why) {
  if (!sink_) return;
  sink_ = nullptr;
  lost_ = why;
  if (kick_) kick_();
  kick_ = nullptr;
  ++stats_.worker_losses;
  if (draining_) {
    spdlog::info("worker job detached: {}", why);
    fail_locked(why);
  } else if (opt_.recovery_wait_s <= 0 || in_flight_ == 0) {
    spdlog::error("worker job lost: {}", why);
    fail_locked(why);
  } else {
    spdlog::error("worker job lost: {}; its {} unfinished sequences wait up to {} s "
                  "(--recovery-wait-s) for a new worker job, which goes on from the tokens they "
                  "have", why, in_flight_, opt_.recovery_wait_s);
    lost_at_ = Clock::now();
    // The kept sequences owe nothing until sent to the next job. One that has now been in
    // flight at max_losses losses without making a token fails here, with why: re-submitted, it
    // could take down every restarted job in turn.
    for (auto it = seqs_.begin(); it != seqs_.end();) {
      auto cur = it++;  // finished_locked may erase cur
      Sequence& s = cur->second;
      s.owed = 0;
      if (s.done() || opt_.max_losses <= 0 || ++s.losses < opt_.max_losses) continue;
      s.error = {grpc::StatusCode::ABORTED,
                 "sequence " + std::to_string(s.id) + " was in flight at " +
                     std::to_string(s.losses) + " worker-job losses in a row without making a " +
                     "token (the last: " + why + "); it may be what takes the jobs down, so it " +
                     "is not sent to another (--max-losses)"};
      spdlog::error("{}", s.error.error_message());
      ++stats_.failed;
      ++stats_.quarantined;
      finished_locked(cur);
    }
    std::fill(outstanding_.begin(), outstanding_.end(), 0);
  }
  cv_.notify_all();
}

void State::detach(const std::string& why) {
  std::lock_guard lk(mu_);
  detach_locked(why);
}

void State::check_timeout() {
  std::lock_guard lk(mu_);
  const auto now = Clock::now();
  const auto prev = last_check_;
  const double gap = prev ? since(*prev, now) : 0.0;
  last_check_ = now;
  if (sink_ && gap > kSelfStallS) {
    // The coordinator was not running: what the job sent meanwhile waits in the socket. Its
    // silence before the gap still counts.
    spdlog::warn("the coordinator itself did not run for {:.1f} s (stopped or starved): the "
                 "worker job's silence over that time is not counted against it", gap);
    last_report_ = std::min(now, last_report_ + (now - *prev));
    return;
  }
  if (sink_) {
    const double quiet = since(last_report_, now);
    if (in_flight_ > 0 && quiet > opt_.rank_timeout_s) {
      char msg[200];
      std::snprintf(msg, sizeof msg,
                    "no step report from the worker job for %.1f s (--rank-timeout-s %.1f): a "
                    "rank died or stopped answering",
                    quiet, opt_.rank_timeout_s);
      detach_locked(msg);
    }
  } else if (lost_at_ && since(*lost_at_, now) > opt_.recovery_wait_s) {
    char msg[400];
    std::snprintf(msg, sizeof msg,
                  "the worker job was lost (%s) and no new one attached within %.0f s "
                  "(--recovery-wait-s)",
                  lost_.c_str(), opt_.recovery_wait_s);
    spdlog::error("{}: failing {} sequences", msg, in_flight_);
    fail_locked(msg);
  }
}

void State::expire_batches() {
  std::lock_guard lk(mu_);
  expire_batches_locked(Clock::now());
}

void State::expire_batches_locked(Clock::time_point now) {
  const auto horizon = now - seconds(opt_.batch_retention_s);
  while (!finished_batches_.empty() &&
         (finished_batches_.front().first < horizon ||
          finished_batches_.size() > size_t(opt_.max_finished_batches))) {
    const std::string id = finished_batches_.front().second;
    batches_.erase(id);
    finished_batches_.pop_front();
    if (expired_.insert(id).second) expired_order_.push_back(id);
    if (expired_order_.size() > kExpiredIdsKept) {
      expired_.erase(expired_order_.front());
      expired_order_.pop_front();
    }
  }
}

// ---- requests ----------------------------------------------------------------------------------

int State::pick_rank() const {
  return int(std::min_element(outstanding_.begin(), outstanding_.end()) - outstanding_.begin());
}

grpc::Status State::prepare(std::vector<moe::v1::BatchItem>& items, const std::string& batch,
                            std::vector<bool>* is_text, uint64_t* job) {
  std::shared_ptr<const runtime::Tokenizer> tok;
  ModelLimits limits;
  {
    std::lock_guard lk(mu_);
    if (draining_) return unavailable("the coordinator is shutting down and takes no new work");
    if (!sink_) {
      ++stats_.refused;
      if (lost_at_)
        return unavailable("the worker job was lost (" + lost_ +
                           ") and a new one is awaited: retry shortly");
      return unavailable(
          "no worker job attached (start mpirun -np N moe-worker --coordinator ...)");
    }
    tok = tokenizer_;
    limits = {model_.vocab, model_.max_context, bool(tokenizer_)};
    *job = job_;
  }
  if (items.empty()) return invalid("empty batch: expected at least one item");
  is_text->assign(items.size(), false);
  std::set<int64_t> seen;
  for (size_t i = 0; i < items.size(); ++i) {
    auto& it = items[i];
    const std::string who = batch.empty() ? std::string()
                                          : "item " + std::to_string(i) + " (id " +
                                                std::to_string(it.id()) + "): ";
    if (it.prompt_ids_size() == 0 && !it.prompt_text().empty() && tok) {
      if (auto st = validate_prompt_text(it, limits, who); !st.ok()) {
        ++stats_.refused;
        return st;
      }
      for (int32_t t : tok->encode(it.prompt_text())) it.add_prompt_ids(t);
      (*is_text)[i] = true;
    }
    if (auto st = validate_item(it, limits, who); !st.ok()) {
      ++stats_.refused;
      return st;
    }
    if (!batch.empty() && !seen.insert(it.id()).second) {
      ++stats_.refused;
      return invalid(who + "duplicate id within the batch");
    }
    // A sampled sequence gets its seed here, so that a new worker job goes on with the same
    // draws after a loss.
    if (it.sampling().temperature() > 0 && !it.sampling().has_seed())
      it.mutable_sampling()->set_seed(random_seed());
  }
  return grpc::Status::OK;
}

grpc::Status State::admit(const std::vector<moe::v1::BatchItem>& items, const std::string& batch,
                          bool ignore_eos, std::vector<int64_t>* ids) {
  std::vector<moe::v1::BatchItem> prepared(items);
  std::vector<bool> is_text;
  uint64_t job = 0;
  if (auto st = prepare(prepared, batch, &is_text, &job); !st.ok()) return st;
  std::lock_guard lk(mu_);
  return admit_locked(prepared, is_text, job, batch, ignore_eos, ids);
}

grpc::Status State::admit_locked(const std::vector<moe::v1::BatchItem>& items,
                                 const std::vector<bool>& is_text, uint64_t job,
                                 const std::string& batch, bool ignore_eos,
                                 std::vector<int64_t>* ids) {
  if (draining_) return unavailable("the coordinator is shutting down and takes no new work");
  if (!sink_ || job != job_)
    return unavailable("the worker job changed while the request was admitted: retry");
  const size_t busy = size_t(in_flight_);
  if (busy + items.size() > size_t(opt_.max_queue)) {
    ++stats_.refused;
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            std::to_string(busy) + " sequences in flight; " + std::to_string(items.size()) +
                " more would pass the queue bound of " + std::to_string(opt_.max_queue) +
                " (--max-queue): retry later"};
  }
  if (busy == 0) last_report_ = Clock::now();  // an idle job has not been reporting
  bool sink_open = true;
  for (size_t i = 0; i < items.size(); ++i) {
    const moe::v1::BatchItem& it = items[i];
    Sequence s;
    s.text = is_text[i];
    s.id = next_id_++;
    s.prompt.assign(it.prompt_ids().begin(), it.prompt_ids().end());
    s.max_new = it.max_new_tokens();
    s.ignore_eos = it.has_ignore_eos() ? it.ignore_eos() : ignore_eos;
    s.interactive = batch.empty();
    s.priority = it.has_priority() ? it.priority() : (s.interactive ? 0 : kBatchItemPriority);
    s.admitted = Clock::now();
    s.sampling = it.sampling();
    s.batch = batch;
    if (!batch.empty()) s.batch_index = int64_t(i);
    ids->push_back(s.id);
    auto [pos, _] = seqs_.emplace(s.id, std::move(s));
    ++in_flight_;
    ++stats_.requests;
    // Once the link is closed the rest are admitted unsent: with the job's other sequences
    // they wait for a new job, or fail (detach below).
    if (sink_open && !send_work_locked(pos->second)) sink_open = false;
  }
  if (!sink_open) detach_locked("the worker link broke while sending work");
  return grpc::Status::OK;
}

grpc::Status State::submit_batch(const moe::v1::SubmitBatchRequest& req, const std::string& owner,
                                 std::string* batch_id) {
  std::vector<moe::v1::BatchItem> items(req.items().begin(), req.items().end());
  for (size_t i = 0; i < items.size(); ++i)
    if (items[i].sampling().stop_size() > 0) {
      ++stats_.refused;
      return invalid("item " + std::to_string(i) + " (id " + std::to_string(items[i].id()) +
                     "): sampling.stop is served on Generate and /v1/completions, not in "
                     "batches (use stop_token_ids)");
    }
  const std::string id = "batch-" + random_hex128();
  std::vector<bool> is_text;
  uint64_t job = 0;
  if (auto st = prepare(items, id, &is_text, &job); !st.ok()) return st;
  // One lock from here: no step report can touch the batch before it is complete.
  std::lock_guard lk(mu_);
  Batch b;
  b.id = id;
  b.owner = owner;
  b.started = Clock::now();
  b.total = b.remaining = int64_t(items.size());
  b.results.resize(items.size());
  for (size_t i = 0; i < items.size(); ++i) b.results[i].set_id(items[i].id());
  batches_.emplace(id, std::move(b));
  std::vector<int64_t> ids;
  grpc::Status st = admit_locked(items, is_text, job, id, req.ignore_eos(), &ids);
  if (!st.ok()) {  // refused whole
    batches_.erase(id);
    return st;
  }
  *batch_id = id;
  return grpc::Status::OK;
}

void State::cancel(int64_t id) {
  std::lock_guard lk(mu_);
  auto it = seqs_.find(id);
  if (it == seqs_.end() || it->second.done()) return;
  it->second.finish = "cancelled";
  finished_locked(it);  // Generate sequences only: `it` stays valid for the handler
  if (sink_) {
    moe::v1::CoordinatorMessage m;
    m.mutable_cancel()->set_seq_id(id);
    sink_(m);
  }
  spdlog::info("sequence {} cancelled by its client", id);
  cv_.notify_all();
}

Sequence State::wait(int64_t id, size_t seen, Clock::time_point deadline) {
  std::unique_lock lk(mu_);
  cv_.wait_until(lk, deadline, [&] {
    auto it = seqs_.find(id);
    return it == seqs_.end() || it->second.done() || it->second.output.size() > seen;
  });
  auto it = seqs_.find(id);
  if (it == seqs_.end()) {
    Sequence gone;
    gone.error = {grpc::StatusCode::INTERNAL, "sequence vanished"};
    return gone;
  }
  return it->second;
}

void State::wait_change(Clock::time_point deadline) {
  std::unique_lock lk(mu_);
  cv_.wait_until(lk, deadline);
}

std::shared_ptr<const runtime::Tokenizer> State::tokenizer() const {
  std::lock_guard lk(mu_);
  return tokenizer_;
}

void State::forget(int64_t id) {
  std::lock_guard lk(mu_);
  seqs_.erase(id);
}

grpc::Status State::batch_status(const std::string& id, const std::string& owner,
                                 bool with_results, moe::v1::BatchStatus* out) {
  std::lock_guard lk(mu_);
  expire_batches_locked(Clock::now());
  auto it = batches_.find(id);
  if (it == batches_.end()) {
    if (expired_.count(id)) {
      char msg[300];
      std::snprintf(msg, sizeof msg,
                    "batch '%s' has expired: the results of a finished batch are kept for %g s "
                    "(--batch-retention-s), and for at most %d finished batches "
                    "(--max-finished-batches)",
                    id.c_str(), opt_.batch_retention_s, opt_.max_finished_batches);
      return {grpc::StatusCode::NOT_FOUND, msg};
    }
    return {grpc::StatusCode::NOT_FOUND, "no batch '" + id + "' (ids come from SubmitBatch)"};
  }
  Batch& b = it->second;
  if (b.owner != owner)
    return {grpc::StatusCode::PERMISSION_DENIED,
            "batch '" + id + "' was submitted with another API key"};
  out->set_batch_id(b.id);
  out->set_total(b.total);
  out->set_failed(b.failed);
  out->set_completed(b.total - b.remaining - b.failed);
  out->set_generated_tokens(b.generated);
  const double secs = since(b.started, b.finished ? *b.finished : Clock::now());
  out->set_tokens_per_second(secs > 0 ? b.generated / secs : 0.0);
  if (b.remaining > 0)
    out->set_state(moe::v1::BATCH_STATE_RUNNING);
  else if (!b.error.ok())
    out->set_state(moe::v1::BATCH_STATE_FAILED);
  else
    out->set_state(moe::v1::BATCH_STATE_DONE);
  if (!b.error.ok()) {
    out->set_error(b.error.error_message());
    out->set_error_code(int(b.error.error_code()));
  }
  if (b.remaining == 0 && with_results) {
    *out->mutable_results() = {b.results.begin(), b.results.end()};
    b.fetched = true;
    cv_.notify_all();
  }
  return grpc::Status::OK;
}

// ---- draining ----------------------------------------------------------------------------------

void State::start_draining() {
  std::lock_guard lk(mu_);
  draining_ = true;
  if (lost_at_) {
    spdlog::warn("draining while {} sequences wait for a new worker job: failing them",
                 in_flight_);
    fail_locked("the coordinator is shutting down, and the worker job was lost (" + lost_ + ")");
  }
  cv_.notify_all();
}

bool State::draining() const {
  std::lock_guard lk(mu_);
  return draining_;
}

size_t State::in_flight() const {
  std::lock_guard lk(mu_);
  return size_t(in_flight_);
}

size_t State::unfetched_batches() const {
  std::lock_guard lk(mu_);
  size_t n = 0;
  for (const auto& [t, id] : finished_batches_)
    if (auto b = batches_.find(id); b != batches_.end() && !b->second.fetched) ++n;
  return n;
}

void State::fail_all(const std::string& why) {
  std::lock_guard lk(mu_);
  fail_locked(why);
}

void State::shutdown_worker() {
  std::lock_guard lk(mu_);
  if (!sink_) return;
  moe::v1::CoordinatorMessage m;
  m.set_shutdown(true);
  sink_(m);
}

// ---- statistics --------------------------------------------------------------------------------

LiveState State::live() const {
  std::lock_guard lk(mu_);
  LiveState l;
  l.attached = bool(sink_);
  l.lost = lost_;
  l.in_flight = in_flight_;
  l.outstanding = outstanding_;
  l.batches_retained = int64_t(finished_batches_.size());
  l.waiting_for_worker = lost_at_ ? in_flight_ : 0;
  return l;
}

bool State::load_stats(bool recent, moe::v1::LoadStatsResponse* out) const {
  return stats_.load_stats(recent, live(), out);
}

std::string State::prometheus() const { return stats_.prometheus(live()); }

}  // namespace moe::coordinator
