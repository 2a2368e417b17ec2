// moe-worker: the rank main of a serving job, under mpirun. Every rank loads its share of the
// model; rank 0 attaches to the coordinator (moe.v1.WorkerLink) and relays between it and the
// other ranks, which run the lockstep worker loop (runtime/worker_loop).
#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <thread>

#include "comm/mpi_context.h"
#include "common/error.h"
#include "launcher/sampling_proto.h"
#include "launcher/step_merge.h"
#include "common/log.h"
#include "launcher/cli_parse.h"
#include "launcher/coordinator/auth.h"
#include "launcher/rank_main.h"
#include "launcher/run_options.h"
#include "launcher/sched_policy.h"
#include "moe/v1/worker.grpc.pb.h"
#include "runtime/routing_trace.h"
#include "runtime/worker_loop.h"

namespace {

using namespace moe;

moe::v1::Finish finish_to_proto(runtime::FinishReason f) {
  switch (f) {
    case runtime::FinishReason::kLength: return moe::v1::FINISH_LENGTH;
    case runtime::FinishReason::kEos: return moe::v1::FINISH_EOS;
    case runtime::FinishReason::kContext: return moe::v1::FINISH_CONTEXT;
    case runtime::FinishReason::kCancelled: return moe::v1::FINISH_CANCELLED;
    case runtime::FinishReason::kStop: return moe::v1::FINISH_STOP;
  }
  return moe::v1::FINISH_NONE;
}

// A step report as the link carries it.
moe::v1::WorkerMessage step_message(const runtime::StepReport& r) {
  moe::v1::WorkerMessage m;
  auto* s = m.mutable_step();
  s->set_step(r.step);
  s->set_step_seconds(r.step_s);
  s->set_compute_seconds(r.compute_s);
  s->set_exchange_seconds(r.exchange_s);
  s->set_schedule_seconds(r.schedule_s);
  s->set_control_seconds(r.control_s);
  *s->mutable_tokens_per_expert() = {r.delta.tokens.begin(), r.delta.tokens.end()};
  *s->mutable_rows_computed() = {r.delta.rows_computed.begin(), r.delta.rows_computed.end()};
  *s->mutable_rows_sent() = {r.delta.rows.begin(), r.delta.rows.end()};
  s->set_rebalances(r.rebalance.rebalances);
  s->set_rebalance_weights_moved(r.rebalance.weights_moved);
  s->set_rebalance_bytes_moved(r.rebalance.bytes_moved);
  s->set_rebalance_seconds(r.rebalance.seconds);
  s->set_last_rebalance_seconds(r.rebalance.last_seconds);
  *s->mutable_expert_rank() = {r.expert_rank.begin(), r.expert_rank.end()};
  for (const auto& t : r.tokens) {
    auto* e = s->add_tokens();
    e->set_seq_id(t.id);
    e->set_token_id(t.token);
    if (!t.error.empty()) {
      e->set_finish(moe::v1::FINISH_ERROR);
      e->set_error(t.error);
    } else if (t.finish) {
      e->set_finish(finish_to_proto(*t.finish));
    }
    if (t.logprob) {
      e->set_logprob(t.logprob->logprob);
      launcher::top_logprobs_to_proto(t.logprob->top, e->mutable_top_logprobs());
    }
  }
  return m;
}

// Rank 0's side of the link: a reader thread queues what the coordinator sends; the worker
// loop drains the queue once per step and hands each step's report to a writer thread, which
// makes the message and writes it, so neither the message's making nor a slow network write
// holds up the ranks' next step (a gRPC stream takes one write at a time: every write goes
// through that thread, in order).
class GrpcController final : public runtime::Controller {
 public:
  GrpcController(const std::string& address, std::shared_ptr<grpc::ChannelCredentials> creds,
                 const std::string& secret, const runtime::RankRuntime& rt, int world,
                 const std::string& tokenizer_model) {
    // Any size the coordinator sends: it bounds every request at admission (a work message is a
    // sequence's ids and its bounded stops) and is the one peer, known by the secret. gRPC's
    // default 4 MiB receive limit broke the link on a work message the coordinator had admitted.
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    channel_ = grpc::CreateCustomChannel(address, creds, args);
    if (!channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30)))
      throw InputError("cannot reach the coordinator at " + address + " within 30 s");
    stub_ = moe::v1::WorkerLink::NewStub(channel_);
    ctx_.AddMetadata(coordinator::kWorkerSecretHeader, secret);
    stream_ = stub_->Attach(&ctx_);
    moe::v1::WorkerMessage hello;
    auto* h = hello.mutable_hello();
    const auto& cfg = rt.model_config();
    h->set_world_size(world);
    h->set_vocab_size(cfg.vocab_size);
    h->set_max_context(rt.max_context());
    h->set_experts(cfg.num_local_experts);
    h->set_layers(cfg.num_hidden_layers);
    h->set_tokenizer_model(tokenizer_model);
    for (int l = 0; l < cfg.num_hidden_layers; ++l)
      for (int e = 0; e < cfg.num_local_experts; ++e)
        h->add_expert_rank(rt.placement().ranks_of(l, e).front());
    h->set_row_bytes(int64_t(rt.model().row_layout().stride()));
    h->set_back_row_bytes(int64_t(cfg.hidden_size) * int64_t(dtype_size(rt.model().row_layout().dtype)));
    // The coordinator answers with `attached` (or work re-submitted after it), or ends the stream
    // with why it refused this job.
    moe::v1::CoordinatorMessage first;
    if (!stream_->Write(hello) || !stream_->Read(&first)) {
      stream_->WritesDone();
      const grpc::Status st = stream_->Finish();
      throw InputError("the coordinator at " + address + " refused this worker job: " +
                       (st.ok() ? std::string("it closed the link") : st.error_message()));
    }
    if (first.kind_case() != moe::v1::CoordinatorMessage::kAttached) queue_.push_back(first);
    reader_ = std::thread([this] { read_loop(); });
    writer_ = std::thread([this] { write_loop(); });
  }

  ~GrpcController() override {
    flush(std::chrono::seconds(5));  // what the loop published still reaches the coordinator
    {
      std::lock_guard lk(out_mu_);
      stop_writer_ = true;
      out_cv_.notify_all();
    }
    if (writer_.joinable()) writer_.join();
    bool peer_closed = false;
    {
      std::lock_guard lk(mu_);
      peer_closed = closed_;
    }
    if (peer_closed) {
      // The coordinator ended the link (or it broke): say why, where the job's exit alone
      // would not (all reads and writes are over, so the stream may be finished).
      if (reader_.joinable()) reader_.join();
      const grpc::Status st = stream_->Finish();
      if (st.ok())
        spdlog::info("worker link: the coordinator closed the link");
      else
        spdlog::error("worker link: lost ({}: {})", int(st.error_code()), st.error_message());
      return;
    }
    ctx_.TryCancel();
    if (reader_.joinable()) reader_.join();
  }

  runtime::Control poll(int wait_ms) override {
    std::unique_lock lk(mu_);
    if (queue_.empty() && wait_ms > 0)
      cv_.wait_for(lk, std::chrono::milliseconds(wait_ms), [&] { return !queue_.empty(); });
    runtime::Control c;
    for (; !queue_.empty(); queue_.pop_front()) {
      const auto& m = queue_.front();
      switch (m.kind_case()) {
        case moe::v1::CoordinatorMessage::kWork: {
          runtime::WorkAssignment a;
          a.request.id = m.work().seq_id();
          a.request.prompt.assign(m.work().prompt_ids().begin(), m.work().prompt_ids().end());
          a.request.resumed.assign(m.work().resumed_ids().begin(), m.work().resumed_ids().end());
          a.request.max_new_tokens = m.work().max_new_tokens();
          a.request.ignore_eos = m.work().ignore_eos();
          a.request.priority = m.work().priority();
          a.request.sampling = launcher::sampling_from_proto(m.work().sampling());
          a.rank = m.work().rank();
          c.work.push_back(std::move(a));
          break;
        }
        case moe::v1::CoordinatorMessage::kCancel:
          c.cancels.push_back(m.cancel().seq_id());
          break;
        case moe::v1::CoordinatorMessage::kShutdown:
          c.shutdown = true;
          break;
        case moe::v1::CoordinatorMessage::kAttached:
          break;
        default:
          break;
      }
    }
    if (closed_) c.shutdown = true;
    return c;
  }

  // Queued as it is: the writer thread makes the message, off the step loop's path.
  void publish(runtime::StepReport&& r) override {
    std::lock_guard lk(out_mu_);
    out_.push_back({std::move(r), {}});
    out_cv_.notify_all();
  }

  // Waits (up to `limit`) until the writer has sent it: the job is about to end.
  void report_error(const std::string& what) {
    moe::v1::WorkerMessage m;
    m.set_error(what);
    send(std::move(m));
    flush(std::chrono::seconds(5));
  }

 private:
  void send(moe::v1::WorkerMessage m) {
    std::lock_guard lk(out_mu_);
    out_.push_back({std::nullopt, std::move(m)});
    out_cv_.notify_all();
  }

  void flush(std::chrono::seconds limit) {
    std::unique_lock lk(out_mu_);
    out_cv_.wait_for(lk, limit, [&] { return out_.empty() && !writing_; });
  }

  void write_loop() {
    std::unique_lock lk(out_mu_);
    for (;;) {
      out_cv_.wait(lk, [&] { return !out_.empty() || stop_writer_; });
      if (out_.empty()) return;
      // Reports that queued while the last write went out leave as one (step_merge.h).
      std::vector<Outgoing> next;
      do {
        next.push_back(std::move(out_.front()));
        out_.pop_front();
      } while (next.front().report && !out_.empty() && out_.front().report);
      writing_ = true;
      lk.unlock();
      moe::v1::WorkerMessage m;
      if (next.front().report) {
        m = step_message(*next.front().report);
        for (size_t i = 1; i < next.size(); ++i)
          launcher::merge_step(m.mutable_step(),
                               std::move(*step_message(*next[i].report).mutable_step()));
      } else {
        m = std::move(next.front().message);
      }
      const bool ok = stream_->Write(m);
      lk.lock();
      writing_ = false;
      out_cv_.notify_all();
      if (!ok) spdlog::warn("the coordinator link is closed; dropping a message to it");
    }
  }

  void read_loop() {
    moe::v1::CoordinatorMessage m;
    while (stream_->Read(&m)) {
      std::lock_guard lk(mu_);
      queue_.push_back(m);
      cv_.notify_all();
    }
    // The coordinator went away: nothing left to serve.
    std::lock_guard lk(mu_);
    closed_ = true;
    cv_.notify_all();
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<moe::v1::WorkerLink::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<moe::v1::WorkerMessage, moe::v1::CoordinatorMessage>>
      stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<moe::v1::CoordinatorMessage> queue_;
  bool closed_ = false;
  // The writer's queue.
  std::thread writer_;
  std::mutex out_mu_;
  std::condition_variable out_cv_;
  struct Outgoing {
    std::optional<runtime::StepReport> report;  // a step report, made a message by the writer
    moe::v1::WorkerMessage message;             // or any other message
  };
  std::deque<Outgoing> out_;
  bool writing_ = false, stop_writer_ = false;
};

