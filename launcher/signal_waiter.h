#pragma once
// Signals taken in the main thread with sigtimedwait, for moe-launch and moe-coordinator.
//
// Blocking the signals in the main thread before it starts any thread makes every thread it
// starts inherit the block, so a signal waits in the queue for sigtimedwait. A thread started
// before main, or by a library that resets its mask, still has them unblocked, and the kernel may
// deliver a process-directed signal to it: with the default action SIGTERM then kills the
// process (exit 143) instead of starting a drain. (AddressSanitizer's runtime starts such a
// thread.) So a handler is installed too: a signal delivered to such a thread is recorded, and
// wait() returns it as if sigtimedwait had.
#include <chrono>
#include <initializer_list>

#include <signal.h>

namespace moe::launcher {

class SignalWaiter {
 public:
  // Blocks `signals` in the calling thread and installs the recording handler for them. Call it
  // first thing in main, before any thread starts.
  explicit SignalWaiter(std::initializer_list<int> signals);
  // The next of the signals that arrived, waiting up to `timeout` for one; 0 when none came.
  int wait(std::chrono::milliseconds timeout) const;
  // The blocked set (a child's spawn attributes reset it).
  const sigset_t& set() const { return set_; }

 private:
  sigset_t set_;
};

}  // namespace moe::launcher
