// The CUDA emulation itself (cuda_emu/): the warp intrinsics and block barriers give the results
// the CUDA programming guide documents, and each mistake a GPU would hang on, crash on or hide is
// reported, naming the kernel and the line: a barrier some threads never reach, a warp intrinsic
// whose mask names lanes that exited, threads that can never go on, a launch over the device's or
// the kernel's limits, a pointer argument that is not device memory, copies outside an
// allocation, and a missing barrier that only the shuffled schedule shows. A report breaks the
// context as a GPU fault does, so each such test ends with cudaDeviceReset.
#include <cuda_runtime.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cuda_emu/control.h"
#include "tests/cuda_emu/emu_test_kernels.h"
#include "tests/support/test_env.h"

namespace moe::emu_test {
namespace {

class DeviceInts {
 public:
  explicit DeviceInts(size_t n) : n_(n) {
    EXPECT_EQ(cudaMalloc(&p_, n * sizeof(int)), cudaSuccess);
    EXPECT_EQ(cudaMemset(p_, 0, n * sizeof(int)), cudaSuccess);
  }
  ~DeviceInts() { (void)cudaFree(p_); }
  int* get() const { return p_; }
  std::vector<int> host() const {
    std::vector<int> h(n_);
    EXPECT_EQ(cudaMemcpy(h.data(), p_, n_ * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }

 private:
  int* p_ = nullptr;
  size_t n_;
};

// The report a failed launch left, and a fresh context for the next test (after the test's
// device buffers are freed: a reset frees every allocation).
std::string report_and_reset(size_t before) {
  EXPECT_GT(emu::report_count(), before) << "nothing was reported";
  std::string r = emu::last_report();
  EXPECT_EQ(cudaDeviceReset(), cudaSuccess);
  return r;
}

void expect_contains(const std::string& s, const std::string& part) {
  EXPECT_NE(s.find(part), std::string::npos) << "\"" << part << "\" not in: " << s;
}

TEST(Emulator, WarpIntrinsicsAndBarriersGiveTheirDocumentedResults) {
  constexpr int kThreads = 96;  // three warps
  DeviceInts out(size_t(kThreads) * 10);
  intrinsics(out.get(), kThreads);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto o = out.host();
  unsigned every_third = 0;
  for (int l = 0; l < 32; l += 3) every_third |= 1u << l;
  for (int t = 0; t < kThreads; ++t) {
    const int lane = t % 32, warp = t / 32;
    const int* r = o.data() + t * 10;
    SCOPED_TRACE("thread " + std::to_string(t));
    EXPECT_EQ(r[0], (warp * 32 + 5) * 10);
    EXPECT_EQ(r[1], t ^ 3);
    EXPECT_EQ(r[2], lane < 2 ? t : t - 2);
    EXPECT_EQ(r[3], lane % 16 + 4 < 16 ? t + 4 : t);
    EXPECT_EQ(unsigned(r[4]), every_third);
    EXPECT_EQ(r[5], 1);
    EXPECT_EQ(r[6], 0);
    EXPECT_EQ(r[7], kThreads / 2);
    EXPECT_EQ(r[8], 3);
    EXPECT_EQ(r[9], lane < 16 ? warp * 32 + 1 : -1);
  }
}

TEST(Emulator, BlockAndThreadIndicesCoverTheGrid) {
  const dim3 grid(3, 2), block(4, 5);
  DeviceInts out(size_t(3 * 2 * 4 * 5));
  indices(out.get(), grid, block);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto o = out.host();
  for (unsigned by = 0; by < 2; ++by)
    for (unsigned bx = 0; bx < 3; ++bx)
      for (unsigned ty = 0; ty < 5; ++ty)
        for (unsigned tx = 0; tx < 4; ++tx)
          EXPECT_EQ(o[((by * 3 + bx) * 20) + ty * 4 + tx],
                    int(bx * 1000000 + by * 10000 + tx * 100 + ty));
}

// The lines named below are emu_test_kernels.cu's.
TEST(Emulator, AMaskNamingLanesThatExitedIsReported) {
  const size_t before = emu::report_count();
  {
    DeviceInts out(64);
    exited_lane(out.get());
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalInstruction);
  }
  const std::string r = report_and_reset(before);
  expect_contains(r, "warp mask");
  expect_contains(r, "kernel exited_lane_kernel (emu_test_kernels.cu:31)");
  expect_contains(r, "lane 16) exited while thread (0,0,0) (warp 0 lane 0) waits for it at "
                     "__shfl_xor_sync mask 0xffffffff at emu_test_kernels.cu:34");
}

TEST(Emulator, ABarrierThatExitedThreadsNeverReachIsReported) {
  const size_t before = emu::report_count();
  {
    DeviceInts out(128);
    barrier_skipped(out.get());
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  }
  const std::string r = report_and_reset(before);
  expect_contains(r, "kernel barrier_skipped_kernel (emu_test_kernels.cu:38)");
  expect_contains(r, "exited while 64 threads wait for it at __syncthreads at "
                     "emu_test_kernels.cu:40");
}

TEST(Emulator, ADeadlockNamesTheLineEachThreadWaitsAt) {
  const size_t before = emu::report_count();
  {
    DeviceInts out(64);
    deadlock(out.get());
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchTimeout);
  }
  const std::string r = report_and_reset(before);
  expect_contains(r, "deadlock: kernel deadlock_kernel (emu_test_kernels.cu:46)");
  expect_contains(r, "threads 0-15 wait at __shfl_sync mask 0xffffffff at emu_test_kernels.cu:49");
  expect_contains(r, "threads 16-31 wait at __syncthreads at emu_test_kernels.cu:51");
}

TEST(Emulator, LaunchesOverTheLimitsFailAtLaunch) {
  DeviceInts out(2048);
  struct Case {
    int threads;
    size_t shared;
    cudaError_t error;
    const char* says;
  };
  for (const Case& c : {Case{256, 0, cudaErrorLaunchOutOfResources, "__launch_bounds__(128)"},
                        Case{2048, 0, cudaErrorInvalidConfiguration, "at most 1024"},
                        Case{64, 64 * 1024, cudaErrorInvalidConfiguration, "dynamic shared"}}) {
    const size_t before = emu::report_count();
    bounded(out.get(), c.threads, c.shared);
    EXPECT_EQ(cudaGetLastError(), c.error) << c.says;
    EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a launch error is not sticky";
    EXPECT_GT(emu::report_count(), before);
    expect_contains(emu::last_report(), "bounded_kernel");
    expect_contains(emu::last_report(), c.says);
  }
  bounded(out.get(), 128, 0);  // within every limit
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(Emulator, APointerArgumentThatIsNotDeviceMemoryIsReported) {
  const size_t before = emu::report_count();
  std::vector<int> host(64);
  write(host.data(), 64, 7, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);                   // a GPU takes the launch ...
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);  // ... and faults
  EXPECT_EQ(host[0], 0) << "the kernel ran on host memory";
  const std::string r = report_and_reset(before);
  expect_contains(r, "write_kernel");
  expect_contains(r, "argument 0");
  expect_contains(r, "not the device's");
}

TEST(Emulator, CopiesAndFreesOutsideAnAllocationAreRefused) {
  DeviceInts out(16);
  std::vector<int> host(32);
  size_t before = emu::report_count();
  EXPECT_EQ(cudaMemcpy(out.get(), host.data(), 32 * sizeof(int), cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);
  EXPECT_GT(emu::report_count(), before);
  expect_contains(emu::last_report(), "run past its end");
  before = emu::report_count();
  EXPECT_EQ(cudaMemcpy(host.data(), out.get(), 16 * sizeof(int), cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);
  expect_contains(emu::last_report(), "the destination is not device memory");
  EXPECT_GT(emu::report_count(), before);
  before = emu::report_count();
  EXPECT_EQ(cudaFree(host.data()), cudaErrorInvalidValue);
  EXPECT_GT(emu::report_count(), before);
  expect_contains(emu::last_report(), "not a device allocation");
  (void)cudaGetLastError();
}

// Work runs when the host waits for it: reading a copy's destination before the stream is
// synchronised shows what was there before, as it may on a GPU.
TEST(Emulator, WorkRunsOnlyWhenTheHostWaits) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  DeviceInts out(8);
  int* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&pinned), 8 * sizeof(int)), cudaSuccess);
  for (int i = 0; i < 8; ++i) pinned[i] = -1;
  write(out.get(), 8, 5, s);
  ASSERT_EQ(cudaMemcpyAsync(pinned, out.get(), 8 * sizeof(int), cudaMemcpyDeviceToHost, s),
            cudaSuccess);
  EXPECT_EQ(pinned[3], -1) << "the copy ran before the host waited for it";
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(pinned[3], 5);
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// A missing barrier that the in-order schedule hides (thread t - 1 always runs before t) gives a
// wrong result under a shuffled schedule, the same for the same seed; with the barrier every
// schedule is right.
TEST(Emulator, AShuffledScheduleShowsAMissingBarrier) {
  auto run = [](void (*kernel)(int*)) {
    DeviceInts out(256);
    kernel(out.get());
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return out.host();
  };
  std::vector<int> want(256);
  for (int t = 0; t < 256; ++t) want[size_t(t)] = t + 999;
  emu::set_schedule(emu::Schedule::kInOrder);
  EXPECT_EQ(run(missing_barrier), want) << "in order, thread t - 1 runs first";
  int wrong = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    emu::set_schedule(emu::Schedule::kShuffled, seed);
    const auto got = run(missing_barrier);
    wrong += got != want;
    EXPECT_EQ(run(with_barrier), want) << "seed " << seed;
  }
  emu::set_schedule(emu::Schedule::kShuffled, 3);
  const auto a = run(missing_barrier);
  emu::set_schedule(emu::Schedule::kShuffled, 3);
  EXPECT_EQ(run(missing_barrier), a) << "a seed gives the same schedule";
  emu::set_schedule(emu::Schedule::kInOrder);
  EXPECT_EQ(wrong, 4) << "the shuffled schedule left the missing barrier unseen";
}

}  // namespace
}  // namespace moe::emu_test
