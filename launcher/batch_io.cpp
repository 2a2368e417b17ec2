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

// A JSON number as float; refused naming the field when it is not one.
float checked_number(const json& v, const std::string& where, const std::string& what) {
  if (!v.is_number()) throw InputError(where + what + " holds " + v.dump() + ", expected a number");
  return v.get<float>();
}

// The sampling fields of a request line (names as vLLM's and OpenAI's); absent ones keep their
// defaults (greedy). Ranges are checked by the engine (SamplingParams::validate).
void parse_sampling(const json& j, const std::string& where, runtime::Request& r) {
  runtime::SamplingParams& s = r.sampling;
  for (const auto& [key, field] : {std::pair{"temperature", &s.temperature},
                                   std::pair{"top_p", &s.top_p},
                                   std::pair{"min_p", &s.min_p},
                                   std::pair{"repetition_penalty", &s.repetition_penalty},
                                   std::pair{"frequency_penalty", &s.frequency_penalty},
                                   std::pair{"presence_penalty", &s.presence_penalty}})
    if (j.contains(key)) *field = checked_number(j[key], where, std::string("\"") + key + "\"");
  for (const auto& [key, field] : {std::pair{"top_k", &s.top_k}, std::pair{"logprobs", &s.logprobs},
                                   std::pair{"min_tokens", &s.min_tokens}})
    if (j.contains(key)) *field = checked_int<int>(j[key], where, std::string("\"") + key + "\"");
  if (j.contains("seed")) s.seed = uint64_t(checked_int<int64_t>(j["seed"], where, "\"seed\""));
  if (j.contains("stop_token_ids")) {
    if (!j["stop_token_ids"].is_array())
      throw InputError(where + "\"stop_token_ids\" must be a list of token ids");
    for (const auto& v : j["stop_token_ids"])
      s.stop_token_ids.push_back(checked_int<int32_t>(v, where, "\"stop_token_ids\""));
  }
  if (j.contains("priority"))
    r.priority = checked_int<int32_t>(j["priority"], where, "\"priority\"");
  if (j.contains("ignore_eos")) {
    if (!j["ignore_eos"].is_boolean())
      throw InputError(where + "\"ignore_eos\" must be true or false");
    r.ignore_eos = j["ignore_eos"].get<bool>();
  }
}

}  // namespace

std::string read_text_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open the input file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

// A plain line: the request, with its user id in `*user_id`.
runtime::Request parse_plain(const json& j, const std::string& where, int default_max_new,
                             json* user_id) {
  runtime::Request r;
  if (j.contains("id")) {
    const json& id = j["id"];
    if (id.is_number_integer())
      checked_int<int64_t>(id, where, "\"id\"");
    else if (!id.is_string())
      throw InputError(where + "\"id\" must be an integer or a string");
    *user_id = id;
  }
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
  parse_sampling(j, where, r);
  return r;
}

// An OpenAI batch line: {"custom_id", "method": "POST", "url": "/v1/completions", "body"}.
runtime::Request parse_openai(const json& j, const std::string& where, json* user_id) {
  if (!j["custom_id"].is_string()) throw InputError(where + "\"custom_id\" must be a string");
  *user_id = j["custom_id"];
  if (j.contains("method") && j["method"] != "POST")
    throw InputError(where + "\"method\" is " + j["method"].dump() + ", expected \"POST\"");
  if (j.contains("url") && j["url"] != "/v1/completions")
    throw InputError(where + "\"url\" is " + j["url"].dump() +
                     ", expected \"/v1/completions\" (the endpoint batch files run here)");
  if (!j.contains("body") || !j["body"].is_object())
    throw InputError(where + "expected \"body\": a completion request object");
  const json& b = j["body"];
  runtime::Request r;
  const json& p = b.value("prompt", json());
  if (p.is_string()) {
    r.text = p.get<std::string>();
  } else if (p.is_array()) {
    for (const auto& v : p) r.prompt.push_back(checked_int<int32_t>(v, where, "\"body.prompt\""));
  } else {
    throw InputError(where + "\"body.prompt\" must be a string or a list of token ids");
  }
  r.max_new_tokens = 16;  // OpenAI's default max_tokens
  if (b.contains("max_tokens"))
    r.max_new_tokens = checked_int<int>(b["max_tokens"], where, "\"body.max_tokens\"");
  r.sampling.temperature = 1.0f;  // OpenAI's default
  if (b.contains("stop") && !b["stop"].is_null())
    throw InputError(where + "\"body.stop\": stop strings are served by the OpenAI-compatible "
                     "endpoint, not in batch files (use stop_token_ids)");
  for (const char* k : {"n", "best_of"})
    if (b.contains(k) && !(b[k].is_number_integer() && b[k].get<int64_t>() == 1))
      throw InputError(where + "\"body." + k + "\": only 1 is supported");
  parse_sampling(b, where, r);
  return r;
}

}  // namespace

