#include "runtime/model_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>

#include "common/error.h"
#include "kernels/params.h"

namespace moe::runtime {

namespace {

using nlohmann::json;

std::string prefix(const std::string& source) { return "config.json (" + source + "): "; }

// Shortest readable form: 1e-05 rather than to_string's 0.000010.
std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

bool absent(const json& j, const char* key) { return !j.contains(key) || j[key].is_null(); }

// An integer field that fits in int; sign and range rules are validate()'s job, so that a value
// read here and a value set by hand are judged by the same words.
int as_int(const json& v, const char* key, const std::string& source) {
  if (!v.is_number_integer()) {
    throw InputError(prefix(source) + "field '" + key + "' is " + v.dump() + " (a JSON " +
                     v.type_name() + "), expected an integer");
  }
  const int64_t x = v.is_number_unsigned()
                        ? int64_t(std::min<uint64_t>(v.get<uint64_t>(), uint64_t(INT64_MAX)))
                        : v.get<int64_t>();
  if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max()) {
    throw InputError(prefix(source) + "field '" + key + "' is " + v.dump() +
                     ", out of the range of a 32-bit integer");
  }
  return int(x);
}

int required_int(const json& j, const char* key, const std::string& source) {
  if (absent(j, key)) {
    throw InputError(prefix(source) + "missing field '" + key + "' (expected an integer >= 1)");
  }
  return as_int(j[key], key, source);
}

int optional_int(const json& j, const char* key, int fallback, const std::string& source) {
  return absent(j, key) ? fallback : as_int(j[key], key, source);
}

double as_number(const json& v, const char* key, const std::string& source) {
  if (!v.is_number()) {
    throw InputError(prefix(source) + "field '" + key + "' is " + v.dump() + " (a JSON " +
                     v.type_name() + "), expected a number");
  }
  return v.get<double>();
}

// We implement plain RoPE only; a scaled variant (linear, dynamic, yarn, llama3) would load
// fine and then produce wrong logits past the original context, so it is refused here.
void check_rope_type(const json& params, const char* field, const std::string& source) {
  if (!params.is_object()) {
    throw InputError(prefix(source) + "field '" + field + "' is " + params.dump() +
                     ", expected an object");
  }
  for (const char* key : {"rope_type", "type"}) {
    if (absent(params, key)) continue;
    const json& t = params[key];
    if (!t.is_string() || t.get<std::string>() != "default") {
      throw InputError(prefix(source) + "field '" + field + "." + key + "' is " + t.dump() +
                       ", only \"default\" RoPE is supported");
    }
  }
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) {
    throw InputError(prefix(source) + "is a JSON " + std::string(j.type_name()) +
                     ", expected an object");
  }
  ModelConfig c;
  c.vocab_size = required_int(j, "vocab_size", source);
  c.hidden_size = required_int(j, "hidden_size", source);
  c.intermediate_size = required_int(j, "intermediate_size", source);
  c.num_hidden_layers = required_int(j, "num_hidden_layers", source);
  c.num_attention_heads = required_int(j, "num_attention_heads", source);
  c.num_local_experts = required_int(j, "num_local_experts", source);
  c.num_experts_per_tok = required_int(j, "num_experts_per_tok", source);

