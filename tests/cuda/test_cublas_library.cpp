// cuBLAS is loaded when a CUDA backend is made, not linked (kernels/cuda/cublas_library.h): a
// process maps no libcublas until then; the loader then finds it and binds every entry point,
// and a failed call's error names the call and cuBLAS's status. None of it needs a GPU.
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "kernels/cuda/cublas_library.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

bool mapped(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  std::stringstream all;
  all << maps.rdbuf();
  return all.str().find(name) != std::string::npos;
}

TEST(CublasLibrary, LoadedOnFirstUseWithEveryEntryPoint) {
  EXPECT_FALSE(mapped("libcublas")) << "cuBLAS mapped before any CUDA backend was made";
  const auto& lib = kernels::cublas_library();
  EXPECT_TRUE(mapped(kernels::cublas_soname()));
  EXPECT_NE(lib.path.find(kernels::cublas_soname()), std::string::npos) << lib.path;
  for (const void* fn : {(const void*)lib.create, (const void*)lib.destroy, (const void*)lib.set_stream,
                         (const void*)lib.set_math_mode, (const void*)lib.gemm_ex,
                         (const void*)lib.status_name, (const void*)lib.status_string})
    EXPECT_NE(fn, nullptr);
  EXPECT_EQ(&lib, &kernels::cublas_library()) << "loaded twice";
  EXPECT_STREQ(lib.status_name(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
}

TEST(CublasLibrary, AFailedCallNamesTheCallAndTheStatus) {
  const auto& lib = kernels::cublas_library();
  EXPECT_NO_THROW(lib.check(CUBLAS_STATUS_SUCCESS, "cublasGemmEx"));
  try {
    lib.check(CUBLAS_STATUS_NOT_INITIALIZED, "cublasCreate");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cublasCreate failed: CUBLAS_STATUS_NOT_INITIALIZED: "), std::string::npos) << what;
  }
}

// A library without cuBLAS's entry points is refused naming the first one it lacks (libm is on
// every machine); before, the second dlerror() of the message was null and the process died.
TEST(CublasLibrary, ALibraryWithoutTheEntryPointsIsRefusedNamingOne) {
  try {
    kernels::load_cublas("libm.so.6", {});
    FAIL() << "libm taken for cuBLAS";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("libm.so.6 has no cublasCreate_v2"), std::string::npos) << what;
  }
}

TEST(CublasLibrary, AMissingLibraryNamesEveryPlaceTried) {
  try {
    kernels::load_cublas("libcublas-not-here.so.13", {"/nonexistent-toolkit/lib"});
    FAIL() << "a library that does not exist was loaded";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cannot load cuBLAS (libcublas-not-here.so.13)"), std::string::npos)
        << what;
    EXPECT_NE(what.find("/nonexistent-toolkit/lib/libcublas-not-here.so.13"), std::string::npos)
        << what;
  }
}

}  // namespace
}  // namespace moe::test
