// The ranks' scheduling policy (launcher/sched_policy): parsing, and that setting it moves every
// thread of the process, those already running and those started after.
#include <gtest/gtest.h>
#include <sched.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "launcher/sched_policy.h"

namespace moe::launcher {
namespace {

TEST(SchedPolicy, ParsesNamesAndAutoByBackend) {
  EXPECT_EQ(parse_sched_policy("batch", "cuda"), SchedPolicy::kBatch);
  EXPECT_EQ(parse_sched_policy("normal", "cpu"), SchedPolicy::kNormal);
  EXPECT_EQ(parse_sched_policy("auto", "cpu"), SchedPolicy::kBatch);
  EXPECT_EQ(parse_sched_policy("auto", "cuda"), SchedPolicy::kNormal);
  try {
    parse_sched_policy("fifo", "cpu");
    FAIL() << "fifo was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("expected auto, batch or normal"), std::string::npos);
  }
}

// A thread that reports its own policy when asked, and until then waits.
class Probe {
 public:
  Probe() : t_([this] { run(); }) {}
  ~Probe() {
    ask();
    t_.join();
  }
  int ask() {
    std::unique_lock lk(mu_);
    asked_ = true;
    cv_.notify_all();
    cv_.wait(lk, [&] { return answered_; });
    return policy_;
  }

 private:
  void run() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return asked_; });
    policy_ = sched_getscheduler(0);
    answered_ = true;
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool asked_ = false, answered_ = false;
  int policy_ = -1;
  std::thread t_;
};

TEST(SchedPolicy, MovesRunningThreadsAndLaterOnesInherit) {
  ASSERT_EQ(sched_getscheduler(0), SCHED_OTHER) << "the test starts from the default policy";
  Probe before;  // running before the change
  EXPECT_GE(set_process_sched_policy(SchedPolicy::kBatch), 2);
  EXPECT_EQ(current_sched_policy(), SchedPolicy::kBatch);
  EXPECT_EQ(sched_getscheduler(0), SCHED_BATCH);
  EXPECT_EQ(before.ask(), SCHED_BATCH);
  {
    Probe after;  // started after: inherits
    EXPECT_EQ(after.ask(), SCHED_BATCH);
  }
  EXPECT_GE(set_process_sched_policy(SchedPolicy::kNormal), 1);
  EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);
  Probe normal;
  EXPECT_EQ(normal.ask(), SCHED_OTHER);
}

}  // namespace
}  // namespace moe::launcher
