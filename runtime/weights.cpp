#include "runtime/weights.h"

#include <string>

namespace moe::runtime {

namespace {

struct Loader {
  const Checkpoint& ckpt;
  kernels::Ops& ops;
  ModelWeights& mw;

  kernels::Weight load(const std::string& name, int64_t rows, int64_t cols, bool is_vector = false) {
    const auto host = is_vector ? ckpt.read_f32(name, {cols}) : ckpt.read_f32(name, {rows, cols});
    mw.storage.emplace_back();
    return ops.upload_weight(mw.storage.back(), host.data(), rows, cols);
  }
};

}  // namespace

ModelWeights ModelWeights::load(const Checkpoint& ckpt, const ModelConfig& cfg,
                                const Placement& placement, int rank, kernels::Ops& ops) {
  ModelWeights mw;
  Loader L{ckpt, ops, mw};
  const int64_t H = cfg.hidden_size, I = cfg.intermediate_size;
  mw.embed = L.load("model.embed_tokens.weight", cfg.vocab_size, H);
  mw.final_norm = L.load("model.norm.weight", 1, H, true);
  if (cfg.tie_word_embeddings)
    mw.lm_head = mw.embed;
  else
    mw.lm_head = L.load("lm_head.weight", cfg.vocab_size, H);

  mw.layers.resize(cfg.num_hidden_layers);
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& lw = mw.layers[l];
    lw.attn_norm = L.load(p + "input_layernorm.weight", 1, H, true);
    lw.wq = L.load(p + "self_attn.q_proj.weight", cfg.q_dim(), H);
    lw.wk = L.load(p + "self_attn.k_proj.weight", cfg.kv_dim(), H);
    lw.wv = L.load(p + "self_attn.v_proj.weight", cfg.kv_dim(), H);
    lw.wo = L.load(p + "self_attn.o_proj.weight", H, cfg.q_dim());
    lw.moe_norm = L.load(p + "post_attention_layernorm.weight", 1, H, true);
    lw.gate = L.load(p + "block_sparse_moe.gate.weight", cfg.num_local_experts, H);
    lw.local_experts = placement.local_experts(l, rank);
    for (int e : lw.local_experts) {
      const std::string q = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      // w1 and w3 share their input, so they are stacked into one GEMM of 2I output rows.
      std::vector<float> w13 = ckpt.read_f32(q + "w1.weight", {I, H});
      const std::vector<float> w3 = ckpt.read_f32(q + "w3.weight", {I, H});
      w13.insert(w13.end(), w3.begin(), w3.end());
      mw.storage.emplace_back();
      lw.w13.push_back(ops.upload_weight(mw.storage.back(), w13.data(), 2 * I, H));
      lw.w2.push_back(L.load(q + "w2.weight", H, I));
    }
  }
  return mw;
}

}  // namespace moe::runtime
