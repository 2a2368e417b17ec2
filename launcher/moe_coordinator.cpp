// moe-coordinator: the gRPC front of a serving job. Clients send generation requests and batch
// jobs; one worker job (mpirun -np N moe-worker) attaches and runs them. See docs/SERVING.md.
#include <CLI/CLI.hpp>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <signal.h>

#include <atomic>
#include <thread>

#include "launcher/cli_parse.h"
#include "common/log.h"
#include "launcher/coordinator/openai_api.h"
#include "launcher/coordinator/services.h"

namespace {

using namespace moe;

// An HTTP server that slow or idle clients cannot starve: a client that sends nothing is dropped
// after a few seconds, and the pool has room for many of them beside the real requests (a
// Prometheus scrape, a streamed completion).
// `*listening` receives the listening socket, for widen_backlog.
void harden(httplib::Server& http, size_t threads, int* listening) {
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_read_timeout(5, 0);
  http.set_write_timeout(30, 0);
  http.set_keep_alive_timeout(5);
  http.set_socket_options([listening](int sock) {
    int yes = 1;  // as cpp-httplib's default options
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    *listening = sock;
  });
}

// cpp-httplib (Debian's is a compiled library) listens with a backlog of 5: a burst of clients
// connecting at once (a benchmark at concurrency 32) then sees resets and 1 s SYN retries. Linux
// takes a second listen() on a listening socket as a new backlog.
void widen_backlog(int listening) {
  if (listening >= 0 && ::listen(listening, 1024) != 0)
    spdlog::warn("could not widen the HTTP listen backlog: {}", std::strerror(errno));
}

int run(int argc, char** argv) {
  std::string listen = "127.0.0.1:50051", log_level = "info";
  int metrics_port = 9464, openai_port = 0;
  coordinator::OpenAiOptions openai;
  double drain_timeout_s = 30;
  coordinator::Options opt;
  CLI::App app{"moe-coordinator: schedules generation requests and batch jobs over a worker job "
               "(mpirun -np N moe-worker) and serves them over gRPC."};
  app.option_defaults()->always_capture_default();
  app.add_option("--listen", listen, "gRPC address for clients and the worker job");
  app.add_option("--metrics-port", metrics_port, "HTTP port for Prometheus /metrics on the listen host (0: off)");
  app.add_option("--openai-port", openai_port, "HTTP port of the OpenAI-compatible API (/v1/completions, /v1/models, /health) on the listen host (0: off)");
  app.add_option("--served-model-name", openai.model, "the model id the OpenAI-compatible API lists and answers with");
  app.add_option("--max-queue", opt.max_queue, "sequences in flight before requests get RESOURCE_EXHAUSTED");
  app.add_option("--rank-timeout-s", opt.rank_timeout_s, "seconds without a step report, with work in flight, before the worker job is declared dead");
  app.add_option("--drain-timeout-s", drain_timeout_s, "on SIGTERM/SIGINT, seconds to let in-flight work finish");
  app.add_option("--stats-window-s", opt.stats_window_s, "span of the recent-window load statistics");
  app.add_option("--batch-retention-s", opt.batch_retention_s, "seconds a finished batch's results stay readable (GetBatch); NOT_FOUND after");
  app.add_option("--max-finished-batches", opt.max_finished_batches, "finished batches kept at most; the oldest expire first past it");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  if (const auto code = launcher::parse_command_line(app, argc, argv)) return *code;
  set_log_name("coordinator");
  set_log_level(log_level);
  if (opt.max_queue < 1 || opt.rank_timeout_s <= 0 || drain_timeout_s < 0 ||
      opt.stats_window_s <= 0 || opt.batch_retention_s < 0 || opt.max_finished_batches < 0) {
    spdlog::error("--max-queue must be >= 1, --rank-timeout-s and --stats-window-s > 0, "
                  "--drain-timeout-s, --batch-retention-s and --max-finished-batches >= 0");
    return 2;
  }

  // Signals are taken by sigtimedwait in this thread only: block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  coordinator::State state(opt);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<grpc::Server> server;
  auto set_health = [&](bool serving) {
    if (!server) return;
    auto* h = server->GetHealthCheckService();
    h->SetServingStatus(serving);
    h->SetServingStatus("moe.v1.Inference", serving);
  };
  coordinator::InferenceService inference(state);
  coordinator::WorkerLinkService link(state, [&](bool attached) { set_health(attached); });
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&inference);
  builder.RegisterService(&link);
  builder.SetMaxReceiveMessageSize(256 << 20);
  server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    spdlog::error("cannot listen on {} (in use, or not an address:port)", listen);
    return 1;
  }
  set_health(false);  // until a worker job attaches
  spdlog::info("listening on {} (clients and workers)", listen);

  httplib::Server http;
  int http_sock = -1, openai_sock = -1;
  harden(http, 32, &http_sock);
  std::thread metrics;
  if (metrics_port > 0) {
    http.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
      res.set_content(state.prometheus(), "text/plain; version=0.0.4");
    });
    const std::string host = listen.substr(0, listen.rfind(':'));
    if (!http.bind_to_port(host, metrics_port)) {
      spdlog::error("cannot serve metrics on {}:{} (in use?)", host, metrics_port);
      server->Shutdown();
      return 1;
    }
    widen_backlog(http_sock);
    metrics = std::thread([&] { http.listen_after_bind(); });
    spdlog::info("metrics on http://{}:{}/metrics", host, metrics_port);
  }

  // The OpenAI-compatible API: a server of its own, so its clients and Prometheus' scrapes do
  // not share threads.
  httplib::Server openai_http;
  harden(openai_http, 128, &openai_sock);  // a streamed completion holds its thread while it runs
  std::thread openai_thread;
  if (openai_port > 0) {
    coordinator::add_openai_routes(openai_http, state, openai);
    const std::string host = listen.substr(0, listen.rfind(':'));
    if (!openai_http.bind_to_port(host, openai_port)) {
      spdlog::error("cannot serve the OpenAI-compatible API on {}:{} (in use?)", host, openai_port);
      server->Shutdown();
      if (metrics.joinable()) {
        http.stop();
        metrics.join();
      }
      return 1;
    }
    widen_backlog(openai_sock);
    openai_thread = std::thread([&] { openai_http.listen_after_bind(); });
    spdlog::info("OpenAI-compatible API on http://{}:{}/v1 (model '{}')", host, openai_port,
                 openai.model);
  }

  // Watchdog and signals, in this thread.
  timespec tick{0, 100 * 1000 * 1000};
  int sig = 0;
  while ((sig = sigtimedwait(&sigs, nullptr, &tick)) < 0) {
    state.check_timeout();
    state.expire_batches();
  }
  spdlog::info("signal {}: draining ({} sequences in flight, up to {} s)", sig, state.in_flight(),
               drain_timeout_s);
  state.start_draining();
  set_health(false);
  const auto until = coordinator::Clock::now() +
                     std::chrono::duration_cast<coordinator::Clock::duration>(
                         std::chrono::duration<double>(drain_timeout_s));
  while (state.in_flight() > 0 && coordinator::Clock::now() < until) {
    state.check_timeout();
    state.wait_change(coordinator::Clock::now() + std::chrono::milliseconds(100));
  }
  if (state.in_flight() > 0) {
    spdlog::warn("{} sequences still in flight after the drain timeout: failing them",
                 state.in_flight());
    state.fail_all("the coordinator is shutting down (drain timeout passed)");
  }
  state.shutdown_worker();
  set_health(false);
  // Everything in flight has finished or failed by now: handlers still open (watchers) get
  // a short grace, then are cancelled.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  if (metrics.joinable()) {
    http.stop();
    metrics.join();
  }
  if (openai_thread.joinable()) {
    openai_http.stop();
    openai_thread.join();
  }
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    spdlog::error("fatal: {}", e.what());
    return 1;
  }
}
