// The runtime against Hugging Face transformers' MixtralForCausalLM on the committed reference
// checkpoints (tests/data, made by scripts/make_reference.py), and N-rank runs against 1-rank.
// Runs alone and under mpirun -np N: prompt i lives on rank i % N, every rank steps in lockstep
// (an empty batch where it has no prompt), the experts are spread over the N ranks.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "comm/mpi_communicator.h"
#include "common/error.h"
#include "runtime/rank_runtime.h"
#include "tests/support/reference_run.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

constexpr float kAtolHf = 1e-4f, kRtolHf = 1e-4f;  // against transformers (issue 2)
// Batched against alone, and N ranks against 1 rank at top-k <= 2: the same bits, since every
// CPU kernel sums a row in a fixed order whatever the batch (issue 29; 1e-5 before, with BLAS
// GEMMs). At top-k > 2 a rank that holds several of a token's experts adds their rows before
// sending them back, so the order of the k-term sum follows the placement: N ranks may differ
// from 1 in the last bits there (kTolRanksTopKOver2, as before).
constexpr float kTolRanks = 0.0f;
constexpr float kTolRanksTopKOver2 = 1e-5f;

// The shared driver: tests/support/reference_run.h.
runtime::RunConfig run_config(const Reference& ref, const std::string& placement = "contiguous") {
  return reference_run_config(ref, placement);
}

class ReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceTest, LogitsMatchTransformers) {
  const Reference ref = load_reference(GetParam());
  runtime::RankRuntime rt(run_config(ref), world());
  const auto got = run_reference_steps(ref, rt, world());
  const int V = rt.model_config().vocab_size;
  float worst = 0.0f;
  for (const auto& [i, pl] : got) {
    const auto& want = ref.prompts[i];
    ASSERT_EQ(pl.prefill.size(), want.prefill_logits.size());
    ASSERT_EQ(pl.decode.size(), want.decode_logits.size());
    EXPECT_TRUE(all_close(pl.prefill.data(), want.prefill_logits.data(), pl.prefill.size(),
                          kAtolHf, kRtolHf, GetParam() + " prompt" + std::to_string(i) + " prefill"));
    EXPECT_TRUE(all_close(pl.decode.data(), want.decode_logits.data(), pl.decode.size(), kAtolHf,
                          kRtolHf, GetParam() + " prompt" + std::to_string(i) + " decode"));
    worst = std::max({worst, max_abs_diff(pl.prefill.data(), want.prefill_logits.data(), pl.prefill.size()),
                      max_abs_diff(pl.decode.data(), want.decode_logits.data(), pl.decode.size())});
    // The greedy decode ids the reference fed are what our logits choose too.
    EXPECT_EQ(argmax_ids(pl, V, want.decode_ids.size()), want.decode_ids)
        << GetParam() << " prompt" << i;
  }
  double w = worst;
  world().all_reduce(&w, 1, comm::Communicator::Op::kMax);
  if (world().rank() == 0)
    std::printf("[ figures  ] %s: max |logit - transformers| = %.3g over %d rank(s)\n",
                GetParam().c_str(), w, world().size());
}

TEST_P(ReferenceTest, GreedyTokensMatchGenerate) {
  const Reference ref = load_reference(GetParam());
  runtime::RankRuntime rt(run_config(ref), world());
  const auto results = generate_greedy(ref, rt, world());
  for (const auto& [id, r] : results) {
    const auto& want = ref.prompts[id];
    EXPECT_EQ(r.output, want.generated_ids) << GetParam() << " prompt" << id;
    EXPECT_EQ(r.finish == runtime::FinishReason::kEos, want.hit_eos) << GetParam() << " prompt" << id;
  }
}

// The N-rank logits against a 1-rank model built on each rank over MPI_COMM_SELF.
TEST_P(ReferenceTest, RanksMatchOneRank) {
  const Reference ref = load_reference(GetParam());
  for (const std::string placement : {"contiguous", "round_robin"}) {
    runtime::RankRuntime multi(run_config(ref, placement), world());
    const auto got = run_reference_steps(ref, multi, world());
    runtime::RankRuntime single(run_config(ref), self());
    std::map<int, PromptLogits> want;
    {
      // The same prompts on one rank: run each through the lockstep driver of a world of 1.
      Reference mine = ref;
      for (const auto& [i, pl] : got) {
        mine.prompts = {ref.prompts[i]};
        want[i] = run_reference_steps(mine, single, self()).at(0);
      }
    }
    const float tol = multi.model_config().num_experts_per_tok <= 2 ? kTolRanks : kTolRanksTopKOver2;
    for (const auto& [i, pl] : got) {
      EXPECT_TRUE(all_close(pl.prefill.data(), want[i].prefill.data(), pl.prefill.size(), tol,
                            0.0f, placement + " prompt" + std::to_string(i) + " prefill"));
      EXPECT_TRUE(all_close(pl.decode.data(), want[i].decode.data(), pl.decode.size(), tol,
                            0.0f, placement + " prompt" + std::to_string(i) + " decode"));
    }
  }
}

