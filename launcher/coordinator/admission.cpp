#include "launcher/coordinator/admission.h"

#include <algorithm>

#include "common/error.h"
#include "launcher/sampling_proto.h"

namespace moe::coordinator {

namespace {
grpc::Status invalid(const std::string& m) { return {grpc::StatusCode::INVALID_ARGUMENT, m}; }
}  // namespace

grpc::Status validate_item(const moe::v1::BatchItem& it, const ModelLimits& model,
                           const std::string& who) {
  if (it.prompt_ids_size() == 0)
    return invalid(who + (it.prompt_text().empty()
                              ? "empty prompt (expected at least one token id in prompt_ids)"
                              : "text prompts need a tokenizer, and this model has none: send "
                                "prompt_ids"));
  if (it.max_new_tokens() < 1)
    return invalid(who + "max_new_tokens is " + std::to_string(it.max_new_tokens()) +
                   " (expected >= 1)");
  if (int64_t(it.prompt_ids_size()) + it.max_new_tokens() > model.max_context)
    return invalid(who + "prompt of " + std::to_string(it.prompt_ids_size()) + " tokens plus " +
                   std::to_string(it.max_new_tokens()) + " new tokens exceeds the context of " +
                   std::to_string(model.max_context) + " tokens");
  for (int i = 0; i < it.prompt_ids_size(); ++i)
    if (it.prompt_ids(i) < 0 || it.prompt_ids(i) >= model.vocab)
      return invalid(who + "prompt_ids[" + std::to_string(i) + "] is " +
                     std::to_string(it.prompt_ids(i)) + ", outside the vocabulary [0, " +
                     std::to_string(model.vocab) + ")");
  // The lists' sizes first: nothing below may walk millions of entries.
  if (it.sampling().stop_token_ids_size() > kMaxStopTokenIds)
    return invalid(who + "sampling.stop_token_ids holds " +
                   std::to_string(it.sampling().stop_token_ids_size()) + " ids, expected at most " +
                   std::to_string(kMaxStopTokenIds));
  if (it.sampling().stop_size() > kMaxStopStrings)
    return invalid(who + "sampling.stop holds " + std::to_string(it.sampling().stop_size()) +
                   " strings, expected at most " + std::to_string(kMaxStopStrings));
  for (int i = 0; i < it.sampling().stop_size(); ++i) {
    const std::string& s = it.sampling().stop(i);
    if (s.empty()) return invalid(who + "sampling.stop holds an empty string");
    if (s.size() > size_t(kMaxStopStringBytes))
      return invalid(who + "sampling.stop[" + std::to_string(i) + "] is " +
                     std::to_string(s.size()) + " bytes, expected at most " +
                     std::to_string(kMaxStopStringBytes));
  }
  try {
    launcher::sampling_from_proto(it.sampling()).validate(model.vocab);
  } catch (const moe::InputError& e) {
    return invalid(who + "sampling: " + e.what());
  }
  if (it.sampling().stop_size() > 0 && !model.tokenizer)
    return invalid(who + "sampling.stop needs a tokenizer, and this model has none (use "
                         "stop_token_ids)");
  return grpc::Status::OK;
}

grpc::Status validate_prompt_text(const moe::v1::BatchItem& it, const ModelLimits& model,
                                  const std::string& who) {
  const size_t limit = size_t(std::max(model.max_context, 0)) * kMaxPromptBytesPerToken;
  if (it.prompt_text().size() > limit)
    return invalid(who + "prompt_text is " + std::to_string(it.prompt_text().size()) +
                   " bytes, expected at most " + std::to_string(limit) + " (" +
                   std::to_string(kMaxPromptBytesPerToken) + " bytes for each of the " +
                   std::to_string(model.max_context) +
                   " tokens of context): it cannot fit, and is not tokenized");
  return grpc::Status::OK;
}

}  // namespace moe::coordinator
