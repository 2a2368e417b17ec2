#include <algorithm>

#include <cuda_runtime.h>

#include <string>

#include "common/check.h"
#include "kernels/cuda/block_count.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: first one block per expert. Block e walks the (token, slot) choices in order, 256 at a
// time; block_exclusive_count gives each choice of e its index j among e's choices, and the
// choice goes to wheel position j % kRouteWheel (the CPU reference's order, without atomics);
// the block's thread 0 then credits the wheel's ranks with e's choices per destination. Then one
// block per destination rank: block d walks the tokens in order, 256 at a time; each thread asks
// whether its token has a slot served by d, and block_exclusive_count turns those answers into
// the token's row among d's rows. The rows of d start after those of every rank below d, which
// the block sums from counts (written by the kernel before). Work is O((n_experts + n_ranks) *
// T * k): a decode step's few tokens cost one pass per block, and even 16k tokens over 8 ranks
// are far below a millisecond; nothing leaves the device.
//
// The CPU twin throws on an expert id outside [0, n_experts) or a route-table entry outside
// [0, n_ranks); a kernel cannot, and going on would drop the choice (no block claims it) or
// write outside `counts`. So either stops the kernel with __trap(): the launch fails
// (cudaErrorLaunchFailure), named by its op where MOE_CUDA_SYNC_CHECK is on.
constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    slot_rank_kernel(const int32_t* __restrict__ expert,  // [T * k]
                     const int32_t* __restrict__ route,   // [E, kRouteWheel]
                     int32_t* __restrict__ slot_rank,     // [T * k]
                     int32_t* __restrict__ choices,       // [E, N], zeroed
                     int64_t n, int N, int E) {
  __shared__ int warp_counts[32];
  const int e = blockIdx.x;
  const int32_t* wheel = route + int64_t(e) * kRouteWheel;
  for (int q = int(threadIdx.x); q < kRouteWheel; q += kThreads)
    if (wheel[q] < 0 || wheel[q] >= N) __trap();  // a rank that does not exist
  int64_t seen = 0;  // e's choices before this stretch
  for (int64_t base = 0; base < n; base += kThreads) {
    const int64_t i = base + int64_t(threadIdx.x);
    if (e == 0 && i < n && (expert[i] < 0 || expert[i] >= E)) __trap();  // block 0 checks all
    const bool mine = i < n && expert[i] == e;
    int total = 0;
    const int before = block_exclusive_count(mine, &total, warp_counts);
    if (mine) slot_rank[i] = wheel[(seen + before) % kRouteWheel];
    seen += total;
  }
  if (threadIdx.x == 0) {
    // Position q of the wheel took seen / Q choices, one more for q < seen % Q.
    for (int q = 0; q < kRouteWheel; ++q)
      choices[int64_t(e) * N + wheel[q]] +=
          int32_t(seen / kRouteWheel + (q < seen % kRouteWheel ? 1 : 0));
  }
}

// Whether any of token t's slots is served by rank d.
__device__ inline bool goes_to(const int32_t* slot_rank, int64_t t, int k, int d) {
  bool yes = false;
  for (int s = 0; s < k; ++s) yes |= slot_rank[t * k + s] == d;
  return yes;
}

__global__ void __launch_bounds__(kThreads)
    rows_per_rank_kernel(const int32_t* __restrict__ slot_rank,  // [T, k]
                         int32_t* __restrict__ counts,           // [N]
                         int T, int k) {
  const int d = blockIdx.x;
  int rows = 0;
  for (int base = 0; base < T; base += kThreads) {
    const int t = base + int(threadIdx.x);
    rows += __syncthreads_count(t < T && goes_to(slot_rank, t, k, d));
  }
  if (threadIdx.x == 0) counts[d] = rows;
}

