#pragma once
// One emulated CUDA thread's execution context: a Boost.Context fcontext on a stack of its own,
// resumed by the block scheduler and giving control back at every barrier or warp intrinsic.
// AddressSanitizer is told of every stack switch, and under ThreadSanitizer every fiber is a
// TSan fiber of its own: switches carry no synchronisation, so two threads of a block are
// ordered only by what the scheduler releases and acquires (its barriers), and a missing
// barrier is a data race. Both are found at run time (weak symbols), so one library serves the
// plain and the sanitized builds.
#include <boost/context/detail/fcontext.hpp>

#include <cstddef>

namespace moe::emu {

class FiberStack {
 public:
  explicit FiberStack(size_t bytes);  // mmap'd, with an inaccessible guard page below it
  ~FiberStack();
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  char* bottom() const { return base_; }  // lowest usable address
  size_t size() const { return size_; }
  // AddressSanitizer: forget the redzones a fiber that never returned left poisoned.
  void unpoison();

 private:
  char* map_ = nullptr;
  size_t map_bytes_ = 0;
  char* base_ = nullptr;
  size_t size_ = 0;
};

// Sanitizer hooks that are no-ops without the sanitizer's runtime.
namespace tsan {
bool present();
// Makes `fiber` TSan's current context without a stack switch (uninstrumented callers only).
void switch_to(void* fiber);
void* create_fiber();
void* current_fiber();
void acquire(void* addr);
void release(void* addr);
}  // namespace tsan

class Fiber {
 public:
  using Entry = void (*)(void* arg);
  Fiber() = default;
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // Ready to run entry(arg) on `stack` at the next resume(). `tsan_fiber` is the TSan context
  // it runs as (null without TSan).
  void start(FiberStack* stack, Entry entry, void* arg, void* tsan_fiber);
  // From the scheduler: runs the fiber until it yields or its entry returns.
  void resume();
  // From inside the fiber: back to the scheduler until the next resume().
  void yield();
  // The TSan context the fiber runs as from its next resume on (it may change while it runs a
  // different emulated thread on the same stack).
  void set_tsan_fiber(void* tsan_fiber) { tsan_fiber_ = tsan_fiber; }
  bool finished() const { return finished_; }
  // Whether it was started and has not finished (abandoned if the block is given up).
  bool suspended() const { return started_ && !finished_; }

 private:
  static void trampoline(boost::context::detail::transfer_t t);
  void switch_out(bool last);

  boost::context::detail::fcontext_t self_ = nullptr;    // where the fiber stopped
  boost::context::detail::fcontext_t caller_ = nullptr;  // where the scheduler waits
  FiberStack* stack_ = nullptr;
  Entry entry_ = nullptr;
  void* arg_ = nullptr;
  void* tsan_fiber_ = nullptr;
  void* tsan_caller_ = nullptr;
  void* asan_fake_stack_ = nullptr;  // the fiber's, while it is switched out
  void* asan_caller_fake_ = nullptr;  // the scheduler's, while the fiber runs
  const void* caller_bottom_ = nullptr;
  size_t caller_size_ = 0;
  bool started_ = false;
  bool finished_ = false;
};

}  // namespace moe::emu
