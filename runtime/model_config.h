#pragma once
// The model's shape, read from the checkpoint's config.json (MixtralConfig's field names).
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace moe::runtime {

struct ModelConfig {
  // The largest value of each size that validate() accepts, each a power of two above the
  // largest published model's. NOTES: together they keep every product of sizes in range:
  // q_dim() and kv_dim() (at most 2^20) in int, the largest tensor (vocab x hidden, 2^36
  // elements) and all the experts' bytes (layers x experts x 3 x hidden x intermediate x 4,
  // under 2^62) in int64; and no table (placement, load statistics) is sized from an unbounded
  // count.
  static constexpr int kMaxVocabSize = 1 << 20;
  static constexpr int kMaxHiddenSize = 1 << 16;
  static constexpr int kMaxIntermediateSize = 1 << 18;
  static constexpr int kMaxLayers = 1 << 10;
  static constexpr int kMaxHeads = 1 << 10;  // query heads; key/value heads divide them
  static constexpr int kMaxHeadDim = 1 << 10;
  static constexpr int kMaxExperts = 1 << 10;
  static constexpr int kMaxPositions = 1 << 24;  // max_position_embeddings and sliding_window

  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;  // per expert
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;  // config's head_dim when given, else hidden_size / num_attention_heads
  int num_local_experts = 0;
  int num_experts_per_tok = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 1e6;
  int sliding_window = 0;  // 0: none
  bool tie_word_embeddings = false;
  std::string dtype = "bfloat16";  // torch_dtype / dtype as written; informational

  // Reads the fields and calls validate(). `source` names the file in messages. A missing
  // required field or an impossible value throws InputError naming the field and what was
  // expected.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  // Throws InputError naming the first field that is impossible or past its kMax bound, and
  // what was expected.
  void validate(const std::string& source) const;
  // Throws InputError naming the first field past what this runtime's `backend` ("cpu" or
  // "cuda") supports: top-k at most kMaxTopK, and on cuda head_dim and the expert count at most
  // the CUDA kernels' limits (kernels/params.h).
  void check_supported(const std::string& backend, const std::string& source) const;

  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }
};

}  // namespace moe::runtime
