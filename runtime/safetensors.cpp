#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace moe::runtime {

namespace {

using nlohmann::json;

std::string where(const std::string& path, const std::string& tensor) {
  return path + ": tensor '" + tensor + "'";
}

// Closes the descriptor on every path out of open(); the mapping outlives it.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

DType parse_dtype(const json& v, const std::string& path, const std::string& name) {
  if (!v.is_string()) {
    throw InputError(where(path, name) + ": 'dtype' is " + v.dump() +
                     ", expected a string (F32, F16 or BF16)");
  }
  const std::string s = v.get<std::string>();
  const auto t = parse_safetensors_dtype(s);
  if (!t) {
    throw InputError(where(path, name) + ": unsupported dtype '" + s +
                     "' (supported: F32, F16, BF16)");
  }
  return *t;
}

std::vector<int64_t> parse_shape(const json& v, const std::string& path, const std::string& name) {
  if (!v.is_array()) {
    throw InputError(where(path, name) + ": 'shape' is " + v.dump() +
                     ", expected an array of non-negative integers");
  }
  std::vector<int64_t> shape;
  shape.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const json& d = v[i];
    // nlohmann stores non-negative literals as unsigned and negative ones as signed.
    if (d.is_number_unsigned()) {
      const uint64_t u = d.get<uint64_t>();
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) {
        throw InputError(where(path, name) + ": dim " + std::to_string(i) + " is " +
                         std::to_string(u) + ", too large for int64");
      }
      shape.push_back(int64_t(u));
    } else {  // negative, fractional, or not a number at all
      throw InputError(where(path, name) + ": dim " + std::to_string(i) + " is " + d.dump() +
                       ", expected a non-negative integer (shape " + v.dump() + ")");
    }
  }
  return shape;
}

