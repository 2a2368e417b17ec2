// moe-launch: starts a serving job (moe-coordinator plus mpirun -np N moe-worker), says
// "ready: <address>" on stdout once it serves, and stops both in order. See docs/SERVING.md.
//
// Both children run in process groups of their own, so a terminal's Ctrl-C reaches this process
// only and the shutdown order is ours: the coordinator first (it drains, then tells the worker
// job to stop), mpirun after it. Their stdout goes to our stderr so that our stdout carries the
// ready line alone, which scripts wait for.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "launcher/cli_parse.h"
#include "launcher/signal_waiter.h"
#include "common/log.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "launcher/coordinator/auth.h"
#include "runtime/checkpoint.h"
#include "runtime/model_config.h"
#include "runtime/run_config.h"

extern char** environ;

namespace {

using namespace moe;
using Clock = std::chrono::steady_clock;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitBadInput = 2;

// The coordinator drains for up to --drain-timeout-s before it stops the worker; on top of
// that this leaves it room to finish before we resort to SIGKILL.
constexpr double kStopMarginS = 10;
// Once the coordinator is gone, the worker job should follow within this; if not, mpirun gets
// SIGTERM (which it forwards to the ranks) rather than waiting out kStopTimeout.
constexpr auto kWorkerGrace = std::chrono::seconds(10);
constexpr auto kPollInterval = std::chrono::milliseconds(200);
constexpr auto kProbeDeadline = std::chrono::seconds(1);

struct Options {
  int np = 0;
  std::string config;
  std::string listen = "127.0.0.1:50051";
  int metrics_port = 9464;
  int openai_port = 0;
  std::string served_model_name = "moe";
  std::string mpirun = "mpirun";
  std::string mpirun_args;
  double startup_timeout_s = 120;
  std::string log_level = "info";
  // moe-coordinator's limits, forwarded always (the defaults are the coordinator's own).
  int max_queue = 4096;
  double rank_timeout_s = 10;
  double drain_timeout_s = 30;
  double stats_window_s = 60;
  double batch_retention_s = 600;
  int max_finished_batches = 1000;
  double recovery_wait_s = 120;
  int max_losses = 2;
  double drain_grace_s = 30;
  std::string api_keys_file, tls_cert, tls_key, tls_ca;
  int max_message_mb = 64;
  int max_watchers = 256;
  double http_request_timeout_s = 30;
  int http_max_waiting = 1024;
  // Restarting a lost worker job.
  int max_restarts = 3;
  double restart_backoff_s = 1;
  // The coordinator itself: unanswered health checks for this long stop the service (0: never).
  double coordinator_timeout_s = 120;
};

// A job that served and then shows NOT_SERVING this long while mpirun still runs was declared
// dead by the coordinator (no step report within --rank-timeout-s): it is killed and restarted.
constexpr auto kStallGrace = std::chrono::seconds(2);
// Health checks unanswered this long are logged once (the coordinator is busy or stopped).
constexpr double kSilenceWarnS = 5;
constexpr double kMaxBackoffS = 30;

// moe-worker's overrides of --config, forwarded only when given (the config file decides
// otherwise) as text: moe-worker checks them. {flag (moe-worker's own), type, help}.
constexpr const char* kWorkerOverrides[][3] = {
    {"--checkpoint", "TEXT", "Hugging Face model folder"},
    {"--placement", "TEXT", "expert placement: contiguous, round_robin or explicit"},
    {"--backend", "TEXT", "compute backend: cpu or cuda"},
    {"--transport", "TEXT", "all-to-all transport: mpi or nccl"},
    {"--max-tokens-per-step", "INT", "token budget of one step on one rank"},
    {"--max-seqs", "INT", "sequences in flight per rank (KV cache slots)"},
    {"--max-seq-len", "INT", "KV positions per sequence"},
};

struct Child {
  std::string name;
  pid_t pid = -1;  // also its process group id
  bool running = false;
  int status = 0;  // waitpid's, once it has exited
};

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "ended with wait status " + std::to_string(status);
}

// Collects the child's exit status if it has one; true when it has exited (now or before).
bool reap(Child& c, bool block = false) {
  if (!c.running) return true;
  const pid_t r = waitpid(c.pid, &c.status, block ? 0 : WNOHANG);
  if (r == c.pid || (r < 0 && errno == ECHILD)) c.running = false;
  return !c.running;
}

