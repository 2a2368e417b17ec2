// The check after each launch (kernels/cuda/launch_check.h): the switch, a failed launch named by
// its op, and (last, on a GPU) a fault inside a kernel reported by the op that made it when
// MOE_CUDA_SYNC_CHECK is on. A binary of its own: after an illegal address the CUDA context is
// unusable for the rest of the process, so that test runs last here and nowhere else.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/check.h"
#include "common/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"
#include "tests/cuda/device_buffer.h"
#include "tests/support/test_env.h"

namespace moe::kernels {
namespace {

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Restores the switch as it was, whatever the test does with it.
struct SyncCheckGuard {
  bool was = cuda::sync_check();
  ~SyncCheckGuard() { cuda::set_sync_check(was); }
};

// No CUDA call: runs everywhere.
TEST(LaunchCheck, SwitchReadsItsValue) {
  for (const char* on : {"1", "true", "TRUE", "yes", "on", "On"})
    EXPECT_TRUE(cuda::sync_check_requested(on)) << on;
  for (const char* off : {"", "0", "false", "no", "off", "2", " 1"})
    EXPECT_FALSE(cuda::sync_check_requested(off)) << '"' << off << '"';
  EXPECT_FALSE(cuda::sync_check_requested(nullptr));
  SyncCheckGuard guard;
  cuda::set_sync_check(true);
  EXPECT_TRUE(cuda::sync_check());
  cuda::set_sync_check(false);
  EXPECT_FALSE(cuda::sync_check());
}

// A launch that fails at once (no such kernel) is named with its op and shapes.
TEST(LaunchCheck, FailedLaunchNamesTheOp) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: launch check tests skipped";
  (void)cudaLaunchKernel(static_cast<const void*>(nullptr), dim3(1), dim3(1), nullptr, 0, nullptr);
  try {
    MOE_CHECK_LAUNCH("probe", nullptr, "rows=" + std::to_string(3));
    FAIL() << "a failed launch passed the check";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cuda probe [rows=3] failed at launch"), std::string::npos) << msg;
  }
  // The error was consumed: the next check passes.
  EXPECT_NO_THROW(MOE_CHECK_LAUNCH("probe", nullptr, std::string("again")));
}

// With the switch on, a correct op passes its check (the sync sees nothing wrong).
TEST(LaunchCheck, SyncCheckPassesACorrectOp) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: launch check tests skipped";
  SyncCheckGuard guard;
  cuda::set_sync_check(true);
  test::DeviceVector<float> src(std::vector<float>{1, 2, 3, 4}), out(size_t(2) * 2);
  test::DeviceVector<int32_t> index(std::vector<int32_t>{1, 0});
  GatherRowsParams p;
  p.src = src.get();
  p.index = index.get();
  p.out = out.get();
  p.M = 2;
  p.cols = 2;
  EXPECT_NO_THROW(cuda::gather_rows(p, nullptr));
  EXPECT_EQ(out.to_host(), (std::vector<float>{3, 4, 1, 2}));
}

// dispatch_layout given an expert id outside [0, n_experts) or a route-table entry outside
// [0, n_ranks): the CPU twin throws; the kernel stops with __trap() (before, the choice was
// dropped or `counts` written out of bounds), and the op names itself. A trap breaks the
// context, so each case ends with cudaDeviceReset.
void expect_dispatch_layout_traps(const std::vector<int32_t>& experts, int32_t bad_route) {
  SyncCheckGuard guard;
  cuda::set_sync_check(true);
  constexpr int T = 2, k = 2, E = 4, N = 2;
  std::vector<int32_t> route(size_t(E) * kRouteWheel);
  for (size_t i = 0; i < route.size(); ++i) route[i] = int32_t(i % N);
  if (bad_route >= 0) route[3] = bad_route;
  {
    test::DeviceVector<int32_t> expert(experts), droute(route), counts(size_t(N + E * N)),
        slot_rank(size_t(T * k)), send_token(size_t(T * N)), home(size_t(T * k));
    test::DeviceVector<float> weight(std::vector<float>(size_t(T * k), 0.5f));
    test::DeviceVector<RouteSlot> send_slots(size_t(T * N * k));
    DispatchLayoutParams p;
    p.expert = expert.get();
    p.weight = weight.get();
    p.route = droute.get();
    p.counts = counts.get();
    p.slot_rank = slot_rank.get();
    p.send_token = send_token.get();
    p.send_slots = send_slots.get();
    p.home = home.get();
    p.T = T;
    p.k = k;
    p.n_experts = E;
    p.n_ranks = N;
    try {
      cuda::dispatch_layout(p, nullptr);
      ADD_FAILURE() << "a bad expert id or route entry passed dispatch_layout";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("cuda dispatch_layout (rank of each choice) [T=2 k=2 experts=4 ranks=2] "
                         "failed while it ran"),
                std::string::npos)
          << msg;
      EXPECT_NE(msg.find("cudaErrorLaunchFailure"), std::string::npos) << msg;
    }
  }
  EXPECT_EQ(cudaDeviceReset(), cudaSuccess);
}

TEST(LaunchCheck, DispatchLayoutStopsOnAnExpertIdOutOfRange) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: launch check tests skipped";
  expect_dispatch_layout_traps({0, 5, 1, 2}, -1);
  expect_dispatch_layout_traps({0, -1, 1, 2}, -1);
}

TEST(LaunchCheck, DispatchLayoutStopsOnARouteEntryOutOfRange) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: launch check tests skipped";
  expect_dispatch_layout_traps({0, 1, 1, 2}, 2);
}

// NOTES: last in this file, and leaves the CUDA context broken for this process.
// gather_rows trusts its indices (only -1 is guarded), so an index of 2^30 rows reads 4 TiB
// past the source: an illegal address inside the kernel. With the switch on, the op that made
// it reports it, with its shapes, instead of whichever later call waits on the stream.
TEST(LaunchCheck, FaultInsideAKernelIsReportedByItsOp) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: launch check tests skipped";
  SyncCheckGuard guard;
  cuda::set_sync_check(true);
  constexpr int kCols = 1024;
  test::DeviceVector<float> src(std::vector<float>(kCols, 1.0f)), out(kCols);
  test::DeviceVector<int32_t> index(std::vector<int32_t>{1 << 30});
  GatherRowsParams p;
  p.src = src.get();
  p.index = index.get();
  p.out = out.get();
  p.M = 1;
  p.cols = kCols;
  try {
    cuda::gather_rows(p, nullptr);
    FAIL() << "an illegal address inside gather_rows passed the synchronised check";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cuda gather_rows [M=1 cols=1024] failed while it ran"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("cudaErrorIllegalAddress"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace moe::kernels
