#include "cuda_emu/block_scheduler.h"

#include <setjmp.h>
#include <signal.h>

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>  // the runners, reused
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cuda_emu/control.h"
#include "cuda_emu/device.h"
#include "cuda_emu/device_api.h"
#include "cuda_emu/fiber.h"
#include "cuda_emu/report.h"

// How a block runs. A *runner* is a fiber that starts the block's threads one after another,
// each on the runner's stack. A thread that reaches a barrier or a warp intrinsic suspends its
// runner there (the runner is then the thread's until it ends), and the scheduler starts
// another runner for the threads not yet started. So a kernel without switch points runs every
// thread of a block on one stack with no switch at all, and one with them uses one stack per
// thread that waits. Under ThreadSanitizer each thread is a TSan fiber of its own, and a runner
// runs one thread only, on that thread index's own stack (Runner::single).
namespace moe::emu {

namespace detail {
const ThreadIds* g_ids = nullptr;

namespace {
// Every __shared__ variable a kernel has declared so far: [address, bytes].
std::vector<std::pair<void*, size_t>>& shared_regions() {
  static auto* r = new std::vector<std::pair<void*, size_t>>();
  return *r;
}
}  // namespace

SharedRegion::SharedRegion(void* p, size_t bytes) {
  shared_regions().emplace_back(p, bytes);
  std::memset(p, kFill, bytes);
}
}  // namespace detail

namespace {

using detail::Op;

// A runner's stack: kernels keep a few registers' worth of arrays; sanitizers widen frames a
// lot.
constexpr size_t kStackBytes = 256 * 1024;

enum class State : uint8_t { kUnstarted, kRunning, kWaiting, kReady, kExited };

bool is_barrier(Op op) {
  return op == Op::kSyncThreads || op == Op::kSyncThreadsCount || op == Op::kSyncThreadsAnd ||
         op == Op::kSyncThreadsOr;
}

struct Block;
struct Runner;

struct EmuThread {
  ThreadIds ids{};
  int tid = 0, lane = 0, warp = 0;
  State state = State::kUnstarted;
  Runner* runner = nullptr;  // while it runs or waits
  // Where it waits, and what it brought.
  Op op = Op::kSyncThreads;
  std::source_location site;
  unsigned mask = 0;
  uint64_t value = 0;
  int arg = 0, width = 32, pred = 0;
  uint64_t result = 0;
  bool faulted = false;
  const void* fault_addr = nullptr;
  bool trapped = false;
  std::source_location trap_site;
};

struct Runner {
  Fiber fiber;
  FiberStack* stack = nullptr;
  // Under ThreadSanitizer a runner runs one thread, on that thread index's own stack: TSan would
  // take a stack reused by another thread (another TSan fiber) for a race on its locals.
  bool single = false;
  Block* block = nullptr;
  EmuThread* current = nullptr;  // the thread it runs, or waits inside
  bool idle = false;             // between two threads (a shuffled schedule yields there)
  sigjmp_buf env;
};

std::string where(const std::source_location& s) {
  std::string f = s.file_name();
  const size_t slash = f.rfind('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  return f + ":" + std::to_string(s.line());
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string address(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%" PRIxPTR, reinterpret_cast<uintptr_t>(p));
  return buf;
}

std::string dim(const uint3& d) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "(%u,%u,%u)", d.x, d.y, d.z);
  return buf;
}
std::string dim(const dim3& d) { return dim(uint3{d.x, d.y, d.z}); }

// The process's fiber resources, made as first needed and kept: runner stacks (a free list),
// and one TSan fiber per thread index of a block (a thread index keeps its TSan context from
// launch to launch; blocks never overlap).
struct Pool {
  std::vector<std::unique_ptr<FiberStack>> stacks;
  std::vector<FiberStack*> free_stacks;
  std::vector<void*> tsan_fibers;
  std::vector<std::unique_ptr<FiberStack>> thread_stacks;  // by thread index, under TSan
  std::deque<Runner> runners;      // reused from block to block

