#pragma once
// A generation request and its result, as the engine and its drivers (moe-run, the worker)
// exchange them.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moe::runtime {

struct Request {
  int64_t id = 0;
  std::vector<int32_t> prompt;  // [prompt_len] token ids
  int max_new_tokens = 16;
  bool ignore_eos = false;  // on top of the engine's own setting
  std::string text;         // a text prompt, before tokenization (prompt is then filled from it)
};

enum class FinishReason { kLength, kEos, kContext, kCancelled };
const char* finish_reason_name(FinishReason r);  // "length", "eos", "context", "cancelled"

struct Result {
  int64_t id = 0;
  std::vector<int32_t> output;  // generated ids, eos included when hit
  FinishReason finish = FinishReason::kLength;
  std::optional<std::string> text;  // the decoded output, for text prompts
};

}  // namespace moe::runtime
