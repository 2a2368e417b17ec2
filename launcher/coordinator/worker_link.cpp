#include "launcher/coordinator/worker_link.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "launcher/coordinator/auth.h"

namespace moe::coordinator {

namespace {

// The outgoing side of one attached stream: push() queues and returns at once; the writer
// thread writes in order, and on a failed write closes the queue and cancels the call (the
// reader then sees the stream end, and the job is detached).
class Outbox {
 public:
  Outbox(grpc::ServerReaderWriter<moe::v1::CoordinatorMessage, moe::v1::WorkerMessage>* stream,
         grpc::ServerContext* ctx)
      : stream_(stream), ctx_(ctx), writer_([this] { run(); }) {}
  ~Outbox() {
    close();
    writer_.join();
  }
  bool push(const moe::v1::CoordinatorMessage& m) {
    std::lock_guard lk(mu_);
    if (closed_) return false;
    queue_.push_back(m);
    cv_.notify_all();
    return true;
  }
  void close() {
    std::lock_guard lk(mu_);
    closed_ = true;
    cv_.notify_all();
  }

 private:
  void run() {
    std::unique_lock lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return closed_ || !queue_.empty(); });
      if (queue_.empty()) return;  // closed, and everything queued is written
      moe::v1::CoordinatorMessage m = std::move(queue_.front());
      queue_.pop_front();
      lk.unlock();
      const bool ok = stream_->Write(m);
      lk.lock();
      if (!ok) {
        closed_ = true;
        queue_.clear();
        ctx_->TryCancel();
        return;
      }
    }
  }
  grpc::ServerReaderWriter<moe::v1::CoordinatorMessage, moe::v1::WorkerMessage>* stream_;
  grpc::ServerContext* ctx_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<moe::v1::CoordinatorMessage> queue_;
  bool closed_ = false;
  std::thread writer_;  // last: starts once the rest is built
};

}  // namespace

grpc::Status WorkerLinkService::Attach(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<moe::v1::CoordinatorMessage, moe::v1::WorkerMessage>* stream) {
  const auto& md = ctx->client_metadata();
  auto it = md.find(kWorkerSecretHeader);
  if (it == md.end() ||
      !same_secret(std::string(it->second.data(), it->second.size()), secret_)) {
    spdlog::warn("refused a worker attach from {}: {}", ctx->peer(),
                 it == md.end() ? "no worker secret" : "wrong worker secret");
    return {grpc::StatusCode::UNAUTHENTICATED,
            "the worker secret is missing or wrong: moe-worker must be given the coordinator's "
            "(MOE_WORKER_SECRET or --worker-secret-file; moe-launch does this itself)"};
  }
  moe::v1::WorkerMessage msg;
  if (!stream->Read(&msg) || msg.kind_case() != moe::v1::WorkerMessage::kHello)
    return {grpc::StatusCode::INVALID_ARGUMENT, "expected a hello as the first message"};
  Outbox out(stream, ctx);
  moe::v1::CoordinatorMessage accepted;
  accepted.set_attached(true);
  // Queued under the state's lock, before any work the attach re-submits.
  if (auto st = s_.attach(
          msg.hello(), [&out](const moe::v1::CoordinatorMessage& m) { return out.push(m); },
          [ctx] { ctx->TryCancel(); }, [&] { out.push(accepted); });
      !st.ok()) {
    spdlog::warn("refused a worker job from {}: {}", ctx->peer(), st.error_message());
    return st;
  }
  on_change_(true);
  std::string why = "the worker job closed its link";
  while (stream->Read(&msg)) {
    if (msg.kind_case() == moe::v1::WorkerMessage::kStep) {
      s_.on_step(msg.step());
    } else if (msg.kind_case() == moe::v1::WorkerMessage::kError) {
      why = "the worker job failed: " + msg.error();
      break;
    }
  }
  if (ctx->IsCancelled() && why == "the worker job closed its link")
    why = "the worker job's link was cut";
  s_.detach(why);  // no sink call can reach `out` after this
  on_change_(false);
  return grpc::Status::OK;
}

}  // namespace moe::coordinator
