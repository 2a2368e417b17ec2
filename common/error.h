#pragma once
// One exception type for the whole project. It carries where it was raised and, for library
// calls, the call as text and the library's own error name, so a log line alone says what broke.
#include <stdexcept>
#include <string>

namespace moe {

class Error : public std::runtime_error {
 public:
  Error(const std::string& what, const char* file, int line)
      : std::runtime_error(what + " (" + file + ":" + std::to_string(line) + ")") {}
};

// Bad input from a user (a file, a flag, a request): the message is meant for them, so no
// source location is appended.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace moe

#define MOE_THROW(msg) throw ::moe::Error((msg), __FILE__, __LINE__)
#define MOE_CHECK(cond, msg)                                                  \
  do {                                                                        \
    if (!(cond)) MOE_THROW(std::string("check failed: " #cond ": ") + (msg)); \
  } while (0)
