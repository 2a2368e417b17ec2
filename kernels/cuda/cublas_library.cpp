#include "kernels/cuda/cublas_library.h"

#include <memory>
#include <mutex>

#include "common/error.h"
#include "common/shared_library.h"

namespace moe::kernels {

namespace {

// The emulation build loads its own cuBLAS, under a name the real one cannot shadow.
#ifndef MOE_CUBLAS_SONAME
#define MOE_CUBLAS_SONAME "libcublas.so.13"
#endif
constexpr const char* kSoname = MOE_CUBLAS_SONAME;

template <class Fn>
void bind(void* handle, Fn& fn, const char* name, const std::string& soname) {
  fn = reinterpret_cast<Fn>(dl_symbol(handle, name, soname));
}

std::vector<std::string> fallback_dirs() {
#ifdef MOE_CUBLAS_DIR
  return {MOE_CUBLAS_DIR};  // the toolkit the binaries were built with
#else
  return {};
#endif
}

}  // namespace

const char* cublas_soname() { return kSoname; }

CublasLibrary load_cublas(const std::string& soname, const std::vector<std::string>& dirs) {
  void* handle = dl_open(soname, dirs, "cuBLAS", "put the folder that holds it on LD_LIBRARY_PATH");
  CublasLibrary lib{};
  bind(handle, lib.create, "cublasCreate_v2", soname);
  bind(handle, lib.destroy, "cublasDestroy_v2", soname);
  bind(handle, lib.set_stream, "cublasSetStream_v2", soname);
  bind(handle, lib.set_math_mode, "cublasSetMathMode", soname);
  bind(handle, lib.gemm_ex, "cublasGemmEx", soname);
  bind(handle, lib.status_name, "cublasGetStatusName", soname);
  bind(handle, lib.status_string, "cublasGetStatusString", soname);
  lib.path = dl_path_of(reinterpret_cast<const void*>(lib.gemm_ex), soname);
  // Never dlclose'd: handles may be destroyed during exit.
  return lib;
}

void CublasLibrary::check(cublasStatus_t st, const char* call) const {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  MOE_THROW(std::string(call) + " failed: " + status_name(st) + ": " + status_string(st));
}

const CublasLibrary& cublas_library() {
  // A failed load is not cached: the error is thrown again, with its message, on the next call.
  static std::mutex mu;
  static std::unique_ptr<CublasLibrary> lib;
  std::lock_guard<std::mutex> lock(mu);
  if (!lib) lib = std::make_unique<CublasLibrary>(load_cublas(kSoname, fallback_dirs()));
  return *lib;
}

}  // namespace moe::kernels
