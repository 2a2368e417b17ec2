#include "runtime/request.h"

// Apart from the engine so that what reads and writes requests (launcher/batch_io.cpp, and its
// fuzzing harness) links without the engine and all it pulls in.
namespace moe::runtime {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kEos: return "eos";
    case FinishReason::kContext: return "context";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kStop: return "stop";
  }
  return "?";
}

std::optional<FinishReason> parse_finish_reason(const std::string& name) {
  for (FinishReason r : {FinishReason::kLength, FinishReason::kEos, FinishReason::kContext,
                         FinishReason::kCancelled, FinishReason::kStop})
    if (name == finish_reason_name(r)) return r;
  return std::nullopt;
}

}  // namespace moe::runtime