// Several sequences of different lengths in one step give what each gives alone.
TEST_P(ReferenceTest, BatchedEqualsOneByOne) {
  const Reference ref = load_reference(GetParam());
  runtime::RankRuntime rt(run_config(ref), self());
  const int V = rt.model_config().vocab_size;
  std::vector<std::vector<float>> alone;
  std::vector<float> logits;
  for (const auto& p : ref.prompts) {
    runtime::StepBatch b;
    const int slot = rt.cache().acquire();
    for (size_t t = 0; t < p.prompt_ids.size(); ++t) {
      b.tokens.push_back(p.prompt_ids[t]);
      b.slot.push_back(slot);
      b.pos.push_back(int(t));
    }
    b.logit_rows = {b.size() - 1};
    rt.model().forward(b, logits);
    alone.push_back(logits);
    rt.cache().release(slot);
  }
  runtime::StepBatch b;
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    const auto& ids = ref.prompts[i].prompt_ids;
    for (size_t t = 0; t < ids.size(); ++t) {
      b.tokens.push_back(ids[t]);
      b.slot.push_back(int(i));
      b.pos.push_back(int(t));
    }
    b.logit_rows.push_back(b.size() - 1);
  }
  rt.model().forward(b, logits);
  for (size_t i = 0; i < alone.size(); ++i)
    EXPECT_TRUE(all_close(logits.data() + i * V, alone[i].data(), V, kTolRanks, 0.0f,
                          "batched prompt" + std::to_string(i)));

  // And through the engine: all prompts at once, with a small token budget that forces chunked
  // prefill, give the tokens transformers generates one prompt at a time.
  runtime::RunConfig rc = run_config(ref);
  rc.max_tokens_per_step = 5;
  runtime::RankRuntime chunked(rc, self());
  for (size_t i = 0; i < ref.prompts.size(); ++i)
    chunked.engine().add({int64_t(i), ref.prompts[i].prompt_ids, 16});
  std::map<int64_t, std::vector<int32_t>> out;
  chunked.engine().run([&](runtime::Result&& r) { out[r.id] = r.output; });
  for (size_t i = 0; i < ref.prompts.size(); ++i)
    EXPECT_EQ(out[int64_t(i)], ref.prompts[i].generated_ids) << "chunked prompt" << i;
}

// A sequence re-submitted to a restarted worker job with the tokens the lost job made goes on
// as the lost job would have: greedy, it gives transformers' tokens; sampled with a seed and
// penalties, the tokens of an uninterrupted run (the draws and penalties count the resumed
// tokens as output).
TEST_P(ReferenceTest, ResumedSequencesGoOnAsTheLostJobWould) {
  const Reference ref = load_reference(GetParam());
  runtime::RunConfig rc = run_config(ref);
  rc.max_tokens_per_step = 7;  // chunked prefill across prompt and resumed tokens
  runtime::RankRuntime rt(rc, self());
  const int n_new = 16;
  int64_t id = 0;
  std::map<int64_t, std::vector<int32_t>> want;
  for (const auto& p : ref.prompts)
    for (size_t k : {size_t(1), size_t(6), size_t(n_new - 1)}) {
      if (k >= p.generated_ids.size()) continue;  // it ended (eos) before that
      runtime::Request r{id, p.prompt_ids, n_new};
      r.resumed.assign(p.generated_ids.begin(), p.generated_ids.begin() + long(k));
      rt.engine().add(std::move(r));
      want[id++] = p.generated_ids;
    }
  std::map<int64_t, std::vector<int32_t>> out;
  rt.engine().run([&](runtime::Result&& r) { out[r.id] = r.output; });
  for (const auto& [i, w] : want) EXPECT_EQ(out[i], w) << GetParam() << " greedy request " << i;

  runtime::SamplingParams sp;
  sp.temperature = 1.0f;
  sp.seed = 1234;
  sp.repetition_penalty = 1.3f;
  sp.frequency_penalty = 0.5f;
  sp.min_tokens = 10;
  const auto& prompt = ref.prompts[0].prompt_ids;
  runtime::Request whole{100, prompt, n_new};
  whole.sampling = sp;
  whole.ignore_eos = true;
  rt.engine().add(whole);
  std::vector<int32_t> full;
  rt.engine().run([&](runtime::Result&& r) { full = r.output; });
  ASSERT_EQ(full.size(), size_t(n_new));
  for (size_t k : {size_t(3), size_t(9)}) {
    runtime::Request r = whole;
    r.id = 101;
    r.resumed.assign(full.begin(), full.begin() + long(k));
    rt.engine().add(std::move(r));
    std::vector<int32_t> resumed;
    rt.engine().run([&](runtime::Result&& res) { resumed = res.output; });
    EXPECT_EQ(resumed, full) << GetParam() << " seeded, resumed after " << k;
  }
  runtime::Request bad{200, prompt, 4};
  bad.resumed = {1, 2, 3, 4};
  EXPECT_THROW(rt.engine().add(bad), InputError);
}

