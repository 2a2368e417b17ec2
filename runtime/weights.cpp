#include "runtime/weights.h"

#include <cmath>
#include <functional>
#include <string>

#include "kernels/random_fill.h"

namespace moe::runtime {

namespace {

// Where a weight's values come from: the checkpoint, or the seed. A weight is one checkpoint
// tensor, or several stacked along their rows (`parts`, each [rows / parts.size(), cols]).
// `vector` marks the norms' one-dimensional weights ([hidden] in the checkpoint, [1, hidden]
// here).
using Source = std::function<kernels::Weight(const std::vector<std::string>& parts, int64_t rows,
                                             int64_t cols, bool vector)>;

// Walks every tensor this rank holds, in checkpoint order, asking `get` for each. The one
// place that knows the checkpoint's tensor names and shapes.
ModelWeights assemble(const ModelConfig& cfg, const Placement& placement, int rank,
                      const Source& get) {
  ModelWeights mw;
  const int64_t H = cfg.hidden_size;
  const auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    return get({name}, rows, cols, false);
  };
  const auto vector = [&](const std::string& name) { return get({name}, 1, H, true); };
  mw.embed = matrix("model.embed_tokens.weight", cfg.vocab_size, H);
  mw.final_norm = vector("model.norm.weight");
  mw.lm_head = cfg.tie_word_embeddings ? mw.embed : matrix("lm_head.weight", cfg.vocab_size, H);
  mw.layers.resize(cfg.num_hidden_layers);
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& lw = mw.layers[l];
    lw.attn_norm = vector(p + "input_layernorm.weight");
    lw.wq = matrix(p + "self_attn.q_proj.weight", cfg.q_dim(), H);
    lw.wk = matrix(p + "self_attn.k_proj.weight", cfg.kv_dim(), H);
    lw.wv = matrix(p + "self_attn.v_proj.weight", cfg.kv_dim(), H);
    lw.wo = matrix(p + "self_attn.o_proj.weight", H, cfg.q_dim());
    lw.moe_norm = vector(p + "post_attention_layernorm.weight");
    lw.gate = matrix(p + "block_sparse_moe.gate.weight", cfg.num_local_experts, H);
    lw.local_experts = placement.local_experts(l, rank);
    for (int e : lw.local_experts) {
      const std::string q = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      // w1 and w3 share their input, so they are stacked into one GEMM of 2I output rows.
      lw.w13.push_back(
          get({q + "w1.weight", q + "w3.weight"}, 2 * int64_t(cfg.intermediate_size), H, false));
      lw.w2.push_back(matrix(q + "w2.weight", H, cfg.intermediate_size));
    }
  }
  return mw;
}

// FNV-1a of a tensor's name: the synthetic tensors' per-name seed.
uint64_t name_hash(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace

ModelWeights ModelWeights::load(const Checkpoint& ckpt, const ModelConfig& cfg,
                                const Placement& placement, int rank, kernels::Ops& ops) {
  std::vector<kernels::Buffer> storage;
  const Source get = [&](const std::vector<std::string>& parts, int64_t rows, int64_t cols,
                         bool vector) {
    const int64_t part_rows = rows / int64_t(parts.size());
    const auto read = [&](const std::string& name) {
      return vector ? ckpt.read_f32(name, {cols}) : ckpt.read_f32(name, {part_rows, cols});
    };
    std::vector<float> host = read(parts[0]);
    for (size_t i = 1; i < parts.size(); ++i) {
      const auto v = read(parts[i]);
      host.insert(host.end(), v.begin(), v.end());
    }
    storage.emplace_back();
    return ops.upload_weight(storage.back(), host.data(), rows, cols);
  };
  ModelWeights mw = assemble(cfg, placement, rank, get);
  mw.storage = std::move(storage);
  return mw;
}

ModelWeights ModelWeights::synthesize(const ModelConfig& cfg, const Placement& placement,
                                      int rank, kernels::Ops& ops, uint64_t seed) {
  // Uniform on [-a, a] has standard deviation a / sqrt(3).
  const float a = 0.02f * std::sqrt(3.0f);
  std::vector<kernels::Buffer> storage;
  const Source get = [&](const std::vector<std::string>& parts, int64_t rows, int64_t cols,
                         bool vector) {
    // A stacked weight is made whole from its first part's name.
    storage.emplace_back();
    return ops.random_weight(storage.back(), rows, cols,
                             kernels::mix64(seed ^ name_hash(parts.front())), vector ? 0.0f : a,
                             vector ? 1.0f : 0.0f);
  };
  ModelWeights mw = assemble(cfg, placement, rank, get);
  mw.storage = std::move(storage);
  return mw;
}

WeightBytes ModelWeights::footprint(const ModelConfig& cfg, const Placement& placement,
                                    int rank, DType dtype) {
  WeightBytes f;
  f.dtype = dtype;
  const size_t b = dtype_size(dtype);
  const size_t H = size_t(cfg.hidden_size), I = size_t(cfg.intermediate_size);
  const size_t V = size_t(cfg.vocab_size), E = size_t(cfg.num_local_experts);
  const size_t q = size_t(cfg.q_dim()), kv = size_t(cfg.kv_dim());
  f.shared = (V * H * (cfg.tie_word_embeddings ? 1 : 2) + H) * b;
  const size_t per_layer = (2 * H + q * H + 2 * kv * H + H * q + E * H) * b;
  f.shared += per_layer * size_t(cfg.num_hidden_layers);
  for (int l = 0; l < cfg.num_hidden_layers; ++l)
    f.n_experts += int(placement.local_experts(l, rank).size());
  f.experts = size_t(f.n_experts) * 3 * H * I * b;
  return f;
}

}  // namespace moe::runtime
