#pragma once
// The sampling fields and logprobs between the API (moe.v1.SamplingParams, TopLogprob) and the
// engine (runtime::SamplingParams, TokenLogprob): the coordinator validates with them, the
// worker hands them to the engine and back.
#include "moe/v1/inference.pb.h"
#include "runtime/sampling.h"

namespace moe::launcher {

inline runtime::SamplingParams sampling_from_proto(const moe::v1::SamplingParams& p) {
  runtime::SamplingParams s;
  s.temperature = p.temperature();
  if (p.has_top_p()) s.top_p = p.top_p();
  s.top_k = p.top_k();
  s.min_p = p.min_p();
  if (p.has_seed()) s.seed = p.seed();
  if (p.has_repetition_penalty()) s.repetition_penalty = p.repetition_penalty();
  s.frequency_penalty = p.frequency_penalty();
  s.presence_penalty = p.presence_penalty();
  s.logprobs = p.has_logprobs() ? p.logprobs() : -1;
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  s.min_tokens = p.min_tokens();
  return s;
}

inline moe::v1::SamplingParams sampling_to_proto(const runtime::SamplingParams& s) {
  moe::v1::SamplingParams p;
  p.set_temperature(s.temperature);
  p.set_top_p(s.top_p);
  p.set_top_k(s.top_k);
  p.set_min_p(s.min_p);
  if (s.seed) p.set_seed(*s.seed);
  p.set_repetition_penalty(s.repetition_penalty);
  p.set_frequency_penalty(s.frequency_penalty);
  p.set_presence_penalty(s.presence_penalty);
  if (s.logprobs >= 0) p.set_logprobs(s.logprobs);
  *p.mutable_stop_token_ids() = {s.stop_token_ids.begin(), s.stop_token_ids.end()};
  p.set_min_tokens(s.min_tokens);
  return p;
}

// `top` as repeated TopLogprob of a message (GenerateResponse, TokenEvent, TokenLogprobs).
template <class Repeated>
void top_logprobs_to_proto(const std::vector<std::pair<int32_t, float>>& top, Repeated* out) {
  for (const auto& [t, l] : top) {
    auto* e = out->Add();
    e->set_token_id(t);
    e->set_logprob(l);
  }
}

}  // namespace moe::launcher
