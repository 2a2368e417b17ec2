#include "launcher/coordinator/state.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "common/error.h"
#include "common/log.h"
#include "launcher/sampling_proto.h"
#include "runtime/load_stats.h"

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
const char kBatchPrefix[] = "batch-";
// n of "batch-<n>", or INT64_MAX for anything else.
int64_t batch_number(const std::string& id) {
  const std::string digits = id.substr(std::min(id.size(), sizeof kBatchPrefix - 1));
  if (id.rfind(kBatchPrefix, 0) != 0 || digits.empty() || digits.size() > 18 ||
      digits.find_first_not_of("0123456789") != std::string::npos || digits[0] == '0')
    return INT64_MAX;
  return std::stoll(digits);
}
}  // namespace

State::State(Options o) : opt_(o) {}

// ---- the worker link -------------------------------------------------------------------------

grpc::Status State::attach(const moe::v1::WorkerHello& h, WorkerSink sink,
                           std::function<void()> kick) {
  std::lock_guard lk(mu_);
  if (sink_)
    return {grpc::StatusCode::FAILED_PRECONDITION,
            "a worker job is already attached; one coordinator serves one mpirun job"};
  if (h.world_size() < 1 || h.vocab_size() < 1 || h.max_context() < 1 || h.experts() < 1 ||
      h.layers() < 1)
    return invalid("worker hello with impossible model info: " + h.ShortDebugString());
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
  tokenizer_ = std::move(tok);
  model_ = {h.world_size(), h.vocab_size(), h.max_context(), h.experts(), h.layers()};
  sink_ = std::move(sink);
  kick_ = std::move(kick);
  lost_.clear();
  last_report_ = Clock::now();
  if (!stats_since_) stats_since_ = last_report_;
  last_step_ = 0;  // a new job counts its steps from 0
  outstanding_.assign(model_.world, 0);
  const size_t E = size_t(model_.layers) * model_.experts, R = size_t(model_.layers) * model_.world;
  if (tokens_.size() != E) tokens_.assign(E, 0);
  if (rows_computed_.size() != R) rows_computed_.assign(R, 0);
  if (rows_sent_.size() != R * model_.world) rows_sent_.assign(R * model_.world, 0);
  window_.clear();  // deltas of another shape cannot be summed with the new job's
  spdlog::info("worker job attached: {} ranks, vocab {}, context {}, {} layers x {} experts, {}",
               model_.world, model_.vocab, model_.max_context, model_.layers, model_.experts,
               tokenizer_ ? "with a tokenizer (text prompts accepted)" : "no tokenizer (ids only)");
  cv_.notify_all();
  return grpc::Status::OK;
}

bool State::attached() const {
  std::lock_guard lk(mu_);
  return bool(sink_);
}