RequestFile parse_request_file(const std::string& text, const std::string& path,
                               int default_max_new, const FilePosition& at) {
  std::istringstream in(text);
  RequestFile f;
  std::set<std::string> own_seen;
  std::set<std::string>& seen = at.seen_ids ? *at.seen_ids : own_seen;
  std::string line;
  bool first = !at.format;
  if (at.format) f.format = *at.format;
  for (int64_t n = at.first_line; std::getline(in, line); ++n) {
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
      throw InputError(where + "not valid JSON: " + e.what());
    } catch (const json::out_of_range& e) {  // a number past a double's range
      throw InputError(where + "a number out of range: " + e.what() +
                       " (expected numbers a double can hold)");
    }
    if (!j.is_object()) throw InputError(where + "expected a JSON object per line");
    const BatchFormat fmt = j.contains("custom_id") ? BatchFormat::kOpenAi : BatchFormat::kPlain;
    if (first) f.format = fmt;
    if (fmt != f.format)
      throw InputError(where + "mixes OpenAI batch lines (with \"custom_id\") and plain lines; "
                       "expected one format per file");
    first = false;
    json user_id = at.first_index + int64_t(f.requests.size());
    runtime::Request r = fmt == BatchFormat::kOpenAi
                             ? parse_openai(j, where, &user_id)
                             : parse_plain(j, where, default_max_new, &user_id);
    if (!seen.insert(user_id.dump()).second)
      throw InputError(where + "id " + user_id.dump() + " appears twice");
    r.id = int64_t(f.requests.size());
    f.requests.push_back(std::move(r));
    f.user_ids.push_back(std::move(user_id));
  }
  return f;
}

LineChunks::LineChunks(const std::string& path, size_t chunk_bytes, size_t max_line_bytes)
    : path_(path), in_(path, std::ios::binary), chunk_bytes_(chunk_bytes),
      max_line_bytes_(max_line_bytes) {
  if (!in_) throw InputError(path + ": cannot open the input file");
}

bool LineChunks::next(std::string* text, int64_t* first_line) {
  text->clear();
  *first_line = line_;
  std::string line;
  while (text->size() < chunk_bytes_) {
    line.clear();
    // A bounded getline: a line is read in pieces, and refused once past the limit.
    char buf[4096];
    bool ended = false;
    for (;;) {
      in_.getline(buf, sizeof buf);
      line.append(buf, size_t(in_.gcount()) - (in_.eof() || in_.fail() ? 0 : 1));
      if (!in_.fail() || in_.eof()) {
        ended = true;
        break;
      }
      in_.clear();  // the buffer filled before the line ended: read on
      if (line.size() > max_line_bytes_)
        throw InputError(path_ + ":" + std::to_string(line_) + ": the line is longer than " +
                         std::to_string(max_line_bytes_ >> 20) +
                         " MiB (expected one JSON request per line)");
    }
    if (!ended || (line.empty() && in_.eof())) break;
    if (line.size() > max_line_bytes_)
      throw InputError(path_ + ":" + std::to_string(line_) + ": the line is longer than " +
                       std::to_string(max_line_bytes_ >> 20) +
                       " MiB (expected one JSON request per line)");
    *text += line;
    *text += '\n';
    ++line_;
    if (in_.eof()) break;
  }
  if (in_.bad()) throw InputError(path_ + ": read error at line " + std::to_string(line_));
  return !text->empty();
}

