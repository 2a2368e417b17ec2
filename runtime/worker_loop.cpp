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

// How long an idle rank 0 waits in poll() for work before the ranks check in again (work wakes
// the poll at once). Each check-in costs every rank its exchange and a few polls: at 20 ms an
// idle rank used 1-1.3% of a core, at 50 ms about half that.
constexpr int kIdleWaitMs = 50;

// The exchange's bytes a rank: at first, and at most (see all_gather_bytes).
constexpr size_t kFirstChunk = 2048;
constexpr size_t kMaxChunk = size_t(1) << 16;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Every rank's bytes to every rank, in one all_gather of `*chunk` bytes a rank (the length
// first) while they fit; a longer one sends its remainder in a second all_gather, after which
// every rank, having seen the same lengths, raises *chunk alike to fit the longest next time.
std::vector<std::string> all_gather_bytes(comm::Communicator& comm, const std::string& mine,
                                          size_t* chunk) {
  const size_t N = size_t(comm.size()), C = *chunk, room = C - sizeof(uint64_t);
  std::string head(C, '\0');
  const uint64_t n = mine.size();
  std::memcpy(head.data(), &n, sizeof n);
  std::memcpy(head.data() + sizeof n, mine.data(), std::min<size_t>(mine.size(), room));
  std::string heads(N * C, '\0');
  comm.all_gather(head.data(), heads.data(), C);
  std::vector<std::string> all(N);
  size_t longest = 0;
  for (size_t r = 0; r < N; ++r) {
    uint64_t len = 0;
    std::memcpy(&len, heads.data() + r * C, sizeof len);
    all[r].assign(heads.data() + r * C + sizeof len, std::min<size_t>(size_t(len), room));
    all[r].resize(size_t(len));
    longest = std::max(longest, size_t(len));
  }
  if (longest <= room) return all;
  const size_t rest = longest - room;
  std::string tail(rest, '\0');
  if (mine.size() > room) std::memcpy(tail.data(), mine.data() + room, mine.size() - room);
  std::string tails(N * rest, '\0');
  comm.all_gather(tail.data(), tails.data(), rest);
  for (size_t r = 0; r < N; ++r)
    if (all[r].size() > room)
      std::memcpy(all[r].data() + room, tails.data() + r * rest, all[r].size() - room);
  // A quarter more than the longest, in whole KB, up to a bound: large prompt lists (a big
  // batch admitted at once) keep taking two rounds rather than growing every step's exchange.
  *chunk = std::min<size_t>(kMaxChunk, (longest + longest / 4 + sizeof(uint64_t) + 1023) / 1024 * 1024);
  *chunk = std::max(*chunk, C);
  return all;
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

void put_control(ByteWriter& w, const Control& c) {
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
    w.put(a.request.priority.value_or(0));
    put_sampling(w, a.request.sampling);
  }
}

Control get_control(ByteReader& r) {
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
    a.request.priority = r.get<int>();
    a.request.sampling = get_sampling(r);
    c.work.push_back(std::move(a));
  }
  return c;
}

}  // namespace

WorkerLoop::WorkerLoop(RankRuntime& rt, comm::Communicator& comm, Controller* controller)
    : rt_(rt), comm_(comm), controller_(controller), reported_(rt.stats()), chunk_(kFirstChunk) {
  MOE_CHECK(comm.rank() != 0 || controller != nullptr, "rank 0 needs a controller");
}

std::string WorkerLoop::encode(std::vector<TokenEvent>& mine, bool ran, double control_s,
                               const Control* control) {
  ByteWriter w;
  // First what every rank reads of every rank: whether it has work, and rank 0's control.
  w.put(uint8_t(!rt_.engine().idle()));
  w.put(uint8_t(control != nullptr));
  if (control) put_control(w, *control);
  // Then what rank 0 reports: timings, tokens still owed, the load-statistics delta since the
  // last report and the tokens made. The engine keeps its last step's timing: a report without
  // a step must not repeat it.
  const StepTiming t = ran ? rt_.engine().last_timing() : StepTiming{};
  LoadStats& now = rt_.stats();
  w.put(t.compute());
  w.put(t.exchange);
  w.put(t.schedule);
  w.put(control_s);
  w.put(t.total);
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
  return std::move(w.bytes());
}

void WorkerLoop::read_heads(const std::vector<std::string>& all, Control* control,
                            bool* any_work) const {
  *any_work = false;
  for (size_t r = 0; r < all.size(); ++r) {
    ByteReader in(all[r]);
    const bool has_work = in.get<uint8_t>() != 0;
    *any_work = *any_work || has_work;
    const bool has_control = in.get<uint8_t>() != 0;
    MOE_CHECK(has_control == (r == 0), "rank " + std::to_string(r) + "'s exchange " +
                                           (has_control ? "carries" : "lacks") + " a control");
    if (has_control) *control = get_control(in);
  }
}

StepReport WorkerLoop::read_reports(const std::vector<std::string>& all) {
  const int N = comm_.size();
  StepReport rep;
  rep.step = rt_.engine().steps();
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
  const LoadStats& now = rt_.stats();
  rep.delta = LoadStats(now.n_layers, now.n_experts, now.world);
  for (int r = 0; r < N; ++r) {
    ByteReader in(all[size_t(r)]);
    in.get<uint8_t>();  // the heads (read_heads)
    if (in.get<uint8_t>()) get_control(in);
    rep.compute_s += in.get<double>() / N;
    rep.exchange_s += in.get<double>() / N;
    rep.schedule_s += in.get<double>() / N;
    rep.control_s += in.get<double>() / N;
    rep.step_s = std::max(rep.step_s, in.get<double>());
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
  const bool root = comm_.rank() == 0;
  bool ran = false;         // a step ran since the last exchange
  bool wait = true;    // no rank has anything to do: rank 0 may wait for work
  double control = 0;  // this rank's loop time before the step that ran, waiting excluded
  for (;;) {
    const auto t0 = Clock::now();
    Control c;
    if (root) {
      c = controller_->poll(wait ? kIdleWaitMs : 0);
      // Only a waiting poll waits; the other ranks wait as long in the exchange below.
      c.waited_s = wait ? seconds_since(t0) : 0;
    }
    // The one exchange of the iteration: every rank's report of the step before and whether it
    // has work left, and rank 0's control for the next step.
    // With no work anywhere, the other ranks wait here while rank 0 polls for work, and rank 0
    // then waits for them to wake: every rank may poll seldom (the first step after idleness
    // starts at most about 5 ms late).
    comm_.expect_long_waits(wait);
    const std::vector<std::string> all =
        all_gather_bytes(comm_, encode(made, ran, ran ? control : 0, root ? &c : nullptr), &chunk_);
    comm_.expect_long_waits(false);  // the step's own exchanges are short
    bool any_work = false;
    read_heads(all, &c, &any_work);
    if (root) {
      StepReport rep = read_reports(all);
      // A report without a step: refused sequences.
      if (ran || !rep.tokens.empty()) controller_->publish(std::move(rep));
    }
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
    // New work anywhere (refused or not, so a refusal is reported at once) means a step; a
    // step that finds every rank's work cancelled does nothing.
    any_work = any_work || !c.work.empty();
    wait = !any_work;
    control = seconds_since(t0) - c.waited_s;
    ran = any_work && rt_.engine().step(true);
  }
  spdlog::info("worker loop: shutdown after {} steps", rt_.engine().steps());
}

}  // namespace moe::runtime
