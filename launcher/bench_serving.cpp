// moe-bench-serving: requests/s through a running coordinator (start one with moe-launch), and
// each step's time split into compute, exchange and scheduling (the engine step) and control
// (the worker loop before it: new work and the step reports exchanged, the reports published)
// over the same run.
//   build/bin/moe-launch --np 2 --config configs/tiny_a.yaml &
//   build/bin/moe-bench-serving --server 127.0.0.1:50051 --requests 256 --concurrency 32
// Each client thread sends Generate requests back to back; the figure is completed requests
// per second of wall time after a warm-up, printed beside the engine's own step rate.
#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "launcher/cli_parse.h"
#include "moe/v1/inference.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Totals {
  std::atomic<int64_t> done{0}, failed{0}, tokens{0};
};

void client(moe::v1::Inference::Stub* stub, int n, int prompt_len, int max_new, int vocab,
            unsigned seed, Totals* t, std::vector<double>* latencies) {
  std::mt19937 rng(seed);
  for (int i = 0; i < n; ++i) {
    moe::v1::GenerateRequest req;
    for (int j = 0; j < prompt_len; ++j) req.add_prompt_ids(3 + int(rng() % (vocab - 3)));
    req.set_max_new_tokens(max_new);
    req.set_ignore_eos(true);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    const auto t0 = Clock::now();
    auto reader = stub->Generate(&ctx, req);
    moe::v1::GenerateResponse r;
    int64_t got = 0;
    while (reader->Read(&r)) ++got;
    if (reader->Finish().ok()) {
      ++t->done;
      t->tokens += got;
      latencies->push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    } else {
      ++t->failed;
    }
  }
}

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
  app.add_option("--concurrency", concurrency, "client threads sending back to back");
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
  auto run = [&](int total, std::vector<double>* lat) {
    Totals t;
    std::vector<std::thread> th;
    std::vector<std::vector<double>> lats(concurrency);
    for (int c = 0; c < concurrency; ++c)
      th.emplace_back(client, stub.get(), total / concurrency + (c < total % concurrency),
                      prompt_len, max_new, vocab, 1000u + c, &t, &lats[c]);
    for (auto& x : th) x.join();
    for (auto& l : lats) lat->insert(lat->end(), l.begin(), l.end());
    return std::make_tuple(t.done.load(), t.failed.load(), t.tokens.load());
  };
  std::vector<double> ignore;
  run(std::max(warmup, concurrency), &ignore);

  const auto s0 = stats(stub.get());
  std::vector<double> lat;
  const auto t0 = Clock::now();
  const auto [done, failed, tokens] = run(requests, &lat);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
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
