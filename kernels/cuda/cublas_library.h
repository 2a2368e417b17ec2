#pragma once
// cuBLAS's entry points, loaded with dlopen("libcublas.so.13") the first time a CUDA backend is
// made, not linked: cuBLAS (with the cuBLASLt it pulls in) is about 140 MB of resident memory
// and a noticeable start-up once loaded (relocations, zeroed data), which every CPU rank, test
// and tool would otherwise pay. Only cublas_v2.h's types are used at build time.
#include <cublas_v2.h>

#include <string>
#include <vector>

namespace moe::kernels {

struct CublasLibrary {
  decltype(&::cublasCreate_v2) create;
  decltype(&::cublasDestroy_v2) destroy;
  decltype(&::cublasSetStream_v2) set_stream;
  decltype(&::cublasSetMathMode) set_math_mode;
  // Spelled out: C++ sees an inline overload of cublasGemmEx (the legacy cudaDataType compute
  // type) beside the library's.
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType, int lda,
                            const void* B, cudaDataType, int ldb, const void* beta, void* C,
                            cudaDataType, int ldc, cublasComputeType_t, cublasGemmAlgo_t);
  decltype(&::cublasGetStatusName) status_name;
  decltype(&::cublasGetStatusString) status_string;
  std::string path;  // where the loader found it (dladdr), for the log

  // Throws moe::Error "<call> failed: CUBLAS_STATUS_...: <cuBLAS's text>" unless `st` is
  // CUBLAS_STATUS_SUCCESS.
  void check(cublasStatus_t st, const char* call) const;
};

// Loads cuBLAS once (thread-safe) and returns its entry points: libcublas.so.13 from the loader's
// path (LD_LIBRARY_PATH, the cache), else from the CUDA toolkit this was built with. Throws
// moe::Error naming the library and dlerror() where it cannot be loaded, or the first symbol
// it lacks.
const CublasLibrary& cublas_library();

// The library cublas_library() loads: libcublas.so.13 (libcublas_emu.so.13 in the emulation
// build).
const char* cublas_soname();

// What cublas_library() does, for any library and folders: loads `soname` from the loader's path,
// else from each of `fallback_dirs`, and binds every entry point. Not cached.
CublasLibrary load_cublas(const std::string& soname, const std::vector<std::string>& fallback_dirs);

}  // namespace moe::kernels
