#pragma once
// The experts phase of the MoE layer: the rows grouped by local expert, each group through its
// SwiGLU FFN y = (silu(x W1^T) * (x W3^T)) W2^T, in chunks of at most kExpertChunkRows rows so
// the [rows, 2I] intermediate stays bounded. Shared by MoeLayer and moe-bench-experts, so the
// benchmark times exactly what the runtime runs.
#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace moe::runtime {

// An expert's rows go through its FFN in chunks of at most this many, so the [rows, 2I]
// intermediate stays bounded (4096 x 2 x 14336 fp32 = 470 MB at Mixtral's sizes) whatever the
// step's token count, while each GEMM still has thousands of rows to fill the GPU.
constexpr int kExpertChunkRows = 4096;

struct ExpertFfnParams {
  const std::vector<kernels::Weight>* w13 = nullptr;  // [local] [2I, H]: w1 rows, then w3 rows
  const std::vector<kernels::Weight>* w2 = nullptr;   // [local] [H, I]
  const int64_t* group_begin = nullptr;  // [local + 1] first row of each expert's group in x
  const float* x = nullptr;   // [G, H] rows grouped by expert
  float* gate_up = nullptr;   // [min(G, kExpertChunkRows), 2I] workspace
  float* act = nullptr;       // [min(G, kExpertChunkRows), I] workspace
  float* y = nullptr;         // [G, H] each row's expert output
  int hidden = 0, intermediate = 0;
};

// Enqueues every group's FFN on `ops`; rows of an empty group are skipped.
void run_expert_ffns(kernels::Ops& ops, const ExpertFfnParams& p);

}  // namespace moe::runtime
