// ModelConfig::from_json on Mixtral's config.json as transformers 4 and 5 write it, then one
// impossible or missing value at a time, each checked for a message naming the field.
#include "runtime/model_config.h"

#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/files.h"

namespace {

using moe::runtime::ModelConfig;
using namespace moe::test;  // tests/support/files.h
using nlohmann::json;

constexpr const char* kSource = "tiny/config.json";

// mistralai/Mixtral-8x7B-v0.1's config.json, as transformers 4 writes it.
json mixtral_8x7b() {
  return json::parse(R"({
    "architectures": ["MixtralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mixtral",
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "output_router_logits": false,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.02,
    "sliding_window": null,
    "tie_word_embeddings": false,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.36.0.dev0",
    "use_cache": true,
    "vocab_size": 32000
  })");
}

// Only the required fields of a tiny model.
json minimal() {
  return {{"vocab_size", 128},       {"hidden_size", 64},        {"intermediate_size", 96},
          {"num_hidden_layers", 2},  {"num_attention_heads", 4}, {"num_local_experts", 4},
          {"num_experts_per_tok", 2}};
}

std::string from_json_error(const json& j) {
  return input_error([&] { ModelConfig::from_json(j, kSource); });
}

TEST(ModelConfig, ReadsMixtral8x7B) {
  const ModelConfig c = ModelConfig::from_json(mixtral_8x7b(), kSource);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_local_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_EQ(c.q_dim(), 4096);
  EXPECT_EQ(c.kv_dim(), 1024);
}

TEST(ModelConfig, DefaultsForOptionalFields) {
  const ModelConfig c = ModelConfig::from_json(minimal(), kSource);
  EXPECT_EQ(c.num_key_value_heads, 4);  // multi-head attention
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position_embeddings, 4096 * 32);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_FALSE(c.tie_word_embeddings);
}

TEST(ModelConfig, OptionalFieldsWhenGiven) {
  json j = minimal();
  j["num_key_value_heads"] = 2;
  j["head_dim"] = 32;  // decoupled from hidden_size / heads
  j["max_position_embeddings"] = 512;
  j["rms_norm_eps"] = 1e-6;
  j["rope_theta"] = 10000;  // an integer literal is a number too
  j["sliding_window"] = 256;
  j["tie_word_embeddings"] = true;
  j["dtype"] = "float32";
  j["torch_dtype"] = "float16";  // transformers 5's "dtype" wins
  const ModelConfig c = ModelConfig::from_json(j, kSource);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.q_dim(), 128);
  EXPECT_EQ(c.kv_dim(), 64);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.sliding_window, 256);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.dtype, "float32");
}

TEST(ModelConfig, HeadDimNullFallsBackToHiddenOverHeads) {
  json j = minimal();
  j["head_dim"] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(j, kSource).head_dim, 16);
}

TEST(ModelConfig, RopeParametersTransformers5) {
  json j = minimal();
  j["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "default"}};
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(j, kSource).rope_theta, 500000.0);
}

TEST(ModelConfig, ScaledRopeRefused) {
  json j = minimal();
  j["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_TRUE(
      mentions(from_json_error(j), {kSource, "rope_parameters.rope_type", "yarn", "default"}));
  j = minimal();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "rope_scaling.type", "linear"}));
}

TEST(ModelConfig, MissingEachRequiredField) {
  for (const char* field : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "num_local_experts", "num_experts_per_tok"}) {
    json j = minimal();
    j.erase(field);
    EXPECT_TRUE(mentions(from_json_error(j),
                         {kSource, std::string("missing field '") + field + "'", "integer >= 1"}));
  }
}

TEST(ModelConfig, RequiredFieldOfWrongType) {
  for (const json& bad : {json("64"), json(64.5), json(true), json::array({64})}) {
    json j = minimal();
    j["hidden_size"] = bad;
    EXPECT_TRUE(mentions(from_json_error(j), {kSource, "'hidden_size'", "integer"})) << bad.dump();
  }
  json j = minimal();
  j["vocab_size"] = 1LL << 40;
  EXPECT_TRUE(mentions(from_json_error(j), {"'vocab_size'", "32-bit"}));
}