std::pair<size_t, size_t> parse_offsets(const json& v, const std::string& path,
                                        const std::string& name) {
  if (!v.is_array() || v.size() != 2 || !v[0].is_number_unsigned() || !v[1].is_number_unsigned()) {
    throw InputError(where(path, name) + ": 'data_offsets' is " + v.dump() +
                     ", expected [begin, end] with two non-negative integers");
  }
  const uint64_t b = v[0].get<uint64_t>(), e = v[1].get<uint64_t>();
  if (b > std::numeric_limits<size_t>::max() || e > std::numeric_limits<size_t>::max()) {
    throw InputError(where(path, name) + ": 'data_offsets' " + v.dump() + " too large");
  }
  return {size_t(b), size_t(e)};
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

void SafetensorsFile::release(const TensorView& t) const {
  if (!map_ || t.nbytes == 0) return;
  const auto page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const auto lo = reinterpret_cast<uintptr_t>(t.data) / page * page;
  const auto hi = reinterpret_cast<uintptr_t>(t.data) + t.nbytes;
  const auto map_lo = reinterpret_cast<uintptr_t>(map_);
  // A read-only private mapping: dropping its pages loses nothing (they are the file's).
  ::madvise(reinterpret_cast<void*>(std::max(lo, map_lo)), hi - std::max(lo, map_lo),
            MADV_DONTNEED);
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;  // owns the mapping from here on, so every throw below unmaps it
  f.path_ = path;

  Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) {
    throw InputError(path + ": cannot open safetensors file: " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) {
    throw InputError(path + ": cannot stat safetensors file: " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    throw InputError(path + ": expected a regular safetensors file, found something else");
  }
  const size_t size = size_t(st.st_size);
  if (size < 8) {
    throw InputError(path + ": file is " + std::to_string(size) +
                     " bytes, expected at least 8 (the header length) for a safetensors file");
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (m == MAP_FAILED) {
    throw InputError(path + ": mmap of " + std::to_string(size) +
                     " bytes failed: " + std::strerror(errno));
  }
  f.map_ = m;
  f.map_size_ = size;
  const auto* bytes = static_cast<const uint8_t*>(m);

  // The header length is little-endian on disk whatever the host; assemble it byte by byte.
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > size - 8) {
    throw InputError(path + ": header length " + std::to_string(header_len) +
                     " runs past the end of the file (file is " + std::to_string(size) +
                     " bytes, so the header can be at most " + std::to_string(size - 8) + ")");
  }
  const char* hdr = reinterpret_cast<const char*>(bytes + 8);
  f.data_ = bytes + 8 + header_len;
  f.data_size_ = size - 8 - size_t(header_len);

  // The JSON parser takes a NUL byte for the end of its input and would accept whatever
  // follows it; the format pads a header with spaces, never NULs.
  if (const void* nul = std::memchr(hdr, '\0', size_t(header_len)))
    throw InputError(path + ": safetensors header holds a NUL byte at offset " +
                     std::to_string(static_cast<const char*>(nul) - hdr + 8) +
                     ", expected JSON text padded with spaces");
  json header;
  // The JSON parser keeps the last of two equal keys: a header naming a tensor twice would load
  // one of them silently, so each name of the top level is counted as it is parsed.
  std::set<std::string> names;
  std::string twice;
  const json::parser_callback_t once = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && !names.insert(parsed.get<std::string>()).second &&
        twice.empty())
      twice = parsed.get<std::string>();
    return true;
  };
  try {
    header = json::parse(hdr, hdr + header_len, once);
  } catch (const json::parse_error& e) {
    throw InputError(path + ": safetensors header is not valid JSON: " + e.what());
  } catch (const json::out_of_range& e) {  // a number past a double's range: not a parse_error
    throw InputError(path + ": safetensors header holds a number out of range: " + e.what() +
                     " (expected numbers a double can hold)");
  }
  if (!twice.empty())
    throw InputError(path + ": the safetensors header names '" + twice +
                     "' twice (expected each tensor once)");
  if (!header.is_object()) {
    throw InputError(path + ": safetensors header is a JSON " + std::string(header.type_name()) +
                     ", expected an object of tensor name -> {dtype, shape, data_offsets}");
  }

  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) {
        throw InputError(path + ": '__metadata__' is a JSON " + std::string(v.type_name()) +
                         ", expected an object of string -> string");
      }
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) {
          throw InputError(path + ": '__metadata__' key '" + k + "' is " + s.dump() +
                           ", expected a string");
        }
        f.metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) {
      throw InputError(where(path, name) + ": entry is " + v.dump() +
                       ", expected an object with dtype, shape and data_offsets");
    }
    for (const char* key : {"dtype", "shape", "data_offsets"}) {
      if (!v.contains(key)) {
        throw InputError(where(path, name) + ": entry has no '" + key +
                         "' (expected dtype, shape and data_offsets)");
      }
    }
    Entry e;
    e.dtype = parse_dtype(v["dtype"], path, name);
    e.shape = parse_shape(v["shape"], path, name);
    std::tie(e.begin, e.end) = parse_offsets(v["data_offsets"], path, name);

    // Multiply with overflow checks: a hostile shape must not wrap around to a small size.
    uint64_t nbytes = dtype_size(e.dtype);
    bool overflow = false;
    for (int64_t d : e.shape) overflow |= __builtin_mul_overflow(nbytes, uint64_t(d), &nbytes);
    const std::string shape_s = TensorView{name, e.dtype, e.shape}.shape_str();
    if (e.end < e.begin) {
      throw InputError(where(path, name) + ": data_offsets [" + std::to_string(e.begin) + ", " +
                       std::to_string(e.end) + "] end before begin, expected begin <= end");
    }
    if (overflow || nbytes != e.end - e.begin) {
      throw InputError(where(path, name) + ": shape " + shape_s + " x " + dtype_name(e.dtype) +
                       " (" + std::to_string(dtype_size(e.dtype)) + " bytes) needs " +
                       (overflow ? std::string("more than 2^64") : std::to_string(nbytes)) +
                       " bytes, but data_offsets [" + std::to_string(e.begin) + ", " +
                       std::to_string(e.end) + "] span " + std::to_string(e.end - e.begin));
    }
    if (e.end > f.data_size_) {
      throw InputError(where(path, name) + ": data_offsets [" + std::to_string(e.begin) + ", " +
                       std::to_string(e.end) + "] run past the data section, which is " +
                       std::to_string(f.data_size_) + " bytes");
    }
    f.entries_.emplace(name, std::move(e));
  }

  // Sorted by begin, any overlap shows between a range and the furthest-reaching range before
  // it. Empty ranges hold no bytes and so overlap nothing.
  std::vector<std::pair<const std::string*, const Entry*>> order;
  order.reserve(f.entries_.size());
  for (const auto& [name, e] : f.entries_) {
    if (e.end > e.begin) order.emplace_back(&name, &e);
  }
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  const std::pair<const std::string*, const Entry*>* reach = nullptr;
  for (const auto& cur : order) {
    if (reach && reach->second->end > cur.second->begin) {
      const Entry& a = *reach->second;
      const Entry& b = *cur.second;
      throw InputError(path + ": tensors '" + *reach->first + "' [" + std::to_string(a.begin) +
                       ", " + std::to_string(a.end) + ") and '" + *cur.first + "' [" +
                       std::to_string(b.begin) + ", " + std::to_string(b.end) +
                       ") overlap; expected disjoint byte ranges");
    }
    if (!reach || cur.second->end > reach->second->end) reach = &cur;
  }
  return f;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept
    : path_(std::move(o.path_)),
      map_(std::exchange(o.map_, nullptr)),
      map_size_(std::exchange(o.map_size_, 0)),
      data_(std::exchange(o.data_, nullptr)),
      data_size_(std::exchange(o.data_size_, 0)),
      entries_(std::move(o.entries_)),
      metadata_(std::move(o.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_size_);
    path_ = std::move(o.path_);
    map_ = std::exchange(o.map_, nullptr);
    map_size_ = std::exchange(o.map_size_, 0);
    data_ = std::exchange(o.data_, nullptr);
    data_size_ = std::exchange(o.data_size_, 0);
    entries_ = std::move(o.entries_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

TensorView SafetensorsFile::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    throw InputError(path_ + ": no tensor named '" + name + "' (the file holds " +
                     std::to_string(entries_.size()) + " tensors)");
  }
  const Entry& e = it->second;
  TensorView v;
  v.name = name;
  v.dtype = e.dtype;
  v.shape = e.shape;
  v.data = data_ + e.begin;
  v.nbytes = e.end - e.begin;
  return v;
}

}  // namespace moe::runtime
