#pragma once
// One .safetensors file, memory-mapped. Opening parses and validates the header only; tensor
// bytes are touched when a caller reads them, so a rank that needs a few experts pages in only
// those. Every malformed input is refused with an InputError naming the file, the tensor and
// what was expected.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace moe::runtime {

// A tensor inside a mapped file; valid while the SafetensorsFile that made it is alive.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // [numel] of dtype, inside the mapping
  size_t nbytes = 0;

  int64_t numel() const;
  std::string shape_str() const;  // "[4, 8]"
};

class SafetensorsFile {
 public:
  // Maps `path` and validates its header: 8-byte little-endian header length within the file,
  // the header valid JSON, every entry with a known dtype, shape x dtype size equal to its byte
  // range, ranges inside the data section and not overlapping.
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&& o) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& o) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  std::vector<std::string> names() const;  // sorted
  // Throws InputError naming the file and the tensor when it is not there.
  TensorView get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Hands the pages under `t` (a tensor of this file) back to the kernel: read once and
  // converted, they would otherwise stay resident beside the converted copy until the file is
  // closed, doubling the peak memory of a load. A later read maps them in again from the file.
  void release(const TensorView& t) const;

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    size_t begin, end;  // byte offsets relative to the start of the data section
  };
  SafetensorsFile() = default;

  std::string path_;
  void* map_ = nullptr;  // whole file
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  size_t data_size_ = 0;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace moe::runtime