// Signals `c`'s whole process group: mpirun's local daemons and ranks may share it, and must
// not outlive it.
void signal_group(const Child& c, int sig) {
  if (c.pid > 0 && killpg(c.pid, sig) != 0 && errno != ESRCH)
    spdlog::warn("killpg({}, {}) for {}: {}", c.pid, sig, c.name, std::strerror(errno));
}

Child spawn(const std::string& name, const std::vector<std::string>& args, bool search_path) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  // A background process group that reads the terminal is stopped by SIGTTIN; mpirun forwards
  // stdin to rank 0 by default, so give it none.
  posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&files, STDERR_FILENO, STDOUT_FILENO);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setpgroup(&attr, 0);
  // Our signal mask (INT, TERM, CHLD blocked for sigtimedwait) would otherwise be inherited
  // and leave the child deaf to the SIGTERM we stop it with.
  sigset_t none, defaults;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGCHLD, SIGPIPE, SIGHUP}) sigaddset(&defaults, s);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);

  Child c;
  c.name = name;
  const int rc = search_path ? posix_spawnp(&c.pid, argv[0], &files, &attr, argv.data(), environ)
                             : posix_spawn(&c.pid, argv[0], &files, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&files);
  if (rc != 0)
    throw std::runtime_error("cannot start " + name + " (" + args[0] + "): " + std::strerror(rc));
  c.running = true;
  std::string line;
  for (const auto& a : args) line += (line.empty() ? "" : " ") + a;
  spdlog::info("started {} (pid {}): {}", name, c.pid, line);
  return c;
}


// Stops both children. `ordered`: the coordinator first, so it can drain and then stop the
// worker job it has attached; before the job is ready there is no such order to keep, and both
// get SIGTERM at once. A second SIGINT/SIGTERM skips the patience.
void stop_all(Child& coord, Child& mpi, const launcher::SignalWaiter& sigs, double drain_timeout_s,
              bool ordered = true) {
  const auto stop_timeout = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(drain_timeout_s + kStopMarginS));
  reap(coord);
  reap(mpi);
  bool mpi_termed = false;
  if (coord.running) {
    spdlog::info("stopping {} (SIGTERM; it drains, then stops the worker job)", coord.name);
    kill(coord.pid, SIGTERM);
  }
  if (mpi.running && (!ordered || !coord.running)) {
    // No coordinator to stop the worker job in order: mpirun forwards SIGTERM to the ranks.
    spdlog::info("stopping {} (SIGTERM)", mpi.name);
    signal_group(mpi, SIGTERM);
    mpi_termed = true;
  }
  const auto start = Clock::now();
  auto coord_gone = coord.running ? Clock::time_point::max() : start;
  while ((coord.running || mpi.running) && Clock::now() - start < stop_timeout) {
    if (!coord.running && coord_gone == Clock::time_point::max()) coord_gone = Clock::now();
    if (!coord.running && mpi.running && !mpi_termed && Clock::now() - coord_gone >= kWorkerGrace) {
      spdlog::info("{} still running without the coordinator: SIGTERM", mpi.name);
      signal_group(mpi, SIGTERM);
      mpi_termed = true;
    }
    const int s = sigs.wait(std::chrono::milliseconds(100));
    if (s == SIGINT || s == SIGTERM) {
      spdlog::warn("second signal ({}): killing what is left now", strsignal(s));
      break;
    }
    reap(coord);
    reap(mpi);
  }
  for (Child* c : {&coord, &mpi}) {
    if (reap(*c)) continue;
    spdlog::warn("{} did not stop in time: SIGKILL", c->name);
    signal_group(*c, SIGKILL);
    reap(*c, true);
  }
}

