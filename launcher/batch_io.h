#pragma once
// JSON-lines request files for batch runs: {"id": ..., "prompt_ids": [...], "max_new_tokens": N}
// per line in, {"id": ..., "output_ids": [...], "finish_reason": "..."} per line out.
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/request.h"

namespace moe::launcher {

// The two line formats a request file may use (one per file):
//  - plain: {"id": 7 or "q-7", "prompt_ids": [...] or "prompt": "text", "max_new_tokens": N,
//    sampling fields...}; results {"id": <as given>, "output_ids": [...], "finish_reason": ...};
//  - OpenAI's batch input: {"custom_id": "...", "method": "POST", "url": "/v1/completions",
//    "body": {completion request}}; results in OpenAI's batch output shape.
enum class BatchFormat { kPlain, kOpenAi };

// A request file: the requests, numbered 0..n-1 in file order (the ids the engine and the
// coordinator see), and the id each line gave (an integer or a string, returned as given; the
// line's index where it gave none).
struct RequestFile {
  std::vector<runtime::Request> requests;
  std::vector<nlohmann::json> user_ids;  // [requests]
  BatchFormat format = BatchFormat::kPlain;
};

// Where a piece of a longer file sits in it (a chunk of a streamed input), and what the pieces
// before it established: ids seen, the format.
struct FilePosition {
  int64_t first_line = 1;   // line number of the text's first line
  int64_t first_index = 0;  // requests before it (a line without an id gets its index)
  std::set<std::string>* seen_ids = nullptr;  // across pieces: an id may appear once per file
  std::optional<BatchFormat> format;          // the file's format, once known
};

// Throws InputError naming the file, the line and what was expected.
RequestFile parse_request_file(const std::string& text, const std::string& source,
                               int default_max_new, const FilePosition& at = {});

// Reads a JSONL file in chunks of whole lines, so that no input is held whole: next() gives up
// to about `chunk_bytes` of text (at least one line). A line longer than `max_line_bytes` (or
// input without line ends, such as /dev/zero) throws InputError naming the line.
class LineChunks {
 public:
  LineChunks(const std::string& path, size_t chunk_bytes, size_t max_line_bytes);
  // False at the end of the file. `*first_line`: the number of the chunk's first line.
  bool next(std::string* text, int64_t* first_line);

 private:
  std::string path_;
  std::ifstream in_;
  size_t chunk_bytes_, max_line_bytes_;
  int64_t line_ = 1;
};
// The output line of request `i` of `f` with result `r` (its id is the request's number).
// `model` names the model in OpenAI's output shape.
std::string result_line(const RequestFile& f, size_t i, const runtime::Result& r,
                        const std::string& model);
// The user ids (JSON text of each, e.g. 7 or "q-7") a results file already holds, in either
// format: what a resumed batch skips. Throws InputError naming a line that is not a result.
std::set<std::string> result_ids(const std::string& text, const std::string& source);

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
