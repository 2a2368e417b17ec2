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

// Bounds on what a request may ask of the sampler, checked before anything walks the lists, so
// that an item admitted here always fits the worker link's messages (a few KiB of stops).
constexpr int kMaxStopStrings = 4;         // OpenAI's bound
constexpr int kMaxStopStringBytes = 256;   // each stop string, in UTF-8 bytes
constexpr int kMaxStopTokenIds = 256;      // stop_token_ids, besides eos
// A text prompt is refused by its bytes before it is tokenized, so that tokenizing takes a
// bounded time: the context times this many bytes. A SentencePiece token of Llama's or
// Mistral's vocabularies covers at most 16 bytes of text, so no prompt that fits is refused.
constexpr int kMaxPromptBytesPerToken = 64;

// INVALID_ARGUMENT naming the field, its value and what was expected; OK when it can run.
// `who` prefixes the message ("item 3 (id 7): " in a batch, "" for Generate). Text prompts
// must have been encoded into prompt_ids already (a text-only item reads as "needs a
// tokenizer").
grpc::Status validate_item(const moe::v1::BatchItem& item, const ModelLimits& model,
                           const std::string& who);
// Whether the item's prompt_text may be tokenized: at most max_context * kMaxPromptBytesPerToken
// bytes. Checked before the tokenizer sees it; the tokens it makes are bounded by validate_item.
grpc::Status validate_prompt_text(const moe::v1::BatchItem& item, const ModelLimits& model,
                                  const std::string& who);

}  // namespace moe::coordinator
