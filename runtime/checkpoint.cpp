#include "runtime/checkpoint.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace moe::runtime {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

nlohmann::json read_json(const fs::path& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot read " + what);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  // The JSON parser takes a NUL byte for the end of its input and would accept whatever
  // follows it.
  if (const size_t nul = text.find('\0'); nul != std::string::npos)
    throw InputError(path.string() + ": " + what + " holds a NUL byte at offset " +
                     std::to_string(nul) + ", expected JSON text");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw InputError(path.string() + ": " + what + " is not valid JSON: " + e.what());
  } catch (const nlohmann::json::out_of_range& e) {  // a number past a double's range
    throw InputError(path.string() + ": " + what + " holds a number out of range: " + e.what() +
                     " (expected numbers a double can hold)");
  }
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace

Checkpoint Checkpoint::open_config_only(const std::string& dir) {
  Checkpoint c;
  c.dir_ = dir;
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::exists(root, ec)) {
    throw InputError("checkpoint folder '" + dir + "' does not exist");
  }
  if (!fs::is_directory(root, ec)) {
    throw InputError("checkpoint path '" + dir +
                     "' is not a folder (expected a Hugging Face model folder with config.json)");
  }

  const fs::path config = root / "config.json";
  if (!fs::is_regular_file(config, ec)) {
    throw InputError(config.string() + ": not found (a model folder needs config.json)");
  }
  c.config_ = read_json(config, "config.json");
  if (!c.config_.is_object()) {
    throw InputError(config.string() + ": is a JSON " + std::string(c.config_.type_name()) +
                     ", expected an object");
  }

  return c;
}

Checkpoint Checkpoint::open(const std::string& dir) {
  Checkpoint c = open_config_only(dir);
  const fs::path root(dir);
  std::error_code ec;
  const fs::path index = root / kIndexFile;
  const fs::path single = root / kSingleFile;
  if (fs::exists(index, ec)) {
    c.sharded_ = true;
    const nlohmann::json j = read_json(index, kIndexFile);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      throw InputError(index.string() +
                       ": expected an object with 'weight_map' mapping tensor name -> shard file");
    }
    for (const auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string()) {
        throw InputError(index.string() + ": weight_map entry for tensor '" + name + "' is " +
                         file.dump() + ", expected a shard file name");
      }
      const std::string shard = file.get<std::string>();
      // Shards live in the model folder itself: a path could read outside it.
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        throw InputError(index.string() + ": weight_map entry for tensor '" + name + "' is '" +
                         shard + "', expected a file name inside the model folder");
      // Checked now rather than at first read so a truncated download fails at start-up, not
      // halfway through loading the layer that lives in the missing shard.
      if (!c.shards_.count(shard)) {
        if (!fs::is_regular_file(root / shard, ec)) {
          throw InputError(index.string() + ": shard '" + shard + "' (holding tensor '" + name +
                           "') not found in " + dir);
        }
        c.shards_.emplace(shard, nullptr);  // opened on first get()
      }
      c.where_[name] = shard;
    }
  } else if (fs::exists(single, ec)) {
    auto f = std::make_unique<SafetensorsFile>(SafetensorsFile::open(single.string()));
    for (const auto& name : f->names()) c.where_[name] = kSingleFile;
    c.shards_.emplace(kSingleFile, std::move(f));
  } else {
    throw InputError("checkpoint folder '" + dir + "' has neither " + kSingleFile + " nor " +
                     kIndexFile);
  }
  return c;
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

const SafetensorsFile& Checkpoint::shard(const std::string& file) const {
  auto& slot = shards_[file];
  if (!slot) {
    const std::string path = (fs::path(dir_) / file).string();
    slot = std::make_unique<SafetensorsFile>(SafetensorsFile::open(path));
  }
  return *slot;
}

TensorView Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    throw InputError("tensor '" + name + "' not found in checkpoint " + dir_ + " (it holds " +
                     std::to_string(where_.size()) + " tensors)");
  }
  const SafetensorsFile& f = shard(it->second);
  if (!f.contains(name)) {
    throw InputError((fs::path(dir_) / kIndexFile).string() + " places tensor '" + name +
                     "' in shard '" + it->second + "', but " + f.path() + " does not contain it");
  }
  return f.get(name);
}

std::vector<float> Checkpoint::read_f32(const std::string& name,
                                        const std::vector<int64_t>& expected) const {
  const TensorView t = get(name);
  if (t.shape != expected) {
    throw InputError("tensor '" + name + "' in " + (fs::path(dir_) / where_.at(name)).string() +
                     " has shape " + t.shape_str() + ", expected " + shape_str(expected) +
                     " from config.json");
  }
  const size_t n = size_t(t.numel());
  std::vector<float> out(n);
  if (reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) == 0) {
    convert_to_f32(t.data, t.dtype, n, out.data());
  } else {
    // The format does not promise aligned offsets and convert_to_f32 reads whole elements, so
    // a misaligned tensor goes through an aligned copy first.
    std::vector<uint32_t> aligned((t.nbytes + 3) / 4);
    std::memcpy(aligned.data(), t.data, t.nbytes);
    convert_to_f32(aligned.data(), t.dtype, n, out.data());
  }
  bytes_read_ += t.nbytes;
  shard(where_.at(name)).release(t);  // the converted copy is what stays
  return out;
}

}  // namespace moe::runtime
