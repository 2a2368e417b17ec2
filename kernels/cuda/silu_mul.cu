#include <algorithm>

#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: elementwise over the M * I outputs, 256 threads a block, a grid-stride loop with the
// grid capped at 65536 blocks (16M threads, far more than an H100 keeps resident) so a huge
// M * I reuses threads rather than growing the grid without bound. Each
// output reads gate and up from the same row at the same column, so neighbouring threads read
// neighbouring addresses in both halves (coalesced).
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

__global__ void __launch_bounds__(kThreads)
    silu_mul_kernel(const float* __restrict__ gate_up, float* __restrict__ out, int64_t n, int I) {
  for (int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * kThreads) {
    const int64_t m = idx / I, i = idx % I;
    const float g = gate_up[m * 2 * I + i];
    const float u = gate_up[m * 2 * I + I + i];
    out[idx] = g / (1.0f + expf(-g)) * u;  // as the CPU op, in the same order
  }
}

}  // namespace

void silu_mul(const SiluMulParams& p, cudaStream_t stream) {
  MOE_CHECK(p.M >= 0 && p.I > 0, "cuda silu_mul needs M >= 0 and I > 0");
  if (p.M == 0) return;
  MOE_CHECK(p.gate_up && p.out, "cuda silu_mul given a null pointer");
  const int64_t n = int64_t(p.M) * p.I;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks);
  silu_mul_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(p.gate_up, p.out, n, p.I);
  MOE_CHECK_LAUNCH("silu_mul", stream, "M=" + std::to_string(p.M) + " I=" + std::to_string(p.I));
}

}  // namespace moe::kernels::cuda
