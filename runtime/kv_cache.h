#pragma once
// Per-rank KV cache: for every layer, K and V of `slots` sequences of up to `max_len`
// positions, in the backend's KV dtype (Ops::kv_dtype: fp32, or bf16 on cuda). A sequence holds
// one slot from admission to completion.
#include <vector>

#include "kernels/ops.h"

namespace moe::runtime {

class KvCache {
 public:
  // An empty cache (no slots) until allocate(): the runtime sizes it from the memory left once
  // weights and workspace are in place.
  KvCache(kernels::Ops& ops, int n_layers, int kv_dim);
  // (Re)allocates `slots` sequences of `max_len` positions, zeroed, every slot free.
  void allocate(int slots, int max_len);

  void* k(int layer) const { return k_[layer].data(); }  // [slots, max_len, kv_dim] of dtype()
  void* v(int layer) const { return v_[layer].data(); }  // [slots, max_len, kv_dim] of dtype()
  DType dtype() const { return dtype_; }
  int slots() const { return slots_; }
  int max_len() const { return max_len_; }
  int kv_dim() const { return kv_dim_; }
  size_t bytes() const;
  // Bytes one slot takes over all layers (K and V): what sizing the cache divides by.
  static size_t bytes_per_slot(int n_layers, int max_len, int kv_dim, DType dtype);

  int free_slots() const { return int(free_.size()); }
  int acquire();  // throws when none is free
  void release(int slot);

 private:
  kernels::Ops& ops_;
  int n_layers_;
  std::vector<kernels::Buffer> k_, v_;
  DType dtype_;
  int slots_ = 0, max_len_ = 0, kv_dim_;
  std::vector<int> free_;  // a stack; lowest slot on top
};

}  // namespace moe::runtime
