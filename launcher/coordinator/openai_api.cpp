#include "launcher/coordinator/openai_api.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "launcher/coordinator/admission.h"
#include "launcher/coordinator/http_guard.h"
#include "launcher/coordinator/stop_strings.h"

namespace moe::coordinator {

namespace {

using nlohmann::json;

int http_status(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::INVALID_ARGUMENT: return 400;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return 429;
    case grpc::StatusCode::UNAVAILABLE: return 503;
    case grpc::StatusCode::NOT_FOUND: return 404;
    case grpc::StatusCode::UNAUTHENTICATED: return 401;
    case grpc::StatusCode::PERMISSION_DENIED: return 403;
    default: return 500;
  }
}

const char* error_type(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return "server_error";
  }
}

// JSON text for a response: bytes that are not UTF-8 (a model's partial character, or the
// invalid bytes a parse error quotes) become U+FFFD rather than an exception and a 500.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_error(httplib::Response& res, int status, const std::string& message,
                const std::string& param = "") {
  json e = {{"message", message}, {"type", error_type(status)}, {"code", status}};
  e["param"] = param.empty() ? json(nullptr) : json(param);
  res.status = status;
  res.set_content(dump(json{{"error", e}}), "application/json");
}

// A request field that is wrong: 400 naming it.
struct BadField {
  std::string param, message;
};

// A token id from JSON, read wide and range-checked: 2^32 + 197 is refused, not taken as 197.
int32_t token_id(const json& t, const char* field) {
  if (!t.is_number_integer())
    throw BadField{field, std::string(field) + ": token ids must be integers"};
  const bool fits = t.is_number_unsigned()
                        ? t.get<uint64_t>() <= uint64_t(INT32_MAX)
                        : t.get<int64_t>() >= INT32_MIN && t.get<int64_t>() <= INT32_MAX;
  if (!fits) throw BadField{field, std::string(field) + ": a token id is out of range"};
  return int32_t(t.get<int64_t>());
}

std::string random_id() {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  char buf[40];
  std::snprintf(buf, sizeof buf, "cmpl-%08x%08x%04llx", rd(), rd(),
                (unsigned long long)(counter++ & 0xffff));
  return buf;
}

// OpenAI's finish reasons: eos and stop sequences are "stop"; the length limit and the context
// are "length".
const char* openai_finish(const std::string& f) {
  return f == "length" || f == "context" ? "length" : "stop";
}

// The completion request, parsed: one BatchItem per prompt plus what the HTTP side does itself
// (stop strings, streaming, logprobs shape).
struct Completion {
  std::vector<moe::v1::BatchItem> items;
  std::vector<bool> text_prompt;
  std::vector<std::string> stop;  // stop strings
  bool stream = false, ignore_eos = false, include_usage = false;
  int logprobs = -1;
  std::string model;
};

float number(const json& j, const char* key, float def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number()) throw BadField{key, std::string(key) + " must be a number"};
  return j[key].get<float>();
}

int64_t integer(const json& j, const char* key, int64_t def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number_integer()) throw BadField{key, std::string(key) + " must be an integer"};
  return j[key].get<int64_t>();
}

bool boolean(const json& j, const char* key, bool def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean()) throw BadField{key, std::string(key) + " must be true or false"};
  return j[key].get<bool>();
}

std::string text(const json& j, const char* key, const std::string& def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_string()) throw BadField{key, std::string(key) + " must be a string"};
  return j[key].get<std::string>();
}

