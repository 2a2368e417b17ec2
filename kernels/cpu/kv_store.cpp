#include <cstring>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void kv_store(const KvStoreParams& p) {
  MOE_CHECK(p.cache_dtype == DType::kF32, "cpu kv_store needs an fp32 cache");
  auto* k_cache = static_cast<float*>(p.k_cache);
  auto* v_cache = static_cast<float*>(p.v_cache);
  for (int t = 0; t < p.T; ++t) {
    const int64_t dst = (int64_t(p.slot[t]) * p.max_len + p.pos[t]) * p.kv_dim;
    std::memcpy(k_cache + dst, p.k + int64_t(t) * p.kv_dim, p.kv_dim * sizeof(float));
    std::memcpy(v_cache + dst, p.v + int64_t(t) * p.kv_dim, p.kv_dim * sizeof(float));
  }
}

}  // namespace moe::kernels::cpu
