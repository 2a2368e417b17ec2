#include "kernels/cuda/cublas_library.h"

#include <dlfcn.h>

#include <memory>
#include <mutex>

#include "common/error.h"

namespace moe::kernels {

namespace {

constexpr const char* kSoname = "libcublas.so.13";

template <class Fn>
void bind(void* handle, Fn& fn, const char* name) {
  void* sym = dlsym(handle, name);
  if (!sym) MOE_THROW(std::string(kSoname) + " has no " + name + ": " + (dlerror() ? dlerror() : "not found"));
  fn = reinterpret_cast<Fn>(sym);
}

CublasLibrary load() {
  // RTLD_LOCAL: cuBLAS's symbols stay out of the global scope.
  void* handle = dlopen(kSoname, RTLD_NOW | RTLD_LOCAL);
  std::string why = handle ? "" : (dlerror() ? dlerror() : "not found");
#ifdef MOE_CUBLAS_DIR
  if (!handle) {  // the toolkit the binaries were built with
    handle = dlopen((std::string(MOE_CUBLAS_DIR) + "/" + kSoname).c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) why += std::string("; ") + (dlerror() ? dlerror() : "not found");
  }
#endif
  if (!handle)
    MOE_THROW(std::string("cannot load cuBLAS (") + kSoname + "): " + why +
              "; put the folder that holds it on LD_LIBRARY_PATH");
  CublasLibrary lib{};
  bind(handle, lib.create, "cublasCreate_v2");
  bind(handle, lib.destroy, "cublasDestroy_v2");
  bind(handle, lib.set_stream, "cublasSetStream_v2");
  bind(handle, lib.set_math_mode, "cublasSetMathMode");
  bind(handle, lib.gemm_ex, "cublasGemmEx");
  bind(handle, lib.status_name, "cublasGetStatusName");
  bind(handle, lib.status_string, "cublasGetStatusString");
  Dl_info info{};
  lib.path = dladdr(reinterpret_cast<void*>(lib.gemm_ex), &info) && info.dli_fname
                 ? info.dli_fname
                 : kSoname;
  // Never dlclose'd: handles may be destroyed during exit.
  return lib;
}

}  // namespace

void CublasLibrary::check(cublasStatus_t st, const char* call) const {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  MOE_THROW(std::string(call) + " failed: " + status_name(st) + ": " + status_string(st));
}

const CublasLibrary& cublas_library() {
  // A failed load is not cached: the error is thrown again, with its message, on the next call.
  static std::mutex mu;
  static std::unique_ptr<CublasLibrary> lib;
  std::lock_guard<std::mutex> lock(mu);
  if (!lib) lib = std::make_unique<CublasLibrary>(load());
  return *lib;
}

}  // namespace moe::kernels
