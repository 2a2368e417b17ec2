#include "common/shared_library.h"

#include <dlfcn.h>

#include "common/error.h"

namespace moe {

namespace {
// NOTES: dlerror() clears what it returns, so a second call gives null: read it once.
std::string dl_error() {
  const char* e = dlerror();
  return e ? e : "no reason given";
}
}  // namespace

void* dl_open(const std::string& soname, const std::vector<std::string>& fallback_dirs,
              const std::string& what, const std::string& hint) {
  void* handle = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle) return handle;
  std::string why = dl_error();
  for (const std::string& dir : fallback_dirs) {
    const std::string path = dir + "/" + soname;
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle) return handle;
    why += "; " + dl_error();
  }
  MOE_THROW("cannot load " + what + " (" + soname + "): " + why + "; " + hint);
}

void* dl_symbol(void* handle, const char* symbol, const std::string& library) {
  (void)dlerror();  // clear: a symbol may legitimately be null
  void* sym = dlsym(handle, symbol);
  if (!sym) MOE_THROW(library + " has no " + symbol + ": " + dl_error());
  return sym;
}

std::string dl_path_of(const void* addr, const std::string& otherwise) {
  Dl_info info{};
  return dladdr(addr, &info) && info.dli_fname ? info.dli_fname : otherwise;
}

}  // namespace moe