TEST(ModelConfig, NotAnObject) {
  EXPECT_TRUE(mentions(from_json_error(json::array()), {kSource, "object"}));
}

TEST(ModelConfig, HeadsNotDivisibleByKvHeads) {
  json j = minimal();
  j["num_key_value_heads"] = 3;
  EXPECT_TRUE(mentions(from_json_error(j),
                       {kSource, "num_attention_heads 4", "num_key_value_heads 3", "divisible"}));
}

TEST(ModelConfig, TopKExceedsExperts) {
  json j = minimal();
  j["num_experts_per_tok"] = 5;
  EXPECT_TRUE(
      mentions(from_json_error(j), {kSource, "num_experts_per_tok is 5", "num_local_experts (4)"}));
}

TEST(ModelConfig, ZeroLayers) {
  json j = minimal();
  j["num_hidden_layers"] = 0;
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "num_hidden_layers is 0", "[1, 1024]"}));
}

TEST(ModelConfig, NegativeSizes) {
  json j = minimal();
  j["intermediate_size"] = -8;
  EXPECT_TRUE(mentions(from_json_error(j), {"intermediate_size is -8", "[1, 262144]"}));
  j = minimal();
  j["num_attention_heads"] = 0;  // must not divide by zero deriving head_dim
  EXPECT_TRUE(mentions(from_json_error(j), {"num_attention_heads is 0"}));
}

TEST(ModelConfig, NegativeSlidingWindow) {
  json j = minimal();
  j["sliding_window"] = -1;
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "sliding_window is -1", "[0, 16777216]"}));
}

TEST(ModelConfig, OddHeadDim) {
  json j = minimal();
  j["head_dim"] = 15;
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "head_dim is 15", "even"}));
}

TEST(ModelConfig, HiddenSizeNotDivisibleByHeads) {
  json j = minimal();
  j["num_attention_heads"] = 3;
  j["num_key_value_heads"] = 1;
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "hidden_size 64", "num_attention_heads 3"}));
}

TEST(ModelConfig, HiddenActGelu) {
  json j = minimal();
  j["hidden_act"] = "gelu";
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "hidden_act", "gelu", "silu"}));
}

TEST(ModelConfig, NonPositiveEpsAndTheta) {
  json j = minimal();
  j["rms_norm_eps"] = 0.0;
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "rms_norm_eps is 0", "> 0"}));
  j = minimal();
  j["rope_theta"] = -1.0;
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "rope_theta is -1", "> 0"}));
  j = minimal();
  j["rms_norm_eps"] = "1e-5";
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "'rms_norm_eps'", "number"}));
}

TEST(ModelConfig, BeyondWhatABackendSupports) {
  const ModelConfig mixtral = ModelConfig::from_json(mixtral_8x7b(), kSource);
  EXPECT_NO_THROW(mixtral.check_supported("cpu", kSource));
  EXPECT_NO_THROW(mixtral.check_supported("cuda", kSource));
  ModelConfig c = mixtral;
  c.head_dim = 512;  // fine on cpu, past the CUDA attention kernel
  EXPECT_NO_THROW(c.check_supported("cpu", kSource));
  EXPECT_TRUE(mentions(input_error([&] { c.check_supported("cuda", kSource); }),
                       {kSource, "head_dim is 512", "at most 256", "CUDA attention"}));
  c = mixtral;
  c.num_local_experts = 300;
  EXPECT_NO_THROW(c.check_supported("cpu", kSource));
  EXPECT_TRUE(mentions(input_error([&] { c.check_supported("cuda", kSource); }),
                       {"num_local_experts is 300", "at most 256", "CUDA router"}));
  c.num_experts_per_tok = 17;
  EXPECT_TRUE(mentions(input_error([&] { c.check_supported("cpu", kSource); }),
                       {"num_experts_per_tok is 17", "at most 16"}));
}

