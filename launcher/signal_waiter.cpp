#include "launcher/signal_waiter.h"

#include <atomic>
#include <cstdint>
#include <ctime>

namespace moe::launcher {

namespace {

// The signals handlers recorded (delivered to a thread that did not block them), one bit each.
std::atomic<uint64_t> g_recorded{0};

extern "C" void record_signal(int sig) { g_recorded.fetch_or(uint64_t(1) << sig); }

// One recorded signal, the lowest-numbered, taken; 0: none.
int take_recorded() {
  uint64_t cur = g_recorded.load();
  while (cur != 0) {
    const int sig = __builtin_ctzll(cur);
    if (g_recorded.compare_exchange_weak(cur, cur & ~(uint64_t(1) << sig))) return sig;
  }
  return 0;
}

}  // namespace

SignalWaiter::SignalWaiter(std::initializer_list<int> signals) {
  sigemptyset(&set_);
  for (int s : signals) sigaddset(&set_, s);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  struct sigaction sa = {};
  sa.sa_handler = record_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int s : signals) sigaction(s, &sa, nullptr);
}

int SignalWaiter::wait(std::chrono::milliseconds timeout) const {
  if (const int s = take_recorded()) return s;
  timespec ts{time_t(timeout.count() / 1000), long(timeout.count() % 1000) * 1000000L};
  const int s = sigtimedwait(&set_, nullptr, &ts);
  if (s > 0) return s;
  return take_recorded();
}

}  // namespace moe::launcher
