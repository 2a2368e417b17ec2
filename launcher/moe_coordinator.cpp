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
#include <fstream>
#include <sstream>
#include <thread>

#include "launcher/cli_parse.h"
#include "launcher/signal_waiter.h"
#include "common/error.h"
#include "common/log.h"
#include "launcher/coordinator/openai_api.h"
#include "launcher/coordinator/auth.h"
#include "launcher/coordinator/http_guard.h"
#include "launcher/coordinator/services.h"
#include "launcher/coordinator/worker_link.h"

namespace {

using namespace moe;

// An HTTP server that slow or idle clients cannot starve (launcher/coordinator/http_guard.h): a
// connection gets a thread only once its request has arrived, within the request timeout, and
// the excess is refused at once. `*listening` receives the listening socket, for widen_backlog.
std::shared_ptr<coordinator::HttpGuard> harden(httplib::Server& http,
                                               coordinator::HttpGuardOptions options,
                                               int* listening) {
  http.set_payload_max_length(size_t(64) << 10);  // the routes that take bodies raise it
  http.set_read_timeout(5, 0);
  http.set_write_timeout(30, 0);
  http.set_socket_options([listening](int sock) {
    int yes = 1;  // as cpp-httplib's default options
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    *listening = sock;
  });
  return coordinator::HttpGuard::install(http, std::move(options));
}

// cpp-httplib (Debian's is a compiled library) listens with a backlog of 5: a burst of clients
// connecting at once (a benchmark at concurrency 32) then sees resets and 1 s SYN retries. Linux
// takes a second listen() on a listening socket as a new backlog.
void widen_backlog(int listening) {
  if (listening >= 0 && ::listen(listening, 1024) != 0)
    spdlog::warn("could not widen the HTTP listen backlog: {}", std::strerror(errno));
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) throw InputError(std::string(what) + " " + path + ": cannot read it");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run(int argc, char** argv) {
  std::string listen = "127.0.0.1:50051", log_level = "info";
  std::string worker_secret_file, api_keys_file, tls_cert, tls_key;
  double drain_grace_s = 30;
  int max_message_mb = 64, max_context = 0, max_watchers = 256;
  int metrics_port = 9464, openai_port = 0, http_max_waiting = 1024;
  double http_request_timeout_s = 30;
  coordinator::OpenAiOptions openai;
  double drain_timeout_s = 30;
  coordinator::Options opt;
  CLI::App app{"moe-coordinator: schedules generation requests and batch jobs over a worker job "
               "(mpirun -np N moe-worker) and serves them over gRPC."};
  app.option_defaults()->always_capture_default();
  app.add_option("--listen", listen, "gRPC address for clients and the worker job");
  app.add_option("--metrics-port", metrics_port, "HTTP port for Prometheus /metrics on the listen host (0: off)");
  app.add_option("--openai-port", openai_port, "HTTP port of the OpenAI-compatible API (/v1/completions, /v1/models, /health) on the listen host (0: off)");
  app.add_option("--http-request-timeout-s", http_request_timeout_s, "HTTP ports (OpenAI, metrics): seconds from a connection's accept (or its previous response) within which a request's headers and body must have arrived; a slower one is cut (408)");
  app.add_option("--http-max-waiting", http_max_waiting, "HTTP ports: connections per port whose request has not all arrived; past it a new one is answered 503 at once");
  app.add_option("--served-model-name", openai.model, "the model id the OpenAI-compatible API lists and answers with");
  app.add_option("--max-queue", opt.max_queue, "sequences in flight before requests get RESOURCE_EXHAUSTED");
  app.add_option("--rank-timeout-s", opt.rank_timeout_s, "seconds without a step report, with work in flight, before the worker job is declared dead");
  app.add_option("--drain-timeout-s", drain_timeout_s, "on SIGTERM/SIGINT, seconds to let in-flight work finish");
  app.add_option("--stats-window-s", opt.stats_window_s, "span of the recent-window load statistics");
  app.add_option("--batch-retention-s", opt.batch_retention_s, "seconds a finished batch's results stay readable (GetBatch); NOT_FOUND after");
  app.add_option("--max-finished-batches", opt.max_finished_batches, "finished batches kept at most; the oldest expire first past it");
  app.add_option("--recovery-wait-s", opt.recovery_wait_s, "after a worker job is lost, seconds its unfinished sequences wait for a new job (which goes on from their tokens) before they fail; 0: fail at once");
  app.add_option("--max-losses", opt.max_losses, "a sequence in flight at this many worker-job losses in a row without making a token fails (ABORTED, naming the losses) instead of going to the next job: it may be what takes the jobs down; 0: never");
  app.add_option("--drain-grace-s", drain_grace_s, "on SIGTERM/SIGINT, after the drain, seconds to keep serving finished batches whose results no GetBatch has fetched yet");
  app.add_option("--worker-secret-file", worker_secret_file, "file whose first line is the secret the worker job must present (default: the MOE_WORKER_SECRET environment variable; one of the two is required)");
  app.add_option("--api-keys-file", api_keys_file, "file of client API keys, one per line; with it (or MOE_API_KEYS, comma-separated) every client call needs 'authorization: Bearer <key>' and a batch answers only to its key (default: no keys)");
  app.add_option("--tls-cert", tls_cert, "PEM certificate chain: serve gRPC over TLS (with --tls-key; default: plain text)");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  app.add_option("--max-watchers", max_watchers, "WatchBatch streams open at once (each holds a server thread); past it a new one gets RESOURCE_EXHAUSTED");
  app.add_option("--max-message-mb", max_message_mb, "largest request message accepted, in MiB; larger ones are refused before they are buffered (a batch over it must be split)");
  app.add_option("--max-context", max_context, "the model's context in tokens, where known before the worker attaches (moe-launch passes it): the message limit becomes what --max-queue sequences of that length need, if less than --max-message-mb; 0: unknown");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  if (const auto code = launcher::parse_command_line(app, argc, argv)) return *code;
  set_log_name("coordinator");
  set_log_level(log_level);
  if (opt.max_queue < 1 || opt.rank_timeout_s <= 0 || drain_timeout_s < 0 ||
      opt.stats_window_s <= 0 || opt.batch_retention_s < 0 || opt.max_finished_batches < 0 ||
      opt.recovery_wait_s < 0 || opt.max_losses < 0 || drain_grace_s < 0 || max_message_mb < 1 ||
      max_message_mb > 2047 || max_context < 0 || max_watchers < 1 || http_max_waiting < 1 ||
      !(http_request_timeout_s > 0)) {
    spdlog::error("--max-queue, --max-watchers and --http-max-waiting must be >= 1, "
                  "--rank-timeout-s, --stats-window-s and --http-request-timeout-s > 0, "
                  "--drain-timeout-s, --drain-grace-s, --recovery-wait-s, --max-losses, "
                  "--batch-retention-s and --max-finished-batches >= 0, --max-message-mb in "
                  "[1, 2047]");
    return 2;
  }
  if (tls_cert.empty() != tls_key.empty()) {
    spdlog::error("--tls-cert and --tls-key go together (got only {})",
                  tls_cert.empty() ? "--tls-key" : "--tls-cert");
    return 2;
  }
  // Signals are taken in this thread: before any thread starts (gRPC starts its own as soon as
  // credentials are made); see launcher/signal_waiter.h.
  const launcher::SignalWaiter sigs({SIGTERM, SIGINT});
  std::string worker_secret;
  std::vector<std::string> api_keys;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  try {
    const auto secret = coordinator::read_secret(worker_secret_file, coordinator::kWorkerSecretEnv);
    if (!secret) {
      spdlog::error("no worker secret: set MOE_WORKER_SECRET (at least 16 characters) or give "
                    "--worker-secret-file, and give moe-worker the same (moe-launch makes one "
                    "for both); without it anyone could attach as the worker");
      return 2;
    }
    worker_secret = *secret;
    api_keys = coordinator::read_api_keys(api_keys_file);
    if (!tls_cert.empty()) {
      grpc::SslServerCredentialsOptions ssl;
      ssl.pem_key_cert_pairs.push_back(
          {read_file(tls_key, "--tls-key"), read_file(tls_cert, "--tls-cert")});
      credentials = grpc::SslServerCredentials(ssl);
    }
  } catch (const InputError& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
  const coordinator::ClientAuth auth(api_keys);
  openai.auth = &auth;

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
  coordinator::InferenceService inference(state, auth, max_watchers);
  coordinator::WorkerLinkService link(state, worker_secret,
                                      [&](bool attached) { set_health(attached); });
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen, credentials, &bound_port);
  builder.RegisterService(&inference);
  builder.RegisterService(&link);
  // A request is refused from its size, before it is buffered: no valid one is larger than the
  // queue's worth of sequences at the context's length (varint ids of at most 5 bytes, and
  // room for each item's fields).
  // The worker link shares the server, so the limit never goes below what it needs: the hello
  // carries the tokenizer model, and a step report of a large job counts per rank pair.
  constexpr int64_t kWorkerLinkFloor = int64_t(8) << 20;
  int64_t message_limit = int64_t(max_message_mb) << 20;
  if (max_context > 0)
    message_limit = std::min(
        message_limit,
        std::max(kWorkerLinkFloor,
                 int64_t(opt.max_queue) * (int64_t(max_context) * 5 + 512) + (int64_t(1) << 16)));
  builder.SetMaxReceiveMessageSize(int(message_limit));
  server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    spdlog::error("cannot listen on {} (in use, or not an address:port)", listen);
    return 1;
  }
  set_health(false);  // until a worker job attaches
  spdlog::info("listening on {} (clients and workers; {}, {}; requests up to {:.1f} MiB)", listen,
               tls_cert.empty() ? "plain text" : "TLS",
               auth.on() ? std::to_string(api_keys.size()) + " API keys" : "no API keys",
               double(message_limit) / (1 << 20));

