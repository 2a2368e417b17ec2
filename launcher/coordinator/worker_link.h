#pragma once
// The WorkerLink service: rank 0 of the worker job attaches through one long-lived stream,
// proving itself with the shared secret. It runs on gRPC's callback API: a step report is
// applied by the gRPC thread that read it, and a message to the job is started by whichever
// thread sends it, so neither direction waits for a thread of the link's own to wake. Writes go
// out one at a time from the link's queue; none blocks the sender (a stalled rank 0 only makes
// the queue longer).
#include <functional>
#include <string>

#include "launcher/coordinator/state.h"
#include "moe/v1/worker.grpc.pb.h"

namespace moe::coordinator {

class WorkerLinkService final : public moe::v1::WorkerLink::CallbackService {
 public:
  // on_change(attached) lets the owner flip the health status. `secret`: what the job must
  // send in the x-moe-worker-secret metadata.
  WorkerLinkService(State& s, std::string secret, std::function<void(bool)> on_change)
      : s_(s), secret_(std::move(secret)), on_change_(std::move(on_change)) {}
  grpc::ServerBidiReactor<moe::v1::WorkerMessage, moe::v1::CoordinatorMessage>* Attach(
      grpc::CallbackServerContext* ctx) override;

 private:
  State& s_;
  const std::string secret_;
  std::function<void(bool)> on_change_;
};

}  // namespace moe::coordinator
