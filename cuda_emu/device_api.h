#pragma once
// The device side of CUDA as the emulation build sees it: the thread's indices, block barriers,
// warp intrinsics and the arithmetic intrinsics the kernels use, for .cu sources compiled as
// host C++ (cuda_emu.h includes this). Every barrier and warp intrinsic is a switch point where
// the calling thread (a fiber) waits until the threads it names have arrived, as on a GPU; the
// block scheduler (block_scheduler.cpp) checks what a GPU would hang or go wrong on and reports
// it (report.h). Each takes the caller's source location, so a report names the line.
#include <cuda_runtime.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <type_traits>

namespace moe::emu {

// The calling thread's place in its launch; valid only inside a kernel.
struct ThreadIds {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

namespace detail {
// The thread that runs now, set by the block scheduler before it runs or resumes one. A plain
// global: kernels run one at a time in the process (under the device's lock), so one OS thread
// at a time reads it. NOTES: read without TSan instrumentation: the threads of a block are
// distinct TSan fibers, and this slot is the scheduler's, not kernel memory.
extern const ThreadIds* g_ids;
[[gnu::no_sanitize("thread")]] inline uint3 thread_idx() noexcept { return g_ids->thread_idx; }
[[gnu::no_sanitize("thread")]] inline uint3 block_idx() noexcept { return g_ids->block_idx; }
[[gnu::no_sanitize("thread")]] inline dim3 block_dim() noexcept { return g_ids->block_dim; }
[[gnu::no_sanitize("thread")]] inline dim3 grid_dim() noexcept { return g_ids->grid_dim; }

// What a barrier or warp intrinsic is, for matching the threads that meet at it and for reports.
enum class Op : uint8_t {
  kSyncThreads, kSyncThreadsCount, kSyncThreadsAnd, kSyncThreadsOr,
  kSyncWarp, kShfl, kShflXor, kShflUp, kShflDown, kBallot,
};
const char* op_name(Op op) noexcept;

// The block barrier: waits for every thread of the block; returns the count of threads whose
// `pred` was non-zero (what __syncthreads_count returns; the others derive from it).
int block_barrier(Op op, int pred, const std::source_location& site);
// A warp intrinsic: waits for every lane of `mask`, then returns this lane's result. `value` is
// the lane's 64-bit payload (shuffles), `arg` the source lane, xor mask or delta, `width` the
// shuffle's segment; a vote returns the ballot of `pred` over `mask` (in `value`).
uint64_t warp_op(Op op, unsigned mask, uint64_t value, int arg, int width,
                 const std::source_location& site);
unsigned active_mask() noexcept;
// The calling thread stops the kernel (the launch fails, as on a GPU).
[[noreturn]] void trap(const std::source_location& site);

// A __shared__ variable (rewrite.cpp registers each one the first time a thread passes its
// declaration): refilled with the device-memory pattern at every block's start.
struct SharedRegion {
  SharedRegion(void* p, size_t bytes);
};

template <class T>
T shuffle(Op op, unsigned mask, T var, int arg, int width, const std::source_location& site) {
  static_assert(std::is_trivially_copyable_v<T> && (sizeof(T) == 4 || sizeof(T) == 8),
                "warp shuffles move 4- or 8-byte values");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = warp_op(op, mask, bits, arg, width, site);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
}  // namespace detail

}  // namespace moe::emu

#define MOE_EMU_SHARED(name) \
  static ::moe::emu::detail::SharedRegion moe_emu_shared_##name(&(name), sizeof(name));

// ---- the built-in variables ----------------------------------------------------------------
#define threadIdx (::moe::emu::detail::thread_idx())
#define blockIdx (::moe::emu::detail::block_idx())
#define blockDim (::moe::emu::detail::block_dim())
#define gridDim (::moe::emu::detail::grid_dim())
inline constexpr int warpSize = 32;

// ---- block barriers --------------------------------------------------------------------------
inline void __syncthreads(std::source_location s = std::source_location::current()) {
  (void)::moe::emu::detail::block_barrier(::moe::emu::detail::Op::kSyncThreads, 0, s);
}
inline int __syncthreads_count(int pred, std::source_location s = std::source_location::current()) {
  return ::moe::emu::detail::block_barrier(::moe::emu::detail::Op::kSyncThreadsCount, pred, s);
}
inline int __syncthreads_and(int pred, std::source_location s = std::source_location::current()) {
  const int n = int(blockDim.x * blockDim.y * blockDim.z);
  return ::moe::emu::detail::block_barrier(::moe::emu::detail::Op::kSyncThreadsAnd, pred, s) == n;
}
inline int __syncthreads_or(int pred, std::source_location s = std::source_location::current()) {
  return ::moe::emu::detail::block_barrier(::moe::emu::detail::Op::kSyncThreadsOr, pred, s) > 0;
}

// ---- warp intrinsics -------------------------------------------------------------------------
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location s = std::source_location::current()) {
  (void)::moe::emu::detail::warp_op(::moe::emu::detail::Op::kSyncWarp, mask, 0, 0, 32, s);
}
inline unsigned __ballot_sync(unsigned mask, int pred,
                              std::source_location s = std::source_location::current()) {
  return unsigned(::moe::emu::detail::warp_op(::moe::emu::detail::Op::kBallot, mask,
                                              pred != 0, 0, 32, s));
}
inline int __any_sync(unsigned mask, int pred,
                      std::source_location s = std::source_location::current()) {
  return (__ballot_sync(mask, pred, s) & mask) != 0;
}
inline int __all_sync(unsigned mask, int pred,
                      std::source_location s = std::source_location::current()) {
  return (__ballot_sync(mask, pred, s) & mask) == mask;
}
inline unsigned __activemask() { return ::moe::emu::detail::active_mask(); }

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32,
              std::source_location s = std::source_location::current()) {
  return ::moe::emu::detail::shuffle(::moe::emu::detail::Op::kShfl, mask, var, src_lane, width, s);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                  std::source_location s = std::source_location::current()) {
  return ::moe::emu::detail::shuffle(::moe::emu::detail::Op::kShflXor, mask, var, lane_mask,
                                     width, s);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                 std::source_location s = std::source_location::current()) {
  return ::moe::emu::detail::shuffle(::moe::emu::detail::Op::kShflUp, mask, var, int(delta),
                                     width, s);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                   std::source_location s = std::source_location::current()) {
  return ::moe::emu::detail::shuffle(::moe::emu::detail::Op::kShflDown, mask, var, int(delta),
                                     width, s);
}

