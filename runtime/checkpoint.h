#pragma once
// A Hugging Face model folder: config.json plus either model.safetensors or sharded
// model-0000k-of-0000n.safetensors listed by model.safetensors.index.json. Shards are opened
// lazily; reads are counted so tests can prove a rank touched only the tensors it holds.
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/safetensors.h"

namespace moe::runtime {

class Checkpoint {
 public:
  // Throws InputError when the folder, config.json or the weights are missing or malformed.
  static Checkpoint open(const std::string& dir);
  // The folder's config.json only, with no weights (for synthetic weights): has() is false and
  // get() throws for every tensor.
  static Checkpoint open_config_only(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& config_json() const { return config_; }
  bool sharded() const { return sharded_; }

  bool has(const std::string& name) const { return where_.count(name) != 0; }
  std::vector<std::string> tensor_names() const;  // sorted
  // The tensor, from whichever shard holds it. Throws InputError naming the folder and the
  // tensor when it is not there.
  TensorView get(const std::string& name) const;

  // The tensor widened to fp32, after checking that its shape is `expected` exactly; a mismatch
  // throws InputError naming the tensor, its shape and the expected shape. Counts its bytes.
  std::vector<float> read_f32(const std::string& name, const std::vector<int64_t>& expected) const;

  // Bytes of tensor data handed out by read_f32 so far (what this process actually touched).
  size_t bytes_read() const { return bytes_read_; }

 private:
  Checkpoint() = default;
  const SafetensorsFile& shard(const std::string& file) const;

  std::string dir_;
  nlohmann::json config_;
  bool sharded_ = false;
  std::map<std::string, std::string> where_;  // tensor name -> shard file name
  mutable std::map<std::string, std::unique_ptr<SafetensorsFile>> shards_;
  mutable size_t bytes_read_ = 0;
};

}  // namespace moe::runtime
