#include <algorithm>

#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/elem.cuh"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one block per token (a grid-stride loop over tokens, the grid capped at 65536
// blocks), 256 threads striding over kv_dim: each token's k and v rows are one contiguous read
// and one contiguous write into the cache (coalesced). The token's slot and position are read
// once per thread (a broadcast from L1). Cache is float or __nv_bfloat16 (rounded to nearest
// even on the way in).
constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65536;

template <class Cache>
__global__ void __launch_bounds__(kThreads)
    kv_store_kernel(const float* __restrict__ k,       // [T, kv_dim]
                    const float* __restrict__ v,       // [T, kv_dim]
                    Cache* __restrict__ k_cache,       // [slots, max_len, kv_dim]
                    Cache* __restrict__ v_cache,       // [slots, max_len, kv_dim]
                    const int32_t* __restrict__ slot,  // [T]
                    const int32_t* __restrict__ pos,   // [T]
                    int T, int kv_dim, int max_len) {
  for (int t = blockIdx.x; t < T; t += gridDim.x) {
    const int32_t s = slot[t], p = pos[t];
    // The scheduler hands out slots and positions (the CPU op trusts them too); a kernel cannot
    // throw, so a position outside the cache is dropped rather than written out of bounds.
    if (s < 0 || p < 0 || p >= max_len) continue;
    const int64_t dst = (int64_t(s) * max_len + p) * kv_dim;
    const int64_t src = int64_t(t) * kv_dim;
    for (int c = threadIdx.x; c < kv_dim; c += kThreads) {
      store_f32(k_cache + dst + c, k[src + c]);
      store_f32(v_cache + dst + c, v[src + c]);
    }
  }
}

}  // namespace

void kv_store(const KvStoreParams& p, cudaStream_t stream) {
  MOE_CHECK(p.T >= 0 && p.kv_dim > 0 && p.max_len > 0,
            "cuda kv_store needs T >= 0, kv_dim > 0 and max_len > 0");
  if (p.T == 0) return;
  MOE_CHECK(p.k && p.v && p.k_cache && p.v_cache && p.slot && p.pos,
            "cuda kv_store given a null pointer");
  const int blocks = std::min(p.T, kMaxBlocks);
  dispatch_f32_bf16(p.cache_dtype, "cuda kv_store cache", [&](auto zero) {
    using Cache = decltype(zero);
    kv_store_kernel<Cache><<<blocks, kThreads, 0, stream>>>(
        p.k, p.v, static_cast<Cache*>(p.k_cache), static_cast<Cache*>(p.v_cache), p.slot, p.pos,
        p.T, p.kv_dim, p.max_len);
  });
  MOE_CHECK_LAUNCH("kv_store", stream,
                   "T=" + std::to_string(p.T) + " kv_dim=" + std::to_string(p.kv_dim) +
                       " max_len=" + std::to_string(p.max_len));
}

}  // namespace moe::kernels::cuda
