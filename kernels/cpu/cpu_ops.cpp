// Binds the CPU reference kernels to the Ops interface. Memory is plain host memory.
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/ops.h"

namespace moe::kernels {
namespace {

void free_host(void* p) noexcept { std::free(p); }

class CpuOps final : public Ops {
 public:
  std::string name() const override { return "cpu"; }
  DType weight_dtype() const override { return DType::kF32; }

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
  Weight upload_weight(Buffer& storage, const float* host, int64_t rows, int64_t cols) override {
    storage = alloc(size_t(rows * cols) * sizeof(float));
    upload(storage.data(), host, size_t(rows * cols) * sizeof(float));
    return Weight{storage.data(), DType::kF32, rows, cols};
  }
  void synchronize() override {}

  void embedding(const EmbeddingParams& p) override { cpu::embedding(p); }
  void rmsnorm(const RmsNormParams& p) override { cpu::rmsnorm(p); }
  void linear(const LinearParams& p) override { cpu::linear(p); }
  void rope(const RopeParams& p) override { cpu::rope(p); }
  void kv_store(const KvStoreParams& p) override { cpu::kv_store(p); }
  void attention(const AttentionParams& p) override { cpu::attention(p); }
  void topk_router(const TopKRouterParams& p) override { cpu::topk_router(p); }
  void silu_mul(const SiluMulParams& p) override { cpu::silu_mul(p); }
  void gather_rows(const GatherRowsParams& p) override { cpu::gather_rows(p); }
  void weighted_combine(const WeightedCombineParams& p) override { cpu::weighted_combine(p); }
  void add(const AddParams& p) override { cpu::add(p); }
};

}  // namespace

std::unique_ptr<Ops> make_cpu_ops() { return std::make_unique<CpuOps>(); }

}  // namespace moe::kernels
