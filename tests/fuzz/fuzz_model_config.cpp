// libFuzzer harness: a model folder's config.json as the runtime reads it (Checkpoint's JSON
// reading, then ModelConfig::from_json with validate(), then the backends' limits). Accepted
// configs must keep the sizes validate() promises in range.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>

#include "common/error.h"
#include "runtime/checkpoint.h"
#include "runtime/model_config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path dir = [] {
    const auto d = moe::fuzz::scratch_dir() / "model";
    std::filesystem::create_directories(d);
    return d;
  }();
  moe::fuzz::write_file(dir / "config.json", data, size);
  try {
    const auto ckpt = moe::runtime::Checkpoint::open_config_only(dir.string());
    const auto c = moe::runtime::ModelConfig::from_json(ckpt.config_json(), "fuzz");
    // What validate() promises the rest of the runtime (model_config.h's NOTES).
    if (c.head_dim < 1 || c.num_attention_heads % c.num_key_value_heads != 0 ||
        c.num_experts_per_tok > c.num_local_experts || c.q_dim() < 1 || c.kv_dim() < 1)
      std::abort();
    for (const char* backend : {"cpu", "cuda"}) {
      try {
        c.check_supported(backend, "fuzz");
      } catch (const moe::InputError&) {
      }
    }
  } catch (const moe::InputError&) {
  }
  return 0;
}
