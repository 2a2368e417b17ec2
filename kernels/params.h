#pragma once
// One parameters struct per op. Pointers are backend memory: host on cpu, device on cuda.
// Activations are fp32 on every backend; weights are in the backend's weight dtype
// (fp32 on cpu, bf16 on cuda). Shapes are written beside each field.
#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

namespace moe::kernels {

constexpr int kMaxTopK = 16;
// Entries per expert of a route wheel (DispatchLayoutParams::route): the resolution at which an
// expert's choices are split over its replicas (1/64 of its load).
constexpr int kRouteWheel = 64;
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
// in fp32 in ascending s so every backend and rank count adds in the same order, then stored as
// out_dtype. bf16 rows are widened exactly on load and rounded to nearest even on store: the
// MoE layer's rows travel in the run's precision.
struct WeightedCombineParams {
  const void* y = nullptr;         // [*, cols] of y_dtype
  const int32_t* index = nullptr;  // [R, k] rows of y, -1 where none
  const float* weight = nullptr;   // [R, k]; null: every weight is 1
  void* out = nullptr;             // [R, cols] of out_dtype
  int R = 0, k = 0, cols = 0;
  DType y_dtype = DType::kF32;     // kF32 or kBF16
  DType out_dtype = DType::kF32;   // kF32 or kBF16
};

// ---- The MoE layer's dispatch, on the device ----------------------------------------------
// A token whose k choices fall on several ranks is sent once to each of those ranks, as one
// row carrying its k route slots; a slot served by another rank reads (-1, 0). Rows of one
// exchange travel as one payload: each row is `hidden` values of the wire dtype (the run's
// precision), padded to 8 bytes, then its k RouteSlots (RowLayout).

// One of a dispatched row's k choices, as the receiving rank sees it.
struct RouteSlot {
  int32_t expert;  // global expert id, -1 where this slot is served by another rank
  float weight;    // its renormalised router weight
};

// Where things sit in a dispatched row of the payload.
struct RowLayout {
  int hidden = 0, k = 0;
  DType dtype = DType::kF32;  // of the values: kF32 or kBF16
  // Bytes of the values, rounded up so the slots after them are 8-byte aligned.
  size_t values_bytes() const { return (size_t(hidden) * dtype_size(dtype) + 7) / 8 * 8; }
  size_t slots_offset() const { return values_bytes(); }
  size_t stride() const { return values_bytes() + size_t(k) * sizeof(RouteSlot); }
};

// From each token's top-k choices and the placement (the route wheel of each expert for this
// source rank), the send side's whole plan: which rank serves each choice, how many rows go to
// each rank, which token each send row is (rows ordered by destination rank, then by token),
// which slots each row carries, and where each token's returning rows will be for the combine.
// The j-th choice of expert e in (token, slot) order goes to route[e, j % kRouteWheel]: a
// replicated expert's choices split over its replicas in the wheel's proportions, the same way
// on every backend, bit for bit. At most S_max = T * min(k, n_ranks) rows are sent.
struct DispatchLayoutParams {
  const int32_t* expert = nullptr;  // [T, k] chosen experts, each in [0, n_experts)
  const float* weight = nullptr;    // [T, k] their weights
  const int32_t* route = nullptr;   // [n_experts, kRouteWheel] the rank serving each wheel
                                    // position of each expert, in [0, n_ranks)
  int32_t* counts = nullptr;        // [n_ranks + n_experts * n_ranks] rows per destination rank,
                                    // then routed choices per (expert, destination rank)
  int32_t* slot_rank = nullptr;     // [T, k] the rank serving each choice
  int32_t* send_token = nullptr;    // [S_max] the token of each send row; the first S are used
  RouteSlot* send_slots = nullptr;  // [S_max, k] the slots each send row carries
  int32_t* home = nullptr;          // [T, k] each token's send rows by ascending destination
                                    // rank (the order of the combine), -1 padded
  int T = 0, k = 0, n_experts = 0, n_ranks = 0;
};

// The send payload: row i is x[token[i]] in the wire dtype, then slots[i, 0..k).
struct PackRowsParams {
  const float* x = nullptr;           // [T, hidden]
  const int32_t* token = nullptr;     // [S] rows of x
  const RouteSlot* slots = nullptr;   // [S, k]
  void* payload = nullptr;            // [S, layout.stride()] bytes
  RowLayout layout;
  int S = 0;
};

// The received rows' slots grouped by local expert, each group in (row, slot) order: the
// receive side's plan. Slots naming an expert this rank does not hold are left out (the
// layer refuses those from the counts before this runs).
struct GroupByExpertParams {
  const void* payload = nullptr;        // [R, layout.stride()] bytes: the received rows
  RowLayout layout;
  const int32_t* local_index = nullptr; // [n_experts] each expert's index among this rank's,
                                        // -1 where it is not held
  int32_t* offsets = nullptr;           // [n_local + 1] first grouped row of each local expert
  int32_t* gather = nullptr;            // [R * k] received row of each grouped row (G used)
  int32_t* slot_row = nullptr;          // [R, k] grouped row of each (row, slot), -1 if none
  float* slot_weight = nullptr;         // [R, k] its weight, 0 if none
  int R = 0, n_experts = 0, n_local = 0;
};

// out[i] = payload row index[i]'s values widened to fp32 (zeros where index[i] < 0).
struct UnpackRowsParams {
  const void* payload = nullptr;   // [*, layout.stride()] bytes
  RowLayout layout;
  const int32_t* index = nullptr;  // [M]
  float* out = nullptr;            // [M, hidden]
  int M = 0;
};

// x += y
struct AddParams {
  float* x = nullptr;        // [n]
  const float* y = nullptr;  // [n]
  int64_t n = 0;
};

}  // namespace moe::kernels
