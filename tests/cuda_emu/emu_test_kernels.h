#pragma once
// Launchers of the emulator tests' kernels (emu_test_kernels.cu). Each enqueues on the legacy
// stream (or `stream`) and returns; the caller checks cudaGetLastError and synchronises.
#include <cuda_runtime.h>

#include <cstddef>

namespace moe::emu_test {

void intrinsics(int* out, int threads);       // [threads, 10]
void exited_lane(int* out);                    // 64 threads
void barrier_skipped(int* out);                // 128 threads
void deadlock(int* out);                       // 64 threads
void bounded(int* out, int threads, size_t shared_bytes);  // __launch_bounds__(128)
void missing_barrier(int* out);                // 256 threads
void with_barrier(int* out);                   // 256 threads
void shared_overflow(int* out, int past);      // 32 threads
void write(int* out, int n, int value, cudaStream_t stream);
void indices(int* out, dim3 grid, dim3 block);

}  // namespace moe::emu_test
