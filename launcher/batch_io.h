#pragma once
// JSON-lines request files for batch runs: {"id": ..., "prompt_ids": [...], "max_new_tokens": N}
// per line in, {"id": ..., "output_ids": [...], "finish_reason": "..."} per line out.
#include <string>
#include <vector>

#include "runtime/request.h"

namespace moe::launcher {

// Parses the text of a JSONL file; `source` names it in errors. Throws InputError naming the
// file, the line and what was expected.
std::vector<runtime::Request> parse_requests_jsonl(const std::string& text,
                                                   const std::string& source, int default_max_new);
// The whole file as text; throws InputError when it cannot be read.
std::string read_text_file(const std::string& path);
// "1,2,3" -> ids; throws InputError on anything else.
std::vector<int32_t> parse_id_list(const std::string& s);
std::string result_to_json_line(const runtime::Result& r);
// The inverse, for results that crossed between ranks as text.
runtime::Result result_from_json_line(const std::string& line);

}  // namespace moe::launcher
