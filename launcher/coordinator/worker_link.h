#pragma once
// The WorkerLink service: rank 0 of the worker job attaches through one long-lived stream,
// proving itself with the shared secret. Messages to the job are queued and written by a
// writer thread of the link's own, so neither the state's lock nor a client's handler ever
// waits on the network (a stalled rank 0 stops only this thread).
#include <functional>
#include <string>

#include "launcher/coordinator/state.h"
#include "moe/v1/worker.grpc.pb.h"

namespace moe::coordinator {

class WorkerLinkService final : public moe::v1::WorkerLink::Service {
 public:
  // on_change(attached) lets the owner flip the health status. `secret`: what the job must
  // send in the x-moe-worker-secret metadata.
  WorkerLinkService(State& s, std::string secret, std::function<void(bool)> on_change)
      : s_(s), secret_(std::move(secret)), on_change_(std::move(on_change)) {}
  grpc::Status Attach(grpc::ServerContext* ctx,
                      grpc::ServerReaderWriter<moe::v1::CoordinatorMessage,
                                               moe::v1::WorkerMessage>* stream) override;

 private:
  State& s_;
  const std::string secret_;
  std::function<void(bool)> on_change_;
};

}  // namespace moe::coordinator