  FiberStack* take_stack() {
    if (free_stacks.empty()) {
      stacks.push_back(std::make_unique<FiberStack>(kStackBytes));
      return stacks.back().get();
    }
    FiberStack* st = free_stacks.back();
    free_stacks.pop_back();
    return st;
  }
  void ensure_tsan(size_t n) {
    if (!tsan::present()) return;
    while (tsan_fibers.size() < n) tsan_fibers.push_back(tsan::create_fiber());
    while (thread_stacks.size() < n)
      thread_stacks.push_back(std::make_unique<FiberStack>(kStackBytes));
  }
};
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

// TSan synchronisation objects: the host's launch before any thread; every thread's end before
// the host goes on; a barrier's arrivals before its departures (two, alternating, so that a
// thread still leaving generation g does not acquire what another released arriving at g + 1).
char launch_token, done_token;

// The runner that runs now (scheduler state: read and written on the kernel's OS thread only).
Runner* g_runner = nullptr;
// Where a fault inside the running thread goes (the signal handler reads it).
__attribute__((tls_model("initial-exec"))) thread_local sigjmp_buf* tl_fault_env = nullptr;
__attribute__((tls_model("initial-exec"))) thread_local const void* tl_fault_addr = nullptr;

struct sigaction old_segv, old_bus;
constexpr int kJumpFault = 1, kJumpTrap = 2;  // why a thread's body was left by siglongjmp

void on_fault(int sig, siginfo_t* info, void* uctx) {
  if (tl_fault_env) {
    tl_fault_addr = info->si_addr;
    siglongjmp(*tl_fault_env, kJumpFault);
  }
  // Not inside a kernel: the handler that was there before ours.
  const struct sigaction& old = sig == SIGSEGV ? old_segv : old_bus;
  if (old.sa_flags & SA_SIGINFO) {
    if (old.sa_sigaction) return old.sa_sigaction(sig, info, uctx);
  } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
    return old.sa_handler(sig);
  }
  sigaction(sig, &old, nullptr);  // default: re-executing the access now ends the process
}

// The handler runs on a stack of its own: a runner that overflowed its stack cannot host it.
// Not under ThreadSanitizer, whose own handling of setjmp does not expect fibers to share a
// stack; a fault there ends the process with TSan's report.
void install_fault_handler() {
  static bool done = false;
  if (done || tsan::present()) return;
  done = true;
  static char* alt = static_cast<char*>(std::malloc(1 << 16));
  stack_t ss{};
  ss.ss_sp = alt;
  ss.ss_size = 1 << 16;
  sigaltstack(&ss, nullptr);
  struct sigaction sa{};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &old_segv);
  sigaction(SIGBUS, &sa, &old_bus);
}

struct Failure {
  Finding finding;
  cudaError_t error;
  std::string details;
};

struct Block {
  const KernelInfo* kernel = nullptr;
  const LaunchRequest* req = nullptr;
  std::vector<EmuThread>* threads = nullptr;
  int n = 0;
  uint3 idx{};
  bool recover_faults = false;
  // Threads not yet started, in the order they start.
  std::vector<int> order;
  size_t next_start = 0;
  // Threads released from a barrier or warp intrinsic, to resume: ready[ready_head, end). A
  // vector emptied in place, so the steady state allocates nothing (a sanitized malloc unwinds
  // the stack).
  std::vector<EmuThread*> ready;
  size_t ready_head = 0;
  size_t ready_count() const { return ready.size() - ready_head; }
  EmuThread* take_ready(size_t i) {  // the i-th waiting one
    std::swap(ready[ready_head + i], ready[ready_head]);
    EmuThread* th = ready[ready_head++];
    if (ready_head == ready.size()) {
      ready.clear();
      ready_head = 0;
    }
    return th;
  }
  std::vector<Runner*> idle_runners;
  // The barrier being gathered.
  int arrived = 0, pred_count = 0;
  Op bar_op = Op::kSyncThreads;
  std::source_location bar_site;
  int bar_first = -1;
  unsigned gen = 0;
  char bar_token[2] = {0, 0};
  std::vector<char> warp_tokens;
  // Per warp, as lane bits: lanes that exist (a block's last warp may be partial), lanes that
  // have exited, lanes waiting at a warp intrinsic.
  std::vector<unsigned> valid_mask, exited_mask, waiting_mask;
  int exited = 0;
  std::optional<Failure> failure;
  std::mt19937_64* rng = nullptr;