void State::finished_locked(std::map<int64_t, Sequence>::iterator it) {
  Sequence& s = it->second;
  --in_flight_;
  if (s.batch.empty()) return;  // a Generate handler reads it, then forgets it
  if (auto b = batches_.find(s.batch); b != batches_.end()) {
    Batch& B = b->second;
    if (!s.error.ok()) {
      ++B.failed;
      if (B.error.ok()) B.error = s.error;
    }
    moe::v1::BatchResult& r = B.results[size_t(s.batch_index)];
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
  std::lock_guard lk(mu_);
  last_report_ = Clock::now();
  for (const auto& t : st.tokens()) {
    auto it = seqs_.find(t.seq_id());
    if (it == seqs_.end() || it->second.done()) continue;  // cancelled, finished or forgotten
    Sequence& s = it->second;
    if (t.finish_reason().rfind("error:", 0) == 0) {
      s.error = invalid(t.finish_reason().substr(7));
      ++failed_;
      finished_locked(it);
      continue;
    }
    s.output.push_back(t.token_id());
    if (t.has_logprob()) {
      moe::v1::TokenLogprobs lp;
      lp.set_token_id(t.token_id());
      lp.set_logprob(t.logprob());
      *lp.mutable_top_logprobs() = t.top_logprobs();
      s.logprobs.push_back(std::move(lp));
    }
    ++generated_;
    if (!s.batch.empty())
      if (auto b = batches_.find(s.batch); b != batches_.end()) ++b->second.generated;
    if (!t.finish_reason().empty()) {
      s.finish = t.finish_reason();
      finished_locked(it);
    }
  }
  for (int r = 0; r < st.outstanding_per_rank_size() && r < int(outstanding_.size()); ++r)
    outstanding_[r] = st.outstanding_per_rank(r);

  StepDelta d{Clock::now(), {st.tokens_per_expert().begin(), st.tokens_per_expert().end()},
              {st.rows_computed().begin(), st.rows_computed().end()},
              {st.rows_sent().begin(), st.rows_sent().end()}};
  if (d.tokens.size() == tokens_.size() && d.rows_computed.size() == rows_computed_.size() &&
      d.rows_sent.size() == rows_sent_.size()) {
    for (size_t i = 0; i < d.tokens.size(); ++i) tokens_[i] += d.tokens[i];
    for (size_t i = 0; i < d.rows_computed.size(); ++i) rows_computed_[i] += d.rows_computed[i];
    for (size_t i = 0; i < d.rows_sent.size(); ++i) rows_sent_[i] += d.rows_sent[i];
    window_.push_back(std::move(d));
  }
  const auto horizon = Clock::now() - seconds(opt_.stats_window_s);
  while (!window_.empty() && window_.front().at < horizon) window_.pop_front();
  // A report without a step (a refused sequence, applied cancellations) repeats the count.
  if (st.step() > last_step_) {
    steps_ += st.step() - last_step_;
    last_step_ = st.step();
  }
  step_s_ += st.step_seconds();
  compute_s_ += st.compute_seconds();
  exchange_s_ += st.exchange_seconds();
  schedule_s_ += st.schedule_seconds();
  control_s_ += st.control_seconds();
  cv_.notify_all();
}

void State::fail_locked(const std::string& why) {
  for (auto it = seqs_.begin(); it != seqs_.end();) {
    auto cur = it++;  // finished_locked may erase cur
    if (cur->second.done()) continue;
    cur->second.error = unavailable(why);
    ++failed_;
    finished_locked(cur);
  }
  std::fill(outstanding_.begin(), outstanding_.end(), 0);
  cv_.notify_all();
}

void State::detach_locked(const std::string& why) {
  if (!sink_) return;
  if (draining_)
    spdlog::info("worker job detached: {}", why);
  else
    spdlog::error("worker job lost: {}", why);
  sink_ = nullptr;
  lost_ = why;
  if (kick_) kick_();
  kick_ = nullptr;
  fail_locked(why);
}

void State::detach(const std::string& why) {
  std::lock_guard lk(mu_);
  detach_locked(why);
}

void State::check_timeout() {
  std::lock_guard lk(mu_);
  if (!sink_) return;
  const double quiet = since(last_report_, Clock::now());
  if (in_flight_ > 0 && quiet > opt_.rank_timeout_s) {
    char msg[200];
    std::snprintf(msg, sizeof msg,
                  "no step report from the worker job for %.1f s (--rank-timeout-s %.1f): a rank "
                  "died or stopped answering",
                  quiet, opt_.rank_timeout_s);
    detach_locked(msg);
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
    batches_.erase(finished_batches_.front().second);
    finished_batches_.pop_front();
  }
}

// ---- requests ----------------------------------------------------------------------------------

grpc::Status State::validate_locked(const moe::v1::BatchItem& it, const std::string& who) const {
  if (it.prompt_ids_size() == 0)
    return invalid(who + (it.prompt_text().empty()
                              ? "empty prompt (expected at least one token id in prompt_ids)"
                              : "text prompts need a tokenizer, and this model has none: send "
                                "prompt_ids"));
  for (int i = 0; i < it.prompt_ids_size(); ++i)
    if (it.prompt_ids(i) < 0 || it.prompt_ids(i) >= model_.vocab)
      return invalid(who + "prompt_ids[" + std::to_string(i) + "] is " +
                     std::to_string(it.prompt_ids(i)) + ", outside the vocabulary [0, " +
                     std::to_string(model_.vocab) + ")");
  if (it.max_new_tokens() < 1)
    return invalid(who + "max_new_tokens is " + std::to_string(it.max_new_tokens()) +
                   " (expected >= 1)");
  if (int64_t(it.prompt_ids_size()) + it.max_new_tokens() > model_.max_context)
    return invalid(who + "prompt of " + std::to_string(it.prompt_ids_size()) + " tokens plus " +
                   std::to_string(it.max_new_tokens()) + " new tokens exceeds the context of " +
                   std::to_string(model_.max_context) + " tokens");
  try {
    launcher::sampling_from_proto(it.sampling()).validate(model_.vocab);
  } catch (const moe::InputError& e) {
    return invalid(who + "sampling: " + e.what());
  }
  if (it.sampling().stop_size() > 4)
    return invalid(who + "sampling.stop holds " + std::to_string(it.sampling().stop_size()) +
                   " strings, expected at most 4");
  for (const auto& s : it.sampling().stop())
    if (s.empty()) return invalid(who + "sampling.stop holds an empty string");
  if (it.sampling().stop_size() > 0 && !tokenizer_)
    return invalid(who + "sampling.stop needs a tokenizer, and this model has none (use "
                         "stop_token_ids)");
  return grpc::Status::OK;
}

int State::pick_rank() const {
  return int(std::min_element(outstanding_.begin(), outstanding_.end()) - outstanding_.begin());
}

grpc::Status State::admit(const std::vector<moe::v1::BatchItem>& items, const std::string& batch,
                          bool ignore_eos, std::vector<int64_t>* ids) {
  std::lock_guard lk(mu_);
  return admit_locked(items, batch, ignore_eos, ids);
}

grpc::Status State::admit_locked(const std::vector<moe::v1::BatchItem>& items,
                                 const std::string& batch, bool ignore_eos,
                                 std::vector<int64_t>* ids) {
  if (draining_) return unavailable("the coordinator is shutting down and takes no new work");
  if (!sink_)
    return unavailable("no worker job attached (start mpirun -np N moe-worker --coordinator ...)");
  if (items.empty()) return invalid("empty batch: expected at least one item");
  std::set<int64_t> seen;
  std::vector<moe::v1::BatchItem> encoded(items);  // text prompts become ids here
  std::vector<bool> is_text(items.size(), false);
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string who = batch.empty() ? std::string() : "item " + std::to_string(i) +
                                                                " (id " + std::to_string(items[i].id()) + "): ";
    if (items[i].prompt_ids_size() == 0 && !items[i].prompt_text().empty() && tokenizer_) {
      for (int32_t t : tokenizer_->encode(items[i].prompt_text())) encoded[i].add_prompt_ids(t);
      is_text[i] = true;
    }
    if (auto st = validate_locked(encoded[i], who); !st.ok()) {
      ++refused_;
      return st;
    }
    if (!batch.empty() && !seen.insert(items[i].id()).second) {
      ++refused_;
      return invalid(who + "duplicate id within the batch");
    }
  }
  const size_t busy = size_t(in_flight_);
  if (busy + items.size() > size_t(opt_.max_queue)) {
    ++refused_;
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            std::to_string(busy) + " sequences in flight; " + std::to_string(items.size()) +
                " more would pass the queue bound of " + std::to_string(opt_.max_queue) +
                " (--max-queue): retry later"};
  }
  if (busy == 0) last_report_ = Clock::now();  // an idle job has not been reporting
  for (size_t i = 0; i < encoded.size(); ++i) {
    const moe::v1::BatchItem& it = encoded[i];
    Sequence s;
    s.text = is_text[i];
    s.id = next_id_++;
    s.rank = pick_rank();
    s.prompt.assign(it.prompt_ids().begin(), it.prompt_ids().end());
    s.max_new = it.max_new_tokens();
    s.batch = batch;
    if (!batch.empty()) s.batch_index = int64_t(i);
    outstanding_[s.rank] += int64_t(s.prompt.size()) + s.max_new;
    moe::v1::CoordinatorMessage m;
    auto* w = m.mutable_work();
    w->set_seq_id(s.id);
    w->set_rank(s.rank);
    *w->mutable_prompt_ids() = it.prompt_ids();
    w->set_max_new_tokens(s.max_new);
    w->set_ignore_eos(ignore_eos);
    *w->mutable_sampling() = it.sampling();
    ids->push_back(s.id);
    seqs_.emplace(s.id, std::move(s));
    ++in_flight_;
    ++requests_;
    if (!sink_(m)) {
      detach_locked("the worker link broke while sending work");
      return unavailable("the worker link broke while sending work");
    }
  }
  return grpc::Status::OK;
}

