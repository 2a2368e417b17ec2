#include "runtime/worker_loop.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/error.h"
#include "common/log.h"
#include "runtime/byte_stream.h"

namespace moe::runtime {

namespace {

constexpr uint8_t kErrorCode = 255;  // a report's finish byte for a refused sequence

using Clock = std::chrono::steady_clock;

// How long an idle rank 0 waits in poll() for work before the ranks check in again.
constexpr int kIdleWaitMs = 20;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Rank 0's bytes to every rank. The first kInline bytes travel in one fixed-size broadcast
// that also carries the length, so a step's control (usually a few bytes: nothing new) costs
// one collective; a larger one sends its remainder in a second.
constexpr size_t kInline = 1024;
std::string broadcast_bytes(comm::Communicator& comm, std::string s) {
  char head[kInline];
  const uint64_t n = s.size();
  std::memcpy(head, &n, sizeof n);
  std::memcpy(head + sizeof n, s.data(), std::min<size_t>(s.size(), kInline - sizeof n));
  comm.broadcast(head, kInline, 0);
  uint64_t len = 0;
  std::memcpy(&len, head, sizeof len);
  s.resize(size_t(len));
  const size_t first = std::min<size_t>(len, kInline - sizeof len);
  std::memcpy(s.data(), head + sizeof len, first);
  if (len > first) comm.broadcast(s.data() + first, size_t(len - first), 0);
  return s;
}

void put_sampling(ByteWriter& w, const SamplingParams& p) {
  w.put(p.temperature);
  w.put(p.top_p);
  w.put(p.top_k);
  w.put(p.min_p);
  w.put(uint8_t(p.seed.has_value()));
  w.put(p.seed.value_or(0));
  w.put(p.repetition_penalty);
  w.put(p.frequency_penalty);
  w.put(p.presence_penalty);
  w.put(p.logprobs);
  w.put(p.stop_token_ids);
  w.put(p.min_tokens);
}

SamplingParams get_sampling(ByteReader& r) {
  SamplingParams p;
  p.temperature = r.get<float>();
  p.top_p = r.get<float>();
  p.top_k = r.get<int>();
  p.min_p = r.get<float>();
  const bool seeded = r.get<uint8_t>();
  const uint64_t seed = r.get<uint64_t>();
  if (seeded) p.seed = seed;
  p.repetition_penalty = r.get<float>();
  p.frequency_penalty = r.get<float>();
  p.presence_penalty = r.get<float>();
  p.logprobs = r.get<int>();
  p.stop_token_ids = r.get_vector<int32_t>();
  p.min_tokens = r.get<int>();
  return p;
}

std::string encode_control(const Control& c) {
  ByteWriter w;
  w.put(uint8_t(c.shutdown));
  w.put(c.waited_s);
  w.put(c.cancels);
  w.put(uint64_t(c.work.size()));
  for (const auto& a : c.work) {
    w.put(a.request.id);
    w.put(a.rank);
    w.put(a.request.prompt);
    w.put(a.request.resumed);
    w.put(a.request.max_new_tokens);
    w.put(uint8_t(a.request.ignore_eos));
    put_sampling(w, a.request.sampling);
  }
  return std::move(w.bytes());
}

Control decode_control(const std::string& s) {
  ByteReader r(s);
  Control c;
  c.shutdown = r.get<uint8_t>();
  c.waited_s = r.get<double>();
  c.cancels = r.get_vector<int64_t>();
  const uint64_t n = r.get<uint64_t>();
  for (uint64_t i = 0; i < n; ++i) {
    WorkAssignment a;
    a.request.id = r.get<int64_t>();
    a.rank = r.get<int>();
    a.request.prompt = r.get_vector<int32_t>();
    a.request.resumed = r.get_vector<int32_t>();
    a.request.max_new_tokens = r.get<int>();
    a.request.ignore_eos = r.get<uint8_t>();
    a.request.sampling = get_sampling(r);
    c.work.push_back(std::move(a));
  }
  return c;
}

}  // namespace

WorkerLoop::WorkerLoop(RankRuntime& rt, comm::Communicator& comm, Controller* controller)
    : rt_(rt), comm_(comm), controller_(controller), reported_(rt.stats()) {
  MOE_CHECK(comm.rank() != 0 || controller != nullptr, "rank 0 needs a controller");
}

Control WorkerLoop::exchange_control(bool idle) {
  std::string text;
  if (comm_.rank() == 0) {
    const auto t0 = Clock::now();
    Control c = controller_->poll(idle ? kIdleWaitMs : 0);
    // Only an idle poll waits; the other ranks wait as long in the broadcast below.
    c.waited_s = idle ? seconds_since(t0) : 0;
    text = encode_control(c);
  }
  return decode_control(broadcast_bytes(comm_, text));
}

StepReport WorkerLoop::gather_report(std::vector<TokenEvent>& mine, bool ran, double control_s) {
  const int N = comm_.size();
  // Everything rank 0 reports, from every rank, in one gather: timings, tokens still owed, the
  // load-statistics delta since the last report and the tokens made.
  // The engine keeps its last step's timing: a report without a step must not repeat it.
  const StepTiming t = ran ? rt_.engine().last_timing() : StepTiming{};
  LoadStats& now = rt_.stats();
  ByteWriter w;
  w.put(t.compute());
  w.put(t.exchange);
  w.put(t.schedule);
  w.put(control_s);
  w.put(t.total);
  w.put(rt_.engine().outstanding_tokens());
  for (auto [cur, old] : {std::pair{&now.tokens, &reported_.tokens}, std::pair{&now.rows, &reported_.rows},
                          std::pair{&now.rows_computed, &reported_.rows_computed}}) {
    std::vector<int64_t> d(*cur);
    for (size_t i = 0; i < d.size(); ++i) d[i] -= (*old)[i];
    w.put(d);
  }
  reported_ = now;
  w.put(uint64_t(mine.size()));
  for (const auto& e : mine) {
    w.put(e.id);
    w.put(e.token);
    // 0: running, 1 + FinishReason: finished, kErrorCode: refused (the message follows).
    w.put(uint8_t(!e.error.empty() ? kErrorCode : e.finish ? 1 + int(*e.finish) : 0));
    if (!e.error.empty()) w.put(e.error);
    w.put(uint8_t(e.logprob.has_value()));
    if (e.logprob) {
      w.put(e.logprob->logprob);
      std::vector<int32_t> ids;
      std::vector<float> lps;
      for (const auto& [id, lp] : e.logprob->top) {
        ids.push_back(id);
        lps.push_back(lp);
      }
      w.put(ids);
      w.put(lps);
    }
  }
  mine.clear();
  std::vector<std::string> all;
  comm_.gather_bytes(w.bytes(), &all, 0);

  StepReport rep;
  rep.step = rt_.engine().steps();
  if (comm_.rank() != 0) return rep;
  // Every rank moved its experts together: rank 0's view is the job's.
  if (const ExpertRebalancer* rb = rt_.rebalancer()) {
    rep.rebalance = rb->totals();
    if (rb->placement_version() != reported_placement_) {
      reported_placement_ = rb->placement_version();
      const Placement& p = rt_.placement();
      for (int l = 0; l < p.n_layers(); ++l)
        for (int e = 0; e < p.n_experts(); ++e) rep.expert_rank.push_back(p.ranks_of(l, e).front());
    }
  }
  rep.delta = LoadStats(now.n_layers, now.n_experts, now.world);
  rep.outstanding.assign(size_t(N), 0);
  for (int r = 0; r < N; ++r) {
    ByteReader in(all[size_t(r)]);
    rep.compute_s += in.get<double>() / N;
    rep.exchange_s += in.get<double>() / N;
    rep.schedule_s += in.get<double>() / N;
    rep.control_s += in.get<double>() / N;
    rep.step_s = std::max(rep.step_s, in.get<double>());
    rep.outstanding[size_t(r)] = in.get<int64_t>();
    for (auto* sum : {&rep.delta.tokens, &rep.delta.rows, &rep.delta.rows_computed}) {
      const auto d = in.get_vector<int64_t>();
      MOE_CHECK(d.size() == sum->size(), "rank " + std::to_string(r) + "'s report has " +
                                             std::to_string(d.size()) + " counts, expected " +
                                             std::to_string(sum->size()));
      for (size_t i = 0; i < d.size(); ++i) (*sum)[i] += d[i];
    }
    const uint64_t n = in.get<uint64_t>();
    for (uint64_t i = 0; i < n; ++i) {
      TokenEvent ev;
      ev.id = in.get<int64_t>();
      ev.token = in.get<int32_t>();
      const uint8_t fin = in.get<uint8_t>();
      if (fin == kErrorCode)
        ev.error = in.get_string();
      else if (fin > 0)
        ev.finish = FinishReason(fin - 1);
      if (in.get<uint8_t>()) {
        TokenLogprob lp;
        lp.token = ev.token;
        lp.logprob = in.get<float>();
        const auto ids = in.get_vector<int32_t>();
        const auto lps = in.get_vector<float>();
        MOE_CHECK(ids.size() == lps.size(), "a report's top logprobs do not pair up");
        for (size_t k = 0; k < ids.size(); ++k) lp.top.emplace_back(ids[k], lps[k]);
        ev.logprob = std::move(lp);
      }
      rep.tokens.push_back(std::move(ev));
    }
  }
  return rep;
}

void WorkerLoop::run() {
  std::vector<TokenEvent> made;
  rt_.engine().set_on_token(
      [&](int64_t id, int32_t tok, const FinishReason* fin, const TokenLogprob* lp) {
        made.push_back({id, tok, fin ? std::optional<FinishReason>(*fin) : std::nullopt, "",
                        lp ? std::optional<TokenLogprob>(*lp) : std::nullopt});
      });
  bool idle = true;
  double control = 0;  // this rank's loop time towards the next step, waiting for work excluded
  for (;;) {
    const auto t0 = Clock::now();
    const Control c = exchange_control(idle);
    // Work before cancellations (see Control).
    for (const auto& a : c.work) {
      if (a.rank != comm_.rank()) continue;
      try {
        rt_.engine().add(a.request);
      } catch (const InputError& e) {
        // The coordinator validates first; a request that still fails here ends at once.
        spdlog::warn("refused sequence {}: {}", a.request.id, e.what());
        made.push_back({a.request.id, -1, std::nullopt, e.what(), std::nullopt});
      }
    }
    for (int64_t id : c.cancels) rt_.engine().cancel(id);
    if (c.shutdown) break;
    control += seconds_since(t0) - c.waited_s;
    const bool ran = rt_.engine().step();
    idle = !ran;
    if (!ran) {
      // The report is a collective: all ranks agree whether one is due. A refused sequence on
      // some rank still has to reach the coordinator, and after cancellations the outstanding
      // tokens per rank it places new sequences by have changed (every rank saw c.cancels).
      int64_t pending = made.empty() && c.cancels.empty() ? 0 : 1;
      comm_.all_reduce(&pending, 1, comm::Communicator::Op::kMax);
      if (!pending) {
        control = 0;  // the ranks are idle: no step to charge it to
        continue;
      }
    }
    const auto t1 = Clock::now();
    StepReport rep = gather_report(made, ran, ran ? control : 0);
    if (comm_.rank() == 0) controller_->publish(rep);
    // The gather and publication are charged to the next step (this report is out already).
    control = (ran ? 0 : control) + seconds_since(t1);
  }
  spdlog::info("worker loop: shutdown after {} steps", rt_.engine().steps());
}

}  // namespace moe::runtime