// One grpc.health.v1 check on a channel of its own: SERVING once a worker job has attached.
// A long-lived channel that failed to connect stays in TRANSIENT_FAILURE and keeps failing fast
// with the stale error after the server is up; a private subchannel pool keeps gRPC from
// handing the new channel that same failed connection.
//
// The answer is the coordinator's word on the job (SERVING or NOT_SERVING) or no answer at all
// (a busy, stopped or unreachable coordinator), which says nothing about the job.
struct Probe {
  enum Answer { kServing, kNotServing, kNoAnswer } answer;
  std::string detail;  // why not SERVING
};
Probe probe(const std::string& address, const std::shared_ptr<grpc::ChannelCredentials>& creds) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateCustomChannel(address, creds, args));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kProbeDeadline);
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status st = stub->Check(&ctx, req, &resp);
  if (!st.ok()) return {Probe::kNoAnswer, st.error_message()};
  if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING)
    return {Probe::kNotServing, "NOT_SERVING (no worker job attached)"};
  return {Probe::kServing, ""};
}

// The longest sequence (prompt plus new tokens) the worker job will take, as it computes it:
// the run config's max_seq_len (else min(the model's, 4096)), at most the model's positions.
// The coordinator sizes its message limit from it. 0 when it cannot be told here (the worker
// job then says what is wrong with the config).
int model_context(const std::string& config, const std::string& checkpoint_override,
                  const std::string& max_seq_len_override) {
  try {
    auto run = runtime::RunConfig::from_yaml_file(config);
    if (!checkpoint_override.empty()) run.checkpoint = checkpoint_override;
    if (!max_seq_len_override.empty()) run.max_seq_len = std::stoi(max_seq_len_override);
    const auto ckpt = runtime::Checkpoint::open_config_only(run.checkpoint);
    const auto cfg = runtime::ModelConfig::from_json(ckpt.config_json(), run.checkpoint);
    const int positions = cfg.max_position_embeddings;
    return std::min(run.max_seq_len > 0 ? run.max_seq_len : std::min(positions, 4096), positions);
  } catch (const std::exception& e) {
    spdlog::debug("cannot tell the model's context from {}: {}", config, e.what());
    return 0;
  }
}

