#pragma once
// One parameters struct per op. Pointers are backend memory: host on cpu, device on cuda.
// Activations are fp32 on every backend; weights are in the backend's weight dtype
// (fp32 on cpu, bf16 on cuda). Shapes are written beside each field.
#include <cstdint>

#include "common/dtype.h"

namespace moe::kernels {

constexpr int kMaxTopK = 16;
// Largest model dimensions the CUDA kernels take (each launcher checks them; the runtime refuses
// a model past them before loading it). The CPU kernels have no such limits.
constexpr int kCudaMaxHeadDim = 256;  // attention: 8 floats of a head per lane
constexpr int kCudaMaxExperts = 256;  // topk_router: 8 probabilities per lane

// A weight matrix as the backend stores it.
struct Weight {
  const void* data = nullptr;  // [rows, cols] of dtype, row-major
  DType dtype = DType::kF32;
  int64_t rows = 0, cols = 0;
};

struct EmbeddingParams {
  const int32_t* ids = nullptr;  // [T] token ids, each in [0, table.rows)
  Weight table;                  // [vocab, hidden]
  float* out = nullptr;          // [T, hidden]
  int T = 0;
};

struct RmsNormParams {
  const float* x = nullptr;  // [T, hidden]
  Weight weight;             // [1, hidden]
  float* out = nullptr;      // [T, hidden], may alias x
  int T = 0, hidden = 0;
  float eps = 1e-5f;
};

// out = x @ W^T (+ out when accumulate): the projections, the router and the expert FFNs.
struct LinearParams {
  const float* x = nullptr;  // [M, K]
  Weight w;                  // [N, K]
  float* out = nullptr;      // [M, N]
  int M = 0;
  bool accumulate = false;
};

// Rotates q and k in place by each token's absolute position (rotate-half convention).
struct RopeParams {
  float* q = nullptr;               // [T, n_heads * head_dim]
  float* k = nullptr;               // [T, n_kv_heads * head_dim]
  const int32_t* pos = nullptr;     // [T]
  const float* inv_freq = nullptr;  // [head_dim / 2]
  int T = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
};

// Writes this step's k and v rows into the cache at (slot, position), converted to the cache's
// dtype (rounded to nearest even for bf16).
struct KvStoreParams {
  const float* k = nullptr;       // [T, kv_dim]
  const float* v = nullptr;       // [T, kv_dim]
  void* k_cache = nullptr;        // [slots, max_len, kv_dim] of cache_dtype
  void* v_cache = nullptr;        // [slots, max_len, kv_dim] of cache_dtype
  const int32_t* slot = nullptr;  // [T]
  const int32_t* pos = nullptr;   // [T], each < max_len
  int T = 0, kv_dim = 0, max_len = 0;
  DType cache_dtype = DType::kF32;  // kF32 on every backend; kBF16 on cuda
};

// Causal grouped-query attention of each token over its own sequence's cache: token t at
// position p sees cache positions (p - sliding_window, p] (all of [0, p] when the window is 0).
struct AttentionParams {
  const float* q = nullptr;        // [T, n_heads * head_dim]
  const void* k_cache = nullptr;   // [slots, max_len, n_kv_heads * head_dim] of cache_dtype
  const void* v_cache = nullptr;   // [slots, max_len, n_kv_heads * head_dim] of cache_dtype
  const int32_t* slot = nullptr;   // [T]
  const int32_t* pos = nullptr;    // [T]
  float* out = nullptr;            // [T, n_heads * head_dim]
  int T = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, max_len = 0, sliding_window = 0;
  float scale = 1.0f;
  DType cache_dtype = DType::kF32;  // as KvStoreParams; scores and sums are fp32 either way
};

// fp32 softmax over the router logits, top-k, renormalised over the k chosen.
struct TopKRouterParams {
  const float* logits = nullptr;  // [T, n_experts]
  int32_t* expert = nullptr;      // [T, k] chosen experts, by descending weight
  float* weight = nullptr;        // [T, k] their renormalised weights
  int T = 0, n_experts = 0, k = 0;
};

// out = silu(gate_up[:, :I]) * gate_up[:, I:]
struct SiluMulParams {
  const float* gate_up = nullptr;  // [M, 2 * I]: w1 rows then w3 rows
  float* out = nullptr;            // [M, I]
  int M = 0, I = 0;
};

// out[i] = src[index[i]]
struct GatherRowsParams {
  const float* src = nullptr;      // [*, cols]
  const int32_t* index = nullptr;  // [M]
  float* out = nullptr;            // [M, cols]
  int M = 0, cols = 0;
};

// out[r] = sum over s in [0, k) with index[r, s] >= 0 of weight[r, s] * y[index[r, s]], summed
// in ascending s so every backend and rank count adds in the same order.
struct WeightedCombineParams {
  const float* y = nullptr;        // [*, cols]
  const int32_t* index = nullptr;  // [R, k] rows of y, -1 where none
  const float* weight = nullptr;   // [R, k]
  float* out = nullptr;            // [R, cols]
  int R = 0, k = 0, cols = 0;
};

// x += y
struct AddParams {
  float* x = nullptr;        // [n]
  const float* y = nullptr;  // [n]
  int64_t n = 0;
};

}  // namespace moe::kernels
