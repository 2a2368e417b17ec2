#pragma once
// The CUDA backend behind the Ops interface: the cuda:: launchers on one stream of one GPU, and
// linear through cuBLAS. Weights are stored bf16, activations fp32. Needs no CUDA header, so the
// runtime can pick a backend without compiling against CUDA.
#include <memory>

#include "kernels/ops.h"

namespace moe::kernels {

// Binds GPU `device` (the caller picks it from the node-local rank) to this thread, and owns a
// non-blocking stream and a cuBLAS handle on it. Every op is enqueued on that stream; alloc,
// upload, download and synchronize wait for it. Throws moe::Error where `device` does not exist.
std::unique_ptr<Ops> make_cuda_ops(int device);

}  // namespace moe::kernels
