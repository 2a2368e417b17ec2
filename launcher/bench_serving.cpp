// moe-bench-serving: requests/s through a running coordinator (start one with moe-launch), and
// each step's time split into compute, exchange and scheduling (the engine step) and control
// (the worker loop before it: new work and the step reports exchanged, the reports published)
// over the same run.
//   build/bin/moe-launch --np 2 --config configs/tiny_a.yaml &
//   build/bin/moe-bench-serving --server 127.0.0.1:50051 --requests 256 --concurrency 32
// Each client sends Generate requests back to back; the figure is completed requests
// per second of wall time after a warm-up, printed beside the engine's own step rate.
#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <condition_variable>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <vector>

#include "launcher/cli_parse.h"
#include "moe/v1/inference.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

// The load: `concurrency` clients, each sending its share of the requests back to back. Every
// Generate stream is read through gRPC's callback API, so no client thread waits per stream:
// the load generator shares the machine with the server, and a thread per stream, woken for
// every token, took half a core from it on 2 cores.
class Load {
 public:
  Load(moe::v1::Inference::Stub* stub, int prompt_len, int max_new, int vocab)
      : stub_(stub), prompt_len_(prompt_len), max_new_(max_new), vocab_(vocab) {}

  struct Result {
    int64_t done = 0, failed = 0, tokens = 0;
    std::vector<double> latencies;  // seconds, of the requests that succeeded
  };

  Result run(int total, int concurrency) {
    result_ = {};
    active_ = concurrency;
    std::vector<int> share(static_cast<size_t>(concurrency));
    for (int c = 0; c < concurrency; ++c)
      share[size_t(c)] = total / concurrency + (c < total % concurrency);
    for (int c = 0; c < concurrency; ++c) next(1000u + unsigned(c), share[size_t(c)]);
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return active_ == 0; });
    return std::move(result_);
  }

 private:
  // One request of a client; when it ends, the client's next one starts.
  class Stream final : public grpc::ClientReadReactor<moe::v1::GenerateResponse> {
   public:
    Stream(Load* load, std::mt19937 rng, int left) : load_(load), rng_(rng), left_(left) {
      for (int j = 0; j < load->prompt_len_; ++j)
        req_.add_prompt_ids(3 + int(rng_() % unsigned(load->vocab_ - 3)));
      req_.set_max_new_tokens(load->max_new_);
      req_.set_ignore_eos(true);
      ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
      t0_ = Clock::now();
      load->stub_->async()->Generate(&ctx_, &req_, this);
      StartRead(&resp_);
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;  // the stream ended: OnDone follows
      ++got_;
      StartRead(&resp_);
    }
    void OnDone(const grpc::Status& st) override {
      load_->finished(st.ok(), got_, std::chrono::duration<double>(Clock::now() - t0_).count());
      load_->next(rng_, left_ - 1);
      delete this;
    }

   private:
    Load* load_;
    std::mt19937 rng_;
    int left_;  // this client's requests, this one included
    moe::v1::GenerateRequest req_;
    moe::v1::GenerateResponse resp_;
    grpc::ClientContext ctx_;
    Clock::time_point t0_;
    int64_t got_ = 0;
  };

  void next(std::mt19937 rng, int left) {
    if (left > 0) {
      new Stream(this, rng, left);
      return;
    }
    std::lock_guard lk(mu_);
    if (--active_ == 0) cv_.notify_all();
  }
  void next(unsigned seed, int left) { next(std::mt19937(seed), left); }

  void finished(bool ok, int64_t tokens, double seconds) {
    std::lock_guard lk(mu_);
    if (!ok) {
      ++result_.failed;
      return;
    }
    ++result_.done;
    result_.tokens += tokens;
    result_.latencies.push_back(seconds);
  }

  moe::v1::Inference::Stub* stub_;
  const int prompt_len_, max_new_, vocab_;
  std::mutex mu_;
  std::condition_variable cv_;
  int active_ = 0;  // clients with requests left
  Result result_;
};

