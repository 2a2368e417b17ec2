// The emulation build's cuBLAS (libcublas_emu.so.13): the entry points the project uses, with
// cublas_v2.h's declarations. cublasGemmEx is queued on the handle's stream like any kernel,
// after cuBLAS's own argument checks (sizes, leading dimensions, types) and the emulator's (each
// matrix inside one device allocation); it runs as op(A) and op(B) widened to fp32 and one
// OpenBLAS sgemm (fp32 accumulation). It checks how the project calls cuBLAS (transposes,
// leading dimensions, types), not cuBLAS itself.
#include <cblas.h>
#include <cublas_v2.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu/device.h"
#include "cuda_emu/report.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace {

using moe::emu::Device;
using moe::emu::Finding;

float load(const void* base, cudaDataType t, int64_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(base)[i];
  uint16_t bits;
  std::memcpy(&bits, static_cast<const uint16_t*>(base) + i, 2);
  const uint32_t wide = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &wide, 4);
  return f;
}

size_t elem_bytes(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

// A column-major [rows, cols] matrix with leading dimension ld inside one device allocation.
bool inside(const Device& d, const void* p, int64_t rows, int64_t cols, int64_t ld,
            cudaDataType t) {
  if (rows == 0 || cols == 0) return true;
  const size_t bytes = size_t((cols - 1) * ld + rows) * elem_bytes(t);
  const moe::emu::Allocation* a = d.memory.find(p, bytes);
  return a && a->device;
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  Device& d = Device::get();
  std::lock_guard<std::recursive_mutex> lock(d.mu);
  (void)d.run_until(d.queue.last_of(handle->stream));  // its queued GEMMs read the handle's data
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

// C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C, column-major; fp32 alpha, beta and
// accumulation (CUBLAS_COMPUTE_32F); A and B fp32 or bf16, C fp32 or bf16.
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  auto bad = [&](const std::string& what) {
    moe::emu::report(Finding::kCopy, "cublasGemmEx m=" + std::to_string(m) + " n=" +
                                         std::to_string(n) + " k=" + std::to_string(k) + ": " +
                                         what);
    return CUBLAS_STATUS_INVALID_VALUE;
  };
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  if (m < 0 || n < 0 || k < 0) return bad("negative size");
  if (lda < (ta ? k : m) || lda < 1) return bad("lda " + std::to_string(lda) + " too small");
  if (ldb < (tb ? n : k) || ldb < 1) return bad("ldb " + std::to_string(ldb) + " too small");
  if (ldc < m || ldc < 1) return bad("ldc " + std::to_string(ldc) + " too small");
  auto type_ok = [](cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16BF; };
  if (!type_ok(Atype) || !type_ok(Btype) || Ctype != CUDA_R_32F || Atype != Btype)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_FAST_16BF)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  Device& d = Device::get();
  std::lock_guard<std::recursive_mutex> lock(d.mu);
  if (!inside(d, A, ta ? k : m, ta ? m : k, lda, Atype))
    return bad("A is not inside one device allocation (" + d.memory.describe(A) + ")");
  if (!inside(d, B, tb ? n : k, tb ? k : n, ldb, Btype))
    return bad("B is not inside one device allocation (" + d.memory.describe(B) + ")");
  if (!inside(d, C, m, n, ldc, Ctype))
    return bad("C is not inside one device allocation (" + d.memory.describe(C) + ")");
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  d.queue.enqueue(handle->stream, [=] {
    // op(A) as [m, k] and op(B)^T as [n, k], widened to fp32 rows.
    std::vector<float> a_rows(size_t(m) * k), b_rows(size_t(n) * k);
    for (int i = 0; i < m; ++i)
      for (int p = 0; p < k; ++p)
        a_rows[size_t(i) * k + p] = load(A, Atype, ta ? int64_t(i) * lda + p : int64_t(p) * lda + i);
    for (int j = 0; j < n; ++j)
      for (int p = 0; p < k; ++p)
        b_rows[size_t(j) * k + p] = load(B, Btype, tb ? int64_t(p) * ldb + j : int64_t(j) * ldb + p);
    // C column-major [m, n] (ldc) is row-major [n, m]: C^T = B' A'^T, B' = b_rows, A' = a_rows.
    // beta 0: BLAS does not read C (which may hold NaN).
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, k, a, b_rows.data(), k,
                a_rows.data(), k, b, static_cast<float*>(C), ldc);
  });
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return cublasGetStatusName(s);
  }
}

}  // extern "C"
