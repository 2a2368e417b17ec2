// Checkpoint against small model folders written here: a single model.safetensors, and two
// shards listed by model.safetensors.index.json:
//   model-00001-of-00002.safetensors: model.embed_tokens.weight, model.layers.0.*.q_proj.weight
//   model-00002-of-00002.safetensors: model.norm.weight, lm_head.weight
#include "runtime/checkpoint.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "runtime/placement.h"
#include "runtime/weights.h"
#include "tests/support/files.h"
#include "tests/support/test_env.h"

namespace {

namespace fs = std::filesystem;
using moe::runtime::Checkpoint;
using namespace moe::test;  // tests/support/files.h
using nlohmann::json;

constexpr const char* kShard1 = "model-00001-of-00002.safetensors";
constexpr const char* kShard2 = "model-00002-of-00002.safetensors";
constexpr const char* kQ = "model.layers.0.self_attn.q_proj.weight";

// start, start + 1, ... so each element says where it came from.
std::vector<float> iota(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + float(i);
  return v;
}

Tensor iota_f32(const std::string& name, std::vector<int64_t> shape, float start = 0.0f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return {name, "F32", std::move(shape), bytes_of(iota(static_cast<size_t>(n), start))};
}

void write_config(const TempDir& dir) {
  write_text(dir.file("config.json"),
             json{{"architectures", {"MixtralForCausalLM"}}, {"hidden_size", 64}}.dump());
}

void write_index(const TempDir& dir, const json& weight_map) {
  write_text(dir.file("model.safetensors.index.json"),
             json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());
}

// Two shards and an index, as from_pretrained writes them.
void write_sharded(const TempDir& dir) {
  write_config(dir);
  write_safetensors(dir.file(kShard1),
                    {iota_f32("model.embed_tokens.weight", {10, 4}), iota_f32(kQ, {4, 4}, 100.0f)});
  write_safetensors(dir.file(kShard2), {iota_f32("model.norm.weight", {4}, 200.0f),
                                        iota_f32("lm_head.weight", {10, 4}, 300.0f)});
  write_index(dir, {{"model.embed_tokens.weight", kShard1},
                    {kQ, kShard1},
                    {"model.norm.weight", kShard2},
                    {"lm_head.weight", kShard2}});
}

TEST(Checkpoint, SingleFileReadsAndCountsOnlyTensorsRead) {
  TempDir dir;
  write_config(dir);
  write_safetensors(dir.file("model.safetensors"),
                    {iota_f32("model.norm.weight", {4}), iota_f32(kQ, {8, 4}, 10.0f)});
  const Checkpoint c = Checkpoint::open(dir.str());
  EXPECT_EQ(c.dir(), dir.str());
  EXPECT_FALSE(c.sharded());
  EXPECT_EQ(c.config_json().at("hidden_size"), 64);
  EXPECT_TRUE(c.has(kQ));
  EXPECT_FALSE(c.has("lm_head.weight"));
  EXPECT_EQ(c.tensor_names(), (std::vector<std::string>{kQ, "model.norm.weight"}));

  EXPECT_EQ(c.bytes_read(), 0u);
  EXPECT_EQ(c.get(kQ).nbytes, 128u);  // get() hands out a view; only read_f32 counts
  EXPECT_EQ(c.bytes_read(), 0u);
  EXPECT_EQ(c.read_f32(kQ, {8, 4}), iota(32, 10.0f));
  EXPECT_EQ(c.bytes_read(), 128u);
  EXPECT_EQ(c.read_f32("model.norm.weight", {4}), iota(4, 0.0f));
  EXPECT_EQ(c.bytes_read(), 144u);
}

TEST(Checkpoint, ShardedReadsAcrossTwoShards) {
  TempDir dir;
  write_sharded(dir);
  const Checkpoint c = Checkpoint::open(dir.str());
  EXPECT_TRUE(c.sharded());
  EXPECT_EQ(c.tensor_names(),
            (std::vector<std::string>{"lm_head.weight", "model.embed_tokens.weight", kQ,
                                      "model.norm.weight"}));
  EXPECT_EQ(c.read_f32(kQ, {4, 4}), iota(16, 100.0f));
  EXPECT_EQ(c.bytes_read(), 64u);
  EXPECT_EQ(c.read_f32("lm_head.weight", {10, 4}), iota(40, 300.0f));
  EXPECT_EQ(c.read_f32("model.norm.weight", {4}), iota(4, 200.0f));
  EXPECT_EQ(c.bytes_read(), 64u + 160u + 16u);
}

TEST(Checkpoint, ShardsOpenLazily) {
  TempDir dir;
  write_sharded(dir);
  // A shard nobody reads is never parsed, so its corruption shows only when it is needed.
  write_text(dir.file(kShard2), "not a safetensors file");
  const Checkpoint c = Checkpoint::open(dir.str());
  EXPECT_EQ(c.read_f32(kQ, {4, 4}), iota(16, 100.0f));
  EXPECT_TRUE(mentions(input_error([&] { c.get("lm_head.weight"); }), {kShard2}));
}

TEST(Checkpoint, ReadF32WidensHalfPrecision) {
  TempDir dir;
  write_config(dir);
  write_safetensors(dir.file("model.safetensors"),
                    {{"h", "F16", {3}, bytes_of(std::vector<uint16_t>{0x3c00, 0x0001, 0xc000})},
                     {"b", "BF16", {2}, bytes_of(std::vector<uint16_t>{0x3f80, 0x4049})}});
  const Checkpoint c = Checkpoint::open(dir.str());
  EXPECT_EQ(c.read_f32("h", {3}), (std::vector<float>{1.0f, std::ldexp(1.0f, -24), -2.0f}));
  EXPECT_EQ(c.read_f32("b", {2}), (std::vector<float>{1.0f, 3.140625f}));
  EXPECT_EQ(c.bytes_read(), 10u);
}

TEST(Checkpoint, ReadF32HandlesMisalignedData) {
  TempDir dir;
  write_config(dir);
  // With one extra byte of header the data section starts at an odd address in the mapping.
  const Tensor h{"h", "F16", {2}, bytes_of(std::vector<uint16_t>{0x3c00, 0xc000})};
  const Tensor f = iota_f32("f", {2}, 5.0f);
  for (size_t pad = 0; pad < 2; ++pad) {
    write_safetensors(dir.file("model.safetensors"), {h, f}, /*metadata=*/{}, pad);
    const Checkpoint c = Checkpoint::open(dir.str());
    EXPECT_EQ(c.read_f32("h", {2}), (std::vector<float>{1.0f, -2.0f})) << "pad " << pad;
    EXPECT_EQ(c.read_f32("f", {2}), (std::vector<float>{5.0f, 6.0f})) << "pad " << pad;
  }
}

TEST(Checkpoint, MissingFolder) {
  TempDir dir;
  const std::string missing = dir.file("no-such-model");
  EXPECT_TRUE(
      mentions(input_error([&] { Checkpoint::open(missing); }), {missing, "does not exist"}));
}

TEST(Checkpoint, PathIsAFileNotAFolder) {
  TempDir dir;
  write_text(dir.file("config.json"), "{}");
  EXPECT_TRUE(mentions(input_error([&] { Checkpoint::open(dir.file("config.json")); }),
                       {dir.file("config.json"), "not a folder"}));
}

TEST(Checkpoint, MissingConfig) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"), {iota_f32("w", {1})});
  EXPECT_TRUE(mentions(input_error([&] { Checkpoint::open(dir.str()); }),
                       {dir.file("config.json"), "not found"}));
}