moe::v1::LoadStatsResponse stats(moe::v1::Inference::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  moe::v1::LoadStatsResponse r;
  const auto st = stub->GetLoadStats(&ctx, {}, &r);
  if (!st.ok()) throw std::runtime_error("GetLoadStats: " + st.error_message());
  return r;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  std::string server = "127.0.0.1:50051";
  int requests = 256, concurrency = 32, prompt_len = 16, max_new = 16, warmup = 32, vocab = 512;
  CLI::App app{"moe-bench-serving: Generate requests/s through moe-coordinator, with the step "
               "time split into compute, exchange, scheduling and control"};
  app.option_defaults()->always_capture_default();
  app.add_option("--server", server, "coordinator address");
  app.add_option("--requests", requests, "timed requests");
  app.add_option("--warmup", warmup, "untimed requests first");
  app.add_option("--concurrency", concurrency, "clients sending back to back");
  app.add_option("--prompt-len", prompt_len, "prompt tokens per request");
  app.add_option("--max-new-tokens", max_new, "new tokens per request (eos ignored)");
  app.add_option("--vocab", vocab, "token ids are drawn from [3, vocab)");
  if (const auto code = moe::launcher::parse_command_line(app, argc, argv)) return *code;
  if (concurrency < 1 || requests < concurrency) {
    std::fprintf(stderr, "moe-bench-serving: need --concurrency >= 1 and --requests >= it\n");
    return 2;
  }
  auto channel = grpc::CreateChannel(server, grpc::InsecureChannelCredentials());
  auto stub = moe::v1::Inference::NewStub(channel);
  try {
    stats(stub.get());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe-bench-serving: %s (is moe-launch running?)\n", e.what());
    return 3;
  }
  Load load(stub.get(), prompt_len, max_new, vocab);
  load.run(std::max(warmup, concurrency), concurrency);

  const auto s0 = stats(stub.get());
  const auto t0 = Clock::now();
  Load::Result res = load.run(requests, concurrency);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const int64_t done = res.done, failed = res.failed, tokens = res.tokens;
  const std::vector<double>& lat = res.latencies;
  const auto s1 = stats(stub.get());

  const int64_t steps = s1.steps() - s0.steps();
  const double comp = s1.compute_seconds() - s0.compute_seconds();
  const double exch = s1.exchange_seconds() - s0.exchange_seconds();
  const double sched = s1.schedule_seconds() - s0.schedule_seconds();
  const double ctrl = s1.control_seconds() - s0.control_seconds();
  const double step_wall = s1.step_seconds() - s0.step_seconds();
  const double phases = comp + exch + sched + ctrl;
  std::printf("%d ranks, %d requests (%d prompt + %d new tokens), %d concurrent clients\n",
              s1.ranks(), requests, prompt_len, max_new, concurrency);
  std::printf("%-40s %10.1f req/s   (%lld done, %lld failed, %.2f s)\n", "throughput",
              done / secs, (long long)done, (long long)failed, secs);
  std::printf("%-40s %10.1f tokens/s\n", "generated tokens", tokens / secs);
  std::printf("%-40s %10.1f ms p50, %.1f ms p99\n", "request latency", pct(lat, 0.5) * 1e3,
              pct(lat, 0.99) * 1e3);
  if (steps > 0) {
    std::printf("%-40s %10lld steps, %.3f ms per step (slowest rank)\n", "engine steps",
                (long long)steps, step_wall / steps * 1e3);
    std::printf("%-40s %10.3f ms (%4.1f%%)\n", "  compute per step, mean over ranks",
                comp / steps * 1e3, 100 * comp / phases);
    std::printf("%-40s %10.3f ms (%4.1f%%)\n", "  exchange per step", exch / steps * 1e3,
                100 * exch / phases);
    std::printf("%-40s %10.3f ms (%4.1f%%)\n", "  scheduling per step",
                sched / steps * 1e3, 100 * sched / phases);
    std::printf("%-40s %10.3f ms (%4.1f%%)\n", "  control (work and reports exchanged)",
                ctrl / steps * 1e3, 100 * ctrl / phases);
    std::printf("%-40s %10.3f ms\n", "  sum of the four per step", phases / steps * 1e3);
    std::printf("%-40s %10.1f %%\n", "bound: engine busy / wall (steps x step time)",
                100 * step_wall / secs);
    // The four phases are means over the ranks and add up to the loop's time per step; the
    // slowest rank's step time above also holds its waits in the step's exchanges for the
    // others, so it is not added to them. What the four leave of the wall time is the ranks
    // waiting for work.
    std::printf("%-40s %10.1f %%\n", "bound: loop busy / wall (steps x the four)",
                100 * phases / secs);
  }
  return failed ? 1 : 0;
}