Completion parse_completion(const std::string& body, const std::string& model) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw BadField{"", std::string("the body is not valid JSON: ") + e.what()};
  }
  if (!j.is_object()) throw BadField{"", "the body must be a JSON object"};
  Completion c;
  c.model = text(j, "model", model);
  if (!j.contains("prompt")) throw BadField{"prompt", "prompt is required"};
  // prompt: "text" | ["text", ...] | [id, ...] | [[id, ...], ...]
  std::vector<json> prompts;
  const json& p = j["prompt"];
  if (p.is_string()) {
    prompts.push_back(p);
  } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
    prompts.push_back(p);
  } else if (p.is_array() && !p.empty()) {
    for (const auto& e : p) prompts.push_back(e);
  } else {
    throw BadField{"prompt", "prompt must be a string, a list of strings, a list of token ids or "
                             "a list of such lists, and not empty"};
  }
  if (integer(j, "n", 1) != 1) throw BadField{"n", "only n = 1 is supported"};
  if (boolean(j, "echo", false)) throw BadField{"echo", "echo is not supported"};
  if (j.contains("best_of") && integer(j, "best_of", 1) != 1)
    throw BadField{"best_of", "only best_of = 1 is supported"};
  const int64_t max_tokens = integer(j, "max_tokens", 16);
  if (max_tokens < 1 || max_tokens > (1 << 24))
    throw BadField{"max_tokens", "max_tokens must be in [1, 16777216]"};
  moe::v1::SamplingParams s;
  s.set_temperature(number(j, "temperature", 1.0f));  // OpenAI's default
  s.set_top_p(number(j, "top_p", 1.0f));
  s.set_top_k(int32_t(std::clamp<int64_t>(integer(j, "top_k", 0), -1, 1 << 30)));
  s.set_min_p(number(j, "min_p", 0.0f));
  if (j.contains("seed") && !j["seed"].is_null()) s.set_seed(uint64_t(integer(j, "seed", 0)));
  s.set_repetition_penalty(number(j, "repetition_penalty", 1.0f));
  s.set_frequency_penalty(number(j, "frequency_penalty", 0.0f));
  s.set_presence_penalty(number(j, "presence_penalty", 0.0f));
  s.set_min_tokens(int32_t(std::clamp<int64_t>(integer(j, "min_tokens", 0), -1, 1 << 30)));
  if (j.contains("logprobs") && !j["logprobs"].is_null()) {
    c.logprobs = int(std::clamp<int64_t>(integer(j, "logprobs", 0), -1, 1000));
    s.set_logprobs(c.logprobs);
  }
  if (j.contains("stop_token_ids") && !j["stop_token_ids"].is_null()) {
    const json& ids = j["stop_token_ids"];
    const char* f = "stop_token_ids";
    if (!ids.is_array()) throw BadField{f, "stop_token_ids must be a list of token ids"};
    if (ids.size() > size_t(kMaxStopTokenIds))
      throw BadField{f, "stop_token_ids holds " + std::to_string(ids.size()) +
                            " ids, expected at most " + std::to_string(kMaxStopTokenIds)};
    for (const auto& t : ids) s.add_stop_token_ids(token_id(t, f));
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& st = j["stop"];
    if (st.is_string()) {
      c.stop.push_back(st.get<std::string>());
    } else if (st.is_array()) {
      for (const auto& e : st) {
        if (!e.is_string()) throw BadField{"stop", "stop must be a string or a list of strings"};
        c.stop.push_back(e.get<std::string>());
      }
    } else {
      throw BadField{"stop", "stop must be a string or a list of strings"};
    }
    if (c.stop.size() > size_t(kMaxStopStrings))
      throw BadField{"stop", "at most " + std::to_string(kMaxStopStrings) + " stop sequences"};
    for (const auto& e : c.stop) {
      if (e.empty()) throw BadField{"stop", "a stop sequence must not be empty"};
      if (e.size() > size_t(kMaxStopStringBytes))
        throw BadField{"stop", "a stop sequence of " + std::to_string(e.size()) +
                                   " bytes, expected at most " + std::to_string(kMaxStopStringBytes)};
    }
  }
  c.stream = boolean(j, "stream", false);
  c.ignore_eos = boolean(j, "ignore_eos", false);
  // vLLM's `priority`: lower is admitted earlier; 0, ahead of batch items (1), unless given.
  const bool huge = j.contains("priority") && j["priority"].is_number_unsigned() &&
                    j["priority"].get<uint64_t>() > uint64_t(INT32_MAX);
  const int64_t priority = integer(j, "priority", 0);
  if (huge || priority < INT32_MIN || priority > INT32_MAX)
    throw BadField{"priority", "priority must be an integer in [-2147483648, 2147483647]"};
  if (j.contains("stream_options") && j["stream_options"].is_object())
    c.include_usage = boolean(j["stream_options"], "include_usage", false);
  for (size_t i = 0; i < prompts.size(); ++i) {
    moe::v1::BatchItem it;
    it.set_id(int64_t(i));
    if (prompts[i].is_string()) {
      it.set_prompt_text(prompts[i].get<std::string>());
      if (it.prompt_text().empty()) throw BadField{"prompt", "a prompt must not be empty"};
    } else if (prompts[i].is_array()) {
      for (const auto& t : prompts[i]) it.add_prompt_ids(token_id(t, "prompt"));
    } else {
      throw BadField{"prompt", "each prompt must be a string or a list of token ids"};
    }
    it.set_max_new_tokens(int32_t(max_tokens));
    it.set_priority(int32_t(priority));
    *it.mutable_sampling() = s;
    c.text_prompt.push_back(prompts[i].is_string());
    c.items.push_back(std::move(it));
  }
  return c;
}

