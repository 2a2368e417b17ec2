// GPU memory sharing as arithmetic (runtime/memory_plan.h), with made-up device sizes.
#include "runtime/memory_plan.h"

#include "common/error.h"
#include "tests/support/files.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

constexpr size_t kGiB = size_t(1) << 30;

TEST(MemoryPlan, WeightsThatFitPass) {
  runtime::WeightBytes w{10 * kGiB, 30 * kGiB, 8, DType::kBF16};
  EXPECT_NO_THROW(runtime::check_weights_fit(w, {40 * kGiB, 80 * kGiB, 0, 1}, 0));
}

TEST(MemoryPlan, WeightsTooLargeNameTheSizes) {
  runtime::WeightBytes w{3 * kGiB, 90 * kGiB, 64, DType::kBF16};
  const std::string msg = input_error(
      [&] { runtime::check_weights_fit(w, {79 * kGiB, 80 * kGiB, 2, 1}, 3); });
  EXPECT_TRUE(mentions(msg, {"rank 3", "93.00 GiB", "shared 3.00 GiB", "64 expert FFNs",
                             "90.00 GiB", "BF16", "CUDA device 2", "79.00 GiB free of 80.00 GiB",
                             "expected more ranks"}));
}

TEST(MemoryPlan, RanksSharingADeviceShareItsFreeMemory) {
  runtime::WeightBytes w{1 * kGiB, 30 * kGiB, 4, DType::kBF16};
  EXPECT_NO_THROW(runtime::check_weights_fit(w, {70 * kGiB, 80 * kGiB, 0, 2}, 0));
  const std::string msg = input_error(
      [&] { runtime::check_weights_fit(w, {60 * kGiB, 80 * kGiB, 0, 2}, 1); });
  EXPECT_TRUE(mentions(msg, {"31.00 GiB", "60.00 GiB free", "shared by 2 ranks"}));
}

TEST(MemoryPlan, HostKvCacheTooLargeNamesTheSizes) {
  EXPECT_NO_THROW(runtime::check_host_kv_fits(kGiB / 4, 64, 4096, {20 * kGiB, 32 * kGiB, -1, 1}, 0));
  const std::string msg = input_error([&] {
    runtime::check_host_kv_fits(kGiB / 4, 64, 4096, {20 * kGiB, 32 * kGiB, -1, 2}, 1);
  });
  EXPECT_TRUE(mentions(msg, {"rank 1", "64 sequences x 4096 positions", "16.00 GiB",
                             "20.00 GiB free of 32.00 GiB", "shared by 2 ranks", "max_seqs",
                             "max_seq_len"}));
}

TEST(MemoryPlan, AutoSlotsFillTheUtilisation) {
  // 80 GiB device, 0.9 of it = 72 GiB, 40 GiB in use: 32 GiB left, 1 GiB a slot.
  EXPECT_EQ(runtime::kv_cache_slots({40 * kGiB, 80 * kGiB, 0, 1}, 0.9, kGiB, 4096, 0, 1024), 32);
  // Split between two ranks on the device.
  EXPECT_EQ(runtime::kv_cache_slots({40 * kGiB, 80 * kGiB, 0, 2}, 0.9, kGiB, 4096, 0, 1024), 16);
  // Capped where more would fit.
  EXPECT_EQ(runtime::kv_cache_slots({40 * kGiB, 80 * kGiB, 0, 1}, 0.9, kGiB / 1024, 64, 0, 1024),
            1024);
}

TEST(MemoryPlan, ExplicitSlotsMustFit) {
  EXPECT_EQ(runtime::kv_cache_slots({40 * kGiB, 80 * kGiB, 0, 1}, 0.9, kGiB, 4096, 32, 1024), 32);
  const std::string msg = input_error([&] {
    runtime::kv_cache_slots({40 * kGiB, 80 * kGiB, 1, 1}, 0.9, kGiB, 4096, 33, 1024);
  });
  EXPECT_TRUE(mentions(msg, {"max_seqs 33", "4096 positions", "33.00 GiB", "32.00 GiB is left",
                             "CUDA device 1", "gpu_memory_utilization 0.90", "40.00 GiB in use",
                             "expected a smaller max_seqs"}));
}

TEST(MemoryPlan, NoSlotAtAllIsRefused) {
  // 0.5 of 80 GiB is already in use: nothing is left.
  const std::string msg = input_error([&] {
    runtime::kv_cache_slots({40 * kGiB, 80 * kGiB, 0, 1}, 0.5, kGiB, 4096, 0, 1024);
  });
  EXPECT_TRUE(mentions(msg, {"not one sequence of 4096 positions", "0.00 GiB is left",
                             "expected a shorter max_seq_len"}));
}

}  // namespace
}  // namespace moe::test
