#pragma once
// The CUDA backend behind the Ops interface: the cuda:: launchers on one stream of one GPU, and
// linear through cuBLAS. Weights and the KV cache are stored at the precision asked (bf16 by
// default, or fp32), activations are fp32. Needs no CUDA header, so the runtime can pick a
// backend without compiling against CUDA.
#include <memory>

#include "kernels/ops.h"

struct CUstream_st;  // what cudaStream_t points to

namespace moe::kernels {

// Binds GPU `device` (the caller picks it from the node-local rank) to this thread, and owns a
// non-blocking stream and a cuBLAS handle on it. Every op is enqueued on that stream; alloc,
// upload, download and synchronize wait for it. Throws moe::Error where `device` does not exist.
// precision kBF16: bf16 weights and KV cache, linear as a bf16 GEMM with fp32 accumulation;
// kF32: fp32 throughout (cuBLAS fp32 GEMMs, no TF32), for checking against the CPU reference.
std::unique_ptr<Ops> make_cuda_ops(int device, DType precision = DType::kBF16);

// The stream every op of `ops` (made by make_cuda_ops) is enqueued on: a communicator moving
// device rows for this backend must enqueue on it too. Throws for another backend.
CUstream_st* cuda_stream(Ops& ops);

}  // namespace moe::kernels
