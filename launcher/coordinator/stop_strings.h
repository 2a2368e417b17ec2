#pragma once
// Stop strings, as OpenAI's API treats them: the text ends before the first one found, and
// while streaming, text that may still turn out to be the start of one is held back. Shared by
// Generate (generate_stream) and the OpenAI-compatible API (openai_api).
#include <optional>
#include <string>
#include <vector>

namespace moe::coordinator {

// Where the earliest of `stop` begins in `text`, if any does.
std::optional<size_t> find_stop(const std::string& text, const std::vector<std::string>& stop);

// How much of `text` may be released now: all but its longest end that begins one of `stop`
// (no stop string is found in `text` itself: find_stop first).
size_t stop_safe_length(const std::string& text, const std::vector<std::string>& stop);

}  // namespace moe::coordinator
