// The sampler: greedy at temperature 0, a draw that follows the softmax (a chi-square test with
// a fixed seed, so it cannot flake, yet fails for a sampler that ignores the logits), the
// filters, the penalties, min_tokens, logprobs and the refusals.
#include <cmath>
#include <vector>

#include "common/error.h"
#include "runtime/sampling.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

using runtime::Sampler;
using runtime::SamplingParams;

const std::vector<float> kLogits = {1.0f, 2.0f, 0.5f, 2.0f, -1.0f};  // a tie at 1 and 3

int32_t draw(Sampler& s, const SamplingParams& p, uint64_t seed, std::vector<int32_t>& out,
             const std::vector<float>& logits = kLogits, int eos = -1) {
  return s.next(logits.data(), int(logits.size()), p, seed, {}, out, eos, nullptr);
}

TEST(Sampling, TemperatureZeroIsTheFirstMaximum) {
  Sampler s;
  std::vector<int32_t> out;
  EXPECT_EQ(draw(s, {}, 1, out), 1);
}

TEST(Sampling, DrawsFollowTheSoftmax) {
  Sampler s;
  SamplingParams p;
  p.temperature = 0.7f;
  const int n = 20000, V = int(kLogits.size());
  std::vector<double> want(static_cast<size_t>(V));
  double z = 0;
  for (int v = 0; v < V; ++v) z += want[size_t(v)] = std::exp(double(kLogits[size_t(v)]) / 0.7);
  std::vector<int> seen(static_cast<size_t>(V), 0);
  std::vector<int32_t> out;  // its length is the draw's counter
  for (int i = 0; i < n; ++i) {
    const int32_t t = draw(s, p, 42, out);
    ++seen[size_t(t)];
    out.push_back(t);
  }
  double chi2 = 0;
  for (int v = 0; v < V; ++v) {
    const double e = n * want[size_t(v)] / z;
    chi2 += (seen[size_t(v)] - e) * (seen[size_t(v)] - e) / e;
  }
  // 4 degrees of freedom: 18.47 is the 0.1% critical value. Seed 42 is fixed, so the figure is
  // too; a uniform sampler gives chi2 in the thousands.
  EXPECT_LT(chi2, 18.47) << "counts " << seen[0] << " " << seen[1] << " " << seen[2] << " "
                         << seen[3] << " " << seen[4];
}

