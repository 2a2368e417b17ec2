// CUDA_CHECK, CUBLAS_CHECK, NCCL_CHECK, MPI_CHECK: each throws moe::Error carrying file:line,
// the call as text and the library's error name. Each macro is defined once its library's header
// has been included: include this after them. NOTES: no #pragma once on purpose, and each
// section guarded by its own macro instead, so that including this again after a further
// library header (another header may have included it first) defines that library's macro too.
#include <string>

#include "common/error.h"

#if (defined(__CUDACC__) || defined(CUDART_VERSION)) && !defined(CUDA_CHECK)
#include <cuda_runtime.h>
#define CUDA_CHECK(call)                                                                  \
  do {                                                                                    \
    cudaError_t err_ = (call);                                                            \
    if (err_ != cudaSuccess)                                                              \
      MOE_THROW(std::string(#call) + " failed: " + cudaGetErrorName(err_) + ": " +        \
                cudaGetErrorString(err_));                                                \
  } while (0)
// After a kernel launch: a bad launch configuration is reported here, not at the next sync.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
#endif

#if (defined(CUBLAS_VERSION) || defined(CUBLAS_VER_MAJOR)) && !defined(CUBLAS_CHECK)
#define CUBLAS_CHECK(call)                                                                  \
  do {                                                                                      \
    cublasStatus_t st_ = (call);                                                            \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                       \
      MOE_THROW(std::string(#call) + " failed: " + cublasGetStatusName(st_) + ": " +        \
                cublasGetStatusString(st_));                                                \
  } while (0)
#endif

#if defined(NCCL_MAJOR) && !defined(NCCL_CHECK)
#define NCCL_CHECK(call)                                                                  \
  do {                                                                                    \
    ncclResult_t r_ = (call);                                                             \
    if (r_ != ncclSuccess)                                                                \
      MOE_THROW(std::string(#call) + " failed: " + ncclGetErrorString(r_) + " (" +        \
                ncclGetLastError(nullptr) + ")");                                         \
  } while (0)
#endif

#if defined(MPI_VERSION) && !defined(MPI_CHECK)
#define MPI_CHECK(call)                                                     \
  do {                                                                      \
    int rc_ = (call);                                                       \
    if (rc_ != MPI_SUCCESS) {                                               \
      char msg_[MPI_MAX_ERROR_STRING];                                      \
      int len_ = 0;                                                         \
      MPI_Error_string(rc_, msg_, &len_);                                   \
      MOE_THROW(std::string(#call) + " failed: " + std::string(msg_, len_)); \
    }                                                                       \
  } while (0)
#endif
