#include "launcher/coordinator/worker_link.h"

#include <deque>
#include <mutex>

#include "common/log.h"
#include "launcher/coordinator/auth.h"

namespace moe::coordinator {

namespace {

using Reactor = grpc::ServerBidiReactor<moe::v1::WorkerMessage, moe::v1::CoordinatorMessage>;

class Refusal final : public Reactor {
 public:
  explicit Refusal(const grpc::Status& st) { Finish(st); }
  void OnDone() override { delete this; }
};

// One attached job's stream. First the hello (State::attach), then step reports until the
// stream ends. The State sends through push() (under its lock, while attached); detach() comes
// before Finish, so no push can reach a finished link.
class Link final : public Reactor {
 public:
  Link(grpc::CallbackServerContext* ctx, State& s, std::function<void(bool)> on_change)
      : ctx_(ctx), s_(s), on_change_(std::move(on_change)) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!attached_) return on_hello(ok);
    if (!ok) return end(ctx_->IsCancelled() ? "the worker job's link was cut"
                                            : "the worker job closed its link");
    if (in_.kind_case() == moe::v1::WorkerMessage::kError)
      return end("the worker job failed: " + in_.error());
    if (in_.kind_case() == moe::v1::WorkerMessage::kStep) s_.on_step(in_.step());
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    const moe::v1::CoordinatorMessage* next = nullptr;
    bool finish = false;
    {
      std::lock_guard lk(mu_);
      out_.pop_front();
      if (!ok && !closed_) {  // the job's side is gone: the read fails next, which ends the call
        closed_ = true;
        ctx_->TryCancel();
      }
      if (closed_) {
        out_.clear();
        finish = ended_;  // end() left the Finish to this, the last write's completion
      } else if (!out_.empty()) {
        next = &out_.front();
      }
    }
    // Started outside the lock: a reaction may run inline in the thread that starts an operation.
    if (next) StartWrite(next);
    if (finish) Finish(grpc::Status::OK);
  }

  void OnDone() override { delete this; }

 private:
  void on_hello(bool ok) {
    if (!ok || in_.kind_case() != moe::v1::WorkerMessage::kHello)
      return Finish({grpc::StatusCode::INVALID_ARGUMENT, "expected a hello as the first message"});
    moe::v1::CoordinatorMessage accepted;
    accepted.set_attached(true);
    // Queued under the state's lock, before any work the attach re-submits.
    const grpc::Status st = s_.attach(
        in_.hello(), [this](const moe::v1::CoordinatorMessage& m) { return push(m); },
        [ctx = ctx_] { ctx->TryCancel(); }, [&] { push(accepted); });
    if (!st.ok()) {
      spdlog::warn("refused a worker job from {}: {}", ctx_->peer(), st.error_message());
      return Finish(st);
    }
    attached_ = true;
    on_change_(true);
    StartRead(&in_);
  }

  // Called under the State's lock while attached, which end() waits for before finishing.
  bool push(const moe::v1::CoordinatorMessage& m) {
    const moe::v1::CoordinatorMessage* start = nullptr;
    {
      std::lock_guard lk(mu_);
      if (closed_) return false;
      out_.push_back(m);
      if (out_.size() == 1) start = &out_.front();  // else the write in flight's completion does
    }
    if (start) StartWrite(start);
    return true;
  }

  // From the reading reaction: the stream ended or the job failed.
  void end(const std::string& why) {
    bool idle = false;
    {
      std::lock_guard lk(mu_);
      closed_ = ended_ = true;
      idle = out_.empty();  // else the write in flight finishes the call when it completes
    }
    s_.detach(why);  // no push can reach this link after it
    on_change_(false);
    if (idle) Finish(grpc::Status::OK);
  }

  grpc::CallbackServerContext* ctx_;
  State& s_;
  std::function<void(bool)> on_change_;
  moe::v1::WorkerMessage in_;
  bool attached_ = false;  // the hello was taken (only the reading reactions touch it)
  std::mutex mu_;
  std::deque<moe::v1::CoordinatorMessage> out_;  // front: being written
  bool closed_ = false;  // nothing more is queued (the call ends, or a write failed)
  bool ended_ = false;   // end() ran: the call is finished once no write is in flight
};

}  // namespace

grpc::ServerBidiReactor<moe::v1::WorkerMessage, moe::v1::CoordinatorMessage>*
WorkerLinkService::Attach(grpc::CallbackServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find(kWorkerSecretHeader);
  if (it == md.end() ||
      !same_secret(std::string(it->second.data(), it->second.size()), secret_)) {
    spdlog::warn("refused a worker attach from {}: {}", ctx->peer(),
                 it == md.end() ? "no worker secret" : "wrong worker secret");
    return new Refusal(
        {grpc::StatusCode::UNAUTHENTICATED,
         "the worker secret is missing or wrong: moe-worker must be given the coordinator's "
         "(MOE_WORKER_SECRET or --worker-secret-file; moe-launch does this itself)"});
  }
  return new Link(ctx, s_, on_change_);
}

}  // namespace moe::coordinator
