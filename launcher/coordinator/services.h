#pragma once
// The public Inference service of moe-coordinator over its State (the worker job's link is in
// worker_link.h). Handlers never throw: every outcome is a grpc::Status with a message. Where
// API keys are on, every call needs one, and a batch answers only to the key that made it.
#include <atomic>

#include "launcher/coordinator/auth.h"
#include "launcher/coordinator/state.h"
#include "moe/v1/inference.grpc.pb.h"

namespace moe::coordinator {

// Generate streams through gRPC's callback API (generate_stream.h); the other calls are
// synchronous.
class InferenceService final
    : public moe::v1::Inference::WithCallbackMethod_Generate<moe::v1::Inference::Service> {
 public:
  // `max_watchers`: WatchBatch streams open at once (each holds a server thread while it
  // lasts); past it a new one gets RESOURCE_EXHAUSTED.
  InferenceService(State& s, const ClientAuth& auth, int max_watchers)
      : s_(s), auth_(auth), max_watchers_(max_watchers) {}
  grpc::ServerWriteReactor<moe::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const moe::v1::GenerateRequest* req) override;
  grpc::Status SubmitBatch(grpc::ServerContext* ctx, const moe::v1::SubmitBatchRequest* req,
                           moe::v1::SubmitBatchResponse* out) override;
  grpc::Status GetBatch(grpc::ServerContext* ctx, const moe::v1::GetBatchRequest* req,
                        moe::v1::BatchStatus* out) override;
  grpc::Status WatchBatch(grpc::ServerContext* ctx, const moe::v1::GetBatchRequest* req,
                          grpc::ServerWriter<moe::v1::BatchStatus>* out) override;
  grpc::Status GetLoadStats(grpc::ServerContext* ctx, const moe::v1::LoadStatsRequest* req,
                            moe::v1::LoadStatsResponse* out) override;

 private:
  State& s_;
  const ClientAuth& auth_;
  const int max_watchers_;
  std::atomic<int> watching_{0};
};


}  // namespace moe::coordinator
