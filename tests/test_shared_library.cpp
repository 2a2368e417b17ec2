// Loading a library at run time (common/shared_library.h), as cuBLAS and NCCL are loaded: a
// library that is not on the loader's path is found in a fallback folder; a failed load names
// every attempt and the loader's reason; a missing entry point is named. dlerror() clears its
// message when read, so an error built by reading it twice crashed on a null string instead
// (and never tried the fallback): each case here failed that way before.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "common/error.h"
#include "common/shared_library.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(SharedLibrary, FallbackFolderIsTriedWhenTheLoaderPathHasNone) {
  void* h = dl_open(MOE_DL_PROBE_NAME, {"/nonexistent-folder", MOE_DL_PROBE_DIR}, "the probe",
                    "hint");
  ASSERT_NE(h, nullptr);
  auto fn = reinterpret_cast<int (*)()>(dl_symbol(h, "moe_dl_probe", MOE_DL_PROBE_NAME));
  EXPECT_EQ(fn(), 42);
  EXPECT_NE(dl_path_of(reinterpret_cast<const void*>(fn), "?").find(MOE_DL_PROBE_DIR),
            std::string::npos);
}

TEST(SharedLibrary, AFailedLoadNamesEveryAttemptAndTheHint) {
  const std::string e = error_of([] {
    dl_open("libmoe-no-such-library.so.7", {"/nonexistent-folder"}, "the library X",
            "put it on LD_LIBRARY_PATH");
  });
  EXPECT_NE(e.find("cannot load the library X (libmoe-no-such-library.so.7): "), std::string::npos)
      << e;
  EXPECT_NE(e.find("/nonexistent-folder/libmoe-no-such-library.so.7"), std::string::npos) << e;
  EXPECT_NE(e.find("put it on LD_LIBRARY_PATH"), std::string::npos) << e;
}

TEST(SharedLibrary, AMissingEntryPointIsNamed) {
  void* h = dl_open(MOE_DL_PROBE_NAME, {MOE_DL_PROBE_DIR}, "the probe", "hint");
  const std::string e = error_of([h] { dl_symbol(h, "cublasCreate_v2", "libprobe"); });
  EXPECT_NE(e.find("libprobe has no cublasCreate_v2: "), std::string::npos) << e;
}

}  // namespace
}  // namespace moe::test
