// Binds the CPU reference kernels to the Ops interface. Memory is plain host memory. At kBF16
// weights are stored as bf16, and the values the GPU would round are rounded here too (linear's
// input, the KV cache on store, the MoE rows on the wire), so a CPU run reproduces the CUDA
// backend's numerics up to the order of fp32 sums.
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/ops.h"
#include "kernels/random_fill.h"

namespace moe::kernels {
namespace {

void free_host(void* p) noexcept { std::free(p); }

// `n` values of `src` rounded to bf16 and widened back, into `dst` (resized).
void round_bf16(const float* src, size_t n, std::vector<float>& dst) {
  dst.resize(n);
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(f32_to_bf16(src[i]));
}

class CpuOps final : public Ops {
 public:
  explicit CpuOps(DType precision) : precision_(precision) {
    MOE_CHECK(precision == DType::kF32 || precision == DType::kBF16,
              std::string("cpu precision ") + dtype_name(precision) + " (expected F32 or BF16)");
  }
  std::string name() const override { return "cpu"; }
  DType precision() const override { return precision_; }
  // bf16 weights are stored as bf16 (half the memory and the bytes a decode step reads),
  // widened exactly where they are used.
  DType weight_dtype() const override { return precision_; }
  DType kv_dtype() const override { return DType::kF32; }
  // MemAvailable and MemTotal of /proc/meminfo; {0, 0} where that cannot be read.
  MemoryInfo memory_info() const override {
    MemoryInfo m;
    std::ifstream in("/proc/meminfo");
    std::string key;
    size_t kib = 0;
    std::string unit;
    while (in >> key >> kib) {
      std::getline(in, unit);
      if (key == "MemTotal:") m.total = kib << 10;
      if (key == "MemAvailable:") m.free = kib << 10;
    }
    if (m.free > m.total) m = {};
    return m;
  }

  Buffer alloc(size_t bytes) override {
    if (bytes == 0) return Buffer();
    void* p = std::calloc(1, bytes);
    if (!p) MOE_THROW("out of host memory allocating " + std::to_string(bytes) + " bytes");
    return Buffer(p, bytes, free_host);
  }
  void upload(void* dst, const void* host, size_t bytes) override {
    if (bytes) std::memcpy(dst, host, bytes);
  }
  void download(void* host, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(host, src, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  Weight upload_weight(Buffer& storage, const float* host, int64_t rows, int64_t cols) override {
    const size_t n = size_t(rows * cols);
    if (!bf16()) {
      storage = alloc(n * sizeof(float));
      upload(storage.data(), host, n * sizeof(float));
      return Weight{storage.data(), DType::kF32, rows, cols};
    }
    storage = alloc(n * sizeof(uint16_t));  // rounded to nearest even, as the GPU stores them
    auto* bits = storage.as<uint16_t>();
    for (size_t i = 0; i < n; ++i) bits[i] = f32_to_bf16(host[i]);
    return Weight{storage.data(), DType::kBF16, rows, cols};
  }
  Weight random_weight(Buffer& storage, int64_t rows, int64_t cols, uint64_t seed, float scale,
                       float offset) override {
    std::vector<float> v(size_t(rows * cols));
    for (size_t i = 0; i < v.size(); ++i) v[i] = random_value(seed, i, scale, offset);
    return upload_weight(storage, v.data(), rows, cols);
  }
  void synchronize() override {}
  void reserve_linear_input(int64_t elems) override {
    if (bf16()) scratch_.reserve(size_t(elems));
  }

  void embedding(const EmbeddingParams& p) override { cpu::embedding(p); }
  void rmsnorm(const RmsNormParams& p) override { cpu::rmsnorm(p); }
  void linear(const LinearParams& p) override {
    if (!bf16()) return cpu::linear(p);
    // As the GPU: the input enters the GEMM rounded to bf16, the sum stays fp32.
    LinearParams q = p;
    round_bf16(p.x, size_t(p.M) * size_t(p.w.cols), scratch_);
    q.x = scratch_.data();
    cpu::linear(q);
  }
  void rope(const RopeParams& p) override { cpu::rope(p); }
  void kv_store(const KvStoreParams& p) override {
    if (!bf16()) return cpu::kv_store(p);
    // As a bf16 cache: what is stored is the rounded value.
    const size_t n = size_t(p.T) * size_t(p.kv_dim);
    KvStoreParams q = p;
    round_bf16(p.k, n, scratch_);
    round_bf16(p.v, n, scratch2_);
    q.k = scratch_.data();
    q.v = scratch2_.data();
    cpu::kv_store(q);
  }
  void attention(const AttentionParams& p) override { cpu::attention(p); }
  void topk_router(const TopKRouterParams& p) override { cpu::topk_router(p); }
  void silu_mul(const SiluMulParams& p) override { cpu::silu_mul(p); }
  void gather_rows(const GatherRowsParams& p) override { cpu::gather_rows(p); }
  void weighted_combine(const WeightedCombineParams& p) override { cpu::weighted_combine(p); }
  void add(const AddParams& p) override { cpu::add(p); }
  void dispatch_layout(const DispatchLayoutParams& p) override { cpu::dispatch_layout(p); }
  void pack_rows(const PackRowsParams& p) override { cpu::pack_rows(p); }
  void group_by_expert(const GroupByExpertParams& p) override { cpu::group_by_expert(p); }
  void unpack_rows(const UnpackRowsParams& p) override { cpu::unpack_rows(p); }

 private:
  bool bf16() const { return precision_ == DType::kBF16; }

  DType precision_;
  std::vector<float> scratch_, scratch2_;  // rounded copies at kBF16
};

}  // namespace

std::unique_ptr<Ops> make_cpu_ops(DType precision, int threads) {
  if (threads > 0) cpu::set_threads(threads);
  return std::make_unique<CpuOps>(precision);
}

}  // namespace moe::kernels
