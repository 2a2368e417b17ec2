#pragma once
// Libraries loaded at run time with dlopen (cuBLAS, NCCL), with errors that say what was tried:
// each attempt's path and the loader's own message.
#include <string>
#include <vector>

namespace moe {

// dlopen(soname) from the loader's path (LD_LIBRARY_PATH, the cache), else from each folder of
// `fallback_dirs` in turn, RTLD_NOW | RTLD_LOCAL. Throws moe::Error
// "cannot load <what> (<soname>): <each attempt and why it failed>; <hint>".
void* dl_open(const std::string& soname, const std::vector<std::string>& fallback_dirs,
              const std::string& what, const std::string& hint);

// The address of `symbol` in `handle`; throws moe::Error "<library> has no <symbol>: <why>".
void* dl_symbol(void* handle, const char* symbol, const std::string& library);

// The file the loader mapped the object holding `addr` from, or `otherwise`.
std::string dl_path_of(const void* addr, const std::string& otherwise);

}  // namespace moe
