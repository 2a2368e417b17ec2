// The run config: YAML fields, validate()'s messages per field, and the defaults.
#include "runtime/run_config.h"

#include <cmath>

#include "common/error.h"
#include "runtime/placement_file.h"
#include "tests/support/files.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

runtime::RunConfig valid() {
  runtime::RunConfig c;
  c.checkpoint = "/some/model";
  return c;
}

// The message validate() throws for `c`, or a failure.
std::string refused(const runtime::RunConfig& c) {
  return input_error([&] { c.validate(); });
}

TEST(RunConfig, DefaultsAreValid) {
  EXPECT_NO_THROW(valid().validate());
  EXPECT_EQ(valid().resolved_dtype(), "f32");
  EXPECT_FALSE(valid().rebalance);  // live rebalancing is off unless asked for
  runtime::RunConfig c = valid();
  c.backend = "cuda";
  EXPECT_EQ(c.resolved_dtype(), "bf16");
  c.dtype = "f32";
  EXPECT_EQ(c.resolved_dtype(), "f32");
}

TEST(RunConfig, EachBadFieldIsNamedWithWhatIsAllowed) {
  struct Case {
    std::function<void(runtime::RunConfig&)> set;
    std::vector<std::string> says;
  };
  const std::vector<Case> cases = {
      {[](auto& c) { c.checkpoint.clear(); }, {"checkpoint is empty", "model folder"}},
      {[](auto& c) { c.placement = "random"; }, {"placement is 'random'", "contiguous, round_robin"}},
      {[](auto& c) { c.placement = "explicit"; }, {"placement_map is empty"}},
      {[](auto& c) { c.backend = "tpu"; }, {"backend is 'tpu'", "cpu or cuda"}},
      {[](auto& c) { c.transport = "ucx"; }, {"transport is 'ucx'", "mpi or nccl"}},
      {[](auto& c) { c.transport = "nccl"; }, {"nccl with backend cpu", "expected mpi"}},
      {[](auto& c) { c.dtype = "fp16"; }, {"dtype is 'fp16'", "auto, f32 or bf16"}},
      {[](auto& c) { c.max_tokens_per_step = 0; }, {"max_tokens_per_step is 0", "[1, 1048576]"}},
      {[](auto& c) { c.max_tokens_per_step = (1 << 20) + 1; }, {"max_tokens_per_step is 1048577"}},
      {[](auto& c) { c.max_seqs = -1; }, {"max_seqs is -1", "[0, 65536]"}},
      {[](auto& c) { c.max_seqs = 100000000; }, {"max_seqs is 100000000"}},
      {[](auto& c) { c.max_seq_len = 3000000; }, {"max_seq_len is 3000000", "[0, 1048576]"}},
      {[](auto& c) { c.gpu_memory_utilization = 0; }, {"gpu_memory_utilization is 0", "(0, 1]"}},
      {[](auto& c) { c.gpu_memory_utilization = 1.01; }, {"gpu_memory_utilization is 1.01"}},
      {[](auto& c) { c.num_layers = 4; }, {"num_layers is 4", "unless synthetic is true"}},
      // A synthetic run's layer count replaces config.json's, within config.json's bound.
      {[](auto& c) { c.synthetic = true; c.num_layers = 1025; }, {"num_layers is 1025", "[0, 1024]"}},
      // Live rebalancing's values are checked whether it is on or not.
      {[](auto& c) { c.rebalance_interval = 0; }, {"rebalance_interval is 0", "[1, 1073741824]"}},
      {[](auto& c) { c.rebalance_window = 0; }, {"rebalance_window is 0", "[1, 4096]"}},
      {[](auto& c) { c.rebalance_window = 5000; }, {"rebalance_window is 5000", "[1, 4096]"}},
      {[](auto& c) { c.rebalance_threshold = -1; }, {"rebalance_threshold is -1", "a number >= 1"}},
      {[](auto& c) { c.rebalance_threshold = 0.9; }, {"rebalance_threshold is 0.9", "a number >= 1"}},
      {[](auto& c) { c.rebalance_threshold = std::nan(""); }, {"rebalance_threshold is nan", "a number >= 1"}},
      {[](auto& c) { c.rebalance_redundant_slots = -1; }, {"rebalance_redundant_slots is -1", "[0, "}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    runtime::RunConfig c = valid();
    cases[i].set(c);
    const std::string msg = refused(c);
    for (const auto& s : cases[i].says) EXPECT_TRUE(mentions(msg, {s})) << "case " << i;
  }
}

TEST(RunConfig, YamlReadsEveryField) {
  TempDir dir;
  write_text(dir.file("run.yaml"),
             "checkpoint: model\nplacement: round_robin\nbackend: cuda\ntransport: nccl\n"
             "dtype: f32\nmax_tokens_per_step: 100\nmax_seqs: 7\nmax_seq_len: 300\n"
             "gpu_memory_utilization: 0.5\nignore_eos: true\nsynthetic: true\nseed: 42\n"
             "num_layers: 3\nrebalance: true\nrebalance_interval: 8\nrebalance_window: 16\n"
             "rebalance_threshold: 1.5\nrebalance_redundant_slots: 2\n");
  const auto c = runtime::RunConfig::from_yaml_file(dir.file("run.yaml"));
  EXPECT_EQ(c.checkpoint, dir.str() + "/model");  // relative to the file's folder
  EXPECT_EQ(c.placement, "round_robin");
  EXPECT_EQ(c.backend, "cuda");
  EXPECT_EQ(c.transport, "nccl");
  EXPECT_EQ(c.dtype, "f32");
  EXPECT_EQ(c.max_tokens_per_step, 100);
  EXPECT_EQ(c.max_seqs, 7);
  EXPECT_EQ(c.max_seq_len, 300);
  EXPECT_DOUBLE_EQ(c.gpu_memory_utilization, 0.5);
  EXPECT_TRUE(c.ignore_eos);
  EXPECT_TRUE(c.synthetic);
  EXPECT_EQ(c.seed, 42u);
  EXPECT_EQ(c.num_layers, 3);
  EXPECT_TRUE(c.rebalance);
  EXPECT_EQ(c.rebalance_interval, 8);
  EXPECT_EQ(c.rebalance_window, 16);
  EXPECT_DOUBLE_EQ(c.rebalance_threshold, 1.5);
  EXPECT_EQ(c.rebalance_redundant_slots, 2);
  EXPECT_NO_THROW(c.validate());
}

TEST(RunConfig, YamlErrorsNameTheFileAndField) {
  TempDir dir;
  write_text(dir.file("a.yaml"), "checkpoint: m\nmax_seqs: many\n");
  EXPECT_TRUE(mentions(input_error([&] { runtime::RunConfig::from_yaml_file(dir.file("a.yaml")); }),
                       {"a.yaml", "field 'max_seqs'", "many", "an integer >= 0"}));
  write_text(dir.file("b.yaml"), "checkpoint: m\nseeed: 3\n");
  EXPECT_TRUE(mentions(input_error([&] { runtime::RunConfig::from_yaml_file(dir.file("b.yaml")); }),
                       {"b.yaml", "unknown field 'seeed'", "seed"}));
  write_text(dir.file("c.yaml"), "checkpoint: [unclosed\n");
  EXPECT_TRUE(mentions(input_error([&] { runtime::RunConfig::from_yaml_file(dir.file("c.yaml")); }),
                       {"c.yaml", "not valid YAML"}));
  EXPECT_TRUE(mentions(input_error([&] { runtime::RunConfig::from_yaml_file(dir.file("none.yaml")); }),
                       {"none.yaml", "cannot open"}));
}

// YAML aliases let a few kilobytes name lists of lists billions of entries long; the
// conversion to vectors would copy every use (found by tests/fuzz/fuzz_run_config.cpp as a
// run past its time limit). Refused from the count, before any conversion: placement_map and
// placement_shares, in a run config and in a placement file (moe-plan's output).
TEST(RunConfig, PlacementTablesOfAliasesExpandingPastTheBound) {
  TempDir dir;
  const auto repeat = [](const std::string& first, const std::string& rest, int n) {
    std::string s = "[" + first;
    for (int i = 1; i < n; ++i) s += ", " + rest;
    return s + "]";
  };
  // 200 layers x 200 experts x 200 entries = 8M from under 2 KB.
  const std::string experts = repeat("&e " + repeat("0", "0", 200), "*e", 200);
  const std::string table = repeat("&l " + experts, "*l", 200);
  for (const char* field : {"placement_map", "placement_shares"}) {
    write_text(dir.file("big.yaml"),
               "checkpoint: m\nplacement: explicit\n" + std::string(field) + ": " + table + "\n");
    EXPECT_TRUE(
        mentions(input_error([&] { runtime::RunConfig::from_yaml_file(dir.file("big.yaml")); }),
                 {"big.yaml", std::string("field '") + field + "'", "more than 1048576", "aliases",
                  "expected"}));
    const std::string other = std::string(field) == "placement_map" ? "placement_shares: [[[1]]]"
                                                                    : "placement_map: [[[0]]]";
    write_text(dir.file("plan.yaml"), other + "\n" + field + ": " + table + "\n");
    EXPECT_TRUE(mentions(
        input_error([&] { runtime::read_placement_yaml(dir.file("plan.yaml")); }),
        {"plan.yaml", std::string("field '") + field + "'", "more than 1048576", "aliases"}));
  }
  // Aliases within the bound are read as written.
  write_text(dir.file("ok.yaml"),
             "checkpoint: m\nplacement: explicit\nplacement_map: [&l [[0], [1, 0]], *l]\n");
  const auto c = runtime::RunConfig::from_yaml_file(dir.file("ok.yaml"));
  EXPECT_EQ(c.placement_map,
            (std::vector<std::vector<std::vector<int>>>{{{0}, {1, 0}}, {{0}, {1, 0}}}));
}

TEST(RunConfig, ShippedConfigsAreValid) {
  for (const char* name : {"tiny_a.yaml", "tiny_b.yaml", "tiny_c_explicit.yaml",
                           "mixtral-8x7b.yaml", "synthetic-mixtral-8x7b.yaml"}) {
    const std::string path = std::string(MOE_CONFIGS_DIR) + "/" + name;
    EXPECT_NO_THROW(runtime::RunConfig::from_yaml_file(path).validate()) << path;
  }
}

}  // namespace
}  // namespace moe::test
