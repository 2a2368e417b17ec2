#include <cuda_runtime.h>

#include <string>

#include "common/check.h"
#include "kernels/cuda/block_count.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: a stable counting sort of the R * k received (row, slot) pairs by local expert, in
// three kernels: one block per local expert counts its pairs, one thread scans the counts into
// offsets (at most kCudaMaxExperts of them), and one block per local expert walks the pairs in
// order handing out grouped rows with block_exclusive_count. O(n_local * R * k) reads of 8-byte
// slots: for Mixtral (8 experts, k = 2) a prefill step of 16k rows is a few MB per block.
constexpr int kThreads = 256;

struct SlotReader {
  const char* payload;  // [R, stride] bytes
  size_t stride, slots_offset;
  int k;
  __device__ RouteSlot operator()(int64_t q) const {  // pair q = (row q / k, slot q % k)
    return reinterpret_cast<const RouteSlot*>(payload + size_t(q / k) * stride + slots_offset)[q % k];
  }
};

__device__ inline int local_of(const RouteSlot& rs, const int32_t* local_index, int n_experts) {
  return rs.expert >= 0 && rs.expert < n_experts ? local_index[rs.expert] : -1;
}

__global__ void __launch_bounds__(kThreads)
    count_kernel(SlotReader slots, const int32_t* __restrict__ local_index, int n_experts,
                 int32_t* __restrict__ offsets,  // [n_local + 1]: counts at [i + 1]
                 int64_t n_pairs) {
  const int i = blockIdx.x;
  int n = 0;
  for (int64_t base = 0; base < n_pairs; base += kThreads) {
    const int64_t q = base + threadIdx.x;
    n += __syncthreads_count(q < n_pairs && local_of(slots(q), local_index, n_experts) == i);
  }
  if (threadIdx.x == 0) offsets[i + 1] = n;
}

__global__ void scan_kernel(int32_t* offsets, int n_local) {
  offsets[0] = 0;
  for (int i = 0; i < n_local; ++i) offsets[i + 1] += offsets[i];
}

__global__ void __launch_bounds__(kThreads)
    scatter_kernel(SlotReader slots, const int32_t* __restrict__ local_index, int n_experts,
                   const int32_t* __restrict__ offsets,  // [n_local + 1]
                   int32_t* __restrict__ gather,         // [G]
                   int32_t* __restrict__ slot_row,       // [R * k], -1 filled
                   float* __restrict__ slot_weight,      // [R * k], 0 filled
                   int64_t n_pairs) {
  __shared__ int warp_counts[32];
  const int i = blockIdx.x;
  int next = offsets[i];
  for (int64_t base = 0; base < n_pairs; base += kThreads) {
    const int64_t q = base + threadIdx.x;
    RouteSlot rs{-1, 0.0f};
    if (q < n_pairs) rs = slots(q);
    const bool mine = q < n_pairs && local_of(rs, local_index, n_experts) == i;
    int total = 0;
    const int before = block_exclusive_count(mine, &total, warp_counts);
    if (mine) {
      const int g = next + before;
      gather[g] = int32_t(q / slots.k);
      slot_row[q] = g;
      slot_weight[q] = rs.weight;
    }
    next += total;
  }
}

}  // namespace

void group_by_expert(const GroupByExpertParams& p, cudaStream_t stream) {
  const int k = p.layout.k;
  MOE_CHECK(p.R >= 0 && k > 0 && p.n_experts > 0 && p.n_local >= 0 &&
                p.n_local <= kCudaMaxExperts,
            "cuda group_by_expert needs R >= 0, k > 0, n_experts > 0 and 0 <= n_local <= " +
                std::to_string(kCudaMaxExperts));
  MOE_CHECK(p.offsets, "cuda group_by_expert given a null pointer");
  CUDA_CHECK(cudaMemsetAsync(p.offsets, 0, size_t(p.n_local + 1) * sizeof(int32_t), stream));
  const int64_t n_pairs = int64_t(p.R) * k;
  if (n_pairs == 0) return;
  MOE_CHECK(p.payload && p.local_index && p.gather && p.slot_row && p.slot_weight,
            "cuda group_by_expert given a null pointer");
  CUDA_CHECK(cudaMemsetAsync(p.slot_row, 0xff, size_t(n_pairs) * sizeof(int32_t), stream));
  CUDA_CHECK(cudaMemsetAsync(p.slot_weight, 0, size_t(n_pairs) * sizeof(float), stream));
  if (p.n_local == 0) return;
  const SlotReader slots{static_cast<const char*>(p.payload), p.layout.stride(),
                         p.layout.slots_offset(), k};
  auto shapes = [&] {
    return "R=" + std::to_string(p.R) + " k=" + std::to_string(k) +
           " experts=" + std::to_string(p.n_experts) + " local=" + std::to_string(p.n_local);
  };
  count_kernel<<<p.n_local, kThreads, 0, stream>>>(slots, p.local_index, p.n_experts, p.offsets,
                                                   n_pairs);
  MOE_CHECK_LAUNCH("group_by_expert (count)", stream, shapes());
  scan_kernel<<<1, 1, 0, stream>>>(p.offsets, p.n_local);
  MOE_CHECK_LAUNCH("group_by_expert (scan)", stream, shapes());
  scatter_kernel<<<p.n_local, kThreads, 0, stream>>>(slots, p.local_index, p.n_experts,
                                                     p.offsets, p.gather, p.slot_row,
                                                     p.slot_weight, n_pairs);
  MOE_CHECK_LAUNCH("group_by_expert (scatter)", stream, shapes());
}

}  // namespace moe::kernels::cuda
