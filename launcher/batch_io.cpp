#include "launcher/batch_io.h"

#include <cstdint>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace moe::launcher {

using nlohmann::json;

namespace {

// A JSON integer as T, refused (not wrapped) when it does not fit: 4294967297 must not become
// token 1. `what` names the field in the error.
template <class T>
T checked_int(const json& v, const std::string& where, const std::string& what) {
  if (!v.is_number_integer())
    throw InputError(where + what + " holds " + v.dump() + ", expected an integer");
  const bool fits = v.is_number_unsigned()
                        ? v.get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max())
                        : v.get<int64_t>() >= int64_t(std::numeric_limits<T>::min()) &&
                              v.get<int64_t>() <= int64_t(std::numeric_limits<T>::max());
  if (!fits)
    throw InputError(where + what + " holds " + v.dump() + ", outside the range [" +
                     std::to_string(std::numeric_limits<T>::min()) + ", " +
                     std::to_string(std::numeric_limits<T>::max()) + "]");
  return T(v.get<int64_t>());
}

}  // namespace

std::string read_text_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open the input file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<runtime::Request> parse_requests_jsonl(const std::string& text,
                                                   const std::string& path, int default_max_new) {
  std::istringstream in(text);
  std::vector<runtime::Request> out;
  std::set<int64_t> ids;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n) + ": ";
    // The JSON parser takes a NUL byte for the end of its input and would accept whatever
    // garbage follows it on the line.
    if (const size_t nul = line.find('\0'); nul != std::string::npos)
      throw InputError(where + "a NUL byte at column " + std::to_string(nul + 1) +
                       ", expected one JSON object of text per line");
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      throw InputError(where + "not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object()) throw InputError(where + "expected a JSON object per line");
    runtime::Request r;
    r.id = int64_t(out.size());
    if (j.contains("id")) {
      if (!j["id"].is_number_integer())
        throw InputError(where + "\"id\" must be an integer");
      r.id = checked_int<int64_t>(j["id"], where, "\"id\"");
    }
    if (!ids.insert(r.id).second)
      throw InputError(where + "id " + std::to_string(r.id) + " appears twice");
    if (j.contains("prompt") && !j.contains("prompt_ids")) {
      if (!j["prompt"].is_string())
        throw InputError(where + "\"prompt\" must be a string (text; ids go in \"prompt_ids\")");
      r.text = j["prompt"].get<std::string>();
    } else if (!j.contains("prompt_ids") || !j["prompt_ids"].is_array()) {
      throw InputError(where + "expected \"prompt_ids\": a list of token ids, or \"prompt\": text");
    }
    for (const auto& v : j.value("prompt_ids", nlohmann::json::array()))
      r.prompt.push_back(checked_int<int32_t>(v, where, "\"prompt_ids\""));
    r.max_new_tokens = default_max_new;
    if (j.contains("max_new_tokens")) {
      if (!j["max_new_tokens"].is_number_integer())
        throw InputError(where + "\"max_new_tokens\" must be an integer");
      r.max_new_tokens = checked_int<int>(j["max_new_tokens"], where, "\"max_new_tokens\"");
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<int32_t> parse_id_list(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    size_t used = 0;
    long long v = 0;
    bool range = false;
    try {
      v = std::stoll(tok, &used);
    } catch (const std::out_of_range&) {
      range = true;
    } catch (const std::exception&) {
      used = 0;
    }
    // Refused, not wrapped: 4294967297 must not become token 1.
    if (range || (used > 0 && (v < std::numeric_limits<int32_t>::min() ||
                               v > std::numeric_limits<int32_t>::max())))
      throw InputError("--prompt-ids: " + tok + " is outside the range of a token id [" +
                       std::to_string(std::numeric_limits<int32_t>::min()) + ", " +
                       std::to_string(std::numeric_limits<int32_t>::max()) + "]");
    if (used == 0 || tok.find_first_not_of(" ", used) != std::string::npos)
      throw InputError("--prompt-ids: '" + tok + "' is not an integer (expected e.g. 1,2,3)");
    ids.push_back(int32_t(v));
  }
  if (ids.empty()) throw InputError("--prompt-ids: empty (expected e.g. 1,2,3)");
  return ids;
}

std::string result_to_json_line(const runtime::Result& r) {
  json j;
  j["id"] = r.id;
  j["output_ids"] = r.output;
  j["finish_reason"] = runtime::finish_reason_name(r.finish);
  if (r.text) j["output_text"] = *r.text;
  return j.dump();
}

runtime::Result result_from_json_line(const std::string& line) {
  const json j = json::parse(line);
  runtime::Result r;
  r.id = j["id"].get<int64_t>();
  r.output = j["output_ids"].get<std::vector<int32_t>>();
  const std::string f = j["finish_reason"].get<std::string>();
  if (j.contains("output_text")) r.text = j["output_text"].get<std::string>();
  r.finish = f == "eos" ? runtime::FinishReason::kEos
             : f == "context" ? runtime::FinishReason::kContext
                              : runtime::FinishReason::kLength;
  return r;
}

}  // namespace moe::launcher
