#include "runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "common/error.h"

namespace moe::runtime {

Engine::Engine(Model& model, KvCache& cache, comm::Communicator& comm, EngineOptions opts)
    : model_(model), cache_(cache), comm_(comm), opts_(opts) {
  MOE_CHECK(opts_.max_tokens_per_step >= 1, "max_tokens_per_step must be >= 1");
  max_context_ = std::min(cache_.max_len(), model_.config().max_position_embeddings);
}

void Engine::validate(const Request& r) const {
  const std::string who = "request " + std::to_string(r.id) + ": ";
  if (r.prompt.empty()) throw InputError(who + "empty prompt (expected at least one token id)");
  const int V = model_.config().vocab_size;
  for (size_t i = 0; i < r.prompt.size(); ++i)
    if (r.prompt[i] < 0 || r.prompt[i] >= V)
      throw InputError(who + "prompt token " + std::to_string(i) + " is " +
                       std::to_string(r.prompt[i]) + ", outside the vocabulary [0, " +
                       std::to_string(V) + ")");
  try {
    r.sampling.validate(V);
  } catch (const InputError& e) {
    throw InputError(who + e.what());
  }
  if (r.max_new_tokens < 1)
    throw InputError(who + "max_new_tokens is " + std::to_string(r.max_new_tokens) +
                     " (expected >= 1)");
  if (r.resumed.size() >= size_t(std::max(r.max_new_tokens, 0)))
    throw InputError(who + "resumes after " + std::to_string(r.resumed.size()) +
                     " generated tokens, expected fewer than max_new_tokens (" +
                     std::to_string(r.max_new_tokens) + ")");
  for (size_t i = 0; i < r.resumed.size(); ++i)
    if (r.resumed[i] < 0 || r.resumed[i] >= V)
      throw InputError(who + "resumed token " + std::to_string(i) + " is " +
                       std::to_string(r.resumed[i]) + ", outside the vocabulary [0, " +
                       std::to_string(V) + ")");
  if (int64_t(r.prompt.size()) + r.max_new_tokens > max_context_)
    throw InputError(who + "prompt of " + std::to_string(r.prompt.size()) + " tokens plus " +
                     std::to_string(r.max_new_tokens) + " new tokens exceeds the context of " +
                     std::to_string(max_context_) + " tokens");
}

void Engine::add(Request r) {
  validate(r);
  waiting_.push(std::move(r));
}

void Engine::schedule() {
  batch_.clear();
  logit_seq_.clear();
  step_prompt_tokens_ = 0;
  int budget = opts_.max_tokens_per_step;
  // Admit waiting requests into free slots: by priority, the oldest keeping a share
  // (WaitingQueue).
  while (!waiting_.empty() && cache_.free_slots() > 0) {
    Sequence s;
    s.req = waiting_.pop();
    s.slot = cache_.acquire();
    s.tokens = s.req.prompt;
    s.tokens.insert(s.tokens.end(), s.req.resumed.begin(), s.req.resumed.end());
    s.generated = s.req.resumed;  // a resumed sequence goes on counting from them
    s.seed = s.req.sampling.seed ? *s.req.sampling.seed
                                 : (uint64_t(entropy_()) << 32) ^ uint64_t(entropy_());
    running_.push_back(std::move(s));
  }
  auto push = [&](Sequence& s, int n, int idx) {
    for (int j = 0; j < n; ++j) {
      batch_.tokens.push_back(s.tokens[s.cached + j]);
      batch_.slot.push_back(s.slot);
      batch_.pos.push_back(s.cached + j);
    }
    s.cached += n;
    budget -= n;
    // Logits are wanted once every known token is in the cache: the next one is sampled.
    if (s.cached == int(s.tokens.size())) {
      batch_.logit_rows.push_back(batch_.size() - 1);
      logit_seq_.push_back(idx);
    }
  };
  // Decodes first: a running sequence costs one token per step. When the budget cannot take
  // them all, the scan starts one place further every step, so none starves.
  const size_t n = running_.size();
  for (size_t j = 0; j < n && budget > 0; ++j) {
    const size_t i = (j + size_t(steps_)) % n;
    Sequence& s = running_[i];
    if (s.decoding && s.cached == int(s.tokens.size()) - 1) push(s, 1, int(i));
  }
  // Then prefill, in chunks that fit what is left of the budget.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence& s = running_[i];
    if (s.decoding) continue;
    const int left = int(s.tokens.size()) - s.cached;
    if (left > 0) {
      const int n = std::min(left, budget);
      step_prompt_tokens_ += n;
      push(s, n, int(i));
    }
  }
}

