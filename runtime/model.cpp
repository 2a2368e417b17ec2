#include "runtime/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/error.h"

namespace moe::runtime {

Model::Model(const ModelConfig& cfg, ModelWeights weights, const Placement& placement,
             kernels::Ops& ops, comm::Communicator& comm, KvCache& cache, LoadStats* stats,
             ModelLimits limits)
    : cfg_(cfg), w_(std::move(weights)), ops_(ops), cache_(cache),
      moe_(cfg, placement, ops, comm, stats) {
  MOE_CHECK(limits.max_tokens >= 1 && limits.max_logit_rows >= 1,
            "model limits must be >= 1 token and logit row");
  MOE_CHECK(cfg.head_dim <= 1024, "head_dim above 1024 is not supported");
  // inv_freq[i] = theta^(-2i/d), formed in fp32 as transformers does.
  const int half = cfg.head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i)
    inv[i] = 1.0f / std::pow(float(cfg.rope_theta), float(2 * i) / float(cfg.head_dim));
  inv_freq_ = ops_.alloc(half * sizeof(float));
  ops_.upload(inv_freq_.data(), inv.data(), half * sizeof(float));

  reserve(limits.max_tokens);
  reserve_logits(std::min(limits.max_logit_rows, limits.max_tokens));
  moe_.reserve_for(limits.max_tokens);
}

void Model::reserve(int T) {
  if (T <= capacity_) return;
  const int n = std::max(T, 1);
  const size_t f = sizeof(float);
  tokens_ = ops_.alloc(n * sizeof(int32_t));
  slot_ = ops_.alloc(n * sizeof(int32_t));
  pos_ = ops_.alloc(n * sizeof(int32_t));
  rows_ = ops_.alloc(n * sizeof(int32_t));
  x_ = ops_.alloc(size_t(n) * cfg_.hidden_size * f);
  h_ = ops_.alloc(size_t(n) * cfg_.hidden_size * f);
  q_ = ops_.alloc(size_t(n) * cfg_.q_dim() * f);
  k_ = ops_.alloc(size_t(n) * cfg_.kv_dim() * f);
  v_ = ops_.alloc(size_t(n) * cfg_.kv_dim() * f);
  attn_ = ops_.alloc(size_t(n) * cfg_.q_dim() * f);
  moe_out_ = ops_.alloc(size_t(n) * cfg_.hidden_size * f);
  // The largest linear input: h [T, H] (q, k, v, router) or attn [T, q_dim] (o_proj).
  ops_.reserve_linear_input(int64_t(n) * std::max(cfg_.hidden_size, cfg_.q_dim()));
  capacity_ = n;
}

void Model::reserve_logits(int L) {
  if (L <= logit_capacity_) return;
  const int n = std::max(L, 1);
  logits_ = ops_.alloc(size_t(n) * cfg_.vocab_size * sizeof(float));
  logit_capacity_ = n;
}

void Model::forward(const StepBatch& b, std::vector<float>& logits) {
  const int T = b.size();
  const int H = cfg_.hidden_size;
  for (int t = 0; t < T; ++t) {
    if (b.tokens[t] < 0 || b.tokens[t] >= cfg_.vocab_size)
      throw InputError("token id " + std::to_string(b.tokens[t]) + " is outside the vocabulary [0, " +
                       std::to_string(cfg_.vocab_size) + ")");
    MOE_CHECK(b.pos[t] >= 0 && b.pos[t] < cache_.max_len(), "position beyond the KV cache");
    MOE_CHECK(b.slot[t] >= 0 && b.slot[t] < cache_.slots(), "slot outside the KV cache");
  }
  reserve(T);
  ops_.upload(tokens_.data(), b.tokens.data(), T * sizeof(int32_t));
  ops_.upload(slot_.data(), b.slot.data(), T * sizeof(int32_t));
  ops_.upload(pos_.data(), b.pos.data(), T * sizeof(int32_t));
  const auto* pos = pos_.as<int32_t>();
  const auto* slot = slot_.as<int32_t>();
  float* x = x_.as<float>();
  float* h = h_.as<float>();
  const float eps = float(cfg_.rms_norm_eps);

  ops_.embedding({tokens_.as<int32_t>(), w_.embed, x, T});
  for (int l = 0; l < cfg_.num_hidden_layers; ++l) {
    const LayerWeights& lw = w_.layers[l];
    // attention over this rank's own sequences
    std::chrono::steady_clock::time_point lap;
    if (timing_barriers_) {
      ops_.synchronize();
      lap = std::chrono::steady_clock::now();
    }
    ops_.rmsnorm({x, lw.attn_norm, h, T, H, eps});
    ops_.linear({h, lw.wq, q_.as<float>(), T});
    ops_.linear({h, lw.wk, k_.as<float>(), T});
    ops_.linear({h, lw.wv, v_.as<float>(), T});
    ops_.rope({q_.as<float>(), k_.as<float>(), pos, inv_freq_.as<float>(), T,
               cfg_.num_attention_heads, cfg_.num_key_value_heads, cfg_.head_dim});
    ops_.kv_store({k_.as<float>(), v_.as<float>(), cache_.k(l), cache_.v(l), slot, pos, T,
                   cfg_.kv_dim(), cache_.max_len(), cache_.dtype()});
    ops_.attention({q_.as<float>(), cache_.k(l), cache_.v(l), slot, pos, attn_.as<float>(), T,
                    cfg_.num_attention_heads, cfg_.num_key_value_heads, cfg_.head_dim,
                    cache_.max_len(), cfg_.sliding_window,
                    1.0f / std::sqrt(float(cfg_.head_dim)), cache_.dtype()});
    ops_.linear({attn_.as<float>(), lw.wo, x, T, /*accumulate=*/true});  // x += o_proj(attn)
    if (timing_barriers_) {
      ops_.synchronize();
      attention_s_ +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - lap).count();
    }
    // the MoE block, across ranks
    ops_.rmsnorm({x, lw.moe_norm, h, T, H, eps});
    moe_.forward(l, lw, h, T, moe_out_.as<float>());
    ops_.add({x, moe_out_.as<float>(), int64_t(T) * H});
  }

  // Final norm and lm_head only for the rows whose logits are wanted.
  const int L = int(b.logit_rows.size());
  reserve_logits(L);
  ops_.upload(rows_.data(), b.logit_rows.data(), L * sizeof(int32_t));
  ops_.gather_rows({x, rows_.as<int32_t>(), h, L, H});
  ops_.rmsnorm({h, w_.final_norm, h, L, H, eps});
  ops_.linear({h, w_.lm_head, logits_.as<float>(), L});
  logits.resize(size_t(L) * cfg_.vocab_size);
  ops_.download(logits.data(), logits_.data(), logits.size() * sizeof(float));
}

}  // namespace moe::runtime
