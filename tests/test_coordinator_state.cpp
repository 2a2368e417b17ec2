// The coordinator's State without gRPC: a fake worker link records the work it is sent. Work is
// placed on the rank with the fewest tokens still owed, counted by the coordinator as it sends
// work and tokens come back, so a burst admitted before any step report spreads evenly.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <thread>
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

// A request that takes every job down (the worker dies on it) must not be re-submitted to
// every restart until the restarts are spent: in flight at two losses in a row without making a
// token, it fails with why; a sequence that made a token in between goes on.
TEST(CoordinatorState, ASequenceInFlightAtTwoLossesWithoutATokenFails) {
  coordinator::State s(coordinator::Options{});
  std::vector<moe::v1::WorkItem> sent;
  auto attach = [&] {
    sent.clear();
    return s.attach(hello(2), [&](const moe::v1::CoordinatorMessage& m) {
      if (m.has_work()) sent.push_back(m.work());
      return true;
    }, [] {}).ok();
  };
  ASSERT_TRUE(attach());
  std::vector<int64_t> ids;
  ASSERT_TRUE(s.admit({item(4, 6), item(4, 6)}, "", true, &ids).ok());
  const int64_t poison = ids[0], fine = ids[1];

  s.detach("the worker link broke");  // loss 1: both kept, both re-submitted
  ASSERT_TRUE(attach());
  EXPECT_EQ(sent.size(), 2u);
  moe::v1::StepReport st;
  st.set_step(1);
  auto* t = st.add_tokens();
  t->set_seq_id(fine);
  t->set_token_id(7);
  s.on_step(st);

  s.detach("rank 1 died");  // loss 2: `poison` made nothing since loss 1
  const auto now = coordinator::Clock::now();
  const coordinator::Sequence p = s.wait(poison, 0, now);
  EXPECT_EQ(p.error.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_NE(p.error.error_message().find("in flight at 2 worker-job losses in a row without "
                                         "making a token (the last: rank 1 died)"),
            std::string::npos)
      << p.error.error_message();
  const coordinator::Sequence f = s.wait(fine, 1, now);
  EXPECT_FALSE(f.done());
  ASSERT_TRUE(attach());
  ASSERT_EQ(sent.size(), 1u);  // only the one that made a token goes on
  EXPECT_EQ(sent[0].seq_id(), fine);
  moe::v1::LoadStatsResponse r;
  ASSERT_TRUE(s.load_stats(false, &r));
  EXPECT_EQ(r.quarantined(), 1);
}

TEST(CoordinatorState, MaxLossesZeroReSubmitsForEver) {
  coordinator::Options o;
  o.max_losses = 0;
  coordinator::State s(o);
  int sent = 0;
  auto attach = [&] {
    return s.attach(hello(2), [&](const moe::v1::CoordinatorMessage& m) {
      sent += m.has_work();
      return true;
    }, [] {}).ok();
  };
  ASSERT_TRUE(attach());
  std::vector<int64_t> ids;
  ASSERT_TRUE(s.admit({item(4, 6)}, "", true, &ids).ok());
  for (int loss = 0; loss < 4; ++loss) {
    s.detach("lost");
    ASSERT_TRUE(attach());
  }
  EXPECT_EQ(sent, 5);
  EXPECT_FALSE(s.wait(ids[0], 0, coordinator::Clock::now()).done());
}

// A job is judged by its silence while the coordinator runs, not while the coordinator itself
// was stopped or starved (SIGSTOP, a lock held, swapped out): a gap between two watchdog ticks
// longer than the rank timeout keeps the job; the same silence seen tick by tick drops it.
TEST(CoordinatorState, ACoordinatorStallIsNotHeldAgainstTheJob) {
  using namespace std::chrono_literals;
  coordinator::Options o;
  o.rank_timeout_s = 0.5;
  coordinator::State s(o);
  ASSERT_TRUE(s.attach(hello(2), [](const moe::v1::CoordinatorMessage&) { return true; },
                       [] {}).ok());
  std::vector<int64_t> ids;
  ASSERT_TRUE(s.admit({item(4, 6)}, "", true, &ids).ok());
  s.check_timeout();
  std::this_thread::sleep_for(1500ms);  // no tick for 1.5 s: the coordinator did not run
  s.check_timeout();
  EXPECT_TRUE(s.attached()) << "a 1.5 s stall of the coordinator itself dropped the job";
  for (int i = 0; i < 20 && s.attached(); ++i) {
    std::this_thread::sleep_for(100ms);
    s.check_timeout();
  }
  EXPECT_FALSE(s.attached()) << "a job silent for 2 s, seen tick by tick, was kept";
}

}  // namespace
}  // namespace moe::test
