#pragma once
// The CUDA version of the ops the CPU reference has in kernels/cpu/cpu_kernels.h, for the same
// Params structs. Pointers are device memory; weights are bf16 (__nv_bfloat16, DType::kBF16),
// activations fp32. Each launcher checks its preconditions (throwing moe::Error), enqueues its
// kernel on `stream` and checks the launch; none synchronises.
#include <cuda_runtime.h>

#include "kernels/params.h"

namespace moe::kernels::cuda {

// Largest router width: one warp per token keeps n_experts / 32 probabilities per lane in
// registers.
constexpr int kMaxRouterExperts = 256;

void embedding(const EmbeddingParams& p, cudaStream_t stream);
void rmsnorm(const RmsNormParams& p, cudaStream_t stream);
void topk_router(const TopKRouterParams& p, cudaStream_t stream);
void silu_mul(const SiluMulParams& p, cudaStream_t stream);

}  // namespace moe::kernels::cuda