grpc::Status State::submit_batch(const moe::v1::SubmitBatchRequest& req, std::string* batch_id) {
  std::vector<moe::v1::BatchItem> items(req.items().begin(), req.items().end());
  for (size_t i = 0; i < items.size(); ++i)
    if (items[i].sampling().stop_size() > 0) {
      std::lock_guard lk(mu_);
      ++refused_;
      return invalid("item " + std::to_string(i) + " (id " + std::to_string(items[i].id()) +
                     "): sampling.stop is served on Generate and /v1/completions, not in "
                     "batches (use stop_token_ids)");
    }
  // One lock throughout: no step report can touch the batch before it is complete, and a
  // refused batch gives its number back.
  std::lock_guard lk(mu_);
  const std::string id = kBatchPrefix + std::to_string(next_batch_++);
  Batch b;
  b.id = id;
  b.started = Clock::now();
  b.total = b.remaining = int64_t(items.size());
  b.results.resize(items.size());
  for (size_t i = 0; i < items.size(); ++i) b.results[i].set_id(items[i].id());
  batches_.emplace(id, std::move(b));
  std::vector<int64_t> ids;
  grpc::Status st = admit_locked(items, id, req.ignore_eos(), &ids);
  if (!st.ok()) {
    if (ids.empty()) {  // refused whole
      batches_.erase(id);
      --next_batch_;
      return st;
    }
    // The link broke midway: the sequences sent have failed already; the items never sent
    // fail with them, so that the batch finishes (and expires) like any other.
    auto b = batches_.find(id);
    const int64_t unsent = int64_t(items.size() - ids.size());
    if (b != batches_.end() && unsent > 0) {
      Batch& B = b->second;
      B.failed += unsent;
      if (B.error.ok()) B.error = st;
      if ((B.remaining -= unsent) == 0) {
        B.finished = Clock::now();
        finished_batches_.emplace_back(*B.finished, B.id);
      }
    }
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

grpc::Status State::batch_status(const std::string& id, bool with_results,
                                 moe::v1::BatchStatus* out) {
  std::lock_guard lk(mu_);
  expire_batches_locked(Clock::now());
  auto it = batches_.find(id);
  if (it == batches_.end()) {
    if (batch_number(id) < next_batch_) {
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
  const Batch& b = it->second;
  out->set_batch_id(b.id);
  out->set_total(b.total);
  out->set_failed(b.failed);
  out->set_completed(b.total - b.remaining - b.failed);
  out->set_generated_tokens(b.generated);
  const double secs = since(b.started, b.finished ? *b.finished : Clock::now());
  out->set_tokens_per_second(secs > 0 ? b.generated / secs : 0.0);
  if (!b.error.ok()) {
    out->set_state(moe::v1::BATCH_STATE_FAILED);
    out->set_error(b.error.error_message());
    out->set_error_code(int(b.error.error_code()));
  } else if (b.remaining == 0) {
    out->set_state(moe::v1::BATCH_STATE_DONE);
    if (with_results) *out->mutable_results() = {b.results.begin(), b.results.end()};
  } else {
    out->set_state(moe::v1::BATCH_STATE_RUNNING);
  }
  return grpc::Status::OK;
}

// ---- draining ----------------------------------------------------------------------------------

void State::start_draining() {
  std::lock_guard lk(mu_);
  draining_ = true;
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

bool State::load_stats(bool recent, moe::v1::LoadStatsResponse* out) const {
  std::lock_guard lk(mu_);
  if (model_.layers == 0 || !stats_since_) return false;
  runtime::LoadStats ls(model_.layers, model_.experts, model_.world);
  const auto now = Clock::now();
  const double age = since(*stats_since_, now);
  double span = age;
  if (recent) {
    // Filtered here too: the window is pruned only when a report arrives, and an idle job
    // sends none.
    const auto horizon = now - seconds(opt_.stats_window_s);
    for (auto d = window_.rbegin(); d != window_.rend() && d->at >= horizon; ++d) {
      for (size_t i = 0; i < d->tokens.size(); ++i) ls.tokens[i] += d->tokens[i];
      for (size_t i = 0; i < d->rows_computed.size(); ++i)
        ls.rows_computed[i] += d->rows_computed[i];
      for (size_t i = 0; i < d->rows_sent.size(); ++i) ls.rows[i] += d->rows_sent[i];
    }
    span = std::min(opt_.stats_window_s, age);
  } else {
    ls.tokens = tokens_;
    ls.rows_computed = rows_computed_;
    ls.rows = rows_sent_;
  }
  out->set_experts(model_.experts);
  out->set_ranks(model_.world);
  out->set_window_seconds(span);
  for (int l = 0; l < model_.layers; ++l) {
    auto* L = out->add_layers();
    L->set_layer(l);
    for (int e = 0; e < model_.experts; ++e) L->add_tokens_per_expert(ls.token_count(l, e));
    for (int r = 0; r < model_.world; ++r) L->add_rows_computed_per_rank(ls.computed(l, r));
    for (int s = 0; s < model_.world; ++s)
      for (int d = 0; d < model_.world; ++d) L->add_rows_sent(ls.row_count(l, s, d));
    L->set_expert_imbalance(ls.expert_imbalance(l));
    L->set_device_imbalance(ls.device_imbalance(l));
  }
  out->set_expert_imbalance(ls.expert_imbalance_overall());
  out->set_device_imbalance(ls.device_imbalance_overall());
  out->set_steps(steps_);
  out->set_step_seconds(step_s_);
  out->set_compute_seconds(compute_s_);
  out->set_exchange_seconds(exchange_s_);
  out->set_schedule_seconds(schedule_s_);
  out->set_control_seconds(control_s_);
  out->set_generated_tokens(generated_);
  out->set_in_flight(in_flight_);
  *out->mutable_outstanding_tokens_per_rank() = {outstanding_.begin(), outstanding_.end()};
  out->set_worker_attached(bool(sink_));
  out->set_worker_lost(lost_);
  return true;
}

std::string State::prometheus() const {
  std::lock_guard lk(mu_);
  std::string o;
  char buf[256];
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    std::snprintf(buf, sizeof buf, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name,
                  type, name, v);
    o += buf;
  };
  const double busy = double(in_flight_);
  metric("moe_worker_attached", "gauge", "1 while a worker job is attached", sink_ ? 1 : 0);
  metric("moe_requests_total", "counter", "sequences admitted", double(requests_));
  metric("moe_requests_refused_total", "counter", "requests refused (invalid or over the queue bound)", double(refused_));
  metric("moe_requests_failed_total", "counter", "admitted sequences that failed", double(failed_));
  metric("moe_tokens_generated_total", "counter", "tokens generated", double(generated_));
  metric("moe_queue_depth", "gauge", "sequences admitted and not finished", busy);
  metric("moe_batches_retained", "gauge", "finished batches whose results are still kept",
         double(finished_batches_.size()));
  metric("moe_steps_total", "counter", "engine steps run by the worker job", double(steps_));
  metric("moe_step_seconds_total", "counter", "engine step wall time (slowest rank)", step_s_);
  metric("moe_step_compute_seconds_total", "counter", "step time in compute (mean over ranks)", compute_s_);
  metric("moe_step_exchange_seconds_total", "counter", "step time in all-to-all exchanges (mean over ranks)", exchange_s_);
  metric("moe_step_schedule_seconds_total", "counter", "step time in scheduling and step agreement (mean over ranks)", schedule_s_);
  metric("moe_step_control_seconds_total", "counter",
         "worker loop time around the steps: work broadcast, report gather (mean over ranks)",
         control_s_);
  o += "# HELP moe_expert_tokens_total routed (token, top-k slot) choices per layer and expert\n"
       "# TYPE moe_expert_tokens_total counter\n";
  for (int l = 0; l < model_.layers; ++l)
    for (int e = 0; e < model_.experts; ++e) {
      std::snprintf(buf, sizeof buf, "moe_expert_tokens_total{layer=\"%d\",expert=\"%d\"} %lld\n", l,
                    e, (long long)tokens_[size_t(l) * model_.experts + e]);
      o += buf;
    }
  o += "# HELP moe_device_rows_total (row, expert) pairs computed per layer and rank\n"
       "# TYPE moe_device_rows_total counter\n";
  for (int l = 0; l < model_.layers; ++l)
    for (int r = 0; r < model_.world; ++r) {
      std::snprintf(buf, sizeof buf, "moe_device_rows_total{layer=\"%d\",rank=\"%d\"} %lld\n", l, r,
                    (long long)rows_computed_[size_t(l) * model_.world + r]);
      o += buf;
    }
  return o;
}

}  // namespace moe::coordinator
