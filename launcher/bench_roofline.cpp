#include "launcher/bench_roofline.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/check.h"
#include "common/dtype.h"
#include "kernels/cuda/cuda_kernels.h"

namespace moe::launcher {

double measure_copy_bandwidth(int device, size_t bytes, int repeats) {
  CUDA_CHECK(cudaSetDevice(device));
  void *src = nullptr, *dst = nullptr;
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CUDA_CHECK(cudaMalloc(&src, bytes));
  CUDA_CHECK(cudaMalloc(&dst, bytes));
  kernels::cuda::random_fill(src, DType::kF32, int64_t(bytes / 4), 1, 1.0f, 0.0f, s);
  const double ms = time_on_stream(s, 3, repeats, [&] {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
  });
  cudaFree(src);
  cudaFree(dst);
  cudaStreamDestroy(s);
  return 2.0 * double(bytes) / (ms * 1e-3);
}

double measure_gemm_flops(int device, int m, int n, int k, int repeats) {
  CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  CUBLAS_CHECK(cublasSetStream(h, s));
  void *a = nullptr, *b = nullptr, *c = nullptr;
  CUDA_CHECK(cudaMalloc(&a, size_t(m) * k * 2));
  CUDA_CHECK(cudaMalloc(&b, size_t(k) * n * 2));
  CUDA_CHECK(cudaMalloc(&c, size_t(m) * n * 4));
  kernels::cuda::random_fill(a, DType::kBF16, int64_t(m) * k, 2, 1.0f, 0.0f, s);
  kernels::cuda::random_fill(b, DType::kBF16, int64_t(k) * n, 3, 1.0f, 0.0f, s);
  const float alpha = 1.0f, beta = 0.0f;
  const double ms = time_on_stream(s, 3, repeats, [&] {
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a, CUDA_R_16BF, k, b,
                              CUDA_R_16BF, k, &beta, c, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
  });
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  cublasDestroy(h);
  cudaStreamDestroy(s);
  return 2.0 * double(m) * n * k / (ms * 1e-3);
}

}  // namespace moe::launcher