  EmuThread& t(int i) { return (*threads)[size_t(i)]; }
  EmuThread* lane_thread(int warp, int lane) {
    const int i = warp * 32 + lane;
    return i < n ? &t(i) : nullptr;
  }

  std::string header() const {
    return "kernel " + kernel->name + " (" + kernel->file + ":" + std::to_string(kernel->line) +
           "), block " + dim(idx) + " of grid " + dim(req->grid) + ", " + std::to_string(n) +
           " threads a block";
  }
  std::string thread_name(const EmuThread& th) const {
    return "thread " + dim(th.ids.thread_idx) + " (warp " + std::to_string(th.warp) + " lane " +
           std::to_string(th.lane) + ")";
  }
  void fail(Finding f, cudaError_t e, const std::string& what) {
    if (!failure) failure = Failure{f, e, header() + ": " + what};
  }
  std::string op_at(const EmuThread& th) const {
    std::string s = std::string(detail::op_name(th.op));
    if (!is_barrier(th.op)) s += " mask " + hex(th.mask);
    return s + " at " + where(th.site);
  }

  // The next thread to start (its indices filled in), or null when all have started.
  EmuThread* take_unstarted() {
    if (next_start >= order.size()) return nullptr;
    EmuThread& th = t(order[next_start++]);
    const dim3 b = req->block;
    const unsigned i = unsigned(th.tid);
    th.ids.thread_idx = uint3{i % b.x, i / b.x % b.y, i / (b.x * b.y)};
    th.ids.block_idx = idx;
    th.ids.block_dim = b;
    th.ids.grid_dim = req->grid;
    return &th;
  }

  void release(EmuThread& th) {
    th.state = State::kReady;
    ready.push_back(&th);
  }

  void arrive_at_barrier(EmuThread& th) {
    if (exited > 0) {
      for (int i = 0; i < n; ++i)
        if (t(i).state == State::kExited)
          return fail(Finding::kBarrier, cudaErrorLaunchFailure,
                      thread_name(th) + " waits at " + op_at(th) + ", which " +
                          thread_name(t(i)) + " can never reach: it has exited (" +
                          std::to_string(exited) + " of the block's threads have)");
    }
    if (arrived == 0) {
      bar_op = th.op;
      bar_site = th.site;
      bar_first = th.tid;
    } else if (bar_op != th.op || bar_site.line() != th.site.line() ||
               std::strcmp(bar_site.file_name(), th.site.file_name()) != 0) {
      return fail(Finding::kBarrier, cudaErrorLaunchFailure,
                  "threads meet at different barriers: " + thread_name(t(bar_first)) + " at " +
                      op_at(t(bar_first)) + ", " + thread_name(th) + " at " + op_at(th));
    }
    ++arrived;
    pred_count += th.pred != 0;
    if (arrived < n) return;
    for (int i = 0; i < n; ++i) {
      t(i).result = uint64_t(pred_count);
      release(t(i));
    }
    arrived = 0;
    pred_count = 0;
    ++gen;
  }

