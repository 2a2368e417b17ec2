#include "cuda_emu/device_memory.h"

#include <cstdlib>
#include <cstring>
#include <iterator>

namespace moe::emu {

namespace {
// cudaMalloc's alignment.
constexpr size_t kAlign = 256;
}  // namespace

DeviceMemory::~DeviceMemory() { release_all(); }

void* DeviceMemory::allocate(size_t bytes, bool device) {
  if (device && bytes > capacity_ - used_) return nullptr;
  void* p = nullptr;
  // At least one byte, so that every allocation has an address of its own.
  if (posix_memalign(&p, kAlign, bytes == 0 ? 1 : bytes) != 0) return nullptr;
  std::memset(p, kFill, bytes);
  table_[reinterpret_cast<uintptr_t>(p)] = Allocation{reinterpret_cast<uintptr_t>(p), bytes, device};
  if (device) used_ += bytes;
  return p;
}

bool DeviceMemory::release(void* p, bool device) {
  auto it = table_.find(reinterpret_cast<uintptr_t>(p));
  if (it == table_.end() || it->second.device != device) return false;
  if (device) used_ -= it->second.bytes;
  table_.erase(it);
  std::free(p);
  return true;
}

void DeviceMemory::release_all() {
  for (auto& [base, a] : table_) std::free(reinterpret_cast<void*>(base));
  table_.clear();
  used_ = 0;
}

const Allocation* DeviceMemory::find(const void* p, size_t bytes, bool end_too) const {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = table_.upper_bound(a);
  if (it == table_.begin()) return nullptr;
  --it;
  const Allocation& al = it->second;
  if (a < al.base || a - al.base > al.bytes || bytes > al.bytes - (a - al.base)) return nullptr;
  if (a - al.base == al.bytes && (bytes > 0 || !end_too) && al.bytes > 0) return nullptr;
  return &al;
}

std::string DeviceMemory::describe(const void* p) const {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = table_.upper_bound(a);
  if (it == table_.begin()) return "below every allocation the device has";
  const Allocation& al = std::prev(it)->second;
  const uintptr_t off = a - al.base;
  return "offset " + std::to_string(off) + " of a " + std::to_string(al.bytes) + "-byte " +
         (al.device ? "device" : "pinned host") + " allocation";
}

}  // namespace moe::emu
