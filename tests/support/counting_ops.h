#pragma once
// An Ops that forwards every call to another and counts the host <-> backend copies, so a test
// can hold a code path to the copies it is allowed (each one is a stream sync on cuda).
#include <string>

#include "kernels/ops.h"

namespace moe::test {

class CountingOps final : public kernels::Ops {
 public:
  explicit CountingOps(kernels::Ops& inner) : in_(inner) {}
  int uploads = 0, downloads = 0;
  void reset_counts() { uploads = downloads = 0; }

  std::string name() const override { return in_.name(); }
  DType precision() const override { return in_.precision(); }
  DType weight_dtype() const override { return in_.weight_dtype(); }
  DType kv_dtype() const override { return in_.kv_dtype(); }
  MemoryInfo memory_info() const override { return in_.memory_info(); }
  kernels::Buffer alloc(size_t bytes) override { return in_.alloc(bytes); }
  void upload(void* dst, const void* host, size_t bytes) override {
    ++uploads;
    in_.upload(dst, host, bytes);
  }
  void download(void* host, const void* src, size_t bytes) override {
    ++downloads;
    in_.download(host, src, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override { in_.copy(dst, src, bytes); }
  kernels::Weight upload_weight(kernels::Buffer& s, const float* host, int64_t rows,
                                int64_t cols) override {
    ++uploads;
    return in_.upload_weight(s, host, rows, cols);
  }
  kernels::Weight random_weight(kernels::Buffer& s, int64_t rows, int64_t cols, uint64_t seed,
                                float scale, float offset) override {
    return in_.random_weight(s, rows, cols, seed, scale, offset);
  }
  void synchronize() override { in_.synchronize(); }
  void reserve_linear_input(int64_t elems) override { in_.reserve_linear_input(elems); }

  void embedding(const kernels::EmbeddingParams& p) override { in_.embedding(p); }
  void rmsnorm(const kernels::RmsNormParams& p) override { in_.rmsnorm(p); }
  void linear(const kernels::LinearParams& p) override { in_.linear(p); }
  void rope(const kernels::RopeParams& p) override { in_.rope(p); }
  void kv_store(const kernels::KvStoreParams& p) override { in_.kv_store(p); }
  void attention(const kernels::AttentionParams& p) override { in_.attention(p); }
  void topk_router(const kernels::TopKRouterParams& p) override { in_.topk_router(p); }
  void silu_mul(const kernels::SiluMulParams& p) override { in_.silu_mul(p); }
  void gather_rows(const kernels::GatherRowsParams& p) override { in_.gather_rows(p); }
  void weighted_combine(const kernels::WeightedCombineParams& p) override {
    in_.weighted_combine(p);
  }
  void add(const kernels::AddParams& p) override { in_.add(p); }
  void dispatch_layout(const kernels::DispatchLayoutParams& p) override { in_.dispatch_layout(p); }
  void pack_rows(const kernels::PackRowsParams& p) override { in_.pack_rows(p); }
  void group_by_expert(const kernels::GroupByExpertParams& p) override { in_.group_by_expert(p); }
  void unpack_rows(const kernels::UnpackRowsParams& p) override { in_.unpack_rows(p); }

 private:
  kernels::Ops& in_;
};

}  // namespace moe::test
