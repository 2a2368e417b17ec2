#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/elem.cuh"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one block per row (token), 256 threads striding over hidden. A row is at most a few
// thousand floats, so one block covers it in a handful of coalesced passes, and the sum of
// squares needs only one block reduction (warp shuffles, then one float per warp in shared
// memory). T rows give T independent blocks, which fills the GPU for prefill and costs nothing
// extra for decode.
constexpr int kThreads = 256;
static_assert(kThreads % 32 == 0 && kThreads <= 1024);

__device__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float s = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) s += warp_sums[w];  // every thread, same order
  return s;
}

template <class W>  // the weight's element: float or __nv_bfloat16
__global__ void __launch_bounds__(kThreads)
    rmsnorm_kernel(const float* __restrict__ x, const W* __restrict__ w, float* out, int hidden,
                   float eps) {
  // `out` may alias `x`: every thread reads its elements of the row before the reduction's
  // barrier and writes only those same elements after it, so no __restrict__ on either.
  const float* xr = x + int64_t(blockIdx.x) * hidden;
  float* yr = out + int64_t(blockIdx.x) * hidden;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < hidden; i += kThreads) ss += xr[i] * xr[i];
  ss = block_sum(ss);
  // Not bit-identical to the CPU op, which sums the squares in double, one element after the
  // other: here each thread keeps an fp32 partial (nvcc contracts x * x + ss into one FMA), and
  // the partials meet in a tree of shuffles, then the warp sums in a fixed order. The sum's
  // relative error is bounded by about (hidden / kThreads + 13) fp32 ulps, so the mean square
  // may differ from the CPU's in its last few bits. From there the steps are the CPU's: the
  // mean square as an fp32, 1 / sqrt(ms + eps) correctly rounded (rsqrtf may be 2 ulp off),
  // then w * (x * inv).
  const float inv = 1.0f / sqrtf(ss / float(hidden) + eps);
  for (int i = threadIdx.x; i < hidden; i += kThreads)
    yr[i] = load_f32(w + i) * (xr[i] * inv);
}

}  // namespace

void rmsnorm(const RmsNormParams& p, cudaStream_t stream) {
  MOE_CHECK(p.T >= 0 && p.hidden > 0, "cuda rmsnorm needs T >= 0 and hidden > 0");
  MOE_CHECK(p.weight.rows * p.weight.cols >= p.hidden, "cuda rmsnorm weight smaller than hidden");
  if (p.T == 0) return;
  MOE_CHECK(p.x && p.out && p.weight.data, "cuda rmsnorm given a null pointer");
  dispatch_f32_bf16(p.weight.dtype, "cuda rmsnorm weight", [&](auto zero) {
    using W = decltype(zero);
    rmsnorm_kernel<W><<<p.T, kThreads, 0, stream>>>(p.x, static_cast<const W*>(p.weight.data),
                                                    p.out, p.hidden, p.eps);
  });
  MOE_CHECK_LAUNCH("rmsnorm", stream,
                   "T=" + std::to_string(p.T) + " hidden=" + std::to_string(p.hidden));

}

}  // namespace moe::kernels::cuda
