#pragma once
// Stable compaction inside one thread block: each thread holds a 0/1 flag, and learns how many
// threads before it (in thread order) hold 1, and how many do in the whole block. The dispatch
// ops use it to hand out rows in a fixed order (tokens, then (row, slot) pairs, ascending), so
// the plan is the CPU reference's, bit for bit, with no atomics deciding an order.
#include <cuda_runtime.h>

namespace moe::kernels::cuda {

// Every thread of the block must call it (it synchronises twice). blockDim.x must be a
// multiple of 32, at most 1024; `warp_counts` is shared memory of at least 32 ints.
__device__ inline int block_exclusive_count(bool flag, int* block_total, int* warp_counts) {
  const unsigned ballot = __ballot_sync(0xffffffffu, flag);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  if (lane == 0) warp_counts[warp] = __popc(ballot);
  __syncthreads();
  int before = 0, total = 0;
  const int n_warps = int(blockDim.x) >> 5;
  for (int w = 0; w < n_warps; ++w) {
    const int c = warp_counts[w];
    before += w < warp ? c : 0;
    total += c;
  }
  // NOTES: the next call overwrites warp_counts; without this barrier a fast warp could do so
  // before a slow one has summed them.
  __syncthreads();
  *block_total = total;
  return before + __popc(ballot & ((1u << lane) - 1u));
}

}  // namespace moe::kernels::cuda