  void arrive_at_warp_op(EmuThread& th) {
    const unsigned m = th.mask, bit = 1u << th.lane;
    const size_t w = size_t(th.warp);
    waiting_mask[w] |= bit;
    if (!(m & bit))
      return fail(Finding::kWarpMask, cudaErrorIllegalInstruction,
                  thread_name(th) + " calls " + op_at(th) + ", whose mask does not name lane " +
                      std::to_string(th.lane) + " itself");
    if (th.op != Op::kSyncWarp && th.op != Op::kBallot &&
        (th.width < 1 || th.width > 32 || (th.width & (th.width - 1)) != 0))
      return fail(Finding::kWarpMask, cudaErrorIllegalInstruction,
                  thread_name(th) + " calls " + op_at(th) + " with width " +
                      std::to_string(th.width) + " (expected a power of two, at most 32)");
    if (m & ~valid_mask[w])
      return fail(Finding::kWarpMask, cudaErrorIllegalInstruction,
                  thread_name(th) + " calls " + op_at(th) + ", whose mask names lane " +
                      std::to_string(std::countr_zero(m & ~valid_mask[w])) +
                      ", which the block (" + std::to_string(n) + " threads) does not have");
    if (m & exited_mask[w])
      return fail(Finding::kWarpMask, cudaErrorIllegalInstruction,
                  thread_name(th) + " calls " + op_at(th) + ", whose mask names lane " +
                      std::to_string(std::countr_zero(m & exited_mask[w])) + ", which has exited");
    if ((waiting_mask[w] & m) != m) return;  // not every lane of the mask is waiting yet
    // Every lane of the mask waits at a warp intrinsic: at this one, or at one of another mask
    // (then this group cannot complete now; a deadlock, if it never can, is found at the end).
    for (unsigned rest = m; rest; rest &= rest - 1) {
      const EmuThread& u = *lane_thread(th.warp, std::countr_zero(rest));
      if (u.mask != m) return;
      if (u.op != th.op)
        return fail(Finding::kWarpMask, cudaErrorIllegalInstruction,
                    "the lanes of mask " + hex(m) + " meet at different warp intrinsics: " +
                        thread_name(u) + " at " + op_at(u) + ", " + thread_name(th) + " at " +
                        op_at(th));
    }
    complete_warp_op(th.warp, m, th.op);
  }

  void complete_warp_op(int warp, unsigned m, Op op) {
    uint64_t ballot = 0;
    for (int l = 0; l < 32; ++l)
      if ((m >> l) & 1u) ballot |= uint64_t(lane_thread(warp, l)->value != 0) << l;
    for (int l = 0; l < 32; ++l) {
      if (!((m >> l) & 1u)) continue;
      EmuThread& u = *lane_thread(warp, l);
      const int w = u.width, base = l - l % w;
      int src = l;
      switch (op) {
        case Op::kShfl:
          src = base + ((u.arg % w) + w) % w;
          break;
        case Op::kShflXor:
          src = l ^ u.arg;
          if (src >= base + w || src < 0 || src > 31) src = l;
          break;
        case Op::kShflUp:
          src = l - u.arg;
          if (src < base) src = l;
          break;
        case Op::kShflDown:
          src = l + u.arg;
          if (src >= base + w) src = l;
          break;
        default:
          break;
      }
      if (op == Op::kBallot) {
        u.result = ballot;
      } else if (op == Op::kSyncWarp) {
        u.result = 0;
      } else {
        if (!((m >> src) & 1u))
          return fail(Finding::kWarpMask, cudaErrorIllegalInstruction,
                      thread_name(u) + " at " + op_at(u) + " reads lane " + std::to_string(src) +
                          ", which the mask does not name (its value is undefined)");
        u.result = lane_thread(warp, src)->value;
      }
    }
    waiting_mask[size_t(warp)] &= ~m;
    for (unsigned rest = m; rest; rest &= rest - 1)
      release(*lane_thread(warp, std::countr_zero(rest)));
  }

  void on_exit(EmuThread& th) {
    th.state = State::kExited;
    ++exited;
    if (th.trapped)
      return fail(Finding::kTrap, cudaErrorLaunchFailure,
                  thread_name(th) + " called __trap() at " + where(th.trap_site));
    if (th.faulted) {
      const Device& d = Device::get();
      return fail(Finding::kFault, cudaErrorIllegalAddress,
                  thread_name(th) + " accessed " + address(th.fault_addr) + " (" +
                      d.memory.describe(th.fault_addr) + ")");
    }
    if (arrived > 0)
      return fail(Finding::kBarrier, cudaErrorLaunchFailure,
                  thread_name(th) + " exited while " + std::to_string(arrived) +
                      " threads wait for it at " + op_at(t(bar_first)));
    exited_mask[size_t(th.warp)] |= 1u << th.lane;
    for (unsigned rest = waiting_mask[size_t(th.warp)]; rest; rest &= rest - 1) {
      EmuThread* u = lane_thread(th.warp, std::countr_zero(rest));
      if ((u->mask >> th.lane) & 1u)
        return fail(Finding::kWarpMask, cudaErrorIllegalInstruction,
                    thread_name(th) + " exited while " + thread_name(*u) + " waits for it at " +
                        op_at(*u));
    }
  }

