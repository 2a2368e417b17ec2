#pragma once
// The per-rank generation loop. Each rank owns its sequences (data-parallel attention) and
// batches them continuously: every step, running decodes first, then prefill chunks of waiting
// prompts, under a token budget. Steps are taken in lockstep with every other rank: whether a
// step happens at all is agreed by an all-reduce, so a rank with no work still joins the
// exchanges of the others.
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include "comm/communicator.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"
#include "runtime/request.h"
#include "runtime/waiting_queue.h"

namespace moe::runtime {

// Where one step's wall time went, on this rank.
struct StepTiming {
  double total = 0, schedule = 0, exchange = 0;
  double compute() const { return total - schedule - exchange; }
};

// Steps split by what they ran: a step with any prompt token counts as prefill (its decodes
// ride along), a step of decodes alone as decode. Summed since the engine was made.
struct PhaseTotals {
  int64_t prefill_steps = 0, decode_steps = 0;
  int64_t prefill_tokens = 0;  // prompt tokens run (in prefill steps)
  int64_t decode_tokens = 0;   // tokens generated in decode steps
  double prefill_s = 0, decode_s = 0;
};

// Called for every generated token; `finish` is set on a sequence's last one, `logprob` where the
// sequence asked for logprobs.
using TokenCallback = std::function<void(int64_t id, int32_t token, const FinishReason* finish,
                                         const TokenLogprob* logprob)>;

struct EngineOptions {
  int max_tokens_per_step = 512;  // token budget of one step (prefill chunks + decodes)
  int eos_token_id = -1;          // -1: none
  bool ignore_eos = false;        // keep generating past eos, as vLLM's ignore_eos
};

class Engine {
 public:
  Engine(Model& model, KvCache& cache, comm::Communicator& comm, EngineOptions opts);

  // Refuses (InputError naming the request) an empty prompt, ids outside the vocabulary,
  // max_new_tokens < 1 or prompt + max_new_tokens beyond the context.
  void validate(const Request& r) const;
  // Queues a request on this rank; validate() first.
  void add(Request r);

  // One lockstep step for every rank. Returns false, on every rank together, once no rank has
  // anything left to do. `agreed_work`: the caller has already agreed with every rank whether
  // some rank has work (the serving loop learns it from its one exchange per step), so the
  // step skips its own all_reduce; a rank with nothing to do still takes part.
  bool step(std::optional<bool> agreed_work = std::nullopt);
  // step() until every rank is done. on_finish is called for each finished sequence.
  void run(const std::function<void(Result&&)>& on_finish);

  // Streams every token as it is made (the serving worker).
  void set_on_token(TokenCallback cb) { on_token_ = std::move(cb); }
  // Called at the end of every step that ran, with the step count, on every rank together (a
  // step boundary: the place for collectives between steps, such as moving experts). Its time
  // is not part of the step's timing.
  void set_after_step(std::function<void(int64_t step)> cb) { after_step_ = std::move(cb); }
  // Drops a waiting or running sequence of this rank and frees its KV slot; its finish callback
  // reports kCancelled. Unknown ids (already finished) are ignored.
  void cancel(int64_t id);
  const StepTiming& last_timing() const { return timing_; }
  // Every step's timing summed since the engine was made.
  const StepTiming& total_timing() const { return total_timing_; }
  const PhaseTotals& phase_totals() const { return phases_; }

  bool idle() const { return waiting_.empty() && running_.empty(); }
  int64_t steps() const { return steps_; }
  int64_t tokens_processed() const { return tokens_processed_; }

 private:
  struct Sequence {
    Request req;
    int slot = -1;
    int cached = 0;               // positions whose K, V are in the cache
    std::vector<int32_t> tokens;  // prompt, then generated
    std::vector<int32_t> generated;
    std::vector<TokenLogprob> logprobs;  // per generated token, where asked
    uint64_t seed = 0;                   // the request's, or one drawn for it
    bool decoding = false;  // its first token of this job is sampled: one token per step now
  };
  void schedule();  // fills batch_ from running_ and waiting_
  void finish(size_t i, FinishReason why);

  Model& model_;
  KvCache& cache_;
  comm::Communicator& comm_;
  EngineOptions opts_;
  int max_context_;

  WaitingQueue waiting_;
  std::vector<Sequence> running_;
  StepBatch batch_;
  std::vector<int> logit_seq_;  // running_ index of each logit row
  std::vector<float> logits_;
  std::vector<Result> done_;
  std::function<void(Result&&)> on_finish_;
  TokenCallback on_token_;
  std::function<void(int64_t)> after_step_;
  Sampler sampler_;
  std::random_device entropy_;  // seeds for requests that give none
  StepTiming timing_, total_timing_;
  PhaseTotals phases_;
  int step_prompt_tokens_ = 0;  // prompt tokens in the step being run
  int64_t steps_ = 0, tokens_processed_ = 0;
};

}  // namespace moe::runtime
