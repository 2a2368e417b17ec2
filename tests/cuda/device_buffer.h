#pragma once
// Device memory for the CUDA tests: a typed buffer made from (or read back to) a host vector,
// freed on scope exit. Copies are synchronous (legacy stream); a test syncs its own stream
// before reading back.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "common/check.h"

namespace moe::test {

template <typename T>
class DeviceVector {
 public:
  // poison: every byte 0xff first (NaN as floats), so an element nothing wrote shows.
  explicit DeviceVector(size_t n, bool poison = false) : n_(n) {
    CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)));
    if (poison) CUDA_CHECK(cudaMemset(p_, 0xff, std::max<size_t>(n, 1) * sizeof(T)));
  }
  explicit DeviceVector(const std::vector<T>& h) : DeviceVector(h.size()) {
    CUDA_CHECK(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceVector() { cudaFree(p_); }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;
  T* get() const { return p_; }
  std::vector<T> to_host() const {
    std::vector<T> h(n_);
    CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace moe::test
