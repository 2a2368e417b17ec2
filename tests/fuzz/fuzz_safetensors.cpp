// libFuzzer harness: SafetensorsFile::open on arbitrary bytes (the 8-byte header length, the
// JSON header, every entry's dtype, shape and data_offsets, overlap of the ranges), then every
// tensor it accepted read end to end, so a range that passed the checks but lies outside the
// mapping shows as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/dtype.h"
#include "common/error.h"
#include "runtime/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = (moe::fuzz::scratch_dir() / "model.safetensors").string();
  moe::fuzz::write_file(path, data, size);
  try {
    const auto f = moe::runtime::SafetensorsFile::open(path);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
    const size_t data_section = size - 8 - size_t(header_len);
    for (const std::string& name : f.names()) {
      const moe::runtime::TensorView t = f.get(name);
      // Promised by open(): shape x dtype size is the byte range, and it lies in the data section.
      if (t.nbytes != size_t(t.numel()) * moe::dtype_size(t.dtype) || t.nbytes > data_section)
        std::abort();
      const auto* bytes = static_cast<const volatile uint8_t*>(t.data);
      uint8_t sum = 0;
      for (size_t i = 0; i < t.nbytes; ++i) sum += bytes[i];
      (void)sum;
      f.release(t);
    }
    for (const auto& [k, v] : f.metadata()) (void)(k.size() + v.size());
  } catch (const moe::InputError&) {
    // Refused with a message: what every bad input must end in.
  }
  return 0;
}
