#include "runtime/worker_loop.h"

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"

namespace moe::runtime {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// How long an idle rank 0 waits in poll() for work before the ranks check in again.
constexpr int kIdleWaitMs = 20;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string broadcast_text(comm::Communicator& comm, std::string s) {
  int64_t n = int64_t(s.size());
  comm.broadcast(&n, sizeof n, 0);
  s.resize(size_t(n));
  if (n) comm.broadcast(s.data(), size_t(n), 0);
  return s;
}

json sampling_to_json(const SamplingParams& s) {
  json j = {{"temperature", s.temperature}, {"top_p", s.top_p}, {"top_k", s.top_k},
            {"min_p", s.min_p}, {"repetition_penalty", s.repetition_penalty},
            {"frequency_penalty", s.frequency_penalty}, {"presence_penalty", s.presence_penalty},
            {"logprobs", s.logprobs}, {"stop_token_ids", s.stop_token_ids},
            {"min_tokens", s.min_tokens}};
  if (s.seed) j["seed"] = *s.seed;
  return j;
}

SamplingParams sampling_from_json(const json& j) {
  SamplingParams s;
  s.temperature = j["temperature"].get<float>();
  s.top_p = j["top_p"].get<float>();
  s.top_k = j["top_k"].get<int>();
  s.min_p = j["min_p"].get<float>();
  s.repetition_penalty = j["repetition_penalty"].get<float>();
  s.frequency_penalty = j["frequency_penalty"].get<float>();
  s.presence_penalty = j["presence_penalty"].get<float>();
  s.logprobs = j["logprobs"].get<int>();
  s.stop_token_ids = j["stop_token_ids"].get<std::vector<int32_t>>();
  s.min_tokens = j["min_tokens"].get<int>();
  if (j.contains("seed")) s.seed = j["seed"].get<uint64_t>();
  return s;
}

std::string control_to_text(const Control& c) {
  json j;
  j["shutdown"] = c.shutdown;
  j["cancels"] = c.cancels;
  j["waited_s"] = c.waited_s;
  json w = json::array();
  for (const auto& a : c.work)
    w.push_back({{"id", a.request.id}, {"rank", a.rank}, {"prompt", a.request.prompt},
                 {"max_new", a.request.max_new_tokens}, {"ignore_eos", a.request.ignore_eos},
                 {"sampling", sampling_to_json(a.request.sampling)}});
  j["work"] = w;
  return j.dump();
}

Control control_from_text(const std::string& s) {
  const json j = json::parse(s);
  Control c;
  c.shutdown = j["shutdown"].get<bool>();
  c.cancels = j["cancels"].get<std::vector<int64_t>>();
  c.waited_s = j["waited_s"].get<double>();
  for (const auto& w : j["work"]) {
    WorkAssignment a;
    a.request.id = w["id"].get<int64_t>();
    a.request.prompt = w["prompt"].get<std::vector<int32_t>>();
    a.request.max_new_tokens = w["max_new"].get<int>();
    a.request.ignore_eos = w["ignore_eos"].get<bool>();
    a.request.sampling = sampling_from_json(w["sampling"]);
    a.rank = w["rank"].get<int>();
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
    text = control_to_text(c);
  }
  return control_from_text(broadcast_text(comm_, text));
}

StepReport WorkerLoop::gather_report(std::vector<TokenEvent>& mine, bool ran, double control_s) {
  const int N = comm_.size();
  StepReport rep;
  // The engine keeps its last step's timing: a report without a step must not repeat it.
  const StepTiming t = ran ? rt_.engine().last_timing() : StepTiming{};
  double times[4] = {t.compute(), t.exchange, t.schedule, control_s};
  comm_.all_reduce(times, 4, comm::Communicator::Op::kSum);
  rep.compute_s = times[0] / N;
  rep.exchange_s = times[1] / N;
  rep.schedule_s = times[2] / N;
  rep.control_s = times[3] / N;
  rep.step_s = t.total;
  comm_.all_reduce(&rep.step_s, 1, comm::Communicator::Op::kMax);
  rep.step = rt_.engine().steps();

  // This step's counts: what this rank counted since the last report, summed over ranks.
  LoadStats& now = rt_.stats();
  rep.delta = now;
  for (size_t i = 0; i < now.tokens.size(); ++i) rep.delta.tokens[i] -= reported_.tokens[i];
  for (size_t i = 0; i < now.rows.size(); ++i) rep.delta.rows[i] -= reported_.rows[i];
  for (size_t i = 0; i < now.rows_computed.size(); ++i)
    rep.delta.rows_computed[i] -= reported_.rows_computed[i];
  reported_ = now;
  rep.delta.reduce(comm_);

  rep.outstanding.assign(N, 0);
  const int64_t mine_out = rt_.engine().outstanding_tokens();
  comm_.all_gather(&mine_out, rep.outstanding.data(), sizeof(int64_t));

  // Tokens: every rank's events, in rank order, to everyone (rank 0 uses them).
  json j = json::array();
  for (const auto& e : mine) {
    json ev = {e.id, e.token, e.finish};
    if (e.logprob) ev.push_back({e.logprob->logprob, e.logprob->top});
    j.push_back(std::move(ev));
  }
  mine.clear();
  const std::string text = j.dump();
  std::vector<int64_t> lens(N);
  const int64_t len = int64_t(text.size());
  comm_.all_gather(&len, lens.data(), sizeof(int64_t));
  for (int r = 0; r < N; ++r) {
    std::string s = r == comm_.rank() ? text : std::string(size_t(lens[r]), '\0');
    comm_.broadcast(s.data(), size_t(lens[r]), r);
    if (comm_.rank() == 0)
      for (const auto& e : json::parse(s)) {
        TokenEvent ev{e[0].get<int64_t>(), e[1].get<int32_t>(), e[2].get<std::string>(), {}};
        if (e.size() > 3) {
          TokenLogprob lp;
          lp.token = ev.token;
          lp.logprob = e[3][0].get<float>();
          lp.top = e[3][1].get<std::vector<std::pair<int32_t, float>>>();
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
        made.push_back({id, tok, fin ? finish_reason_name(*fin) : "",
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
        made.push_back({a.request.id, -1, std::string("error: ") + e.what(), std::nullopt});
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
