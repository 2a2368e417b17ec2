#pragma once
// A generation request and its result, as the engine and its drivers (moe-run, the worker)
// exchange them.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/sampling.h"

namespace moe::runtime {

struct Request {
  int64_t id = 0;
  std::vector<int32_t> prompt;  // [prompt_len] token ids
  int max_new_tokens = 16;
  bool ignore_eos = false;  // on top of the engine's own setting
  // Admission order on its rank (WaitingQueue): lower first, as vLLM's `priority`; none is 0.
  // The coordinator puts batch items that give none at 1, behind Generate and the OpenAI API.
  std::optional<int> priority;
  std::string text;         // a text prompt, before tokenization (prompt is then filled from it)
  SamplingParams sampling;  // greedy unless asked otherwise
  // Tokens an earlier worker job already generated for this request before it was lost (the
  // coordinator re-submits unfinished sequences to a restarted job). They are prefilled after
  // the prompt and count as output: sampling draws, penalties, min_tokens and max_new_tokens
  // go on from them, so the tokens that follow are those the lost job would have made.
  std::vector<int32_t> resumed;
};

// kStop: one of the request's stop_token_ids was generated (it ends the output, as eos does).
enum class FinishReason { kLength, kEos, kContext, kCancelled, kStop };
// "length", "eos", "context", "cancelled", "stop"
const char* finish_reason_name(FinishReason r);
// The inverse; nullopt for a name that is none of them.
std::optional<FinishReason> parse_finish_reason(const std::string& name);

struct Result {
  int64_t id = 0;
  std::vector<int32_t> output;  // generated ids (resumed ones first), eos (or the stop token) included when hit
  FinishReason finish = FinishReason::kLength;
  std::optional<std::string> text;  // the decoded output, for text prompts
  std::vector<TokenLogprob> logprobs;  // one per token this job made, where the request asked
};

}  // namespace moe::runtime