// One choice's progress: the text released so far and where a stop string cut it.
struct Choice {
  int64_t seq = 0;
  size_t tokens_seen = 0, decoded = 0;  // tokens handed out; bytes of text decoded
  std::string text;                     // all text decoded so far (before any stop cut)
  size_t released = 0;                  // bytes of `text` sent (streaming)
  std::string finish;                   // OpenAI's reason once done
  int64_t prompt_tokens = 0, completion_tokens = 0;
  json logprobs;                        // OpenAI's logprobs object, where asked
  bool done = false;
};

// Advances `c` with what sequence `s` has made; true when the choice is done.
void advance(State& state, const Sequence& s, const Completion& req, Choice& c) {
  auto tok = state.tokenizer();
  for (; c.tokens_seen < s.output.size() && !c.done; ++c.tokens_seen) {
    const size_t i = c.tokens_seen;
    const bool last = i + 1 == s.output.size() && s.done();
    std::vector<int32_t> so_far(s.output.begin(), s.output.begin() + long(i) + 1);
    const std::string piece = tok ? tok->decode_stream(so_far, &c.decoded, last) : std::string();
    c.text += piece;
    ++c.completion_tokens;
    if (req.logprobs >= 0 && i < s.logprobs.size()) {
      const auto& lp = s.logprobs[i];
      c.logprobs["tokens"].push_back(tok ? tok->decode({s.output[i]}) : std::to_string(s.output[i]));
      c.logprobs["token_logprobs"].push_back(lp.logprob());
      json top = json::object();
      for (const auto& e : lp.top_logprobs())
        top[tok ? tok->decode({e.token_id()}) : std::to_string(e.token_id())] = e.logprob();
      c.logprobs["top_logprobs"].push_back(top);
      c.logprobs["text_offset"].push_back(c.text.size() - piece.size());
    }
    if (!req.stop.empty())
      if (const auto at = find_stop(c.text, req.stop)) {
        c.text.resize(*at);  // cut before the stop string, as OpenAI does
        c.finish = "stop";
        c.done = true;
        if (!s.done()) state.cancel(c.seq);
      }
  }
  if (!c.done && s.done() && c.tokens_seen == s.output.size()) {
    c.finish = s.error.ok() ? openai_finish(s.finish) : "error";
    c.done = true;
  }
}

json usage_of(const std::vector<Choice>& cs) {
  int64_t p = 0, q = 0;
  for (const auto& c : cs) {
    p += c.prompt_tokens;
    q += c.completion_tokens;
  }
  return {{"prompt_tokens", p}, {"completion_tokens", q}, {"total_tokens", p + q}};
}

