#include "launcher/coordinator/services.h"

#include "launcher/coordinator/generate_stream.h"

#include <algorithm>
#include <mutex>

#include "common/log.h"

namespace moe::coordinator {

namespace {
Clock::time_point in(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
}
}  // namespace

grpc::ServerWriteReactor<moe::v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* ctx, const moe::v1::GenerateRequest* req) {
  std::string owner;
  if (auto st = auth_.check(*ctx, &owner); !st.ok()) return GenerateStream::refuse(st);
  moe::v1::BatchItem item;
  *item.mutable_prompt_ids() = req->prompt_ids();
  item.set_prompt_text(req->prompt_text());
  item.set_max_new_tokens(req->max_new_tokens());
  *item.mutable_sampling() = req->sampling();
  item.set_priority(req->priority());
  std::vector<int64_t> ids;
  if (auto st = s_.admit({item}, "", req->ignore_eos(), &ids); !st.ok())
    return GenerateStream::refuse(st);
  return GenerateStream::start(s_, ids[0], *req);
}

grpc::Status InferenceService::SubmitBatch(grpc::ServerContext* ctx,
                                           const moe::v1::SubmitBatchRequest* req,
                                           moe::v1::SubmitBatchResponse* out) {
  std::string owner, id;
  if (auto st = auth_.check(*ctx, &owner); !st.ok()) return st;
  if (auto st = s_.submit_batch(*req, owner, &id); !st.ok()) return st;
  out->set_batch_id(id);
  spdlog::info("{}: {} prompts admitted", id, req->items_size());
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetBatch(grpc::ServerContext* ctx,
                                        const moe::v1::GetBatchRequest* req,
                                        moe::v1::BatchStatus* out) {
  std::string owner;
  if (auto st = auth_.check(*ctx, &owner); !st.ok()) return st;
  return s_.batch_status(req->batch_id(), owner, true, out);
}

grpc::Status InferenceService::WatchBatch(grpc::ServerContext* ctx,
                                          const moe::v1::GetBatchRequest* req,
                                          grpc::ServerWriter<moe::v1::BatchStatus>* out) {
  std::string owner;
  if (auto st = auth_.check(*ctx, &owner); !st.ok()) return st;
  // Each watch holds a server thread while it lasts: bounded, the excess refused at once.
  struct Slot {
    std::atomic<int>& n;
    ~Slot() { --n; }
  } slot{watching_};
  if (const int open = watching_++; open >= max_watchers_)
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            std::to_string(open) + " batches are being watched already (--max-watchers " +
                std::to_string(max_watchers_) + "): retry later, or poll GetBatch"};
  for (;;) {
    moe::v1::BatchStatus st;
    if (auto s = s_.batch_status(req->batch_id(), owner, false, &st); !s.ok()) return s;
    if (!out->Write(st) || ctx->IsCancelled()) return grpc::Status::OK;
    if (st.state() != moe::v1::BATCH_STATE_RUNNING) return grpc::Status::OK;
    s_.wait_change(in(0.25));
  }
}

grpc::Status InferenceService::GetLoadStats(grpc::ServerContext* ctx,
                                            const moe::v1::LoadStatsRequest* req,
                                            moe::v1::LoadStatsResponse* out) {
  std::string owner;
  if (auto st = auth_.check(*ctx, &owner); !st.ok()) return st;
  // After the job is lost the statistics gathered so far still answer (worker_attached says
  // it is gone, and the health service NOT_SERVING): they are what one reads to see why.
  if (!s_.load_stats(req->recent_window(), out))
    return {grpc::StatusCode::UNAVAILABLE,
            "no worker job has attached yet: no statistics (start mpirun -np N moe-worker "
            "--coordinator ...)"};
  return grpc::Status::OK;
}

}  // namespace moe::coordinator