  void describe_deadlock() {
    std::string s = "no thread can go on:";
    auto same = [](const EmuThread& a, const EmuThread& b) {
      return b.state == State::kWaiting && a.op == b.op && a.mask == b.mask &&
             a.site.line() == b.site.line() &&
             std::strcmp(a.site.file_name(), b.site.file_name()) == 0;
    };
    for (int i = 0; i < n;) {  // runs of consecutive threads waiting at the same place
      if (t(i).state != State::kWaiting) {
        ++i;
        continue;
      }
      int j = i;
      while (j + 1 < n && same(t(i), t(j + 1))) ++j;
      char range[48];
      if (j > i)
        std::snprintf(range, sizeof range, " threads %d-%d wait at ", i, j);
      else
        std::snprintf(range, sizeof range, " thread %d waits at ", i);
      s += range;
      s += op_at(t(i));
      s += ";";
      i = j + 1;
    }
    if (exited) s += " " + std::to_string(exited) + " exited";
    fail(Finding::kDeadlock, cudaErrorLaunchTimeout, s);
  }
};

// Ends the runner's thread: its body returned, or a fault or a trap left it.
void end_thread(Runner& r) {
  EmuThread& th = *r.current;
  tsan::release(&done_token);
  r.current = nullptr;
  th.runner = nullptr;
  r.block->on_exit(th);
}

// A runner: starts the block's unstarted threads one after another until none is left (or the
// block failed). A thread that waits suspends the runner inside it (wait_here).
void runner_main(void* arg) {
  Runner& r = *static_cast<Runner*>(arg);
  Block& b = *r.block;
  Pool& p = pool();
  if (b.recover_faults) {
    // Once a runner, not once a thread: a fault or a trap in whichever thread it runs comes back
    // here (the runner's frame outlives its threads), and the block has then failed.
    const int jumped = sigsetjmp(r.env, 0);
    if (jumped != 0) {
      tl_fault_env = nullptr;
      EmuThread& th = *r.current;
      if (jumped == kJumpTrap) {
        th.trapped = true;
      } else {
        th.faulted = true;
        th.fault_addr = tl_fault_addr;
      }
      end_thread(r);
      return;
    }
    tl_fault_env = &r.env;
  }
  while (!b.failure) {
    EmuThread* th = b.take_unstarted();
    if (!th) break;
    r.current = th;
    th->runner = &r;
    th->state = State::kRunning;
    detail::g_ids = &th->ids;
    if (tsan::present()) {
      void* f = p.tsan_fibers[size_t(th->tid)];
      tsan::switch_to(f);
      r.fiber.set_tsan_fiber(f);
    }
    tsan::acquire(&launch_token);
    b.req->run();
    end_thread(r);
    if (r.single) break;
    if (b.rng) {  // let the schedule pick what runs next
      r.idle = true;
      tl_fault_env = nullptr;
      r.fiber.yield();
      if (b.recover_faults) tl_fault_env = &r.env;
      r.idle = false;
    }
  }
  tl_fault_env = nullptr;
}

// From inside a thread: wait until the scheduler has matched this thread's operation.
uint64_t wait_here(EmuThread& th, void* sync_token) {
  th.state = State::kWaiting;
  if (sync_token) tsan::release(sync_token);
  Runner& r = *th.runner;
  tl_fault_env = nullptr;
  r.fiber.yield();
  if (r.block->recover_faults) tl_fault_env = &r.env;
  if (sync_token) tsan::acquire(sync_token);
  return th.result;
}

[[noreturn]] void outside_a_kernel(const char* what) {
  std::fprintf(stderr, "cuda-emu: %s called outside a kernel\n", what);
  std::abort();
}

inline EmuThread& current_thread(Op op) {
  if (!g_runner || !g_runner->current) [[unlikely]]
    outside_a_kernel(detail::op_name(op));
  return *g_runner->current;
}
inline EmuThread& current_thread(const char* what) {
  if (!g_runner || !g_runner->current) [[unlikely]]
    outside_a_kernel(what);
  return *g_runner->current;
}

