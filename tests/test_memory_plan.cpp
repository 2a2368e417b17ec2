// GPU memory sharing as arithmetic (runtime/memory_plan.h), with made-up device sizes.
#include "runtime/expert_rebalancer.h"
#include "runtime/memory_plan.h"
#include "runtime/placement.h"

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

// Live rebalancing keeps its moves' memory free: the KV cache takes what is left after it, and a
// max_seqs that needs it is refused naming what it is kept for. Before, the cache took all of it
// and the first rebalance failed allocating its buffers on a full GPU.
TEST(MemoryPlan, ARebalanceReserveIsKeptFromTheKvCache) {
  const runtime::Reserve reserve{4 * kGiB, "live rebalancing (rebalance_redundant_slots 1)"};
  EXPECT_EQ(runtime::kv_cache_slots({40 * kGiB, 80 * kGiB, 0, 1}, 0.9, kGiB, 4096, 0, 1024,
                                    reserve),
            28);
  EXPECT_EQ(runtime::kv_cache_slots({40 * kGiB, 80 * kGiB, 0, 2}, 0.9, kGiB, 4096, 0, 1024,
                                    reserve),
            12);  // each rank on the device keeps its own
  const std::string msg = input_error([&] {
    runtime::kv_cache_slots({40 * kGiB, 80 * kGiB, 0, 1}, 0.9, kGiB, 4096, 32, 1024, reserve);
  });
  EXPECT_TRUE(mentions(msg, {"max_seqs 32", "28.00 GiB is left", "4.00 GiB kept for live "
                             "rebalancing (rebalance_redundant_slots 1)"}));
}

// The reserve: Mixtral 8x7B's shape at bf16 on 8 ranks, contiguous (one expert a layer each),
// one redundant slot: each of 32 layers may gain one expert (32), and one layer's move holds at
// most the one expert sent, two slots received and their copies (1 + 2 * 2): 37 experts of
// 3 * 4096 * 14336 bf16 = 336 MiB.
TEST(MemoryPlan, TheRebalanceReserveCoversGrowthAndOneLayersMove) {
  runtime::ModelConfig cfg;
  cfg.hidden_size = 4096;
  cfg.intermediate_size = 14336;
  cfg.num_hidden_layers = 32;
  cfg.num_local_experts = 8;
  const auto p = runtime::Placement::make(runtime::Placement::Kind::kContiguous, 32, 8, 8);
  const size_t expert = size_t(3) * 4096 * 14336 * 2;
  EXPECT_EQ(runtime::rebalance_reserve_bytes(cfg, p, 3, DType::kBF16, 1), 37 * expert);
  // No redundant slot: nothing can grow past one expert a layer; one layer's move as before.
  EXPECT_EQ(runtime::rebalance_reserve_bytes(cfg, p, 3, DType::kBF16, 0), (1 + 2) * expert);
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
