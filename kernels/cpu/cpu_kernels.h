#pragma once
// The CPU reference of every op: loops in fp32, each sum in a fixed order. Each function
// lives in the file of its name; cpu_ops.cpp binds them to the Ops interface.
#include "kernels/params.h"

namespace moe::kernels::cpu {

// Threads of the CPU kernels (OpenMP) and of the BLAS, process-wide.
void set_threads(int n);

void embedding(const EmbeddingParams& p);
void rmsnorm(const RmsNormParams& p);
// out = x @ W^T, a row's result independent of the batch: linear_streamed at every row count.
void linear(const LinearParams& p);
// W streamed once, each row of x dotted with each row of W in a fixed order: a row's result
// does not depend on the number of rows, the threads or the instruction set.
void linear_streamed(const LinearParams& p);
// One BLAS GEMM (sgemm), which packs W on every call; its sums' order depends on the shape of
// the call. Not used by linear(): moe-bench-cpu-linear's bound.
void linear_blas(const LinearParams& p);
void rope(const RopeParams& p);
void kv_store(const KvStoreParams& p);
void attention(const AttentionParams& p);
void topk_router(const TopKRouterParams& p);
void silu_mul(const SiluMulParams& p);
void gather_rows(const GatherRowsParams& p);
void weighted_combine(const WeightedCombineParams& p);
void add(const AddParams& p);
void dispatch_layout(const DispatchLayoutParams& p);
void pack_rows(const PackRowsParams& p);
void group_by_expert(const GroupByExpertParams& p);
void unpack_rows(const UnpackRowsParams& p);

}  // namespace moe::kernels::cpu
