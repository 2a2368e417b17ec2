#pragma once
// The weights one rank holds: the shared part (embeddings, attention, norms, router, lm_head)
// and, per layer, only the experts the placement gives it. Read once from the checkpoint and
// handed to the backend in its weight dtype.
#include <vector>

#include "kernels/ops.h"
#include "runtime/checkpoint.h"
#include "runtime/memory_plan.h"
#include "runtime/model_config.h"
#include "runtime/placement.h"

namespace moe::runtime {

struct LayerWeights {
  kernels::Weight attn_norm;  // [1, hidden]
  kernels::Weight wq;         // [n_heads * head_dim, hidden]
  kernels::Weight wk;         // [n_kv_heads * head_dim, hidden]
  kernels::Weight wv;         // [n_kv_heads * head_dim, hidden]
  kernels::Weight wo;         // [hidden, n_heads * head_dim]
  kernels::Weight moe_norm;   // [1, hidden]
  kernels::Weight gate;       // [n_experts, hidden] the router
  std::vector<int> local_experts;     // global ids held by this rank, ascending
  std::vector<kernels::Weight> w13;   // [local] [2 * intermediate, hidden]: w1 rows, then w3 rows
  std::vector<kernels::Weight> w2;    // [local] [hidden, intermediate]
};

struct ModelWeights {
  kernels::Weight embed;       // [vocab, hidden]
  kernels::Weight final_norm;  // [1, hidden]
  kernels::Weight lm_head;     // [vocab, hidden]; the embedding itself when tied
  std::vector<LayerWeights> layers;
  std::vector<kernels::Buffer> storage;  // owns every weight above

  // Reads the shared tensors and this rank's experts. A tensor that is missing or whose shape
  // does not fit `cfg` throws InputError naming it.
  static ModelWeights load(const Checkpoint& ckpt, const ModelConfig& cfg,
                           const Placement& placement, int rank, kernels::Ops& ops);
  // The same tensors made on the backend from `seed` (Ops::random_weight; kernels/
  // random_fill.h): each tensor's values depend only on the seed and its checkpoint name, so
  // every rank holding a tensor holds the same one, and an N-rank run computes what a 1-rank
  // run does. Matrices are uniform with the standard deviation 0.02 of transformers'
  // initializer_range; norm weights are 1.
  static ModelWeights synthesize(const ModelConfig& cfg, const Placement& placement, int rank,
                                 kernels::Ops& ops, uint64_t seed);

  // Bytes the weights `rank` holds take at `dtype`: shared tensors and the local experts.
  static WeightBytes footprint(const ModelConfig& cfg, const Placement& placement, int rank,
                               DType dtype);
};

}  // namespace moe::runtime
