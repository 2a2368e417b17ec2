#include "launcher/coordinator/statistics.h"

#include <algorithm>
#include <cstdio>

#include "runtime/load_stats.h"

namespace moe::coordinator {

namespace {
Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}
}  // namespace

void Statistics::on_attach(const ModelInfo& m) {
  std::lock_guard lk(mu_);
  model_ = m;
  if (!since_) since_ = Clock::now();
  last_step_ = 0;
  rebalance_done_.rebalances += rebalance_job_.rebalances;
  rebalance_done_.weights += rebalance_job_.weights;
  rebalance_done_.bytes += rebalance_job_.bytes;
  rebalance_done_.seconds += rebalance_job_.seconds;
  rebalance_job_ = {0, 0, 0, 0, rebalance_job_.last_seconds};
  const size_t E = size_t(m.layers) * m.experts, R = size_t(m.layers) * m.world;
  if (tokens_.size() != E) tokens_.assign(E, 0);
  if (rows_computed_.size() != R) rows_computed_.assign(R, 0);
  if (rows_sent_.size() != R * m.world) rows_sent_.assign(R * m.world, 0);
  window_.clear();  // deltas of another shape cannot be summed with the new job's
}

void Statistics::on_step(const moe::v1::StepReport& st) {
  StepDelta d{Clock::now(), {st.tokens_per_expert().begin(), st.tokens_per_expert().end()},
              {st.rows_computed().begin(), st.rows_computed().end()},
              {st.rows_sent().begin(), st.rows_sent().end()}};
  std::lock_guard lk(mu_);
  if (d.tokens.size() == tokens_.size() && d.rows_computed.size() == rows_computed_.size() &&
      d.rows_sent.size() == rows_sent_.size()) {
    for (size_t i = 0; i < d.tokens.size(); ++i) tokens_[i] += d.tokens[i];
    for (size_t i = 0; i < d.rows_computed.size(); ++i) rows_computed_[i] += d.rows_computed[i];
    for (size_t i = 0; i < d.rows_sent.size(); ++i) rows_sent_[i] += d.rows_sent[i];
    window_.push_back(std::move(d));
  }
  const auto horizon = Clock::now() - seconds(window_s_);
  while (!window_.empty() && window_.front().at < horizon) window_.pop_front();
  // A report without a step (refused sequences) repeats the count.
  if (st.step() > last_step_) {
    steps_ += st.step() - last_step_;
    last_step_ = st.step();
  }
  step_s_ += st.step_seconds();
  compute_s_ += st.compute_seconds();
  exchange_s_ += st.exchange_seconds();
  schedule_s_ += st.schedule_seconds();
  control_s_ += st.control_seconds();
  rebalance_job_ = {st.rebalances(), st.rebalance_weights_moved(), st.rebalance_bytes_moved(),
                    st.rebalance_seconds(),
                    st.rebalances() > 0 ? st.last_rebalance_seconds() : rebalance_job_.last_seconds};
  // The placement after a rebalance; a report of another shape or with a rank out of range is
  // ignored rather than shown.
  if (st.expert_rank_size() > 0 &&
      size_t(st.expert_rank_size()) == size_t(model_.layers) * model_.experts &&
      std::all_of(st.expert_rank().begin(), st.expert_rank().end(),
                  [&](int r) { return r >= 0 && r < model_.world; }))
    model_.expert_rank.assign(st.expert_rank().begin(), st.expert_rank().end());
}

