#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/elem.cuh"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one block per token, 256 threads striding over hidden: a row is one contiguous read
// of the table (bf16 or fp32: Table) and one contiguous fp32 write, both coalesced. The token's id is read once
// per thread (a broadcast from L1).
constexpr int kThreads = 256;

template <class Table>
__global__ void __launch_bounds__(kThreads)
    embedding_kernel(const int32_t* __restrict__ ids, const Table* __restrict__ table,
                     float* __restrict__ out, int64_t vocab, int64_t hidden) {
  const int32_t id = ids[blockIdx.x];
  float* row = out + int64_t(blockIdx.x) * hidden;
  // Ids are validated where requests enter (the CPU op throws); a kernel cannot, so an id
  // outside the vocabulary gives a zero row instead of reading outside the table.
  const bool ok = id >= 0 && id < vocab;
  const Table* src = table + (ok ? int64_t(id) * hidden : 0);
  for (int64_t i = threadIdx.x; i < hidden; i += kThreads) row[i] = ok ? load_f32(src + i) : 0.0f;
}

}  // namespace

void embedding(const EmbeddingParams& p, cudaStream_t stream) {
  MOE_CHECK(p.T >= 0 && p.table.rows > 0 && p.table.cols > 0,
            "cuda embedding needs T >= 0 and a non-empty table");
  if (p.T == 0) return;
  MOE_CHECK(p.ids && p.out && p.table.data, "cuda embedding given a null pointer");
  dispatch_f32_bf16(p.table.dtype, "cuda embedding table", [&](auto zero) {
    using Table = decltype(zero);
    embedding_kernel<Table><<<p.T, kThreads, 0, stream>>>(
        p.ids, static_cast<const Table*>(p.table.data), p.out, p.table.rows, p.table.cols);
  });
  MOE_CHECK_LAUNCH("embedding", stream,
                   "T=" + std::to_string(p.T) + " table=[" + std::to_string(p.table.rows) +
                       ", " + std::to_string(p.table.cols) + "]");
}

}  // namespace moe::kernels::cuda
