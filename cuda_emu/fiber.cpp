#include "cuda_emu/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

// The sanitizers' fiber interfaces, weak: null where the process has no such runtime.
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size)
    __attribute__((weak));
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                     size_t* size_old) __attribute__((weak));
void __asan_unpoison_memory_region(void const volatile* addr, size_t size) __attribute__((weak));
void* __tsan_get_current_fiber() __attribute__((weak));
void* __tsan_create_fiber(unsigned flags) __attribute__((weak));
void __tsan_switch_to_fiber(void* fiber, unsigned flags) __attribute__((weak));
void __tsan_acquire(void* addr) __attribute__((weak));
void __tsan_release(void* addr) __attribute__((weak));
}

namespace moe::emu {

namespace bc = boost::context::detail;

namespace {
constexpr unsigned kTsanNoSync = 1u;  // __tsan_switch_to_fiber_no_sync

void asan_start(void** save, const void* bottom, size_t size) {
  if (__sanitizer_start_switch_fiber) __sanitizer_start_switch_fiber(save, bottom, size);
}
void asan_finish(void* save, const void** bottom_old, size_t* size_old) {
  if (__sanitizer_finish_switch_fiber) __sanitizer_finish_switch_fiber(save, bottom_old, size_old);
}
void tsan_switch(void* fiber) {
  if (__tsan_switch_to_fiber && fiber) __tsan_switch_to_fiber(fiber, kTsanNoSync);
}
}  // namespace

namespace tsan {
bool present() { return __tsan_switch_to_fiber != nullptr; }
void switch_to(void* fiber) { tsan_switch(fiber); }
void* create_fiber() { return __tsan_create_fiber ? __tsan_create_fiber(0) : nullptr; }
void* current_fiber() { return __tsan_get_current_fiber ? __tsan_get_current_fiber() : nullptr; }
void acquire(void* addr) {
  if (__tsan_acquire) __tsan_acquire(addr);
}
void release(void* addr) {
  if (__tsan_release) __tsan_release(addr);
}
}  // namespace tsan

FiberStack::FiberStack(size_t bytes) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  size_ = (bytes + page - 1) / page * page;
  map_bytes_ = size_ + page;
  void* m = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (m == MAP_FAILED) {
    std::perror("cuda-emu: mmap of a fiber stack");
    std::abort();
  }
  map_ = static_cast<char*>(m);
  mprotect(map_, page, PROT_NONE);  // a stack overflow faults instead of writing below
  base_ = map_ + page;
}

FiberStack::~FiberStack() {
  if (map_) munmap(map_, map_bytes_);
}

void FiberStack::unpoison() {
  if (__asan_unpoison_memory_region) __asan_unpoison_memory_region(base_, size_);
}

void Fiber::start(FiberStack* stack, Entry entry, void* arg, void* tsan_fiber) {
  stack_ = stack;
  entry_ = entry;
  arg_ = arg;
  tsan_fiber_ = tsan_fiber;
  started_ = false;
  finished_ = false;
  asan_fake_stack_ = nullptr;
  self_ = bc::make_fcontext(stack->bottom() + stack->size(), stack->size(), &Fiber::trampoline);
}

void Fiber::resume() {
  started_ = true;
  tsan_caller_ = tsan::current_fiber();
  tsan_switch(tsan_fiber_);
  asan_start(&asan_caller_fake_, stack_->bottom(), stack_->size());
  bc::transfer_t t = bc::jump_fcontext(self_, this);
  asan_finish(asan_caller_fake_, nullptr, nullptr);
  self_ = t.fctx;
}

void Fiber::switch_out(bool last) {
  tsan_switch(tsan_caller_);
  // The last switch passes no save slot: ASan then frees the fiber's fake stack.
  asan_start(last ? nullptr : &asan_fake_stack_, caller_bottom_, caller_size_);
  bc::transfer_t t = bc::jump_fcontext(caller_, nullptr);
  // Resumed: t.fctx is where the scheduler now waits.
  asan_finish(asan_fake_stack_, &caller_bottom_, &caller_size_);
  caller_ = t.fctx;
}

void Fiber::yield() { switch_out(false); }

void Fiber::trampoline(bc::transfer_t t) {
  Fiber* f = static_cast<Fiber*>(t.data);
  asan_finish(nullptr, &f->caller_bottom_, &f->caller_size_);
  f->caller_ = t.fctx;
  f->entry_(f->arg_);
  f->finished_ = true;
  f->switch_out(true);
  std::abort();  // a finished fiber is never resumed
}

}  // namespace moe::emu
