// Step reports merged on the worker's link (launcher/step_merge.h) carry what the separate
// reports did: the coordinator's statistics and token streams come out the same.
#include <gtest/gtest.h>

#include "common/error.h"
#include "launcher/step_merge.h"

namespace moe::test {
namespace {

moe::v1::StepReport report(int64_t step, double secs, std::vector<int64_t> per_expert,
                           std::vector<int64_t> seqs) {
  moe::v1::StepReport r;
  r.set_step(step);
  r.set_step_seconds(secs);
  r.set_compute_seconds(secs / 2);
  r.set_exchange_seconds(secs / 4);
  r.set_schedule_seconds(secs / 8);
  r.set_control_seconds(secs / 16);
  for (auto v : per_expert) r.add_tokens_per_expert(v);
  for (auto v : per_expert) r.add_rows_computed(2 * v);
  for (auto v : per_expert) r.add_rows_sent(3 * v);
  for (auto id : seqs) {
    auto* t = r.add_tokens();
    t->set_seq_id(id);
    t->set_token_id(int32_t(100 * step + id));
  }
  r.set_rebalances(step);
  r.set_rebalance_seconds(0.5 * double(step));
  return r;
}

TEST(StepMerge, CountsAndSecondsAddTokensFollowTheLatestWins) {
  auto a = report(7, 0.010, {1, 2, 3}, {1, 2});
  a.add_expert_rank(0);
  auto b = report(8, 0.020, {4, 0, 1}, {2});
  auto c = report(9, 0.040, {0, 5, 0}, {1, 3});
  c.add_expert_rank(1);
  launcher::merge_step(&a, std::move(b));
  launcher::merge_step(&a, std::move(c));
  EXPECT_EQ(a.step(), 9);
  EXPECT_DOUBLE_EQ(a.step_seconds(), 0.070);
  EXPECT_DOUBLE_EQ(a.compute_seconds(), 0.035);
  EXPECT_DOUBLE_EQ(a.exchange_seconds(), 0.0175);
  EXPECT_DOUBLE_EQ(a.schedule_seconds(), 0.00875);
  EXPECT_DOUBLE_EQ(a.control_seconds(), 0.004375);
  EXPECT_EQ(std::vector<int64_t>(a.tokens_per_expert().begin(), a.tokens_per_expert().end()),
            (std::vector<int64_t>{5, 7, 4}));
  EXPECT_EQ(std::vector<int64_t>(a.rows_computed().begin(), a.rows_computed().end()),
            (std::vector<int64_t>{10, 14, 8}));
  EXPECT_EQ(std::vector<int64_t>(a.rows_sent().begin(), a.rows_sent().end()),
            (std::vector<int64_t>{15, 21, 12}));
  // Every token, in the order the steps made them.
  std::vector<std::pair<int64_t, int32_t>> toks;
  for (const auto& t : a.tokens()) toks.emplace_back(t.seq_id(), t.token_id());
  EXPECT_EQ(toks, (std::vector<std::pair<int64_t, int32_t>>{
                      {1, 701}, {2, 702}, {2, 802}, {1, 901}, {3, 903}}));
  EXPECT_EQ(a.rebalances(), 9);
  EXPECT_DOUBLE_EQ(a.rebalance_seconds(), 4.5);
  ASSERT_EQ(a.expert_rank_size(), 1);
  EXPECT_EQ(a.expert_rank(0), 1);  // the latest placement
}

TEST(StepMerge, AnEmptyReportKeepsThePlacementAndCounts) {
  auto a = report(3, 0.01, {1, 1}, {4});
  a.add_expert_rank(1);
  moe::v1::StepReport none;  // a report without a step or counts
  none.set_step(3);
  launcher::merge_step(&a, std::move(none));
  EXPECT_EQ(a.expert_rank_size(), 1);
  EXPECT_EQ(a.tokens_per_expert_size(), 2);
  EXPECT_EQ(a.tokens_size(), 1);
}

TEST(StepMerge, ReportsOfDifferentShapesAreRefused) {
  auto a = report(1, 0.01, {1, 2}, {});
  EXPECT_THROW(launcher::merge_step(&a, report(2, 0.01, {1, 2, 3}, {})), Error);
}

}  // namespace
}  // namespace moe::test
