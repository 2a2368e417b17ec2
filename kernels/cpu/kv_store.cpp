#include <cstring>

#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void kv_store(const KvStoreParams& p) {
  for (int t = 0; t < p.T; ++t) {
    const int64_t dst = (int64_t(p.slot[t]) * p.max_len + p.pos[t]) * p.kv_dim;
    std::memcpy(p.k_cache + dst, p.k + int64_t(t) * p.kv_dim, p.kv_dim * sizeof(float));
    std::memcpy(p.v_cache + dst, p.v + int64_t(t) * p.kv_dim, p.kv_dim * sizeof(float));
  }
}

}  // namespace moe::kernels::cpu
