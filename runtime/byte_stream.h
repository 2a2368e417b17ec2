#pragma once
// A flat binary encoding for what the worker's ranks tell each other every step (the control
// rank 0 broadcasts, the reports it gathers): values copied as they are in memory, vectors and
// strings after their length. The ranks of one job run one build on one architecture, so no
// byte order or versioning is needed; a read past the end throws instead of reading garbage.
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/error.h"

namespace moe::runtime {

class ByteWriter {
 public:
  template <class T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    buf_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  template <class T>
  void put(const std::vector<T>& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put(uint64_t(v.size()));
    // An empty vector's data() may be null: memcpy's pointers must not be, even for 0 bytes.
    if (!v.empty()) buf_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  void put(const std::string& s) {
    put(uint64_t(s.size()));
    if (!s.empty()) buf_.append(s);
  }
  std::string& bytes() { return buf_; }

 private:
  std::string buf_;
};

class ByteReader {
 public:
  explicit ByteReader(const std::string& s) : p_(s.data()), end_(s.data() + s.size()) {}
  template <class T>
  T get() {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    take(&v, sizeof v);
    return v;
  }
  template <class T>
  std::vector<T> get_vector() {
    std::vector<T> v(size_t(length(sizeof(T))));
    take(v.data(), v.size() * sizeof(T));
    return v;
  }
  std::string get_string() {
    std::string s(size_t(length(1)), '\0');
    take(s.data(), s.size());
    return s;
  }
  bool done() const { return p_ == end_; }

 private:
  uint64_t length(size_t elem) {
    const uint64_t n = get<uint64_t>();
    MOE_CHECK(n <= uint64_t(end_ - p_) / elem, "byte stream: a length runs past the end");
    return n;
  }
  void take(void* out, size_t n) {
    MOE_CHECK(n <= size_t(end_ - p_), "byte stream: read past the end");
    if (n == 0) return;  // `out` may be an empty vector's null data()
    std::memcpy(out, p_, n);
    p_ += n;
  }
  const char* p_;
  const char* end_;
};

}  // namespace moe::runtime