void Engine::finish(size_t i, FinishReason why) {
  Sequence& s = running_[i];
  cache_.release(s.slot);
  Result r{s.req.id, std::move(s.generated), why, std::nullopt, std::move(s.logprobs)};
  if (on_finish_) on_finish_(std::move(r));
  running_[i].slot = -1;
}

bool Engine::step(std::optional<bool> agreed_work) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  int64_t work = idle() ? 0 : 1;
  if (agreed_work)
    work = *agreed_work;
  else
    comm_.all_reduce(&work, 1, comm::Communicator::Op::kMax);
  if (!work) return false;

  schedule();
  const auto t1 = clock::now();
  model_.reset_times();
  model_.forward(batch_, logits_);
  ++steps_;
  tokens_processed_ += batch_.size();

  const int V = model_.config().vocab_size;
  for (size_t j = 0; j < logit_seq_.size(); ++j) {
    Sequence& s = running_[logit_seq_[j]];
    const float* row = logits_.data() + j * size_t(V);
    const SamplingParams& sp = s.req.sampling;
    TokenLogprob lp;
    const int eos = opts_.ignore_eos || s.req.ignore_eos ? -1 : opts_.eos_token_id;
    const int32_t next = sampler_.next(row, V, sp, s.seed, s.req.prompt, s.generated, eos,
                                       sp.logprobs >= 0 ? &lp : nullptr);
    s.generated.push_back(next);
    s.tokens.push_back(next);
    s.decoding = true;
    if (sp.logprobs >= 0) s.logprobs.push_back(std::move(lp));
  }
  for (size_t j = 0; j < logit_seq_.size(); ++j) {
    const size_t i = logit_seq_[j];
    Sequence& s = running_[i];
    const int32_t tok = s.generated.back();
    const bool eos = !opts_.ignore_eos && !s.req.ignore_eos && tok == opts_.eos_token_id;
    const auto& stops = s.req.sampling.stop_token_ids;
    const bool stop = std::find(stops.begin(), stops.end(), tok) != stops.end();
    FinishReason why = FinishReason::kLength;
    bool done = true;
    if (eos)
      why = FinishReason::kEos;
    else if (stop)
      why = FinishReason::kStop;
    else if (int(s.generated.size()) >= s.req.max_new_tokens)
      why = FinishReason::kLength;
    else if (int(s.tokens.size()) >= max_context_)
      why = FinishReason::kContext;
    else
      done = false;
    if (on_token_)
      on_token_(s.req.id, tok, done ? &why : nullptr,
                s.req.sampling.logprobs >= 0 ? &s.logprobs.back() : nullptr);
    if (done) finish(i, why);
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const Sequence& s) { return s.slot < 0; }),
                 running_.end());
  timing_.total = std::chrono::duration<double>(clock::now() - t0).count();
  timing_.schedule = std::chrono::duration<double>(t1 - t0).count();
  timing_.exchange = model_.moe_times().exchange;
  total_timing_.total += timing_.total;
  total_timing_.schedule += timing_.schedule;
  total_timing_.exchange += timing_.exchange;
  if (RoutingTraceRecorder* trace = model_.routing_trace())
    trace->record_step_time(timing_.total, model_.moe_times());
  if (step_prompt_tokens_ > 0) {
    ++phases_.prefill_steps;
    phases_.prefill_tokens += step_prompt_tokens_;
    phases_.prefill_s += timing_.total;
  } else {
    ++phases_.decode_steps;
    phases_.decode_tokens += int64_t(logit_seq_.size());
    phases_.decode_s += timing_.total;
  }
  if (after_step_) after_step_(steps_);
  return true;
}

void Engine::cancel(int64_t id) {
  if (waiting_.erase(id)) {
    Result r{id, {}, FinishReason::kCancelled, std::nullopt, {}};
    if (on_finish_) on_finish_(std::move(r));
    return;
  }
  for (size_t i = 0; i < running_.size(); ++i)
    if (running_[i].req.id == id && running_[i].slot >= 0) {
      finish(i, FinishReason::kCancelled);
      running_.erase(running_.begin() + long(i));
      return;
    }
}

void Engine::run(const std::function<void(Result&&)>& on_finish) {
  on_finish_ = on_finish;
  while (step()) {
  }
  on_finish_ = nullptr;
}

}  // namespace moe::runtime
