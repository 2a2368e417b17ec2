#include "runtime/kv_cache.h"

#include <string>

#include "common/error.h"

namespace moe::runtime {

KvCache::KvCache(kernels::Ops& ops, int n_layers, int kv_dim)
    : ops_(ops), n_layers_(n_layers), dtype_(ops.kv_dtype()), kv_dim_(kv_dim) {}

void KvCache::allocate(int slots, int max_len) {
  MOE_CHECK(slots >= 0 && max_len >= 0, "KV cache of " + std::to_string(slots) + " slots x " +
                                            std::to_string(max_len) + " positions");
  k_.clear();
  v_.clear();
  slots_ = slots;
  max_len_ = max_len;
  const size_t per = size_t(slots) * max_len * kv_dim_ * dtype_size(dtype_);
  for (int l = 0; l < n_layers_; ++l) {
    k_.push_back(ops_.alloc(per));
    v_.push_back(ops_.alloc(per));
  }
  free_.clear();
  for (int s = slots - 1; s >= 0; --s) free_.push_back(s);
}

size_t KvCache::bytes_per_slot(int n_layers, int max_len, int kv_dim, DType dtype) {
  return 2 * size_t(n_layers) * size_t(max_len) * size_t(kv_dim) * dtype_size(dtype);
}

size_t KvCache::bytes() const {
  return size_t(slots_) * bytes_per_slot(n_layers_, max_len_, kv_dim_, dtype_);
}

int KvCache::acquire() {
  MOE_CHECK(!free_.empty(), "no free KV cache slot");
  const int s = free_.back();
  free_.pop_back();
  return s;
}

void KvCache::release(int slot) { free_.push_back(slot); }

}  // namespace moe::runtime
