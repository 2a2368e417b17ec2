#pragma once
// What the harnesses share: a scratch folder for the parsers that read files by path, on tmpfs
// where there is one (a harness writes its input there on every run), removed at exit.
//
// A harness catches moe::InputError only: that is how every parser here refuses bad input.
// Anything else escaping (a JSON or YAML library exception, std::out_of_range, a crash, a
// sanitizer report, a leak, a hang) is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace moe::fuzz {

// Under $MOE_FUZZ_SCRATCH where set (scripts/fuzz.sh points it at a folder it removes, so even
// a crashed run leaves nothing behind), else /dev/shm, else the temporary folder.
inline const std::filesystem::path& scratch_dir() {
  // Held by a pointer that is never freed: the atexit handler runs after static destructors of
  // objects whose initialization it began inside of.
  static const std::filesystem::path* dir = [] {
    std::error_code ec;
    std::filesystem::path base;
    if (const char* env = std::getenv("MOE_FUZZ_SCRATCH"); env && *env)
      base = env;
    else if (std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0)
      base = "/dev/shm";
    else
      base = std::filesystem::temp_directory_path();
    std::string tmpl = (base / "moe-fuzz-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) {
      std::perror(("moe fuzz: mkdtemp " + tmpl).c_str());
      std::abort();
    }
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(*dir, ec);
    });
    return new std::filesystem::path(tmpl);
  }();
  return *dir;
}

// Replaces the file's contents with the input's bytes.
inline void write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(("moe fuzz: writing " + path.string()).c_str());
    std::abort();
  }
}

inline void write_file(const std::filesystem::path& path, const std::string& text) {
  write_file(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

}  // namespace moe::fuzz
