#pragma once
// An OpenAI-compatible HTTP API over the coordinator's State, for clients and benchmark tools
// written against OpenAI's or vLLM's server: POST /v1/completions (text or token-id prompts, one
// or many, sampling fields, stop strings, logprobs, streaming as server-sent events, usage),
// GET /v1/models and GET /health. Requests go through the same admission, queue bound and
// statistics as the gRPC API; errors are OpenAI's error object with the HTTP status a client
// expects (400 invalid, 429 queue full, 503 no worker attached).
#include <string>

#include <httplib.h>

#include "launcher/coordinator/auth.h"
#include "launcher/coordinator/state.h"

namespace moe::coordinator {

struct OpenAiOptions {
  std::string model = "moe";  // the id /v1/models lists and responses carry
  const ClientAuth* auth = nullptr;  // API keys, where on (outlives the server)
  // A body over this is refused (413) from its Content-Length, before it is read; the gRPC
  // request limit, so what one API takes the other does too.
  size_t max_body_bytes = size_t(64) << 20;
};

// Adds the routes to `http` (the caller binds and runs it), the API key checked from the headers
// before any body is read, and the body limit. `state` outlives the server.
void add_openai_routes(httplib::Server& http, State& state, OpenAiOptions options);

}  // namespace moe::coordinator
