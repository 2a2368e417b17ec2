// The order a rank admits waiting requests in: lower priority first, arrival order among
// equals, and the oldest at least once in every WaitingQueue::kOldestEvery picks, so that a
// batch behind a stream of interactive requests still moves.
#include <gtest/gtest.h>

#include <vector>

#include "runtime/waiting_queue.h"

namespace moe::test {
namespace {

runtime::Request req(int64_t id, std::optional<int> priority) {
  runtime::Request r;
  r.id = id;
  r.priority = priority;
  return r;
}

std::vector<int64_t> drain(runtime::WaitingQueue& q, size_t n) {
  std::vector<int64_t> ids;
  for (size_t i = 0; i < n && !q.empty(); ++i) ids.push_back(q.pop().id);
  return ids;
}

TEST(WaitingQueue, LowerPriorityFirstArrivalOrderAmongEquals) {
  runtime::WaitingQueue q;
  q.push(req(1, 1));
  q.push(req(2, std::nullopt));  // none: 0
  q.push(req(3, -5));
  q.push(req(4, 0));
  // 3 (-5), then 2 and 4 (0, in arrival order); 1 (priority 1, the oldest) was passed over 3
  // times by then and comes next anyway.
  EXPECT_EQ(drain(q, 4), (std::vector<int64_t>{3, 2, 4, 1}));
  EXPECT_TRUE(q.empty());
}

TEST(WaitingQueue, TheOldestGetsOneAdmissionInFour) {
  runtime::WaitingQueue q;
  for (int i = 0; i < 8; ++i) q.push(req(100 + i, 1));  // a batch, oldest first
  for (int i = 0; i < 9; ++i) q.push(req(i, 0));        // interactive requests behind it
  // Three interactive picks, then the batch's oldest; and so on.
  EXPECT_EQ(drain(q, 12), (std::vector<int64_t>{0, 1, 2, 100, 3, 4, 5, 101, 6, 7, 8, 102}));
  // Nothing of higher priority left: the batch in its order.
  EXPECT_EQ(drain(q, 10), (std::vector<int64_t>{103, 104, 105, 106, 107}));
}

TEST(WaitingQueue, TakingTheOldestByPriorityResetsItsTurn) {
  runtime::WaitingQueue q;
  q.push(req(1, 1));
  q.push(req(2, 0));
  q.push(req(3, 0));
  EXPECT_EQ(q.pop().id, 2);  // passes over 1 once
  q.push(req(4, 5));
  EXPECT_EQ(q.pop().id, 3);  // twice
  EXPECT_EQ(q.pop().id, 1);  // the oldest and the best: no pass-over
  q.push(req(5, 0));
  EXPECT_EQ(q.pop().id, 5);
  EXPECT_EQ(q.pop().id, 4);
}

TEST(WaitingQueue, EraseTakesOutOnlyThatRequest) {
  runtime::WaitingQueue q;
  q.push(req(1, 0));
  q.push(req(2, 0));
  ASSERT_TRUE(q.erase(1));
  EXPECT_FALSE(q.erase(7));
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.pop().id, 2);
}

}  // namespace
}  // namespace moe::test