std::vector<runtime::Request> parse_requests_jsonl(const std::string& text,
                                                   const std::string& path, int default_max_new) {
  return parse_request_file(text, path, default_max_new).requests;
}

std::string result_line(const RequestFile& f, size_t i, const runtime::Result& r,
                        const std::string& model) {
  if (f.format == BatchFormat::kPlain) {
    json j = json::parse(result_to_json_line(r));
    j["id"] = f.user_ids[i];
    return j.dump();
  }
  // OpenAI's batch output line, its body a completion as /v1/completions returns it.
  const char* finish = r.finish == runtime::FinishReason::kLength ||
                               r.finish == runtime::FinishReason::kContext
                           ? "length"
                           : "stop";
  const int64_t prompt_tokens = int64_t(f.requests[i].prompt.size());
  const int64_t out_tokens = int64_t(r.output.size());
  json choice = {{"index", 0}, {"text", r.text.value_or("")}, {"finish_reason", finish},
                 {"logprobs", nullptr}, {"token_ids", r.output}};
  json body = {{"id", "cmpl-" + std::to_string(i)}, {"object", "text_completion"},
               {"model", model}, {"choices", {choice}},
               {"usage", {{"prompt_tokens", prompt_tokens}, {"completion_tokens", out_tokens},
                          {"total_tokens", prompt_tokens + out_tokens}}}};
  return json{{"id", "batch_req_" + std::to_string(i)}, {"custom_id", f.user_ids[i]},
              {"response", {{"status_code", 200}, {"body", body}}}, {"error", nullptr}}
      .dump();
}

std::set<std::string> result_ids(const std::string& text, const std::string& source) {
  std::set<std::string> ids;
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error&) {
      // A line cut short by an interrupted run: that request runs again.
      continue;
    } catch (const json::out_of_range& e) {  // whole, but no result line writes such a number
      throw InputError(source + ":" + std::to_string(n) + ": a number out of range: " + e.what() +
                       " (expected a result line)");
    }
    if (j.is_object() && j.contains("custom_id"))
      ids.insert(j["custom_id"].dump());
    else if (j.is_object() && j.contains("id") && j.contains("output_ids"))
      ids.insert(j["id"].dump());
    else
      throw InputError(source + ":" + std::to_string(n) +
                       ": not a result line (expected \"id\" and \"output_ids\", or "
                       "\"custom_id\")");
  }
  return ids;
}

std::vector<int32_t> parse_id_list(const std::string& s) {
  // getline drops a trailing empty field: "1,2," must not pass as "1,2".
  if (!s.empty() && s.back() == ',')
    throw InputError("--prompt-ids: '" + s + "' ends with a comma (expected e.g. 1,2,3)");
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
  if (!r.logprobs.empty()) {
    json lps = json::array();
    for (const auto& lp : r.logprobs) {
      json top = json::array();
      for (const auto& [t, l] : lp.top) top.push_back({{"token", t}, {"logprob", l}});
      lps.push_back({{"token", lp.token}, {"logprob", lp.logprob}, {"top_logprobs", top}});
    }
    j["logprobs"] = lps;
  }
  return j.dump();
}

runtime::Result result_from_json_line(const std::string& line) {
  const json j = json::parse(line);
  runtime::Result r;
  r.id = j["id"].get<int64_t>();
  r.output = j["output_ids"].get<std::vector<int32_t>>();
  const std::string f = j["finish_reason"].get<std::string>();
  if (j.contains("output_text")) r.text = j["output_text"].get<std::string>();
  const auto finish = runtime::parse_finish_reason(f);
  if (!finish) throw InputError("a result line's finish_reason is '" + f + "', not a known one");
  r.finish = *finish;
  if (j.contains("logprobs"))
    for (const auto& lp : j["logprobs"]) {
      runtime::TokenLogprob t;
      t.token = lp["token"].get<int32_t>();
      t.logprob = lp["logprob"].get<float>();
      for (const auto& e : lp["top_logprobs"])
        t.top.emplace_back(e["token"].get<int32_t>(), e["logprob"].get<float>());
      r.logprobs.push_back(std::move(t));
    }
  return r;
}

}  // namespace moe::launcher
