#pragma once
// One Generate call's streamed reply, through gRPC's callback API: no thread waits for its
// tokens. State tells it when its sequence changed (SequenceWatcher: from the thread that
// applied a step report, or from its dispatch thread); it then writes the new tokens one
// message each, the next write started from the last one's completion, the last one together
// with the call's status. With a thread per stream (the synchronous API), every token woke a
// handler thread and blocked it in its write: at 32 streams the coordinator spent most of a
// core in futex wake-ups (`moe-bench-serving`).
#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "launcher/coordinator/state.h"
#include "moe/v1/inference.pb.h"
#include "runtime/tokenizer.h"

namespace moe::coordinator {

class GenerateStream final : public grpc::ServerWriteReactor<moe::v1::GenerateResponse>,
                             public SequenceWatcher,
                             public std::enable_shared_from_this<GenerateStream> {
 public:
  // For sequence `id`, admitted already. The stream owns itself until gRPC is done with it.
  static grpc::ServerWriteReactor<moe::v1::GenerateResponse>* start(
      State& s, int64_t id, const moe::v1::GenerateRequest& req);
  // A reply that is only a status (a refused request).
  static grpc::ServerWriteReactor<moe::v1::GenerateResponse>* refuse(grpc::Status st);

  GenerateStream(State& s, int64_t id, const moe::v1::GenerateRequest& req);
  void on_change() override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Under mu_: takes what the sequence made into pending_ and starts the next write, or ends
  // the call once everything is written.
  void pump_locked();
  void take_updates_locked();
  void end_locked(grpc::Status st);

  State& s_;
  const int64_t id_;
  std::shared_ptr<const runtime::Tokenizer> tok_;  // text prompts and stop strings only
  std::vector<std::string> stop_;
  std::mutex mu_;
  std::deque<moe::v1::GenerateResponse> pending_;  // front: being written while writing_
  bool writing_ = false;
  bool finished_ = false;             // Finish() called: nothing more may be started
  std::optional<grpc::Status> end_;   // the call ends with this once pending_ is written
  std::vector<int32_t> output_;       // every token taken so far
  size_t text_emitted_ = 0;           // the tokenizer's streaming state
  std::string text_;                  // everything decoded so far
  size_t released_ = 0;               // bytes of text_ streamed
  std::shared_ptr<GenerateStream> self_;  // gRPC's reference, dropped in OnDone
};

}  // namespace moe::coordinator
