#pragma once
// Admission: whether one request item can run on the attached model. A pure function of the
// item and the model's limits (no lock, no state), so the coordinator calls it outside its
// locks, and a fuzzer can call it alone.
#include <grpcpp/grpcpp.h>

#include <string>

#include "moe/v1/inference.pb.h"

namespace moe::coordinator {

struct ModelLimits {
  int vocab = 0;        // token ids are in [0, vocab)
  int max_context = 0;  // prompt + max_new_tokens at most this
  bool tokenizer = false;  // text prompts and stop strings need one
};

constexpr int kMaxStopStrings = 4;

// INVALID_ARGUMENT naming the field, its value and what was expected; OK when it can run.
// `who` prefixes the message ("item 3 (id 7): " in a batch, "" for Generate). Text prompts
// must have been encoded into prompt_ids already (a text-only item reads as "needs a
// tokenizer").
grpc::Status validate_item(const moe::v1::BatchItem& item, const ModelLimits& model,
                           const std::string& who);

}  // namespace moe::coordinator
