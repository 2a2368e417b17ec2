#pragma once
// The kernel interface the model is written against. The CPU backend (kernels/cpu) is the
// reference; the CUDA backend (kernels/cuda) fills in the same calls. Memory handed to an op
// belongs to the backend that runs it; the model moves data across with upload / download.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kernels/params.h"

namespace moe::kernels {

// Move-only owner of backend memory.
class Buffer {
 public:
  using Deleter = void (*)(void*) noexcept;
  Buffer() = default;
  Buffer(void* p, size_t bytes, Deleter d) : p_(p), bytes_(bytes), del_(d) {}
  Buffer(Buffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_), del_(o.del_) { o.p_ = nullptr; o.bytes_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_; bytes_ = o.bytes_; del_ = o.del_;
      o.p_ = nullptr; o.bytes_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  void reset() noexcept {
    if (p_ && del_) del_(p_);
    p_ = nullptr;
    bytes_ = 0;
  }
  void* data() const { return p_; }
  size_t bytes() const { return bytes_; }
  template <class T> T* as() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
  Deleter del_ = nullptr;
};

class Ops {
 public:
  virtual ~Ops() = default;
  virtual std::string name() const = 0;
  // The precision numbers are held at: kF32, or kBF16 (weights, the inputs of every linear and
  // the KV cache rounded to bf16; arithmetic, accumulation and activations stay fp32). Both
  // backends store weights as bf16 for kBF16; cpu keeps an fp32 KV cache holding rounded
  // values, so that the CPU reference reproduces the GPU's numerics.
  virtual DType precision() const = 0;
  // The dtype weights are stored in on this backend.
  virtual DType weight_dtype() const = 0;
  // The dtype of the KV cache's elements (KvStoreParams::cache_dtype).
  virtual DType kv_dtype() const = 0;
  // Free and total bytes of the backend's memory; {0, 0} where it does not say (cpu).
  struct MemoryInfo {
    size_t free = 0, total = 0;
  };
  virtual MemoryInfo memory_info() const = 0;

  // Zero-initialised memory.
  virtual Buffer alloc(size_t bytes) = 0;
  // Host <-> backend copies; on cpu these are memcpy.
  virtual void upload(void* dst, const void* host, size_t bytes) = 0;
  virtual void download(void* host, const void* src, size_t bytes) = 0;
  // Backend -> backend copy, ordered with the ops (moving expert weights in and out of the
  // buffers an exchange sends and receives).
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  // fp32 host values into a weight of weight_dtype(), converted on the way.
  virtual Weight upload_weight(Buffer& storage, const float* host, int64_t rows, int64_t cols) = 0;
  // A synthetic weight made where it is stored (kernels/random_fill.h: element i is
  // offset + scale * u(seed, i), rounded to precision()): the same values on every backend.
  virtual Weight random_weight(Buffer& storage, int64_t rows, int64_t cols, uint64_t seed,
                               float scale, float offset) = 0;
  // Waits until every op issued so far has finished (cuda: the stream; cpu: nothing).
  virtual void synchronize() = 0;
  // Sizes linear's own scratch for inputs of up to `elems` = M * K values, so that no later
  // linear allocates (cuda: the bf16 copy of x; cpu at kBF16: the rounded copy). A larger
  // input still works: the scratch grows then, at the cost of an allocation and a sync.
  virtual void reserve_linear_input(int64_t elems) = 0;

  virtual void embedding(const EmbeddingParams& p) = 0;
  virtual void rmsnorm(const RmsNormParams& p) = 0;
  virtual void linear(const LinearParams& p) = 0;
  virtual void rope(const RopeParams& p) = 0;
  virtual void kv_store(const KvStoreParams& p) = 0;
  virtual void attention(const AttentionParams& p) = 0;
  virtual void topk_router(const TopKRouterParams& p) = 0;
  virtual void silu_mul(const SiluMulParams& p) = 0;
  virtual void gather_rows(const GatherRowsParams& p) = 0;
  virtual void weighted_combine(const WeightedCombineParams& p) = 0;
  virtual void add(const AddParams& p) = 0;
  // The MoE layer's dispatch plan and payload (params.h): every index of an exchange is made
  // where the rows are, so no per-token plan crosses between host and device.
  virtual void dispatch_layout(const DispatchLayoutParams& p) = 0;
  virtual void pack_rows(const PackRowsParams& p) = 0;
  virtual void group_by_expert(const GroupByExpertParams& p) = 0;
  virtual void unpack_rows(const UnpackRowsParams& p) = 0;
};

// The CPU reference backend (always built), at precision kF32 or kBF16 (see Ops::precision).
// threads > 0 sets the threads its kernels and the BLAS use (process-wide: one backend per
// rank); 0 leaves them as they are.
std::unique_ptr<Ops> make_cpu_ops(DType precision = DType::kF32, int threads = 0);

}  // namespace moe::kernels
