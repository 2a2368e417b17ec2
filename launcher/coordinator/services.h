#pragma once
// The gRPC services of moe-coordinator over its State: the public Inference service and the
// WorkerLink the worker job attaches through. Handlers never throw: every outcome is a
// grpc::Status with a message.
#include "launcher/coordinator/state.h"
#include "moe/v1/inference.grpc.pb.h"
#include "moe/v1/worker.grpc.pb.h"

namespace moe::coordinator {

class InferenceService final : public moe::v1::Inference::Service {
 public:
  explicit InferenceService(State& s) : s_(s) {}
  grpc::Status Generate(grpc::ServerContext* ctx, const moe::v1::GenerateRequest* req,
                        grpc::ServerWriter<moe::v1::GenerateResponse>* out) override;
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
};

class WorkerLinkService final : public moe::v1::WorkerLink::Service {
 public:
  // on_change(attached) lets the owner flip the health status.
  WorkerLinkService(State& s, std::function<void(bool)> on_change)
      : s_(s), on_change_(std::move(on_change)) {}
  grpc::Status Attach(grpc::ServerContext* ctx,
                      grpc::ServerReaderWriter<moe::v1::CoordinatorMessage,
                                               moe::v1::WorkerMessage>* stream) override;

 private:
  State& s_;
  std::function<void(bool)> on_change_;
};

}  // namespace moe::coordinator