TEST(Checkpoint, ConfigInvalidJson) {
  TempDir dir;
  write_text(dir.file("config.json"), "{\"hidden_size\": 64,");
  write_safetensors(dir.file("model.safetensors"), {iota_f32("w", {1})});
  EXPECT_TRUE(mentions(input_error([&] { Checkpoint::open(dir.str()); }),
                       {dir.file("config.json"), "not valid JSON"}));
}

// A number past a double's range is refused by the JSON parser with an exception that is not
// a parse error (found by tests/fuzz/fuzz_model_config.cpp); config.json and the index alike.
TEST(Checkpoint, NumberPastADoublesRange) {
  TempDir dir;
  write_text(dir.file("config.json"), "{\"rms_norm_eps\": 31e308}");
  write_safetensors(dir.file("model.safetensors"), {iota_f32("w", {1})});
  EXPECT_TRUE(mentions(input_error([&] { Checkpoint::open(dir.str()); }),
                       {dir.file("config.json"), "31e308", "out of range", "expected"}));
  write_config(dir);
  write_text(dir.file("model.safetensors.index.json"), "{\"metadata\": {\"total_size\": -1e999}}");
  EXPECT_TRUE(mentions(input_error([&] { Checkpoint::open(dir.str()); }),
                       {dir.file("model.safetensors.index.json"), "-1e999", "out of range"}));
}

// The JSON parser stops at a NUL byte; what follows it must not be ignored.
TEST(Checkpoint, ConfigWithANulByte) {
  TempDir dir;
  write_text(dir.file("config.json"), std::string("{\"hidden_size\": 64}") + '\0' + "garbage");
  write_safetensors(dir.file("model.safetensors"), {iota_f32("w", {1})});
  EXPECT_TRUE(mentions(input_error([&] { Checkpoint::open(dir.str()); }),
                       {dir.file("config.json"), "NUL byte at offset 19"}));
}

TEST(Checkpoint, NoWeights) {
  TempDir dir;
  write_config(dir);
  EXPECT_TRUE(mentions(input_error([&] { Checkpoint::open(dir.str()); }),
                       {dir.str(), "model.safetensors", "model.safetensors.index.json"}));
}

