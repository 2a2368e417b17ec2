#pragma once
// How the next token is picked from a sequence's logits, as vLLM's SamplingParams: penalties
// first (repetition on the prompt and the output, frequency and presence on the output), then
// greedy at temperature 0, or a draw from the softmax at `temperature` restricted by top_k,
// top_p and min_p. The draw is a counter-based random number of (seed, index of the token in
// the output): no state, so a seeded sequence gives the same tokens at any rank count, batch
// composition or step schedule (up to logits that differ in their last bits between rank counts
// moving a draw across a boundary, which has probability ~1e-6 per token).
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace moe::runtime {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (the first maximum, as torch.argmax)
  float top_p = 1.0f;        // keep the smallest set of most likely tokens holding top_p
  int top_k = 0;             // keep the k most likely tokens; 0: all
  float min_p = 0.0f;        // keep tokens with probability >= min_p * the largest
  std::optional<uint64_t> seed;  // none: the engine draws one per request
  float repetition_penalty = 1.0f;  // > 1 discourages tokens seen in prompt or output
  float frequency_penalty = 0.0f;   // subtracted once per occurrence in the output
  float presence_penalty = 0.0f;    // subtracted once if present in the output
  int logprobs = -1;  // -1: none; n >= 0: the chosen token's logprob and the top n
  std::vector<int32_t> stop_token_ids;  // finishing tokens besides eos (kept in the output)
  int min_tokens = 0;  // eos and stop tokens are barred before this many tokens

  bool greedy() const { return temperature == 0.0f; }
  // Throws InputError naming the field, its value and the allowed range.
  void validate(int vocab_size) const;
};

// Log-probabilities of the model's distribution (the raw logits' log-softmax, before penalties
// and temperature, as vLLM reports by default).
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // the n most likely, descending
};

class Sampler {
 public:
  // The next token of a sequence from its logits [vocab]; `prompt` and `output` are its tokens so
  // far; `seed` the sequence's seed. Fills `lp` when params.logprobs >= 0. eos_token_id < 0: none.
  int32_t next(const float* logits, int vocab, const SamplingParams& params, uint64_t seed,
               const std::vector<int32_t>& prompt, const std::vector<int32_t>& output,
               int eos_token_id, TokenLogprob* lp);

 private:
  std::vector<float> work_;               // [vocab] processed logits, then probabilities
  std::vector<int32_t> order_;            // [vocab] candidate ids, most likely first
  std::vector<int32_t> counts_;           // [vocab] occurrences in the output
  std::vector<uint8_t> seen_;             // [vocab] in prompt or output
};

// u in [0, 1) from (seed, i): the i-th draw of a sequence.
double sample_uniform(uint64_t seed, uint64_t i);

}  // namespace moe::runtime
