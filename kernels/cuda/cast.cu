#include <algorithm>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: elementwise over n, 256 threads a block, a grid-stride loop with the grid capped at
// 65536 blocks (16M threads, far more than an H100 keeps resident) so a huge n reuses threads
// rather than growing the grid without bound. Neighbouring threads read neighbouring floats and
// write neighbouring bf16s (coalesced).
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

__global__ void __launch_bounds__(kThreads)
    cast_f32_to_bf16_kernel(const float* __restrict__ in,      // [n]
                            __nv_bfloat16* __restrict__ out,   // [n]
                            int64_t n) {
  // Round to nearest even, as torch's .to(bfloat16) and the host's f32_to_bf16 (common/dtype.h)
  // do, so the GEMM inputs are the values a bf16 reference would see.
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kThreads)
    out[i] = __float2bfloat16_rn(in[i]);
}

}  // namespace

void cast_f32_to_bf16(const float* in, void* out, int64_t n, cudaStream_t stream) {
  MOE_CHECK(n >= 0, "cuda cast_f32_to_bf16 needs n >= 0");
  if (n == 0) return;
  MOE_CHECK(in && out, "cuda cast_f32_to_bf16 given a null pointer");
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks);
  cast_f32_to_bf16_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(
      in, static_cast<__nv_bfloat16*>(out), n);
  MOE_CHECK_LAUNCH("cast_f32_to_bf16", stream, "n=" + std::to_string(n));
}

}  // namespace moe::kernels::cuda
