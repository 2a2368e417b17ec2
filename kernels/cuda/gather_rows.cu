#include <algorithm>

#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one block per output row (a grid-stride loop over rows, the grid capped at 65536
// blocks), 256 threads striding over cols: a row is one contiguous read of src and one
// contiguous write of out (coalesced), and the row's index is read once per thread (a
// broadcast from L1).
constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65536;

__global__ void __launch_bounds__(kThreads)
    gather_rows_kernel(const float* __restrict__ src,      // [*, cols]
                       const int32_t* __restrict__ index,  // [M]
                       float* __restrict__ out,            // [M, cols]
                       int M, int cols) {
  for (int r = blockIdx.x; r < M; r += gridDim.x) {
    const int32_t i = index[r];
    float* o = out + int64_t(r) * cols;
    // Indices come from the dispatch plan and are valid (the CPU op trusts them too); a kernel
    // cannot throw, so a negative one gives a zero row instead of reading before src.
    if (i < 0) {
      for (int c = threadIdx.x; c < cols; c += kThreads) o[c] = 0.0f;
      continue;
    }
    const float* s = src + int64_t(i) * cols;
    for (int c = threadIdx.x; c < cols; c += kThreads) o[c] = s[c];
  }
}

}  // namespace

void gather_rows(const GatherRowsParams& p, cudaStream_t stream) {
  MOE_CHECK(p.M >= 0 && p.cols > 0, "cuda gather_rows needs M >= 0 and cols > 0");
  if (p.M == 0) return;
  MOE_CHECK(p.src && p.index && p.out, "cuda gather_rows given a null pointer");
  const int blocks = std::min(p.M, kMaxBlocks);
  gather_rows_kernel<<<blocks, kThreads, 0, stream>>>(p.src, p.index, p.out, p.M, p.cols);
  MOE_CHECK_LAUNCH("gather_rows", stream,
                   "M=" + std::to_string(p.M) + " cols=" + std::to_string(p.cols));

}

}  // namespace moe::kernels::cuda