// ---- stopping a kernel ----------------------------------------------------------------------
[[noreturn]] inline void __trap(std::source_location s = std::source_location::current()) {
  ::moe::emu::detail::trap(s);
}

// ---- memory fences and atomics ---------------------------------------------------------------
// Blocks run one after another, so a fence orders nothing that is not ordered already.
inline void __threadfence() {}
inline void __threadfence_block() {}
template <class T>
T atomicAdd(T* p, T v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* p, float v) {
  float old, desired;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  do {
    desired = old + v;
  } while (!__atomic_compare_exchange(p, &old, &desired, false, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED));
  return old;
}
template <class T>
T atomicMax(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED,
                                                 __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
T atomicCAS(T* p, T expected, T desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}
template <class T>
T atomicExch(T* p, T v) {
  return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}
template <class T>
T __ldg(const T* p) {
  return *p;
}

// ---- integer and floating-point intrinsics ---------------------------------------------------
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero(unsigned(x)); }
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero(unsigned(x)) + 1; }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
// Separate roundings, as the _rn intrinsics promise (this build contracts nothing either).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
// The fast-math intrinsics are approximations on a GPU; here they are the host's libm, so a
// result that depends on their error is not checked by this build (cuda_emu/README section of
// the project README: what emulation cannot tell).
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }

// CUDA's math header gives device code integer min/max in the global namespace.
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
using std::isinf;
using std::isnan;
