// libFuzzer harness: a sharded checkpoint's model.safetensors.index.json. The folder holds a
// config.json, two small valid shards (tensors "a" and "b" in model-00001-of-00002.safetensors,
// "c" in model-00002-of-00002.safetensors), a file that is not a safetensors file (notes.txt)
// and a sub-folder (sub/); the input becomes the index. Every tensor the index names that
// Checkpoint::open accepts is then fetched and read as fp32 through its shard, as a rank would.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "runtime/checkpoint.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace fs = std::filesystem;

// A safetensors file of F32 tensors with values 0, 1, 2, ... (the layout of the format: u64
// little-endian header length, the JSON header, the data).
void write_shard(const fs::path& path, const std::vector<std::pair<std::string, int>>& tensors) {
  std::string header = "{";
  std::string data;
  for (const auto& [name, n] : tensors) {
    const size_t begin = data.size();
    for (int i = 0; i < n; ++i) {
      const float v = float(i);
      data.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
    if (header.size() > 1) header += ",";
    header += "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(n) +
              "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(data.size()) +
              "]}";
  }
  header += "}";
  std::string file;
  for (int i = 0; i < 8; ++i) file += char(uint8_t(uint64_t(header.size()) >> (8 * i)));
  moe::fuzz::write_file(path, file + header + data);
}

const fs::path& model_dir() {
  static const fs::path dir = [] {
    const fs::path d = moe::fuzz::scratch_dir() / "model";
    fs::create_directories(d / "sub");
    moe::fuzz::write_file(d / "config.json", std::string("{\"model_type\": \"mixtral\"}"));
    moe::fuzz::write_file(d / "notes.txt", std::string("not a safetensors file\n"));
    write_shard(d / "model-00001-of-00002.safetensors", {{"a", 4}, {"b", 3}});
    write_shard(d / "model-00002-of-00002.safetensors", {{"c", 2}});
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = model_dir();
  moe::fuzz::write_file(dir / "model.safetensors.index.json", data, size);
  try {
    const auto ckpt = moe::runtime::Checkpoint::open(dir.string());
    for (const std::string& name : ckpt.tensor_names()) {
      try {
        const moe::runtime::TensorView t = ckpt.get(name);
        const std::vector<float> v = ckpt.read_f32(name, t.shape);
        if (v.size() != size_t(t.numel())) std::abort();
      } catch (const moe::InputError&) {
        // A tensor the index places in a shard that lacks it, or a shard that is no
        // safetensors file: refused when read, as documented.
      }
    }
  } catch (const moe::InputError&) {
  }
  return 0;
}