  // Absent means multi-head attention, as in transformers.
  c.num_key_value_heads = optional_int(j, "num_key_value_heads", c.num_attention_heads, source);
  if (!absent(j, "head_dim")) {
    c.head_dim = as_int(j["head_dim"], "head_dim", source);
  } else if (c.num_attention_heads >= 1) {  // otherwise validate() names num_attention_heads
    if (c.hidden_size % c.num_attention_heads != 0) {
      throw InputError(prefix(source) + "head_dim is not given and hidden_size " +
                       std::to_string(c.hidden_size) + " is not divisible by num_attention_heads " +
                       std::to_string(c.num_attention_heads) +
                       "; expected hidden_size to be a multiple of num_attention_heads, or an "
                       "explicit head_dim");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.max_position_embeddings = optional_int(j, "max_position_embeddings", 4096 * 32, source);
  if (!absent(j, "rms_norm_eps"))
    c.rms_norm_eps = as_number(j["rms_norm_eps"], "rms_norm_eps", source);

  // transformers 5 moved rope_theta into rope_parameters; older configs keep it at top level.
  if (!absent(j, "rope_parameters")) {
    const json& p = j["rope_parameters"];
    check_rope_type(p, "rope_parameters", source);
    if (!absent(p, "rope_theta")) {
      c.rope_theta = as_number(p["rope_theta"], "rope_parameters.rope_theta", source);
    } else if (!absent(j, "rope_theta")) {
      c.rope_theta = as_number(j["rope_theta"], "rope_theta", source);
    }
  } else if (!absent(j, "rope_theta")) {
    c.rope_theta = as_number(j["rope_theta"], "rope_theta", source);
  }
  if (!absent(j, "rope_scaling")) check_rope_type(j["rope_scaling"], "rope_scaling", source);

  c.sliding_window = optional_int(j, "sliding_window", 0, source);
  if (!absent(j, "tie_word_embeddings")) {
    const json& v = j["tie_word_embeddings"];
    if (!v.is_boolean()) {
      throw InputError(prefix(source) + "field 'tie_word_embeddings' is " + v.dump() +
                       ", expected true or false");
    }
    c.tie_word_embeddings = v.get<bool>();
  }
  for (const char* key : {"dtype", "torch_dtype"}) {  // transformers 5 spelling first
    if (absent(j, key)) continue;
    if (!j[key].is_string()) {
      throw InputError(prefix(source) + "field '" + key + "' is " + j[key].dump() +
                       ", expected a string such as \"bfloat16\"");
    }
    c.dtype = j[key].get<std::string>();
    break;
  }
  if (!absent(j, "hidden_act")) {
    const json& v = j["hidden_act"];
    if (!v.is_string() || v.get<std::string>() != "silu") {
      throw InputError(prefix(source) + "field 'hidden_act' is " + v.dump() +
                       ", only \"silu\" is supported (the experts are SwiGLU)");
    }
  }
  c.validate(source);
  return c;
}

void ModelConfig::validate(const std::string& source) const {
  struct Size {
    const char* name;
    int value;
    int max;
  };
  // Top-k is bounded by the expert count below, and key/value heads by the query heads they
  // divide; both are still held to the largest query head count here, so that the message
  // for an absurd value names the bound rather than the relation.
  const Size sizes[] = {
      {"vocab_size", vocab_size, kMaxVocabSize},
      {"hidden_size", hidden_size, kMaxHiddenSize},
      {"intermediate_size", intermediate_size, kMaxIntermediateSize},
      {"num_hidden_layers", num_hidden_layers, kMaxLayers},
      {"num_attention_heads", num_attention_heads, kMaxHeads},
      {"num_key_value_heads", num_key_value_heads, kMaxHeads},
      {"head_dim", head_dim, kMaxHeadDim},
      {"num_local_experts", num_local_experts, kMaxExperts},
      {"num_experts_per_tok", num_experts_per_tok, kMaxExperts},
      {"max_position_embeddings", max_position_embeddings, kMaxPositions},
  };
  for (const auto& [name, v, max] : sizes) {
    if (v < 1 || v > max) {
      throw InputError(prefix(source) + name + " is " + std::to_string(v) +
                       ", expected an integer in [1, " + std::to_string(max) + "]");
    }
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    throw InputError(prefix(source) + "num_attention_heads " + std::to_string(num_attention_heads) +
                     " is not divisible by num_key_value_heads " +
                     std::to_string(num_key_value_heads) +
                     "; expected each key/value head to serve a whole number of query heads");
  }
  if (num_experts_per_tok > num_local_experts) {
    throw InputError(
        prefix(source) + "num_experts_per_tok is " + std::to_string(num_experts_per_tok) +
        ", expected at most num_local_experts (" + std::to_string(num_local_experts) + ")");
  }
  if (head_dim % 2 != 0) {
    throw InputError(prefix(source) + "head_dim is " + std::to_string(head_dim) +
                     ", expected an even number (RoPE rotates pairs of halves)");
  }
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps)) {
    throw InputError(prefix(source) + "rms_norm_eps is " + num(rms_norm_eps) +
                     ", expected a finite number > 0");
  }
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) {
    throw InputError(prefix(source) + "rope_theta is " + num(rope_theta) +
                     ", expected a finite number > 0");
  }
  if (sliding_window < 0 || sliding_window > kMaxPositions) {
    throw InputError(prefix(source) + "sliding_window is " + std::to_string(sliding_window) +
                     ", expected an integer in [0, " + std::to_string(kMaxPositions) +
                     "] (0 or null: no sliding window)");
  }
}

void ModelConfig::check_supported(const std::string& backend, const std::string& source) const {
  const auto limit = [&](const char* field, int v, int max, const std::string& why) {
    if (v > max)
      throw InputError(prefix(source) + field + " is " + std::to_string(v) + ", expected at most " +
                       std::to_string(max) + " (" + why + ")");
  };
  limit("num_experts_per_tok", num_experts_per_tok, kernels::kMaxTopK, "the router's top-k limit");
  if (backend == "cuda") {
    limit("head_dim", head_dim, kernels::kCudaMaxHeadDim, "the CUDA attention kernel's limit");
    limit("num_local_experts", num_local_experts, kernels::kCudaMaxExperts,
          "the CUDA router kernel's limit");
  }
}

}  // namespace moe::runtime