json logprobs_or_null(const Completion& req, const Choice& c) {
  if (req.logprobs < 0) return nullptr;
  json l = c.logprobs.is_null() ? json::object() : c.logprobs;
  for (const char* k : {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
    if (!l.contains(k)) l[k] = json::array();
  return l;
}

Clock::time_point in_ms(int ms) { return Clock::now() + std::chrono::milliseconds(ms); }

// The API key (OpenAI's `Authorization: Bearer <key>`), where keys are on; sends the 401.
bool authorized(const OpenAiOptions& opt, const httplib::Request& req, httplib::Response& res) {
  if (!opt.auth || !opt.auth->on()) return true;
  std::string owner;
  const auto st = opt.auth->check(req.get_header_value("Authorization"), &owner);
  if (st.ok()) return true;
  send_error(res, 401, st.error_message());
  return false;
}

void completions(State& state, const OpenAiOptions& opt, const httplib::Request& http_req,
                 httplib::Response& res) {
  if (!authorized(opt, http_req, res)) return;
  Completion req;
  try {
    req = parse_completion(http_req.body, opt.model);
  } catch (const BadField& e) {
    return send_error(res, 400, e.message, e.param);
  }
  for (size_t i = 0; i < req.items.size(); ++i)
    if (req.text_prompt[i] && !state.tokenizer())
      return send_error(res, 400, "text prompts need a tokenizer and this model has none: send "
                                  "token ids", "prompt");
  std::vector<int64_t> ids;
  if (auto st = state.admit(req.items, "", req.ignore_eos, &ids); !st.ok())
    return send_error(res, http_status(st.error_code()), st.error_message());
  auto choices = std::make_shared<std::vector<Choice>>(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    (*choices)[i].seq = ids[i];
    (*choices)[i].prompt_tokens = req.items[i].prompt_ids_size();
  }
  // Text prompts were tokenized at admission: count their tokens from the sequence.
  for (auto& c : *choices)
    if (c.prompt_tokens == 0) c.prompt_tokens = int64_t(state.wait(c.seq, 0, Clock::now()).prompt.size());
  const std::string id = random_id();
  const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();

  if (!req.stream) {
    json out_choices = json::array();
    for (size_t i = 0; i < choices->size(); ++i) {
      Choice& c = (*choices)[i];
      while (!c.done) advance(state, state.wait(c.seq, c.tokens_seen, in_ms(100)), req, c);
      const Sequence last = state.wait(c.seq, c.tokens_seen, Clock::now());
      if (!last.error.ok()) {
        for (auto& o : *choices) state.forget(o.seq);
        return send_error(res, http_status(last.error.error_code()), last.error.error_message());
      }
      out_choices.push_back({{"index", i}, {"text", c.text}, {"logprobs", logprobs_or_null(req, c)},
                             {"finish_reason", c.finish}});
    }
    for (auto& c : *choices) state.forget(c.seq);
    res.set_content(dump(json{{"id", id}, {"object", "text_completion"}, {"created", created},
                              {"model", req.model}, {"choices", out_choices},
                              {"usage", usage_of(*choices)}}),
                    "application/json");
    return;
  }

  // Streaming: one event per piece of text as tokens arrive, the finish reason on each choice's
  // last event, usage where asked, then [DONE].
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [&state, req, choices, id, created](size_t, httplib::DataSink& sink) {
        auto event = [&](const json& j) {
          const std::string s = "data: " + dump(j) + "\n\n";
          return sink.write(s.data(), s.size());
        };
        for (size_t i = 0; i < choices->size(); ++i) {
          Choice& c = (*choices)[i];
          while (true) {
            const Sequence s = state.wait(c.seq, c.tokens_seen, in_ms(100));
            if (!sink.is_writable()) {  // the client went away
              for (auto& o : *choices) {
                state.cancel(o.seq);
                state.forget(o.seq);
              }
              return false;
            }
            const size_t before = c.tokens_seen;
            advance(state, s, req, c);
            if (!s.error.ok() && c.done) {
              event({{"error", {{"message", s.error.error_message()},
                                {"type", error_type(http_status(s.error.error_code()))},
                                {"code", http_status(s.error.error_code())}}}});
              break;
            }
            const size_t upto = c.done ? c.text.size() : stop_safe_length(c.text, req.stop);
            if (upto > c.released || c.done || c.tokens_seen > before) {
              json ch = {{"index", i}, {"text", c.text.substr(c.released, upto - c.released)},
                         {"logprobs", nullptr},
                         {"finish_reason", c.done ? json(c.finish) : json(nullptr)}};
              c.released = std::max(c.released, upto);
              if (!event({{"id", id}, {"object", "text_completion"}, {"created", created},
                          {"model", req.model}, {"choices", {ch}}}))
                return false;
            }
            if (c.done) break;
          }
        }
        if (req.include_usage)
          event({{"id", id}, {"object", "text_completion"}, {"created", created},
                 {"model", req.model}, {"choices", json::array()}, {"usage", usage_of(*choices)}});
        const std::string done = "data: [DONE]\n\n";
        sink.write(done.data(), done.size());
        for (auto& c : *choices) state.forget(c.seq);
        sink.done();
        return true;
      });
}

}  // namespace