// Runs `r` until it yields or ends, then acts on where it stopped.
void step(Block& b, Runner& r) {
  g_runner = &r;
  if (r.current) detail::g_ids = &r.current->ids;
  r.fiber.resume();
  g_runner = nullptr;
  detail::g_ids = nullptr;
  Pool& p = pool();
  if (r.fiber.finished()) {
    if (!r.single) p.free_stacks.push_back(r.stack);
    r.stack = nullptr;
    return;
  }
  if (r.idle) {
    b.idle_runners.push_back(&r);
    return;
  }
  EmuThread& th = *r.current;
  if (is_barrier(th.op))
    b.arrive_at_barrier(th);
  else
    b.arrive_at_warp_op(th);
}

Runner& new_runner(Block& b, size_t& used) {
  Pool& p = pool();
  if (used == p.runners.size()) p.runners.emplace_back();
  Runner& r = p.runners[used++];
  r.block = &b;
  r.current = nullptr;
  r.idle = false;
  r.single = tsan::present();
  // The thread it is about to run is the next unstarted one (nothing else runs in between).
  r.stack = r.single ? p.thread_stacks[size_t(b.order[b.next_start])].get() : p.take_stack();
  r.fiber.start(r.stack, &runner_main, &r, nullptr);
  return r;
}

}  // namespace

namespace detail {

const char* op_name(Op op) noexcept {
  switch (op) {
    case Op::kSyncThreads: return "__syncthreads";
    case Op::kSyncThreadsCount: return "__syncthreads_count";
    case Op::kSyncThreadsAnd: return "__syncthreads_and";
    case Op::kSyncThreadsOr: return "__syncthreads_or";
    case Op::kSyncWarp: return "__syncwarp";
    case Op::kShfl: return "__shfl_sync";
    case Op::kShflXor: return "__shfl_xor_sync";
    case Op::kShflUp: return "__shfl_up_sync";
    case Op::kShflDown: return "__shfl_down_sync";
    case Op::kBallot: return "__ballot_sync";
  }
  return "?";
}

int block_barrier(Op op, int pred, const std::source_location& site) {
  EmuThread& th = current_thread(op);
  th.op = op;
  th.site = site;
  th.pred = pred;
  Block& b = *th.runner->block;
  return int(wait_here(th, &b.bar_token[b.gen & 1]));
}

uint64_t warp_op(Op op, unsigned mask, uint64_t value, int arg, int width,
                 const std::source_location& site) {
  EmuThread& th = current_thread(op);
  th.op = op;
  th.site = site;
  th.mask = mask;
  th.value = value;
  th.arg = arg;
  th.width = width;
  // Only __syncwarp orders memory between the lanes; a shuffle or a vote moves values only.
  Block& b = *th.runner->block;
  return wait_here(th, op == Op::kSyncWarp ? &b.warp_tokens[size_t(th.warp)] : nullptr);
}

void trap(const std::source_location& site) {
  EmuThread& th = current_thread("__trap");
  th.trap_site = site;
  if (th.runner->block->recover_faults) siglongjmp(th.runner->env, kJumpTrap);
  std::fprintf(stderr, "cuda-emu: trap: thread (%u,%u,%u) called __trap() at %s\n",
               th.ids.thread_idx.x, th.ids.thread_idx.y, th.ids.thread_idx.z, where(site).c_str());
  std::abort();  // under ThreadSanitizer a thread's body cannot be left halfway
}

unsigned active_mask() noexcept {
  EmuThread& th = current_thread("__activemask");
  Block& b = *th.runner->block;
  unsigned m = 0;
  for (int l = 0; l < 32; ++l) {
    EmuThread* u = b.lane_thread(th.warp, l);
    if (u && u->state != State::kExited) m |= 1u << l;
  }
  return m;
}

}  // namespace detail