// Every size at its bound at once: accepted, and the products the runtime forms from them
// still fit their types.
TEST(ModelConfig, AllSizesAtTheirBounds) {
  json j = minimal();
  j["vocab_size"] = ModelConfig::kMaxVocabSize;
  j["hidden_size"] = ModelConfig::kMaxHiddenSize;
  j["intermediate_size"] = ModelConfig::kMaxIntermediateSize;
  j["num_hidden_layers"] = ModelConfig::kMaxLayers;
  j["num_attention_heads"] = ModelConfig::kMaxHeads;
  j["num_key_value_heads"] = ModelConfig::kMaxHeads;
  j["head_dim"] = ModelConfig::kMaxHeadDim;
  j["num_local_experts"] = ModelConfig::kMaxExperts;
  j["num_experts_per_tok"] = ModelConfig::kMaxExperts;
  j["max_position_embeddings"] = ModelConfig::kMaxPositions;
  j["sliding_window"] = ModelConfig::kMaxPositions;
  const ModelConfig c = ModelConfig::from_json(j, kSource);
  EXPECT_EQ(c.q_dim(), 1 << 20);
  EXPECT_EQ(c.kv_dim(), 1 << 20);
}

// One past its bound, each size is refused by name with the range expected.
TEST(ModelConfig, EachSizePastItsBound) {
  const std::pair<const char*, int> bounds[] = {
      {"vocab_size", ModelConfig::kMaxVocabSize},
      {"hidden_size", ModelConfig::kMaxHiddenSize},
      {"intermediate_size", ModelConfig::kMaxIntermediateSize},
      {"num_hidden_layers", ModelConfig::kMaxLayers},
      {"num_attention_heads", ModelConfig::kMaxHeads},
      {"num_key_value_heads", ModelConfig::kMaxHeads},
      {"head_dim", ModelConfig::kMaxHeadDim},
      {"num_local_experts", ModelConfig::kMaxExperts},
      {"max_position_embeddings", ModelConfig::kMaxPositions},
  };
  for (const auto& [field, max] : bounds) {
    json j = minimal();
    j["head_dim"] = 16;  // given, so that a large hidden_size need not divide by the heads
    j[field] = max + 1;
    EXPECT_TRUE(mentions(from_json_error(j),
                         {kSource, std::string(field) + " is " + std::to_string(max + 1),
                          "[1, " + std::to_string(max) + "]"}))
        << field;
  }
  json j = minimal();
  j["num_local_experts"] = ModelConfig::kMaxExperts;
  j["num_experts_per_tok"] = ModelConfig::kMaxExperts + 1;
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "num_experts_per_tok is 1025", "[1, 1024]"}));
  j = minimal();
  j["sliding_window"] = ModelConfig::kMaxPositions + 1;
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "sliding_window is 16777217"}));
}

// 2^21 query heads of 1024: their product, the query width, is past a 32-bit integer; refused
// before anything computes it.
TEST(ModelConfig, QueryWidthPastAnInt) {
  json j = minimal();
  j["num_attention_heads"] = 2097152;
  j["num_key_value_heads"] = 1;
  j["head_dim"] = 1024;
  EXPECT_TRUE(mentions(from_json_error(j), {kSource, "num_attention_heads is 2097152", "[1, 1024]"}));
}

// The expert count sizes the placement and statistics tables, so it is bounded on every backend,
// not only by the CUDA router's limit.
TEST(ModelConfig, ExpertCountBoundedOnEveryBackend) {
  for (const int experts : {2147483647, 100000000, ModelConfig::kMaxExperts + 1}) {
    json j = minimal();
    j["num_local_experts"] = experts;
    EXPECT_TRUE(mentions(from_json_error(j), {kSource,
                                              "num_local_experts is " + std::to_string(experts),
                                              "[1, 1024]"}));
  }
}

TEST(ModelConfig, ValidateOnAHandBuiltConfig) {
  ModelConfig c = ModelConfig::from_json(minimal(), kSource);
  EXPECT_NO_THROW(c.validate(kSource));
  c.num_key_value_heads = 0;
  EXPECT_TRUE(mentions(input_error([&] { c.validate("by hand"); }),
                       {"by hand", "num_key_value_heads is 0"}));
}

}  // namespace