bool Statistics::load_stats(bool recent, const LiveState& live,
                            moe::v1::LoadStatsResponse* out) const {
  std::lock_guard lk(mu_);
  if (model_.layers == 0 || !since_) return false;
  runtime::LoadStats ls(model_.layers, model_.experts, model_.world);
  const auto now = Clock::now();
  const double age = std::chrono::duration<double>(now - *since_).count();
  double span = age;
  if (recent) {
    // Filtered here too: the window is pruned only when a report arrives, and an idle job
    // sends none.
    const auto horizon = now - seconds(window_s_);
    for (auto d = window_.rbegin(); d != window_.rend() && d->at >= horizon; ++d) {
      for (size_t i = 0; i < d->tokens.size(); ++i) ls.tokens[i] += d->tokens[i];
      for (size_t i = 0; i < d->rows_computed.size(); ++i)
        ls.rows_computed[i] += d->rows_computed[i];
      for (size_t i = 0; i < d->rows_sent.size(); ++i) ls.rows[i] += d->rows_sent[i];
    }
    span = std::min(window_s_, age);
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
    // As the MoE layer counts them: s sends its dispatched rows to d and returns d's rows.
    if (model_.row_bytes > 0)
      for (int s = 0; s < model_.world; ++s)
        for (int d = 0; d < model_.world; ++d)
          L->add_bytes_sent(ls.row_count(l, s, d) * model_.row_bytes +
                            ls.row_count(l, d, s) * model_.back_row_bytes);
    if (model_.expert_rank.size() == size_t(model_.layers) * model_.experts)
      for (int e = 0; e < model_.experts; ++e)
        L->add_expert_rank(model_.expert_rank[size_t(l) * model_.experts + e]);
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
  out->set_generated_tokens(generated.load());
  out->set_in_flight(live.in_flight);
  *out->mutable_outstanding_tokens_per_rank() = {live.outstanding.begin(), live.outstanding.end()};
  out->set_worker_attached(live.attached);
  out->set_worker_lost(live.lost);
  out->set_worker_restarts(std::max<int64_t>(0, worker_attaches.load() - 1));
  out->set_resubmitted(resubmitted.load());
  out->set_quarantined(quarantined.load());
  out->set_waiting_for_worker(live.waiting_for_worker);
  out->set_rebalances(rebalance_done_.rebalances + rebalance_job_.rebalances);
  out->set_rebalance_weights_moved(rebalance_done_.weights + rebalance_job_.weights);
  out->set_rebalance_bytes_moved(rebalance_done_.bytes + rebalance_job_.bytes);
  out->set_rebalance_seconds(rebalance_done_.seconds + rebalance_job_.seconds);
  out->set_last_rebalance_seconds(rebalance_job_.last_seconds);
  return true;
}

void Statistics::on_first_token(bool interactive, double seconds) {
  std::lock_guard lk(mu_);
  const int c = interactive ? 0 : 1;
  size_t b = 0;
  while (b < std::size(kTtftBuckets) && seconds > kTtftBuckets[b]) ++b;
  ++ttft_[c][b];
  ttft_sum_[c] += seconds;
}

std::string Statistics::prometheus(const LiveState& live) const {
  std::lock_guard lk(mu_);
  std::string o;
  char buf[256];
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    std::snprintf(buf, sizeof buf, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name,
                  type, name, v);
    o += buf;
  };
  metric("moe_worker_attached", "gauge", "1 while a worker job is attached", live.attached ? 1 : 0);
  metric("moe_worker_losses_total", "counter", "worker jobs lost (a rank died, stalled or the link broke)", double(worker_losses.load()));
  metric("moe_worker_restarts_total", "counter", "worker jobs attached after the first", double(std::max<int64_t>(0, worker_attaches.load() - 1)));
  metric("moe_sequences_resubmitted_total", "counter", "unfinished sequences handed to a new worker job after a loss", double(resubmitted.load()));
  metric("moe_sequences_quarantined_total", "counter", "sequences failed rather than re-submitted: in flight at --max-losses worker-job losses without a token", double(quarantined.load()));
  metric("moe_sequences_waiting_for_worker", "gauge", "unfinished sequences kept for a new worker job", double(live.waiting_for_worker));
  metric("moe_requests_total", "counter", "sequences admitted", double(requests.load()));
  metric("moe_requests_refused_total", "counter", "requests refused (invalid or over the queue bound)", double(refused.load()));
  metric("moe_requests_failed_total", "counter", "admitted sequences that failed", double(failed.load()));
  metric("moe_tokens_generated_total", "counter", "tokens generated", double(generated.load()));
  metric("moe_queue_depth", "gauge", "sequences admitted and not finished", double(live.in_flight));
  metric("moe_batches_retained", "gauge", "finished batches whose results are still kept",
         double(live.batches_retained));
  metric("moe_steps_total", "counter", "engine steps run by the worker job", double(steps_));
  metric("moe_step_seconds_total", "counter", "engine step wall time (slowest rank)", step_s_);
  metric("moe_step_compute_seconds_total", "counter", "step time in compute (mean over ranks)", compute_s_);
  metric("moe_step_exchange_seconds_total", "counter", "step time in all-to-all exchanges (mean over ranks)", exchange_s_);
  metric("moe_step_schedule_seconds_total", "counter", "step time in scheduling and step agreement (mean over ranks)", schedule_s_);
  metric("moe_step_control_seconds_total", "counter",
         "worker loop time around the steps: work broadcast, report gather (mean over ranks)",
         control_s_);
  metric("moe_rebalances_total", "counter", "live expert rebalances (placements switched to)",
         double(rebalance_done_.rebalances + rebalance_job_.rebalances));
  metric("moe_rebalance_weights_moved_total", "counter",
         "expert weights moved between ranks by live rebalancing",
         double(rebalance_done_.weights + rebalance_job_.weights));
  metric("moe_rebalance_bytes_moved_total", "counter",
         "bytes of expert weights moved between ranks by live rebalancing",
         double(rebalance_done_.bytes + rebalance_job_.bytes));
  metric("moe_rebalance_seconds_total", "counter", "wall time of live rebalances (rank 0)",
         rebalance_done_.seconds + rebalance_job_.seconds);
  metric("moe_rebalance_last_seconds", "gauge", "wall time of the last live rebalance",
         rebalance_job_.last_seconds);
  o += "# HELP moe_time_to_first_token_seconds admission to first token (queued on a rank, then "
       "prefill), interactive requests (Generate, the OpenAI API) and batch items apart\n"
       "# TYPE moe_time_to_first_token_seconds histogram\n";
  for (int c = 0; c < 2; ++c) {
    const char* cls = c == 0 ? "interactive" : "batch";
    int64_t cum = 0;
    for (size_t b = 0; b < kTtftSlots; ++b) {
      cum += ttft_[c][b];
      char le[32];
      if (b < std::size(kTtftBuckets))
        std::snprintf(le, sizeof le, "%g", kTtftBuckets[b]);
      else
        std::snprintf(le, sizeof le, "+Inf");
      std::snprintf(buf, sizeof buf,
                    "moe_time_to_first_token_seconds_bucket{class=\"%s\",le=\"%s\"} %lld\n", cls,
                    le, (long long)cum);
      o += buf;
    }
    std::snprintf(buf, sizeof buf,
                  "moe_time_to_first_token_seconds_sum{class=\"%s\"} %.17g\n"
                  "moe_time_to_first_token_seconds_count{class=\"%s\"} %lld\n",
                  cls, ttft_sum_[c], cls, (long long)cum);
    o += buf;
  }
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
