#pragma once
// Per-rank KV cache: for every layer, K and V of `slots` sequences of up to `max_len`
// positions. A sequence holds one slot from admission to completion.
#include <vector>

#include "kernels/ops.h"

namespace moe::runtime {

class KvCache {
 public:
  KvCache(kernels::Ops& ops, int n_layers, int slots, int max_len, int kv_dim);

  float* k(int layer) const { return k_[layer].as<float>(); }  // [slots, max_len, kv_dim]
  float* v(int layer) const { return v_[layer].as<float>(); }  // [slots, max_len, kv_dim]
  int slots() const { return slots_; }
  int max_len() const { return max_len_; }
  int kv_dim() const { return kv_dim_; }
  size_t bytes() const;

  int free_slots() const { return int(free_.size()); }
  int acquire();  // throws when none is free
  void release(int slot);

 private:
  std::vector<kernels::Buffer> k_, v_;
  int slots_, max_len_, kv_dim_;
  std::vector<int> free_;  // a stack; lowest slot on top
};

}  // namespace moe::runtime