std::vector<std::string> split_spaces(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

int run(int argc, char** argv) {
  Options o;
  CLI::App app{"moe-launch: starts moe-coordinator and mpirun -np N moe-worker, prints "
               "'ready: <address>' once the job serves, and stops both on SIGINT/SIGTERM (exit "
               "0) or when either exits on its own (exit 1)."};
  app.option_defaults()->always_capture_default();
  app.add_option("--np", o.np, "ranks of the worker job (mpirun -np)")->required()->default_str("");
  app.add_option("--config", o.config, "YAML run config for moe-worker (fields as in configs/*.yaml)")->required();
  app.add_option("--listen", o.listen, "gRPC address of the coordinator (clients and workers)");
  app.add_option("--metrics-port", o.metrics_port, "HTTP port for Prometheus /metrics on the listen host (0: off)");
  app.add_option("--openai-port", o.openai_port, "HTTP port of the OpenAI-compatible API on the listen host (0: off)");
  app.add_option("--served-model-name", o.served_model_name, "the model id the OpenAI-compatible API answers with");
  app.add_option("--mpirun", o.mpirun, "the mpirun to use (a path, or a name looked up in PATH)");
  app.add_option("--mpirun-args", o.mpirun_args, "extra arguments for mpirun, split on spaces, no quoting (default: none)");
  app.add_option("--startup-timeout-s", o.startup_timeout_s, "seconds to wait for the job to serve before giving up");
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error or off (also passed to both children)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  // Passed on to moe-coordinator (docs/SERVING.md).
  app.add_option("--max-queue", o.max_queue, "coordinator: sequences in flight before requests get RESOURCE_EXHAUSTED");
  app.add_option("--rank-timeout-s", o.rank_timeout_s, "coordinator: seconds without a step report, with work in flight, before the worker job is declared dead");
  app.add_option("--drain-timeout-s", o.drain_timeout_s, "coordinator: on SIGTERM/SIGINT, seconds to let in-flight work finish");
  app.add_option("--stats-window-s", o.stats_window_s, "coordinator: span of the recent-window load statistics");
  app.add_option("--batch-retention-s", o.batch_retention_s, "coordinator: seconds a finished batch's results stay readable");
  app.add_option("--max-finished-batches", o.max_finished_batches, "coordinator: finished batches kept at most");
  app.add_option("--recovery-wait-s", o.recovery_wait_s, "coordinator: seconds the unfinished sequences of a lost worker job wait for a restarted one");
  app.add_option("--max-losses", o.max_losses, "coordinator: worker-job losses in a row a sequence may be in flight at without making a token before it fails instead of being re-submitted; 0: never");
  app.add_option("--drain-grace-s", o.drain_grace_s, "coordinator: on SIGTERM, seconds to keep serving finished batches not fetched yet");
  app.add_option("--api-keys-file", o.api_keys_file, "coordinator: client API keys, one per line (default: MOE_API_KEYS, or no keys)");
  app.add_option("--tls-cert", o.tls_cert, "coordinator: PEM certificate chain, serve gRPC over TLS (default: plain text)");
  app.add_option("--tls-key", o.tls_key, "coordinator: PEM private key of --tls-cert");
  app.add_option("--tls-ca", o.tls_ca, "PEM roots the workers and the health probe trust (default: --tls-cert itself)");
  app.add_option("--max-message-mb", o.max_message_mb, "coordinator: largest request message accepted, in MiB");
  app.add_option("--max-watchers", o.max_watchers, "coordinator: WatchBatch streams open at once before a new one gets RESOURCE_EXHAUSTED");
  app.add_option("--http-request-timeout-s", o.http_request_timeout_s, "coordinator: seconds an HTTP request (OpenAI, metrics) has to arrive, headers and body, before it is cut (408)");
  app.add_option("--http-max-waiting", o.http_max_waiting, "coordinator: HTTP connections per port whose request has not all arrived; past it a new one gets 503");
  // Recovery.
  app.add_option("--max-restarts", o.max_restarts, "times a lost worker job (a rank died or stalled) is restarted before the service gives up; 0: never");
  app.add_option("--restart-backoff-s", o.restart_backoff_s, "wait before the first restart, doubled for each one after it (at most 30 s)");
  app.add_option("--coordinator-timeout-s", o.coordinator_timeout_s, "seconds the coordinator may leave health checks unanswered (busy, stopped) before the service stops with exit 1 for an outer supervisor to restart; a worker job is never restarted for it; 0: never");
  // Passed on to moe-worker when given.
  std::vector<std::string> worker_values(std::size(kWorkerOverrides));
  for (size_t i = 0; i < std::size(kWorkerOverrides); ++i)
    app.add_option(kWorkerOverrides[i][0], worker_values[i],
                   std::string("worker: ") + kWorkerOverrides[i][2])
        ->type_name(kWorkerOverrides[i][1])
        ->default_str("from --config");
  std::string worker_args;
  app.add_option("--worker-args", worker_args, "extra arguments for moe-worker, split on spaces, no quoting (default: none)");
  if (const auto code = launcher::parse_command_line(app, argc, argv)) return *code;
  // Before any thread starts (gRPC starts its own as soon as credentials are made); see
  // launcher/signal_waiter.h for why a handler is installed as well.
  const launcher::SignalWaiter sigs({SIGINT, SIGTERM, SIGCHLD});
  auto logger = spdlog::stderr_color_mt("moe-launch");
  logger->set_pattern("[%H:%M:%S.%e] [launch] [%^%l%$] %v");
  spdlog::set_default_logger(logger);
  set_log_level(o.log_level);
  if (o.np < 1) {
    spdlog::error("--np is {}, expected at least 1", o.np);
    return kExitBadInput;
  }
  if (o.startup_timeout_s <= 0) {
    spdlog::error("--startup-timeout-s is {}, expected > 0", o.startup_timeout_s);
    return kExitBadInput;
  }
  // The coordinator checks its limits too, but a refusal here comes before anything starts.
  if (o.max_queue < 1 || o.max_watchers < 1 || o.http_max_waiting < 1 ||
      !(o.http_request_timeout_s > 0) || o.rank_timeout_s <= 0 || o.drain_timeout_s < 0 ||
      o.stats_window_s <= 0 || o.batch_retention_s < 0 || o.max_finished_batches < 0) {
    spdlog::error("--max-queue, --max-watchers and --http-max-waiting must be >= 1, "
                  "--rank-timeout-s, --stats-window-s and --http-request-timeout-s > 0, "
                  "--drain-timeout-s, --batch-retention-s and --max-finished-batches >= 0");
    return kExitBadInput;
  }
  if (o.max_restarts < 0 || o.restart_backoff_s < 0 || o.recovery_wait_s < 0 ||
      o.max_losses < 0 || o.drain_grace_s < 0 || o.coordinator_timeout_s < 0) {
    spdlog::error("--max-restarts, --restart-backoff-s, --recovery-wait-s, --max-losses, "
                  "--drain-grace-s and --coordinator-timeout-s must be >= 0");
    return kExitBadInput;
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    spdlog::error("--tls-cert and --tls-key go together");
    return kExitBadInput;
  }
  if (o.tls_ca.empty()) o.tls_ca = o.tls_cert;
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!o.tls_ca.empty()) {
    std::ifstream in(o.tls_ca);
    if (!in) {
      spdlog::error("--tls-ca {}: cannot read it", o.tls_ca);
      return kExitBadInput;
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs.assign(std::istreambuf_iterator<char>(in), {});
    creds = grpc::SslCredentials(ssl);
  }
  // The secret the worker job proves itself with, handed to both children in their
  // environment (never on a command line, where `ps` shows it).
  if (const char* v = std::getenv(coordinator::kWorkerSecretEnv); !v || !*v)
    setenv(coordinator::kWorkerSecretEnv, coordinator::random_hex128().c_str(), 1);
  if (access(o.config.c_str(), R_OK) != 0) {
    spdlog::error("--config {}: cannot read it ({})", o.config, std::strerror(errno));
    return kExitBadInput;
  }

  // The serving executables are installed (and built) beside this one.
  std::error_code ec;
  const auto dir = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  if (ec) {
    spdlog::error("cannot read /proc/self/exe to find moe-coordinator and moe-worker: {}",
                  ec.message());
    return kExitFailure;
  }
  const std::string coord_path = (dir / "moe-coordinator").string();
  const std::string worker_path = (dir / "moe-worker").string();
  for (const auto& p : {coord_path, worker_path})
    if (access(p.c_str(), X_OK) != 0) {
      spdlog::error("{}: not found or not executable; moe-launch expects moe-coordinator and "
                    "moe-worker in its own folder ({})", p, dir.string());
      return kExitFailure;
    }

  // What the worker takes as --checkpoint and --max-seq-len, where given here.
  auto override_of = [&](const char* flag) {
    for (size_t i = 0; i < std::size(kWorkerOverrides); ++i)
      if (std::string(kWorkerOverrides[i][0]) == flag && app.count(flag) > 0) return worker_values[i];
    return std::string();
  };
  const int context = model_context(o.config, override_of("--checkpoint"), override_of("--max-seq-len"));
  const std::string level = o.log_level;
  auto num = [](double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  };
  Child coord = spawn("moe-coordinator",
                      {coord_path, "--listen", o.listen, "--metrics-port",
                       std::to_string(o.metrics_port), "--log-level", level, "--max-queue",
                       std::to_string(o.max_queue), "--rank-timeout-s", num(o.rank_timeout_s),
                       "--drain-timeout-s", num(o.drain_timeout_s), "--stats-window-s",
                       num(o.stats_window_s), "--batch-retention-s", num(o.batch_retention_s),
                       "--max-finished-batches", std::to_string(o.max_finished_batches),
                       "--openai-port", std::to_string(o.openai_port), "--served-model-name",
                       o.served_model_name, "--recovery-wait-s", num(o.recovery_wait_s),
                       "--max-losses", std::to_string(o.max_losses),
                       "--max-watchers", std::to_string(o.max_watchers),
                       "--http-request-timeout-s", num(o.http_request_timeout_s),
                       "--http-max-waiting", std::to_string(o.http_max_waiting),
                       "--drain-grace-s", num(o.drain_grace_s), "--max-message-mb",
                       std::to_string(o.max_message_mb), "--api-keys-file", o.api_keys_file,
                       "--tls-cert", o.tls_cert, "--tls-key", o.tls_key, "--max-context",
                       std::to_string(context)},
                      false);
  // -x: Open MPI exports the secret to ranks on other hosts too (an rsh/ssh agent passes no
  // environment of its own).
  std::vector<std::string> margs{o.mpirun, "--oversubscribe", "-x", coordinator::kWorkerSecretEnv};
  // Open MPI refuses root without it; containers often run as root.
  if (geteuid() == 0) margs.push_back("--allow-run-as-root");
  for (auto& a : split_spaces(o.mpirun_args)) margs.push_back(a);
  for (auto a : {std::string("-np"), std::to_string(o.np), worker_path, std::string("--coordinator"),
                 o.listen, std::string("--config"), o.config, std::string("--log-level"), level})
    margs.push_back(a);
  for (size_t i = 0; i < std::size(kWorkerOverrides); ++i)
    if (app.count(kWorkerOverrides[i][0]) > 0) {
      margs.push_back(kWorkerOverrides[i][0]);
      margs.push_back(worker_values[i]);
    }
  if (!o.tls_ca.empty()) {
    margs.push_back("--tls-ca");
    margs.push_back(o.tls_ca);
  }
  for (auto& a : split_spaces(worker_args)) margs.push_back(a);
  Child mpi;
  mpi.name = "mpirun (moe-worker)";
  try {
    mpi = spawn("mpirun (moe-worker)", margs, true);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    stop_all(coord, mpi, sigs, o.drain_timeout_s + o.drain_grace_s, false);
    return kExitFailure;
  }

  // Exits on its own are failures, whether before or after ready: the job is no longer whole.
  auto check_children = [&]() -> bool {
    for (Child* c : {&coord, &mpi}) {
      if (!reap(*c)) continue;
      Child* other = c == &coord ? &mpi : &coord;
      spdlog::error("{} {} on its own; stopping {}", c->name, describe_status(c->status),
                    other->name);
      stop_all(coord, mpi, sigs, o.drain_timeout_s + o.drain_grace_s);
      return false;
    }
    return true;
  };

  // ---- startup: health is SERVING once a worker job has attached --------------------
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(o.startup_timeout_s));
  std::string last = "no answer yet";
  for (;;) {
    if (!check_children()) return kExitFailure;
    const Probe p = probe(o.listen, creds);
    if (p.answer == Probe::kServing) break;
    last = p.detail;
    spdlog::debug("not ready: {}", last);
    if (Clock::now() >= deadline) {
      spdlog::error("the job did not become ready in {} s (last answer from {}: {}); stopping it",
                    o.startup_timeout_s, o.listen, last);
      stop_all(coord, mpi, sigs, o.drain_timeout_s + o.drain_grace_s, false);
      return kExitFailure;
    }
    const int s = sigs.wait(kPollInterval);
    if (s == SIGINT || s == SIGTERM) {
      spdlog::info("{} during start-up: stopping", strsignal(s));
      stop_all(coord, mpi, sigs, o.drain_timeout_s + o.drain_grace_s, false);
      return kExitOk;
    }
  }
  std::printf("ready: %s\n", o.listen.c_str());
  std::fflush(stdout);

  // ---- serving: wait for a signal, a child leaving, or a stalled job ------------------------
  // A lost worker job (mpirun ended, or the coordinator declared it dead and it still runs) is
  // restarted, up to --max-restarts times with a doubling backoff; the coordinator keeps its
  // unfinished sequences meanwhile and hands them to the new job. The coordinator leaving is
  // not recoverable: it holds the requests.
  int restarts = 0;
  bool job_served = true;  // the current job has been SERVING since it started
  auto job_started = Clock::now();
  // When the current job, having served, was first seen NOT_SERVING (max: it serves).
  Clock::time_point not_serving_since = Clock::time_point::max();
  // Since when health checks have gone unanswered (max: the coordinator answers).
  Clock::time_point coord_silent_since = Clock::time_point::max();
  bool silence_warned = false;
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  const auto startup_limit = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(o.startup_timeout_s));
  for (;;) {
    const int s = sigs.wait(std::chrono::milliseconds(500));
    if (s == SIGINT || s == SIGTERM) {
      spdlog::info("{}: stopping the job", strsignal(s));
      stop_all(coord, mpi, sigs, o.drain_timeout_s + o.drain_grace_s);
      for (const Child* c : {&coord, &mpi})
        spdlog::info("{} {}", c->name, describe_status(c->status));
      return kExitOk;
    }
    if (reap(coord)) {
      spdlog::error("{} {} on its own; stopping {}", coord.name, describe_status(coord.status),
                    mpi.name);
      stop_all(coord, mpi, sigs, o.drain_timeout_s + o.drain_grace_s);
      return kExitFailure;
    }
    std::string lost;
    if (reap(mpi)) {
      lost = mpi.name + " " + describe_status(mpi.status);
    } else {
      // The job is judged by the coordinator's word on it (it drops a job whose step reports
      // stop) or by mpirun leaving; a coordinator that does not answer (busy tokenizing, stopped,
      // starved) is not a lost job. Its own silence has a bound of its own.
      const Probe p = probe(o.listen, creds);
      if (p.answer == Probe::kNoAnswer) {
        if (coord_silent_since == Clock::time_point::max()) coord_silent_since = Clock::now();
        const double silent = seconds_since(coord_silent_since);
        if (silent >= kSilenceWarnS && !silence_warned) {
          spdlog::warn("the coordinator has not answered a health check for {:.0f} s ({}); the "
                       "worker job is not judged by that (--coordinator-timeout-s {})",
                       silent, p.detail, o.coordinator_timeout_s);
          silence_warned = true;
        }
        if (o.coordinator_timeout_s > 0 && silent > o.coordinator_timeout_s) {
          spdlog::error("the coordinator has not answered a health check for {:.0f} s "
                        "(--coordinator-timeout-s {}; last: {}): stopping the service; requests "
                        "still in flight fail", silent, o.coordinator_timeout_s, p.detail);
          signal_group(coord, SIGKILL);  // a stopped process takes SIGKILL only
          stop_all(coord, mpi, sigs, o.drain_timeout_s + o.drain_grace_s);
          return kExitFailure;
        }
        continue;
      }
      if (silence_warned)
        spdlog::info("the coordinator answers again after {:.1f} s",
                     seconds_since(coord_silent_since));
      coord_silent_since = Clock::time_point::max();
      silence_warned = false;
      if (p.answer == Probe::kServing) {
        job_served = true;
        not_serving_since = Clock::time_point::max();
      } else if (!job_served) {
        if (Clock::now() - job_started > startup_limit)
          lost = "the restarted worker job did not attach within --startup-timeout-s";
      } else if (not_serving_since == Clock::time_point::max()) {
        not_serving_since = Clock::now();
      } else if (Clock::now() - not_serving_since > kStallGrace) {
        lost = "the coordinator dropped the worker job (no step report within "
               "--rank-timeout-s: a rank died or stalled)";
      }
      if (!lost.empty()) {
        // Stopped (SIGSTOP) processes take SIGKILL only.
        spdlog::error("{}: killing {}", lost, mpi.name);
        signal_group(mpi, SIGKILL);
        reap(mpi, true);
      }
    }
    if (lost.empty()) continue;
    if (restarts >= o.max_restarts) {
      spdlog::error("the worker job is lost ({}) and was restarted {} times already "
                    "(--max-restarts {}): giving up; requests still in flight fail",
                    lost, restarts, o.max_restarts);
      stop_all(coord, mpi, sigs, o.drain_timeout_s + o.drain_grace_s);
      return kExitFailure;
    }
    const double backoff = std::min(kMaxBackoffS, o.restart_backoff_s * double(1 << std::min(restarts, 16)));
    ++restarts;
    spdlog::warn("the worker job is lost ({}); restart {} of {} in {} s", lost, restarts,
                 o.max_restarts, backoff);
    const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(backoff));
    while (Clock::now() < until) {
      const int s2 = sigs.wait(std::chrono::milliseconds(100));
      if (s2 == SIGINT || s2 == SIGTERM) {
        spdlog::info("{} while restarting: stopping", strsignal(s2));
        stop_all(coord, mpi, sigs, o.drain_timeout_s + o.drain_grace_s);
        return kExitOk;
      }
    }
    try {
      mpi = spawn("mpirun (moe-worker)", margs, true);
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
      stop_all(coord, mpi, sigs, o.drain_timeout_s + o.drain_grace_s);
      return kExitFailure;
    }
    job_served = false;
    job_started = Clock::now();
    not_serving_since = Clock::time_point::max();
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    spdlog::error("fatal: {}", e.what());
    return kExitFailure;
  }
}
