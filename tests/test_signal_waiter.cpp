// moe-launch's and moe-coordinator's signal taking (launcher/signal_waiter.h): a signal sent to
// the process waits for wait(), and one delivered to a thread that did not block it (a thread
// started before the waiter, as AddressSanitizer's runtime starts one) neither kills the process
// nor is lost: wait() returns it all the same.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "launcher/signal_waiter.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

using namespace std::chrono_literals;

TEST(SignalWaiter, TakesSignalsWhicheverThreadTheyReach) {
  // Started before the waiter: SIGTERM and SIGINT stay unblocked in it.
  std::atomic<bool> stop{false};
  std::thread early([&] {
    while (!stop.load()) std::this_thread::sleep_for(1ms);
  });
  const launcher::SignalWaiter sigs({SIGTERM, SIGINT});
  EXPECT_EQ(sigs.wait(20ms), 0) << "nothing was sent";

  // To the process: queued (blocked here), or caught by the handler in `early`.
  kill(getpid(), SIGTERM);
  EXPECT_EQ(sigs.wait(2000ms), SIGTERM);

  // To the unblocked thread itself: its handler records it.
  pthread_kill(early.native_handle(), SIGINT);
  EXPECT_EQ(sigs.wait(2000ms), SIGINT);

  // Two at once in the unblocked thread: neither is lost.
  pthread_kill(early.native_handle(), SIGTERM);
  pthread_kill(early.native_handle(), SIGINT);
  std::this_thread::sleep_for(50ms);
  const int a = sigs.wait(100ms), b = sigs.wait(100ms);
  EXPECT_EQ(a + b, SIGTERM + SIGINT) << a << " then " << b;
  EXPECT_EQ(sigs.wait(20ms), 0);
  stop = true;
  early.join();
}

}  // namespace
}  // namespace moe::test