// A router that sends every token to expert 0 (tiny_skew, see tests/data/README.md) shows up in
// the statistics: 45 tokens (3 prompts, prefill and 8 decodes) choose expert 0 in each layer,
// so the expert imbalance is 45 / (90 / 8) = 4 exactly, against well under 2 for tiny_a.
TEST(LoadStatsTest, SkewedRouterShowsInImbalance) {
  for (const std::string name : {"tiny_skew", "tiny_a"}) {
    const Reference ref = load_reference(name);
    runtime::RankRuntime rt(run_config(ref), world());
    run_reference_steps(ref, rt, world());
    runtime::LoadStats stats = rt.stats();
    stats.reduce(world());
    for (int l = 0; l < stats.n_layers; ++l) {
      int64_t total = 0;
      for (int e = 0; e < stats.n_experts; ++e) total += stats.token_count(l, e);
      EXPECT_EQ(total, 90) << name << " layer " << l;  // 45 tokens x top-2
      if (name == "tiny_skew") {
        EXPECT_EQ(stats.token_count(l, 0), 45) << "layer " << l;
        EXPECT_DOUBLE_EQ(stats.expert_imbalance(l), 4.0) << "layer " << l;
      } else {
        EXPECT_LT(stats.expert_imbalance(l), 2.0) << "layer " << l;
      }
      // Every routed choice was computed by exactly one rank.
      int64_t computed = 0;
      for (int r = 0; r < stats.world; ++r) computed += stats.computed(l, r);
      EXPECT_EQ(computed, total) << name << " layer " << l;
    }
  }
}

// With every expert on rank 0, a token's two experts share a rank: its hidden state crosses
// once (45 rows per layer, not 90) while both experts still run on it (90 rows computed), and
// the logits stay those of transformers.
TEST(LoadStatsTest, TokenCrossesOncePerDestinationRank) {
  const Reference ref = load_reference("tiny_a");
  runtime::RunConfig rc = run_config(ref, "explicit");
  rc.placement_map = {std::vector<std::vector<int>>(8, std::vector<int>{0})};
  runtime::RankRuntime rt(rc, world());
  const auto got = run_reference_steps(ref, rt, world());
  for (const auto& [i, pl] : got)
    EXPECT_TRUE(all_close(pl.prefill.data(), ref.prompts[i].prefill_logits.data(),
                          pl.prefill.size(), kAtolHf, kRtolHf, "all-on-rank-0 prefill"));
  runtime::LoadStats stats = rt.stats();
  stats.reduce(world());
  for (int l = 0; l < stats.n_layers; ++l) {
    int64_t sent = 0, to_rank0 = 0;
    for (int s = 0; s < stats.world; ++s)
      for (int d = 0; d < stats.world; ++d) {
        sent += stats.row_count(l, s, d);
        if (d == 0) to_rank0 += stats.row_count(l, s, d);
      }
    EXPECT_EQ(sent, 45) << "layer " << l;
    EXPECT_EQ(to_rank0, 45) << "layer " << l;
    EXPECT_EQ(stats.computed(l, 0), 90) << "layer " << l;
  }
  // The summary the load table and --stats-json give: 90 rows saved over the 2 layers, and the
  // rows of every rank but 0 cross to rank 0.
  const auto t = stats.row_totals();
  EXPECT_EQ(t.routed, 2 * 90);
  EXPECT_EQ(t.sent, 2 * 45);
  int64_t own = 0;
  for (int l = 0; l < stats.n_layers; ++l) own += stats.row_count(l, 0, 0);
  EXPECT_EQ(t.remote, t.sent - own);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, ReferenceTest,
                         ::testing::Values("tiny_a", "tiny_b", "tiny_c", "tiny_skew"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace moe::test