void add_openai_routes(httplib::Server& http, State& state, OpenAiOptions options) {
  http.set_payload_max_length(options.max_body_bytes);
  // The key from the headers alone, before cpp-httplib reads a body: an unauthenticated client
  // cannot make the coordinator hold its megabytes. /health stays open, as a probe needs.
  // A body over the limit is refused from its Content-Length here too: cpp-httplib's own check
  // reads the whole body (discarding it) before it answers 413.
  http.set_pre_routing_handler([options](const httplib::Request& req, httplib::Response& res) {
    const bool open = req.path == "/health" || authorized(options, req, res);
    if (open && req.get_header_value<uint64_t>("Content-Length") <= options.max_body_bytes)
      return httplib::Server::HandlerResponse::Unhandled;
    if (open)
      send_error(res, 413, "a body of " + req.get_header_value("Content-Length") +
                               " bytes, over the limit of " +
                               std::to_string(options.max_body_bytes) + " (--max-message-mb)");
    res.set_header("Connection", "close");
    return httplib::Server::HandlerResponse::Handled;
  });
  http.Post("/v1/completions", HttpGuard::read([&state, options](const httplib::Request& req,
                                                                  httplib::Response& res) {
    try {
      completions(state, options, req, res);
    } catch (const std::exception& e) {
      spdlog::error("/v1/completions: {}", e.what());
      send_error(res, 500, e.what());
    }
  }));
  http.Get("/v1/models", HttpGuard::read([options](const httplib::Request& req,
                                                  httplib::Response& res) {
    if (!authorized(options, req, res)) return;
    res.set_content(dump(json{{"object", "list"},
                              {"data", {{{"id", options.model}, {"object", "model"}, {"created", 0},
                                         {"owned_by", "moe-runtime"}}}}}),
                    "application/json");
  }));
  http.Get("/health", HttpGuard::read([&state](const httplib::Request&, httplib::Response& res) {
    if (state.attached() && !state.draining())
      res.set_content("ok\n", "text/plain");
    else
      send_error(res, 503, state.draining() ? "the coordinator is draining"
                                            : "no worker job attached");
  }));
  // Unknown routes and methods in OpenAI's error shape too.
  http.set_error_handler([options](const httplib::Request& req, httplib::Response& res) {
    if (res.status == 404) send_error(res, 404, "no route " + req.method + " " + req.path);
    if (res.status == 413)
      send_error(res, 413, "the body is over the limit of " +
                               std::to_string(options.max_body_bytes) + " bytes (--max-message-mb)");
  });
}

}  // namespace moe::coordinator