__global__ void __launch_bounds__(kThreads)
    place_rows_kernel(const int32_t* __restrict__ expert,     // [T, k]
                      const float* __restrict__ weight,       // [T, k]
                      const int32_t* __restrict__ slot_rank,  // [T, k]
                      const int32_t* __restrict__ counts,     // [N] rows per rank
                      int32_t* __restrict__ send_token,       // [S]
                      RouteSlot* __restrict__ send_slots,     // [S, k]
                      int32_t* __restrict__ home,             // [T, k], -1 filled
                      int T, int k) {
  __shared__ int warp_counts[32];
  const int d = blockIdx.x;
  int next = 0;  // the first row of rank d: after every lower rank's rows
  for (int j = 0; j < d; ++j) next += counts[j];
  for (int base = 0; base < T; base += kThreads) {
    const int t = base + int(threadIdx.x);
    const bool mine = t < T && goes_to(slot_rank, t, k, d);
    int total = 0;
    const int before = block_exclusive_count(mine, &total, warp_counts);
    if (mine) {
      const int64_t row = next + before;
      send_token[row] = t;
      int below = 0;  // t's distinct destinations below d: this row's place in t's home list
      for (int s = 0; s < k; ++s) {
        const int64_t i = int64_t(t) * k + s;
        const int ds = slot_rank[i];
        send_slots[row * k + s] = ds == d ? RouteSlot{expert[i], weight[i]} : RouteSlot{-1, 0.0f};
        bool first = ds < d;
        for (int s2 = 0; s2 < s && first; ++s2) first = slot_rank[int64_t(t) * k + s2] != ds;
        below += first;
      }
      home[int64_t(t) * k + below] = int32_t(row);
    }
    next += total;
  }
}

}  // namespace

void dispatch_layout(const DispatchLayoutParams& p, cudaStream_t stream) {
  MOE_CHECK(p.T >= 0 && p.k > 0 && p.k <= kMaxTopK && p.n_ranks > 0 && p.n_experts > 0,
            "cuda dispatch_layout needs T >= 0, 0 < k <= kMaxTopK, n_ranks > 0 and n_experts > 0");
  MOE_CHECK(p.counts && p.route, "cuda dispatch_layout given a null pointer");
  const int N = p.n_ranks, E = p.n_experts;
  CUDA_CHECK(cudaMemsetAsync(p.counts, 0, size_t(N + int64_t(E) * N) * sizeof(int32_t), stream));
  if (p.T == 0) return;  // every count is 0
  MOE_CHECK(p.expert && p.weight && p.slot_rank && p.send_token && p.send_slots && p.home,
            "cuda dispatch_layout given a null pointer");
  // -1 everywhere first: a token with fewer than k destinations leaves the rest of its home list
  // empty.
  CUDA_CHECK(cudaMemsetAsync(p.home, 0xff, size_t(p.T) * p.k * sizeof(int32_t), stream));
  auto shapes = [&] {
    return "T=" + std::to_string(p.T) + " k=" + std::to_string(p.k) +
           " experts=" + std::to_string(E) + " ranks=" + std::to_string(N);
  };
  const int64_t n = int64_t(p.T) * p.k;
  slot_rank_kernel<<<E, kThreads, 0, stream>>>(p.expert, p.route, p.slot_rank, p.counts + N, n, N,
                                               E);
  MOE_CHECK_LAUNCH("dispatch_layout (rank of each choice)", stream, shapes());
  rows_per_rank_kernel<<<N, kThreads, 0, stream>>>(p.slot_rank, p.counts, p.T, p.k);
  MOE_CHECK_LAUNCH("dispatch_layout (rows per rank)", stream, shapes());
  place_rows_kernel<<<N, kThreads, 0, stream>>>(p.expert, p.weight, p.slot_rank, p.counts,
                                                p.send_token, p.send_slots, p.home, p.T, p.k);
  MOE_CHECK_LAUNCH("dispatch_layout (place rows)", stream, shapes());
}

}  // namespace moe::kernels::cuda
