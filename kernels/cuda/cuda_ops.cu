// Binds the CUDA kernels to the Ops interface: the CUDA twin of kernels/cpu/cpu_ops.cpp. Every
// op goes onto one non-blocking stream; linear is a cuBLAS GEMM with fp32 accumulation and
// output, from bf16 inputs (precision kBF16) or fp32 ones (kF32).
#include <cuda_runtime.h>
#include <cublas_v2.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "common/check.h"  // after the CUDA headers: CUDA_CHECK / CUBLAS_CHECK key off them
#include "common/dtype.h"
#include "kernels/cuda/cublas_library.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels {
namespace {

// Buffer's deleter: runs from destructors, so it swallows errors (a failed free at teardown
// has nobody to report to).
void free_device(void* p) noexcept { (void)cudaFree(p); }

std::string mib(size_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

class CudaOps final : public Ops {
 public:
  CudaOps(int device, DType precision) : device_(device), precision_(precision) {
    MOE_CHECK(precision == DType::kF32 || precision == DType::kBF16,
              std::string("cuda precision ") + dtype_name(precision) + " (expected F32 or BF16)");
    int n = 0;
    CUDA_CHECK(cudaGetDeviceCount(&n));
    MOE_CHECK(device >= 0 && device < n, "cuda device " + std::to_string(device) +
                                             " requested but " + std::to_string(n) +
                                             " visible");
    // The device is bound to the calling thread: the process drives one GPU from the thread
    // that made this object (one rank per GPU).
    CUDA_CHECK(cudaSetDevice(device));
    try {
      // Non-blocking: no implicit sync with the legacy default stream, which NCCL or a
      // library might use behind our back.
      CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      blas_.check(blas_.create(&cublas_), "cublasCreate");
      blas_.check(blas_.set_stream(cublas_, stream_), "cublasSetStream");
      // Default math: no TF32 or reduced-precision shortcuts beyond what the bf16 inputs imply;
      // the fp32 accumulation stays fp32.
      blas_.check(blas_.set_math_mode(cublas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    } catch (...) {
      release();
      throw;
    }
  }
  ~CudaOps() override { release(); }
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  std::string name() const override { return "cuda"; }
  DType precision() const override { return precision_; }
  DType weight_dtype() const override { return precision_; }
  DType kv_dtype() const override { return precision_; }
  MemoryInfo memory_info() const override {
    MemoryInfo m;
    CUDA_CHECK(cudaMemGetInfo(&m.free, &m.total));
    return m;
  }
  cudaStream_t stream() const { return stream_; }

  Buffer alloc(size_t bytes) override {
    if (bytes == 0) return Buffer();
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not sticky: clear it so the next check does not see it
      size_t free_b = 0, total_b = 0;
      (void)cudaMemGetInfo(&free_b, &total_b);
      MOE_THROW("out of GPU memory on device " + std::to_string(device_) + " allocating " +
                std::to_string(bytes) + " bytes (" + mib(bytes) + "); " + mib(free_b) +
                " free of " + mib(total_b));
    }
    CUDA_CHECK(err);
    Buffer b(p, bytes, free_device);  // owns p from here, so a throw below frees it
    // Zeroed like the CPU's calloc: caches and accumulators may rely on it.
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return b;
  }

  // Both copies wait for the stream: download's data must be there when it returns, and
  // upload's caller may reuse or free its host buffer as soon as it returns.
  void upload(void* dst, const void* host, size_t bytes) override {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void download(void* host, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }

  Weight upload_weight(Buffer& storage, const float* host, int64_t rows, int64_t cols) override {
    MOE_CHECK(rows >= 0 && cols >= 0, "weight shape must be non-negative");
    const size_t n = size_t(rows) * size_t(cols);
    if (precision_ == DType::kF32) {
      storage = alloc(n * sizeof(float));
      upload(storage.data(), host, n * sizeof(float));
      return Weight{storage.data(), DType::kF32, rows, cols};
    }
    std::vector<uint16_t> bf16(n);  // [rows, cols] bf16 bits, rounded to nearest even
    for (size_t i = 0; i < n; ++i) bf16[i] = f32_to_bf16(host[i]);
    storage = alloc(n * sizeof(uint16_t));
    upload(storage.data(), bf16.data(), n * sizeof(uint16_t));
    return Weight{storage.data(), DType::kBF16, rows, cols};
  }

  Weight random_weight(Buffer& storage, int64_t rows, int64_t cols, uint64_t seed, float scale,
                       float offset) override {
    MOE_CHECK(rows >= 0 && cols >= 0, "weight shape must be non-negative");
    const int64_t n = rows * cols;
    storage = alloc(size_t(n) * dtype_size(precision_));
    cuda::random_fill(storage.data(), precision_, n, seed, scale, offset, stream_);
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return Weight{storage.data(), precision_, rows, cols};
  }

  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  void reserve_linear_input(int64_t elems) override {
    if (precision_ == DType::kBF16 && elems > 0) scratch(size_t(elems) * sizeof(uint16_t));
  }

  void embedding(const EmbeddingParams& p) override { cuda::embedding(p, stream_); }
  void rmsnorm(const RmsNormParams& p) override { cuda::rmsnorm(p, stream_); }
  void linear(const LinearParams& p) override;
  void rope(const RopeParams& p) override { cuda::rope(p, stream_); }
  void kv_store(const KvStoreParams& p) override { cuda::kv_store(p, stream_); }
  void attention(const AttentionParams& p) override { cuda::attention(p, stream_); }
  void topk_router(const TopKRouterParams& p) override { cuda::topk_router(p, stream_); }
  void silu_mul(const SiluMulParams& p) override { cuda::silu_mul(p, stream_); }
  void gather_rows(const GatherRowsParams& p) override { cuda::gather_rows(p, stream_); }
  void weighted_combine(const WeightedCombineParams& p) override {
    cuda::weighted_combine(p, stream_);
  }
  void add(const AddParams& p) override { cuda::add(p, stream_); }
  void dispatch_layout(const DispatchLayoutParams& p) override {
    cuda::dispatch_layout(p, stream_);
  }
  void pack_rows(const PackRowsParams& p) override { cuda::pack_rows(p, stream_); }
  void group_by_expert(const GroupByExpertParams& p) override {
    cuda::group_by_expert(p, stream_);
  }
  void unpack_rows(const UnpackRowsParams& p) override { cuda::unpack_rows(p, stream_); }

 private:
  // Teardown and the constructor's failure path. Never throws: errors are ignored.
  void release() noexcept {
    if (stream_) (void)cudaStreamSynchronize(stream_);  // no queued GEMM still reads scratch_
    scratch_.reset();
    if (cublas_) (void)blas_.destroy(cublas_);
    if (stream_) (void)cudaStreamDestroy(stream_);
    cublas_ = nullptr;
    stream_ = nullptr;
  }

  // A device buffer of at least `bytes`, grown (never shrunk) on demand.
  // NOTES: growth runs cudaMalloc and synchronises the stream, which must not happen in the
  // steady state (it stalls the pipeline and breaks CUDA graph capture); a later step sizes
  // the scratch up front for the largest M * K the model will issue.
  void* scratch(size_t bytes) {
    if (scratch_.bytes() < bytes) {
      synchronize();     // queued GEMMs may still read the old scratch
      scratch_.reset();  // free before allocating, so the peak is the new size alone
      scratch_ = alloc(bytes);
    }
    return scratch_.data();
  }

  int device_ = 0;
  DType precision_ = DType::kBF16;
  cudaStream_t stream_ = nullptr;
  const CublasLibrary& blas_ = cublas_library();  // loaded with the first CUDA backend
  cublasHandle_t cublas_ = nullptr;
  Buffer scratch_;  // [M, K] bf16 copy of linear's x
};

void CudaOps::linear(const LinearParams& p) {
  MOE_CHECK(p.w.dtype == DType::kBF16 || p.w.dtype == DType::kF32,
            std::string("cuda linear weight dtype ") + dtype_name(p.w.dtype) +
                " (expected BF16 or F32)");
  MOE_CHECK(p.M >= 0, "cuda linear needs M >= 0");
  MOE_CHECK(p.w.rows >= 0 && p.w.rows <= INT_MAX && p.w.cols >= 0 && p.w.cols <= INT_MAX,
            "cuda linear weight shape [" + std::to_string(p.w.rows) + ", " +
                std::to_string(p.w.cols) + "] out of cuBLAS's int range");
  if (p.M == 0 || p.w.rows == 0) return;
  MOE_CHECK(p.x && p.out, "cuda linear given a null pointer");
  const int M = p.M, N = int(p.w.rows), K = int(p.w.cols);
  if (K == 0) {  // an empty sum: cuBLAS rejects lda = 0, and out = 0 (+ out) needs no GEMM
    if (!p.accumulate)
      CUDA_CHECK(cudaMemsetAsync(p.out, 0, size_t(M) * N * sizeof(float), stream_));
    return;
  }
  MOE_CHECK(p.w.data, "cuda linear given a null weight");

  // out[M, N] = x[M, K] @ W[N, K]^T, all row-major. cuBLAS is column-major, and a row-major
  // [R, C] matrix is the same memory as a column-major [C, R] one, so cuBLAS sees
  //   W   as A = [K, N] (lda = K),  x as B = [K, M] (ldb = K),  out as C = [N, M] (ldc = N),
  // and out^T = W x^T becomes C = op(A) op(B) with op(A) = A^T ([N, K]) and op(B) = B: m = N,
  // n = M, k = K. C written column-major [N, M] is exactly out row-major [M, N].
  const float alpha = 1.0f, beta = p.accumulate ? 1.0f : 0.0f;
  auto shapes = [&] {
    return "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
           (p.accumulate ? " accumulate" : "");
  };
  if (p.w.dtype == DType::kF32) {
    // fp32 inputs, CUBLAS_COMPUTE_32F under the default math mode: true fp32 FMAs, no TF32.
    blas_.check(blas_.gemm_ex(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, p.w.data,
                              CUDA_R_32F, K, p.x, CUDA_R_32F, K, &beta, p.out, CUDA_R_32F, N,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                "cublasGemmEx");
    MOE_CHECK_LAUNCH("linear (cuBLAS fp32)", stream_, shapes());
    return;
  }
  // bf16 activations beside bf16 weights: the tensor-core GEMM path takes both inputs in one
  // type, and fp32 accumulation keeps the result close to the CPU's fp32 GEMM.
  const int64_t nx = int64_t(M) * K;
  void* x_bf16 = scratch(size_t(nx) * sizeof(uint16_t));  // [M, K] bf16
  cuda::cast_f32_to_bf16(p.x, x_bf16, nx, stream_);
  blas_.check(blas_.gemm_ex(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, p.w.data,
                            CUDA_R_16BF, K, x_bf16, CUDA_R_16BF, K, &beta, p.out, CUDA_R_32F, N,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx");
  MOE_CHECK_LAUNCH("linear (cuBLAS bf16)", stream_, shapes());
}

}  // namespace

std::unique_ptr<Ops> make_cuda_ops(int device, DType precision) {
  return std::make_unique<CudaOps>(device, precision);
}

CUstream_st* cuda_stream(Ops& ops) {
  auto* c = dynamic_cast<CudaOps*>(&ops);
  MOE_CHECK(c, "cuda_stream() of the " + ops.name() + " backend");
  return c->stream();
}

}  // namespace moe::kernels
