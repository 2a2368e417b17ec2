#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one block per token, 128 threads. The block first forms the token's head_dim / 2
// cos/sin values once into shared memory (every head of the token shares them), then strides
// over the (n_heads + n_kv_heads) * head_dim / 2 rotation pairs: pair j is element i = j % half
// of head j / half, so neighbouring threads touch neighbouring floats of a head in both halves
// (coalesced). q heads come first, then k heads.
constexpr int kThreads = 128;
// The CPU op's cos/sin buffers hold 512 values, and the model refuses head_dim above 1024.
constexpr int kMaxHeadDim = 1024;

__global__ void __launch_bounds__(kThreads)
    rope_kernel(float* __restrict__ q,                // [T, n_heads * head_dim]
                float* __restrict__ k,                // [T, n_kv_heads * head_dim]
                const int32_t* __restrict__ pos,      // [T]
                const float* __restrict__ inv_freq,   // [head_dim / 2]
                int n_heads, int n_kv_heads, int head_dim) {
  __shared__ float cosv[kMaxHeadDim / 2], sinv[kMaxHeadDim / 2];
  const int t = blockIdx.x, half = head_dim / 2;
  // The angle in fp32 as the CPU op (inv_freq * float(position)), and cosf/sinf rather than the
  // __cosf/__sinf intrinsics: those lose accuracy quickly once the angle is large (long
  // positions), where cosf/sinf reduce the argument properly and stay within 2 ulp.
  const float p = float(pos[t]);
  for (int i = threadIdx.x; i < half; i += kThreads) {
    const float angle = inv_freq[i] * p;
    cosv[i] = cosf(angle);
    sinv[i] = sinf(angle);
  }
  __syncthreads();

  float* qt = q + int64_t(t) * n_heads * head_dim;
  float* kt = k + int64_t(t) * n_kv_heads * head_dim;
  const int pairs = (n_heads + n_kv_heads) * half;
  for (int j = threadIdx.x; j < pairs; j += kThreads) {
    const int h = j / half, i = j % half;
    float* v = h < n_heads ? qt + h * head_dim : kt + (h - n_heads) * head_dim;
    const float a = v[i], b = v[i + half];
    // Explicit roundings stop nvcc contracting into FMAs, so the only difference from the CPU
    // op (built without FMA) is cosf/sinf against the host's libm.
    v[i] = __fsub_rn(__fmul_rn(a, cosv[i]), __fmul_rn(b, sinv[i]));
    v[i + half] = __fadd_rn(__fmul_rn(b, cosv[i]), __fmul_rn(a, sinv[i]));
  }
}

}  // namespace

void rope(const RopeParams& p, cudaStream_t stream) {
  MOE_CHECK(p.T >= 0 && p.n_heads > 0 && p.n_kv_heads > 0,
            "cuda rope needs T >= 0, n_heads > 0 and n_kv_heads > 0");
  MOE_CHECK(p.head_dim > 0 && p.head_dim % 2 == 0 && p.head_dim <= kMaxHeadDim,
            "cuda rope needs an even head_dim in (0, 1024]");
  if (p.T == 0) return;
  MOE_CHECK(p.q && p.k && p.pos && p.inv_freq, "cuda rope given a null pointer");
  rope_kernel<<<p.T, kThreads, 0, stream>>>(p.q, p.k, p.pos, p.inv_freq, p.n_heads,
                                            p.n_kv_heads, p.head_dim);
  MOE_CHECK_LAUNCH("rope", stream,
                   "T=" + std::to_string(p.T) + " heads=" + std::to_string(p.n_heads) + "/" +
                       std::to_string(p.n_kv_heads) + " head_dim=" + std::to_string(p.head_dim));
}

}  // namespace moe::kernels::cuda
