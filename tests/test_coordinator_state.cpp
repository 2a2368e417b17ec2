// The coordinator's State without gRPC: a fake worker link records the work it is sent. Work is
// placed on the rank with the fewest tokens still owed, counted by the coordinator as it sends
// work and tokens come back, so a burst admitted before any step report spreads evenly.
#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "launcher/coordinator/state.h"

namespace moe::test {
namespace {

struct FakeJob {
  std::vector<moe::v1::WorkItem> sent;
  std::map<int64_t, int> rank_of;
};

moe::v1::WorkerHello hello(int world) {
  moe::v1::WorkerHello h;
  h.set_world_size(world);
  h.set_vocab_size(64);
  h.set_max_context(128);
  h.set_experts(4);
  h.set_layers(1);
  return h;
}

moe::v1::BatchItem item(int prompt_len, int max_new) {
  moe::v1::BatchItem it;
  for (int i = 0; i < prompt_len; ++i) it.add_prompt_ids(3 + i);
  it.set_max_new_tokens(max_new);
  return it;
}

std::vector<int64_t> owed(const coordinator::State& s) {
  moe::v1::LoadStatsResponse r;
  EXPECT_TRUE(s.load_stats(false, &r));
  return {r.outstanding_tokens_per_rank().begin(), r.outstanding_tokens_per_rank().end()};
}

TEST(CoordinatorState, ABurstSpreadsOverTheRanksAndTokensPayTheCountDown) {
  coordinator::State s(coordinator::Options{});
  FakeJob job;
  ASSERT_TRUE(s.attach(hello(2), [&](const moe::v1::CoordinatorMessage& m) {
                 if (m.has_work()) {
                   job.sent.push_back(m.work());
                   job.rank_of[m.work().seq_id()] = m.work().rank();
                 }
                 return true;
               }, [] {}).ok());
  // Eight sequences at once, before any report: four on each rank.
  std::vector<int64_t> ids;
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(s.admit({item(4, 6)}, "", true, &ids).ok());
  ASSERT_EQ(job.sent.size(), 8u);
  int on_rank0 = 0;
  for (const auto& w : job.sent) on_rank0 += w.rank() == 0;
  EXPECT_EQ(on_rank0, 4);
  EXPECT_EQ(owed(s), (std::vector<int64_t>{40, 40}));  // 4 x (4 prompt + 6 new) each

  // The first tokens come back: the prompts are prefilled.
  moe::v1::StepReport st;
  st.set_step(1);
  for (int64_t id : ids) {
    auto* t = st.add_tokens();
    t->set_seq_id(id);
    t->set_token_id(7);
  }
  s.on_step(st);
  // Each has its prompt prefilled and one token of six: five owed each.
  EXPECT_EQ(owed(s), (std::vector<int64_t>{20, 20}));

  // Sequences on rank 0 finish: the next burst goes to rank 0 first.
  moe::v1::StepReport fin;
  fin.set_step(2);
  for (int64_t id : ids)
    if (job.rank_of[id] == 0) {
      auto* t = fin.add_tokens();
      t->set_seq_id(id);
      t->set_token_id(8);
      t->set_finish(moe::v1::FINISH_EOS);
    }
  s.on_step(fin);
  EXPECT_EQ(owed(s), (std::vector<int64_t>{0, 20}));
  std::vector<int64_t> more;
  ASSERT_TRUE(s.admit({item(4, 6)}, "", true, &more).ok());
  EXPECT_EQ(job.rank_of[more[0]], 0);
  EXPECT_EQ(owed(s), (std::vector<int64_t>{10, 20}));

  // A cancelled sequence owes nothing.
  s.cancel(more[0]);
  EXPECT_EQ(owed(s), (std::vector<int64_t>{0, 20}));
}

}  // namespace
}  // namespace moe::test
