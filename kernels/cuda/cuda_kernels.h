#pragma once
// The CUDA version of the ops the CPU reference has in kernels/cpu/cpu_kernels.h, for the same
// Params structs. Pointers are device memory; weights and the KV cache are bf16
// (__nv_bfloat16, DType::kBF16) or fp32 as their dtype fields say, activations fp32. Each
// launcher checks its preconditions (throwing moe::Error), enqueues its kernel on `stream` and
// checks the launch; none synchronises.
#include <cuda_runtime.h>

#include "kernels/params.h"

namespace moe::kernels::cuda {

// Largest router width: one warp per token keeps n_experts / 32 probabilities per lane in
// registers.
constexpr int kMaxRouterExperts = kCudaMaxExperts;

void embedding(const EmbeddingParams& p, cudaStream_t stream);
void rmsnorm(const RmsNormParams& p, cudaStream_t stream);
void topk_router(const TopKRouterParams& p, cudaStream_t stream);
void silu_mul(const SiluMulParams& p, cudaStream_t stream);

void rope(const RopeParams& p, cudaStream_t stream);
void kv_store(const KvStoreParams& p, cudaStream_t stream);
// Prefill and decode alike: each token attends over its own slot's cache positions.
void attention(const AttentionParams& p, cudaStream_t stream);
void gather_rows(const GatherRowsParams& p, cudaStream_t stream);
void weighted_combine(const WeightedCombineParams& p, cudaStream_t stream);
void add(const AddParams& p, cudaStream_t stream);
// The MoE layer's dispatch plan and payload: the device twins of kernels/cpu's, giving the same
// plan bit for bit (rows and groups are handed out in order, never by atomics).
void dispatch_layout(const DispatchLayoutParams& p, cudaStream_t stream);
void pack_rows(const PackRowsParams& p, cudaStream_t stream);
void group_by_expert(const GroupByExpertParams& p, cudaStream_t stream);
void unpack_rows(const UnpackRowsParams& p, cudaStream_t stream);
// out[i] = offset + scale * u(seed, i) (kernels/random_fill.h) as `dtype` (F32 or BF16): the
// synthetic weights, made on the device.
void random_fill(void* out, DType dtype, int64_t n, uint64_t seed, float scale, float offset,
                 cudaStream_t stream);
// out[i] = bf16(in[i]): activations enter the cuBLAS GEMMs in bf16 beside bf16 weights.
void cast_f32_to_bf16(const float* in, void* out /* __nv_bfloat16 */, int64_t n,
                      cudaStream_t stream);

}  // namespace moe::kernels::cuda
