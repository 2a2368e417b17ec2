#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>

#include "common/error.h"
#include "kernels/random_fill.h"

namespace moe::runtime {

namespace {
void refuse(const std::string& field, double value, const std::string& expected) {
  std::ostringstream v;
  v << value;  // -1, 0.5, nan: as a user wrote it, not -1.000000
  throw InputError(field + " is " + v.str() + ", expected " + expected);
}
}  // namespace

void SamplingParams::validate(int vocab_size) const {
  if (!(temperature >= 0.0f && temperature <= 100.0f))
    refuse("temperature", temperature, "a number in [0, 100]");
  if (!(top_p > 0.0f && top_p <= 1.0f)) refuse("top_p", top_p, "a number in (0, 1]");
  if (top_k < 0) refuse("top_k", top_k, "an integer >= 0 (0: all tokens)");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) refuse("min_p", min_p, "a number in [0, 1]");
  if (!(repetition_penalty > 0.0f && repetition_penalty <= 100.0f))
    refuse("repetition_penalty", repetition_penalty, "a number in (0, 100]");
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    refuse("frequency_penalty", frequency_penalty, "a number in [-2, 2]");
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    refuse("presence_penalty", presence_penalty, "a number in [-2, 2]");
  if (logprobs < -1 || logprobs > 20) refuse("logprobs", logprobs, "an integer in [0, 20]");
  if (min_tokens < 0) refuse("min_tokens", min_tokens, "an integer >= 0");
  for (int32_t t : stop_token_ids)
    if (t < 0 || t >= vocab_size)
      throw InputError("stop_token_ids holds " + std::to_string(t) + ", outside the vocabulary [0, " +
                       std::to_string(vocab_size) + ")");
}

double sample_uniform(uint64_t seed, uint64_t i) {
  const uint64_t z = kernels::mix64(kernels::mix64(seed) + (i + 1) * 0x9e3779b97f4a7c15ull);
  return double(z >> 11) * (1.0 / 9007199254740992.0);  // 53 bits
}

int32_t Sampler::next(const float* logits, int V, const SamplingParams& p, uint64_t seed,
                      const std::vector<int32_t>& prompt, const std::vector<int32_t>& output,
                      int eos_token_id, TokenLogprob* lp) {
  const bool penalties =
      p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
  const bool barred = int(output.size()) < p.min_tokens;
  const float* w = logits;
  if (penalties || barred) {
    work_.assign(logits, logits + V);
    w = work_.data();
  }
  float* pw = work_.data();

  // Penalties, as vLLM applies them to the logits.
  if (penalties) {
    counts_.assign(size_t(V), 0);
    seen_.assign(size_t(V), 0);
    for (int32_t t : prompt) seen_[size_t(t)] = 1;
    for (int32_t t : output) {
      seen_[size_t(t)] = 1;
      ++counts_[size_t(t)];
    }
    for (int v = 0; v < V; ++v) {
      if (seen_[size_t(v)] && p.repetition_penalty != 1.0f)
        pw[v] = pw[v] > 0 ? pw[v] / p.repetition_penalty : pw[v] * p.repetition_penalty;
      if (counts_[size_t(v)] > 0)
        pw[v] -= p.frequency_penalty * float(counts_[size_t(v)]) + p.presence_penalty;
    }
  }
  // Not yet min_tokens: eos and the stop tokens cannot be drawn.
  if (barred) {
    const float none = -std::numeric_limits<float>::infinity();
    if (eos_token_id >= 0 && eos_token_id < V) pw[eos_token_id] = none;
    for (int32_t t : p.stop_token_ids) pw[t] = none;
  }

  int32_t chosen = 0;
  if (p.greedy()) {
    chosen = int32_t(std::max_element(w, w + V) - w);
  } else {
    // Candidates most likely first, ties to the lower id: a fixed order for the draw.
    order_.resize(size_t(V));
    std::iota(order_.begin(), order_.end(), 0);
    const auto by_logit = [w](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); };
    int n = V;
    if (p.top_k > 0 && p.top_k < V) {
      std::partial_sort(order_.begin(), order_.begin() + p.top_k, order_.end(), by_logit);
      n = p.top_k;
    } else {
      std::sort(order_.begin(), order_.end(), by_logit);
    }
    // Softmax at the temperature over the candidates, in double.
    const double top = double(w[order_[0]]) / p.temperature;
    std::vector<double> prob(static_cast<size_t>(n));
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
      prob[size_t(i)] = std::exp(double(w[order_[size_t(i)]]) / p.temperature - top);
      sum += prob[size_t(i)];
    }
    // min_p against the most likely, then the nucleus.
    int keep = n;
    if (p.min_p > 0.0f)
      while (keep > 1 && prob[size_t(keep - 1)] < p.min_p * prob[0]) --keep;
    if (p.top_p < 1.0f) {
      double cum = 0.0;
      int j = 0;
      double kept_sum = 0.0;
      for (int i = 0; i < keep; ++i) kept_sum += prob[size_t(i)];
      while (j < keep) {
        cum += prob[size_t(j++)];
        if (cum >= double(p.top_p) * kept_sum) break;
      }
      keep = j;
    }
    double total = 0.0;
    for (int i = 0; i < keep; ++i) total += prob[size_t(i)];
    const double u = sample_uniform(seed, output.size()) * total;
    double cum = 0.0;
    chosen = order_[size_t(keep - 1)];
    for (int i = 0; i < keep; ++i) {
      cum += prob[size_t(i)];
      if (u < cum) {
        chosen = order_[size_t(i)];
        break;
      }
    }
  }

  if (lp && p.logprobs >= 0) {
    // log-softmax of the raw logits, in double.
    const double mx = *std::max_element(logits, logits + V);
    double sum = 0.0;
    for (int v = 0; v < V; ++v) sum += std::exp(double(logits[v]) - mx);
    const double log_z = mx + std::log(sum);
    lp->token = chosen;
    lp->logprob = float(double(logits[chosen]) - log_z);
    lp->top.clear();
    if (p.logprobs > 0) {
      order_.resize(size_t(V));
      std::iota(order_.begin(), order_.end(), 0);
      const int n = std::min(p.logprobs, V);
      std::partial_sort(order_.begin(), order_.begin() + n, order_.end(), [logits](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
      });
      for (int i = 0; i < n; ++i)
        lp->top.emplace_back(order_[size_t(i)], float(double(logits[order_[size_t(i)]]) - log_z));
    }
  }
  return chosen;
}

}  // namespace moe::runtime
