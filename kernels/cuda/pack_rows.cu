#include <algorithm>

#include <cuda_runtime.h>

#include "common/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/elem.cuh"
#include "kernels/cuda/launch_check.h"

namespace moe::kernels::cuda {
namespace {

// Launch: one block per payload row (a grid-stride loop over rows, the grid capped at 65536
// blocks), 256 threads striding over the hidden values: one contiguous read and one contiguous
// write a row (coalesced); the k slots (and the padding before them) are written by the first
// threads.
constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65536;

template <class W>
__global__ void __launch_bounds__(kThreads)
    pack_rows_kernel(const float* __restrict__ x,           // [T, hidden]
                     const int32_t* __restrict__ token,     // [S]
                     const RouteSlot* __restrict__ slots,   // [S, k]
                     char* __restrict__ payload,            // [S, stride] bytes
                     int S, int hidden, int k, size_t stride, size_t slots_offset) {
  for (int r = blockIdx.x; r < S; r += gridDim.x) {
    char* row = payload + size_t(r) * stride;
    const float* src = x + int64_t(token[r]) * hidden;
    W* values = reinterpret_cast<W*>(row);
    for (int c = threadIdx.x; c < hidden; c += kThreads) store_f32(values + c, src[c]);
    // The padding travels too: zero it, so no uninitialised byte is sent.
    for (size_t b = size_t(hidden) * sizeof(W) + threadIdx.x; b < slots_offset; b += kThreads)
      row[b] = 0;
    auto* out_slots = reinterpret_cast<RouteSlot*>(row + slots_offset);
    for (int s = threadIdx.x; s < k; s += kThreads) out_slots[s] = slots[int64_t(r) * k + s];
  }
}

template <class W>
__global__ void __launch_bounds__(kThreads)
    unpack_rows_kernel(const char* __restrict__ payload,   // [*, stride] bytes
                       const int32_t* __restrict__ index,  // [M]
                       float* __restrict__ out,            // [M, hidden]
                       int M, int hidden, size_t stride) {
  for (int r = blockIdx.x; r < M; r += gridDim.x) {
    const int32_t i = index[r];
    float* o = out + int64_t(r) * hidden;
    if (i < 0) {  // as gather_rows: no row, zeros
      for (int c = threadIdx.x; c < hidden; c += kThreads) o[c] = 0.0f;
      continue;
    }
    const W* values = reinterpret_cast<const W*>(payload + size_t(i) * stride);
    for (int c = threadIdx.x; c < hidden; c += kThreads) o[c] = load_f32(values + c);
  }
}

}  // namespace

void pack_rows(const PackRowsParams& p, cudaStream_t stream) {
  const RowLayout& L = p.layout;
  MOE_CHECK(p.S >= 0 && L.hidden > 0 && L.k > 0, "cuda pack_rows needs S >= 0, hidden > 0, k > 0");
  if (p.S == 0) return;
  MOE_CHECK(p.x && p.token && p.slots && p.payload, "cuda pack_rows given a null pointer");
  const int blocks = std::min(p.S, kMaxBlocks);
  dispatch_f32_bf16(L.dtype, "cuda pack_rows", [&](auto w) {
    using W = decltype(w);
    pack_rows_kernel<W><<<blocks, kThreads, 0, stream>>>(p.x, p.token, p.slots,
                                                         static_cast<char*>(p.payload), p.S,
                                                         L.hidden, L.k, L.stride(),
                                                         L.slots_offset());
  });
  MOE_CHECK_LAUNCH("pack_rows", stream,
                   "S=" + std::to_string(p.S) + " hidden=" + std::to_string(L.hidden) +
                       " k=" + std::to_string(L.k));
}

void unpack_rows(const UnpackRowsParams& p, cudaStream_t stream) {
  const RowLayout& L = p.layout;
  MOE_CHECK(p.M >= 0 && L.hidden > 0, "cuda unpack_rows needs M >= 0 and hidden > 0");
  if (p.M == 0) return;
  MOE_CHECK(p.payload && p.index && p.out, "cuda unpack_rows given a null pointer");
  const int blocks = std::min(p.M, kMaxBlocks);
  dispatch_f32_bf16(L.dtype, "cuda unpack_rows", [&](auto w) {
    using W = decltype(w);
    unpack_rows_kernel<W><<<blocks, kThreads, 0, stream>>>(static_cast<const char*>(p.payload),
                                                           p.index, p.out, p.M, L.hidden,
                                                           L.stride());
  });
  MOE_CHECK_LAUNCH("unpack_rows", stream,
                   "M=" + std::to_string(p.M) + " hidden=" + std::to_string(L.hidden));
}

}  // namespace moe::kernels::cuda
