#pragma once
// What the file-reading tests share: a scratch folder per test, writers for raw and
// safetensors files, and checks on the message of an expected moe::InputError.
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace moe::test {

// A fresh folder per test, named after the process and the test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("moe_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
             (info ? info->name() : "x"));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// The safetensors layout: u64 little-endian header length, the header, the data section.
inline void write_raw(const std::string& path, const std::string& header,
                      const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(char(uint8_t(n >> (8 * i))));
  out.write(header.data(), std::streamsize(header.size()));
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
}

struct Tensor {
  std::string name;
  std::string dtype;  // as the header spells it: "F32", "F16", "BF16"
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

template <class T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Lays the tensors out back to back and pads the header with spaces to a multiple of 8 bytes,
// as the reference writer does, so that tensors listed widest dtype first stay aligned.
// `metadata` becomes "__metadata__" unless empty; `extra_pad` more spaces misalign the data
// section on purpose.
inline void write_safetensors(const std::string& path, const std::vector<Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {},
                              size_t extra_pad = 0) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<uint8_t> data;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data.insert(data.end(), t.bytes.begin(), t.bytes.end());
  }
  std::string h = header.dump();
  h.resize((h.size() + 7) / 8 * 8 + extra_pad, ' ');
  write_raw(path, h, data);
}

// The message of the InputError that `f` throws, or a test failure.
template <class F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected moe::InputError, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected moe::InputError, nothing was thrown";
  return "";
}

// Success when `msg` contains every one of `parts`; otherwise says which one it lacks.
inline ::testing::AssertionResult mentions(const std::string& msg,
                                           std::initializer_list<std::string> parts) {
  for (const auto& p : parts) {
    if (msg.find(p) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "message \"" << msg << "\" does not mention \"" << p << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace moe::test
