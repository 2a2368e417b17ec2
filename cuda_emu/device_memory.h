#pragma once
// The emulated device's memory: host memory handed out by cudaMalloc (and pinned host memory by
// cudaMallocHost), each allocation kept in a table so that copies, frees and kernel pointer
// arguments are checked against it. Device allocations come from the host allocator, so
// AddressSanitizer puts its redzones around them: a kernel reading past its buffer is a
// heap-buffer-overflow. They are filled with a non-zero pattern (kFill), as a GPU's fresh memory
// is not zero: code that relies on zeroed memory shows.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace moe::emu {

constexpr unsigned char kFill = 0x7f;  // fp32 3.39e38, int32 2139062143: loud when read

struct Allocation {
  uintptr_t base = 0;
  size_t bytes = 0;
  bool device = true;  // false: pinned host memory (cudaMallocHost)
};

class DeviceMemory {
 public:
  explicit DeviceMemory(size_t capacity) : capacity_(capacity) {}
  ~DeviceMemory();

  // Null (and false) where the device's capacity would be passed.
  void* allocate(size_t bytes, bool device);
  // False where `p` is not the base of a live allocation of that kind.
  bool release(void* p, bool device);
  void release_all();

  // The allocation that holds [p, p + bytes) whole, or null. bytes 0 asks for p alone: inside
  // it, or (with `end_too`) one past its end, as a kernel's pointer argument may be. NOTES: a
  // host buffer may start exactly where an allocation ends, so only a kernel argument takes
  // the end.
  const Allocation* find(const void* p, size_t bytes = 0, bool end_too = false) const;
  // The allocation nearest below p, for saying where a stray pointer points.
  std::string describe(const void* p) const;

  size_t used() const { return used_; }
  size_t capacity() const { return capacity_; }

 private:
  size_t capacity_;
  size_t used_ = 0;
  std::map<uintptr_t, Allocation> table_;  // by base
};

}  // namespace moe::emu