cudaError_t run_grid(const KernelInfo& kernel, const LaunchRequest& r, uint64_t launch_ordinal) {
  install_fault_handler();
  const int n = int(r.block.x * r.block.y * r.block.z);
  Pool& p = pool();
  p.ensure_tsan(size_t(n));
  std::vector<EmuThread> threads(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    threads[size_t(i)].tid = i;
    threads[size_t(i)].lane = i % 32;
    threads[size_t(i)].warp = i / 32;
  }
  std::optional<std::mt19937_64> rng;
  if (schedule() == Schedule::kShuffled)
    rng.emplace(schedule_seed() * 0x9E3779B97F4A7C15ull + launch_ordinal);
  Block b;
  b.kernel = &kernel;
  b.req = &r;
  b.threads = &threads;
  b.n = n;
  b.rng = rng ? &*rng : nullptr;
  b.recover_faults = !tsan::present();
  b.warp_tokens.assign(size_t((n + 31) / 32), 0);
  for (unsigned bz = 0; bz < r.grid.z; ++bz)
    for (unsigned by = 0; by < r.grid.y; ++by)
      for (unsigned bx = 0; bx < r.grid.x; ++bx) {
        b.idx = uint3{bx, by, bz};
        b.order.resize(size_t(n));
        for (int i = 0; i < n; ++i) b.order[size_t(i)] = i;
        if (rng) std::shuffle(b.order.begin(), b.order.end(), *rng);
        b.next_start = 0;
        b.ready.clear();
        b.ready_head = 0;
        b.idle_runners.clear();
        b.arrived = b.pred_count = 0;
        b.bar_first = -1;
        b.gen = 0;
        const size_t warps = size_t((n + 31) / 32);
        b.valid_mask.assign(warps, ~0u);
        if (n % 32) b.valid_mask.back() = (1u << (n % 32)) - 1u;
        b.exited_mask.assign(warps, 0u);
        b.waiting_mask.assign(warps, 0u);
        b.exited = 0;
        for (EmuThread& th : threads) {
          th.state = State::kUnstarted;
          th.faulted = false;
          th.trapped = false;
          th.runner = nullptr;
        }
        // Shared memory holds nothing from an earlier block or kernel.
        for (const auto& [p_shared, bytes] : detail::shared_regions())
          std::memset(p_shared, kFill, bytes);
        size_t runners_used = 0;
        tsan::release(&launch_token);
        while (!b.failure) {
          // In order: waiting threads that were released first, then a new runner. Shuffled:
          // any of them, at random.
          if (!b.rng) {  // in order: the fast path
            if (b.ready_count() > 0) {
              EmuThread* th = b.take_ready(0);
              th->state = State::kRunning;
              step(b, *th->runner);
            } else if (b.next_start < b.order.size()) {
              step(b, new_runner(b, runners_used));
            } else {
              break;
            }
            continue;
          }
          const size_t choices = b.ready_count() + b.idle_runners.size() +
                                 (b.next_start < b.order.size() ? 1 : 0);
          if (choices == 0) break;
          const size_t pick = std::uniform_int_distribution<size_t>(0, choices - 1)(*b.rng);
          if (pick < b.ready_count()) {
            EmuThread* th = b.take_ready(pick);
            th->state = State::kRunning;
            step(b, *th->runner);
          } else if (pick < b.ready_count() + b.idle_runners.size()) {
            const size_t k = pick - b.ready_count();
            Runner* run = b.idle_runners[k];
            b.idle_runners.erase(b.idle_runners.begin() + std::ptrdiff_t(k));
            step(b, *run);
          } else {
            step(b, new_runner(b, runners_used));
          }
        }
        if (!b.failure && b.exited < n) b.describe_deadlock();
        tsan::acquire(&done_token);
        if (b.failure) {
          // Runners left inside threads are abandoned with their stacks' ASan poison.
          for (size_t i = 0; i < runners_used; ++i) {
            Runner& run = p.runners[i];
            if (!run.stack) continue;
            run.stack->unpoison();
            if (!run.single) p.free_stacks.push_back(run.stack);
            run.stack = nullptr;
          }
          report(b.failure->finding, b.failure->details);
          return b.failure->error;
        }
      }
  return cudaSuccess;
}

}  // namespace moe::emu
