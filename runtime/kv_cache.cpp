#include "runtime/kv_cache.h"

#include "common/error.h"

namespace moe::runtime {

KvCache::KvCache(kernels::Ops& ops, int n_layers, int slots, int max_len, int kv_dim)
    : slots_(slots), max_len_(max_len), kv_dim_(kv_dim) {
  const size_t per = size_t(slots) * max_len * kv_dim * sizeof(float);
  for (int l = 0; l < n_layers; ++l) {
    k_.push_back(ops.alloc(per));
    v_.push_back(ops.alloc(per));
  }
  for (int s = slots - 1; s >= 0; --s) free_.push_back(s);
}

size_t KvCache::bytes() const { return 2 * k_.size() * size_t(slots_) * max_len_ * kv_dim_ * 4; }

int KvCache::acquire() {
  MOE_CHECK(!free_.empty(), "no free KV cache slot");
  const int s = free_.back();
  free_.pop_back();
  return s;
}

void KvCache::release(int slot) { free_.push_back(slot); }

}  // namespace moe::runtime