TEST(Sampling, TheSameSeedGivesTheSameTokens) {
  Sampler s;
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<int32_t> a, b, c;
  for (int i = 0; i < 64; ++i) {
    a.push_back(draw(s, p, 7, a));
    b.push_back(draw(s, p, 7, b));
    c.push_back(draw(s, p, 8, c));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Sampling, FiltersLeaveOnlyWhatTheyKeep) {
  Sampler s;
  std::vector<int32_t> out;
  for (int i = 0; i < 200; ++i) {
    SamplingParams k1;
    k1.temperature = 2.0f;
    k1.top_k = 1;
    EXPECT_EQ(draw(s, k1, uint64_t(i), out), 1) << "top_k 1 is greedy (ties to the lower id)";
    SamplingParams k2 = k1;
    k2.top_k = 2;
    const int32_t t = draw(s, k2, uint64_t(i), out);
    EXPECT_TRUE(t == 1 || t == 3) << t;
    SamplingParams mp;
    mp.temperature = 1.0f;
    mp.min_p = 0.5f;  // keeps 1 and 3 (equal), drops 0 (e^-1 of them) and the rest
    const int32_t u = draw(s, mp, uint64_t(i), out);
    EXPECT_TRUE(u == 1 || u == 3) << u;
    SamplingParams tp;
    tp.temperature = 1.0f;
    tp.top_p = 0.05f;  // the single most likely token holds more than 5%
    EXPECT_EQ(draw(s, tp, uint64_t(i), out), 1);
  }
}

TEST(Sampling, PenaltiesAndMinTokens) {
  Sampler s;
  const std::vector<float> logits = {0.0f, 3.0f, 2.9f, 0.0f};
  SamplingParams rep;
  rep.repetition_penalty = 1.2f;  // 3.0 / 1.2 = 2.5 < 2.9
  std::vector<int32_t> out = {1};
  EXPECT_EQ(s.next(logits.data(), 4, rep, 0, {}, out, -1, nullptr), 2);
  std::vector<int32_t> none;
  EXPECT_EQ(s.next(logits.data(), 4, rep, 0, {1}, none, -1, nullptr), 2) << "prompt tokens count";
  SamplingParams freq;
  freq.frequency_penalty = 0.05f;  // two occurrences: 3.0 - 0.1 = 2.9, a tie won by 1
  std::vector<int32_t> twice = {1, 1};
  EXPECT_EQ(s.next(logits.data(), 4, freq, 0, {}, twice, -1, nullptr), 1);
  std::vector<int32_t> thrice = {1, 1, 1};
  EXPECT_EQ(s.next(logits.data(), 4, freq, 0, {}, thrice, -1, nullptr), 2);
  SamplingParams pres;
  pres.presence_penalty = 0.2f;
  EXPECT_EQ(s.next(logits.data(), 4, pres, 0, {}, out, -1, nullptr), 2);
  // eos (1) and a stop token (2) barred before min_tokens.
  SamplingParams mt;
  mt.min_tokens = 2;
  mt.stop_token_ids = {2};
  std::vector<int32_t> one = {0};
  EXPECT_EQ(s.next(logits.data(), 4, mt, 0, {}, one, 1, nullptr), 0);
  std::vector<int32_t> two = {0, 0};
  EXPECT_EQ(s.next(logits.data(), 4, mt, 0, {}, two, 1, nullptr), 1);
}

TEST(Sampling, LogprobsAreTheModelsLogSoftmax) {
  Sampler s;
  SamplingParams p;
  p.logprobs = 2;
  p.temperature = 0.0f;
  runtime::TokenLogprob lp;
  std::vector<int32_t> out;
  const int32_t t = s.next(kLogits.data(), 5, p, 0, {}, out, -1, &lp);
  double z = 0;
  for (float l : kLogits) z += std::exp(double(l));
  EXPECT_EQ(lp.token, t);
  EXPECT_NEAR(lp.logprob, 2.0 - std::log(z), 1e-6);
  ASSERT_EQ(lp.top.size(), 2u);
  EXPECT_EQ(lp.top[0].first, 1);
  EXPECT_EQ(lp.top[1].first, 3);
  EXPECT_NEAR(lp.top[1].second, 2.0 - std::log(z), 1e-6);
}

TEST(Sampling, OutOfRangeFieldsAreRefusedByName) {
  auto refused = [](SamplingParams p, const char* field) {
    try {
      p.validate(100);
    } catch (const InputError& e) {
      return std::string(e.what()).find(field) != std::string::npos;
    }
    return false;
  };
  SamplingParams p;
  EXPECT_NO_THROW(p.validate(100));
  p.temperature = -1;
  EXPECT_TRUE(refused(p, "temperature"));
  p = {};
  p.top_p = 0;
  EXPECT_TRUE(refused(p, "top_p"));
  p = {};
  p.top_k = -3;
  EXPECT_TRUE(refused(p, "top_k"));
  p = {};
  p.min_p = 2;
  EXPECT_TRUE(refused(p, "min_p"));
  p = {};
  p.repetition_penalty = 0;
  EXPECT_TRUE(refused(p, "repetition_penalty"));
  p = {};
  p.frequency_penalty = 3;
  EXPECT_TRUE(refused(p, "frequency_penalty"));
  p = {};
  p.logprobs = 21;
  EXPECT_TRUE(refused(p, "logprobs"));
  p = {};
  p.stop_token_ids = {100};
  EXPECT_TRUE(refused(p, "stop_token_ids"));
  p = {};
  p.temperature = std::nanf("");
  EXPECT_TRUE(refused(p, "temperature"));
}

}  // namespace
}  // namespace moe::test