int run(int argc, char** argv, comm::MpiContext& mpi) {
  auto comm = mpi.make_communicator();
  const int rank = comm->rank(), world = comm->size();
  set_log_rank(rank, world);
  std::string coordinator = "127.0.0.1:50051", log_level = "info";
  std::string secret_file, tls_ca;
  launcher::RunOptions ro;
  CLI::App app{"moe-worker: one rank of a serving job (run under mpirun -np N); rank 0 attaches "
               "to moe-coordinator."};
  app.option_defaults()->always_capture_default();
  app.add_option("--coordinator", coordinator, "address of moe-coordinator");
  app.add_option("--worker-secret-file", secret_file, "file whose first line is the coordinator's worker secret (default: the MOE_WORKER_SECRET environment variable)");
  app.add_option("--tls-ca", tls_ca, "PEM root certificates: reach the coordinator over TLS (default: plain text)");
  launcher::add_run_options(app, ro);
  std::string trace_path, cpu_sched = "auto";
  app.add_option("--cpu-sched", cpu_sched, "scheduling policy of the rank's threads: batch (they take the cores' spare time but do not preempt the coordinator's and clients' threads when they wake: faster serving where they share a host), normal, or auto (batch on the cpu backend, normal on cuda)")
      ->check(CLI::IsMember({"auto", "batch", "normal"}));
  app.add_option("--trace", trace_path, "write the routing trace here when the job ends (runtime/routing_trace.h; held in memory until then) (default: not written)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  if (const auto code = launcher::parse_command_line(app, argc, argv, rank == 0)) return *code;
  set_log_level(log_level);

  // Set-up errors are agreed by all ranks, so a bad config ends the job cleanly.
  std::unique_ptr<runtime::RankRuntime> rt;
  std::unique_ptr<GrpcController> link;
  std::string error;
  runtime::RunConfig run;
  try {
    run = launcher::resolve_run_config(app, ro);
    // Before the runtime and the link start their threads, which inherit it.
    const launcher::SchedPolicy policy = launcher::parse_sched_policy(cpu_sched, run.backend);
    launcher::set_process_sched_policy(policy);
    if (rank == 0 && cpu_sched == "auto" && policy == launcher::SchedPolicy::kBatch)
      spdlog::info("ranks run as SCHED_BATCH (--cpu-sched auto on the cpu backend)");
    rt = std::make_unique<runtime::RankRuntime>(
        run, *comm, runtime::LocalRank{mpi.local_rank(), mpi.local_size()});
  } catch (const std::exception& e) {
    error = e.what();
  }
  int64_t failed = error.empty() ? 0 : 1;
  comm->all_reduce(&failed, 1, comm::Communicator::Op::kMax);
  if (!failed && rank == 0) {
    try {
      // The coordinator tokenizes with the very model the checkpoint ships, where it has one.
      std::string tokenizer;
      const std::string tok_path = run.checkpoint + "/tokenizer.model";
      if (std::ifstream in{tok_path, std::ios::binary}) {
        tokenizer.assign(std::istreambuf_iterator<char>(in), {});
        spdlog::info("tokenizer: {} ({} bytes) sent to the coordinator", tok_path, tokenizer.size());
      }
      const auto secret = coordinator::read_secret(secret_file, coordinator::kWorkerSecretEnv);
      if (!secret)
        throw InputError("no worker secret: set MOE_WORKER_SECRET or give --worker-secret-file "
                         "(the coordinator's; moe-launch passes it itself)");
      std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
      if (!tls_ca.empty()) {
        std::ifstream in(tls_ca);
        if (!in) throw InputError("--tls-ca " + tls_ca + ": cannot read it");
        grpc::SslCredentialsOptions ssl;
        ssl.pem_root_certs.assign(std::istreambuf_iterator<char>(in), {});
        creds = grpc::SslCredentials(ssl);
      }
      link = std::make_unique<GrpcController>(coordinator, creds, *secret, *rt, world, tokenizer);
    } catch (const std::exception& e) {
      error = e.what();
      failed = 1;
    }
  }
  comm->broadcast(&failed, sizeof failed, 0);
  if (failed) {
    if (!error.empty()) spdlog::error("{}", error);
    return 2;
  }
  spdlog::info("serving: attached to {} with {} rank(s)", coordinator, world);
  runtime::WorkerLoop loop(*rt, *comm, link.get());
  runtime::RoutingTraceRecorder trace(rank);
  if (!trace_path.empty()) rt->model().set_routing_trace(&trace);
  try {
    loop.run();
    if (!trace_path.empty())
      trace.write(*comm, trace_path,
                  runtime::trace_header(rt->model_config(), rt->model().row_layout(),
                                        rt->placement()));
  } catch (const std::exception& e) {
    spdlog::error("fatal: {}", e.what());
    if (link) link->report_error(std::string("rank 0: ") + e.what());
    throw;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return moe::launcher::rank_main(argc, argv, run); }
