#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one block per token, 256 threads striding over hidden: a row is one contiguous read
// of the bf16 table and one contiguous fp32 write, both coalesced. The token's id is read once
// per thread (a broadcast from L1).
constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    embedding_kernel(const int32_t* __restrict__ ids, const __nv_bfloat16* __restrict__ table,
                     float* __restrict__ out, int64_t vocab, int64_t hidden) {
  const int32_t id = ids[blockIdx.x];
  float* row = out + int64_t(blockIdx.x) * hidden;
  // Ids are validated where requests enter (the CPU op throws); a kernel cannot, so an id
  // outside the vocabulary gives a zero row instead of reading outside the table.
  const bool ok = id >= 0 && id < vocab;
  const __nv_bfloat16* src = table + (ok ? int64_t(id) * hidden : 0);
  for (int64_t i = threadIdx.x; i < hidden; i += kThreads)
    row[i] = ok ? __bfloat162float(src[i]) : 0.0f;
}

}  // namespace

void embedding(const EmbeddingParams& p, cudaStream_t stream) {
  MOE_CHECK(p.table.dtype == DType::kBF16, "cuda embedding table must be bf16");
  MOE_CHECK(p.T >= 0 && p.table.rows > 0 && p.table.cols > 0,
            "cuda embedding needs T >= 0 and a non-empty table");
  if (p.T == 0) return;
  MOE_CHECK(p.ids && p.out && p.table.data, "cuda embedding given a null pointer");
  embedding_kernel<<<p.T, kThreads, 0, stream>>>(
      p.ids, static_cast<const __nv_bfloat16*>(p.table.data), p.out, p.table.rows, p.table.cols);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