TEST(Checkpoint, IndexWithoutWeightMap) {
  TempDir dir;
  write_config(dir);
  for (const char* text : {"{\"metadata\": {}}", "{\"weight_map\": [1]}", "{\"weight_map\": {"}) {
    write_text(dir.file("model.safetensors.index.json"), text);
    EXPECT_TRUE(mentions(input_error([&] { Checkpoint::open(dir.str()); }),
                         {dir.file("model.safetensors.index.json")}))
        << text;
  }
}

TEST(Checkpoint, IndexNamesMissingShard) {
  TempDir dir;
  write_sharded(dir);
  fs::remove(dir.file(kShard2));
  EXPECT_TRUE(mentions(input_error([&] { Checkpoint::open(dir.str()); }),
                       {dir.file("model.safetensors.index.json"), kShard2, "not found"}));
}

TEST(Checkpoint, IndexNamesTensorTheShardLacks) {
  TempDir dir;
  write_sharded(dir);
  write_index(dir, {{kQ, kShard1}, {"model.norm.weight", kShard1}});  // norm lives in shard 2
  const Checkpoint c = Checkpoint::open(dir.str());
  EXPECT_TRUE(mentions(input_error([&] { c.read_f32("model.norm.weight", {4}); }),
                       {"model.safetensors.index.json", "'model.norm.weight'", kShard1}));
  EXPECT_EQ(c.bytes_read(), 0u);
}

TEST(Checkpoint, MissingTensorSingleFile) {
  TempDir dir;
  write_config(dir);
  write_safetensors(dir.file("model.safetensors"), {iota_f32("w", {1})});
  const Checkpoint c = Checkpoint::open(dir.str());
  EXPECT_TRUE(
      mentions(input_error([&] { c.get("lm_head.weight"); }), {dir.str(), "'lm_head.weight'"}));
  EXPECT_TRUE(mentions(input_error([&] { c.read_f32("lm_head.weight", {1}); }),
                       {dir.str(), "'lm_head.weight'"}));
}

TEST(Checkpoint, MissingTensorSharded) {
  TempDir dir;
  write_sharded(dir);
  const Checkpoint c = Checkpoint::open(dir.str());
  EXPECT_TRUE(mentions(input_error([&] { c.get("model.layers.1.self_attn.q_proj.weight"); }),
                       {dir.str(), "'model.layers.1.self_attn.q_proj.weight'"}));
}

TEST(Checkpoint, ReadF32ShapeMismatch) {
  TempDir dir;
  write_config(dir);
  write_safetensors(dir.file("model.safetensors"), {iota_f32(kQ, {64, 32})});
  const Checkpoint c = Checkpoint::open(dir.str());
  EXPECT_EQ(input_error([&] {
              c.read_f32(kQ, {64, 64});
            }),
            "tensor 'model.layers.0.self_attn.q_proj.weight' in " + dir.str() +
                "/model.safetensors has shape [64, 32], expected [64, 64] from config.json");
  EXPECT_TRUE(mentions(input_error([&] { c.read_f32(kQ, {64, 32, 1}); }), {"[64, 32, 1]"}));
  EXPECT_EQ(c.bytes_read(), 0u);
}

}  // namespace

namespace {
// A shard name that leaves the model folder is refused, whether or not the file exists.
// A real sharded checkpoint whose config.json does not fit its tensors: loading names the shard
// file, the tensor, its shape and the shape config.json implies.
TEST(Checkpoint, ConfigNotFittingTheTensorsNamesTheShard) {
  TempDir dir;
  const std::string src = moe::test::data_dir("tiny_b") + "/checkpoint";
  for (const auto& e : fs::directory_iterator(src))
    fs::copy_file(e.path(), dir.file(e.path().filename().string()));
  json cfg = json::parse(std::ifstream(dir.file("config.json")));
  cfg["intermediate_size"] = cfg["intermediate_size"].get<int>() + 1;
  write_text(dir.file("config.json"), cfg.dump());
  const Checkpoint c = Checkpoint::open(dir.str());
  const auto mc = moe::runtime::ModelConfig::from_json(c.config_json(), dir.file("config.json"));
  const auto p = moe::runtime::Placement::make(moe::runtime::Placement::Kind::kContiguous,
                                               mc.num_hidden_layers, mc.num_local_experts, 1);
  auto ops = moe::kernels::make_cpu_ops();
  const std::string msg =
      input_error([&] { moe::runtime::ModelWeights::load(c, mc, p, 0, *ops); });
  const std::string shard = c.sharded() ? "model-0000" : "model.safetensors";
  EXPECT_TRUE(mentions(msg, {"experts.0.w1.weight", dir.str() + "/" + shard, "has shape [",
                             "expected [" + std::to_string(mc.intermediate_size) + ", ",
                             "from config.json"}));
}

TEST(CheckpointPathTest, IndexShardOutsideFolderRefused) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("moe_ckpt_escape_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << "{}";
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"weight_map": {"model.norm.weight": "../outside.safetensors"}})";
  try {
    moe::runtime::Checkpoint::open(dir.string());
    ADD_FAILURE() << "accepted a shard outside the folder";
  } catch (const moe::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("../outside.safetensors"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}
}  // namespace