  httplib::Server http, openai_http;
  int http_sock = -1, openai_sock = -1;
  const auto metrics_guard =
      harden(http, {"metrics", 32, http_max_waiting, http_request_timeout_s}, &http_sock);
  // A streamed completion holds its thread while it runs.
  const auto openai_guard =
      harden(openai_http, {"openai", 128, http_max_waiting, http_request_timeout_s}, &openai_sock);
  std::thread metrics;
  if (metrics_port > 0) {
    http.Get("/metrics", coordinator::HttpGuard::read([&](const httplib::Request&,
                                                          httplib::Response& res) {
      res.set_content(state.prometheus() +
                          coordinator::HttpGuard::prometheus(
                              {metrics_guard.get(), openai_port > 0 ? openai_guard.get() : nullptr}),
                      "text/plain; version=0.0.4");
    }));
    // Scrapes only: any other method is refused from its headers, its body never read.
    http.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
      if (req.method == "GET" || req.method == "HEAD")
        return httplib::Server::HandlerResponse::Unhandled;
      res.status = 405;
      res.set_header("Connection", "close");
      res.set_content("only GET /metrics is served here\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
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
  std::thread openai_thread;
  if (openai_port > 0) {
    openai.max_body_bytes = size_t(message_limit);
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
  int sig = 0;
  while ((sig = sigs.wait(std::chrono::milliseconds(100))) == 0) {
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
  // Finished batches stay readable until their clients have fetched them (or the grace ends):
  // a client that watched its batch to the end gets its results.
  const auto grace = coordinator::Clock::now() +
                     std::chrono::duration_cast<coordinator::Clock::duration>(
                         std::chrono::duration<double>(drain_grace_s));
  if (state.unfetched_batches() > 0)
    spdlog::info("{} finished batches not fetched yet: serving them for up to {} s "
                 "(--drain-grace-s)", state.unfetched_batches(), drain_grace_s);
  while (state.unfetched_batches() > 0 && coordinator::Clock::now() < grace)
    state.wait_change(coordinator::Clock::now() + std::chrono::milliseconds(100));
  if (state.unfetched_batches() > 0)
    spdlog::warn("{} finished batches were not fetched within --drain-grace-s",
                 state.unfetched_batches());
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
