// Live expert rebalancing on the CUDA backend, on tiny_skew (its router prefers expert 0, half of
// all choices): under mpirun -np 2 the ranks move experts to each other through the device
// communicator (MPI staged, the ranks sharing one GPU) while the engine generates, and the tokens
// are those of the same run without rebalancing (f32, top-2: a token's two expert outputs are
// summed in the same order wherever they were computed).
//
// gpu_memory_utilization 1.0 lets the KV cache take every byte it may: the moves' buffers and the
// experts a rank gains must still find their memory, which RankRuntime keeps free for them.
// Under the emulation CTest gives each rank's device MOE_EMU_DEVICE_MEMORY=16M, which the KV
// cache then fills (before the reserve, the first rebalance failed: "out of GPU memory on device
// 0 allocating 196608 bytes"). Skipped where no GPU is present.
#include <cuda_runtime.h>

#include "runtime/expert_rebalancer.h"
#include "runtime/rank_runtime.h"
#include "tests/support/reference_run.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

TEST(CudaRebalance, MovesExpertsOnAFullDeviceAndKeepsTheTokens) {
  int n = 0;
  int64_t have = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  world().all_reduce(&have, 1, comm::Communicator::Op::kMin);
  if (!have) GTEST_SKIP() << "no CUDA device: CUDA rebalancing test skipped";
  const Reference ref = load_reference("tiny_skew");
  runtime::RunConfig rc = reference_run_config(ref);
  rc.backend = "cuda";
  rc.transport = "mpi";
  rc.dtype = "f32";
  rc.gpu_memory_utilization = 1.0;
  rc.max_seqs = 0;  // as many as fit
  const runtime::LocalRank local{mpi().local_rank(), mpi().local_size()};

  std::map<int64_t, runtime::Result> plain;
  {
    runtime::RankRuntime rt(rc, world(), local);
    plain = generate_greedy(ref, rt, world());
  }
  rc.rebalance = true;
  rc.rebalance_interval = 1;
  rc.rebalance_window = 2;
  rc.rebalance_threshold = 1.0;
  rc.rebalance_redundant_slots = 1;
  runtime::RankRuntime rt(rc, world(), local);
  const auto got = generate_greedy(ref, rt, world());
  const runtime::RebalanceTotals& t = rt.rebalancer()->totals();
  if (world().size() > 1) {
    EXPECT_GT(t.rebalances, 0) << "the skewed load moved nothing";
    EXPECT_GT(t.weights_moved, 0);
  }
  ASSERT_EQ(got.size(), plain.size());
  for (const auto& [id, r] : got) EXPECT_EQ(r.output, plain.at(id).output) << "request " << id;
  if (world().rank() == 0)
    std::printf("[ figures  ] cuda rebalancing on a full device: %lld rebalances, %lld expert "
                "weights moved (%.2f MB)\n",
                (long long)t.rebalances, (long long)t.weights_moved, t.bytes_moved / 1e6);
}

}  // namespace
}  // namespace moe::test
