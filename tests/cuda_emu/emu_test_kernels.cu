// Kernels for the emulator's own tests (test_emulator.cpp, emu_probe.cpp): each either checks
// one device intrinsic against its documented result, or makes one mistake a GPU would hang on,
// crash on or hide, so that the test can show the emulator reports it. Built only in the
// emulation build (they would hang a GPU).
#include "tests/cuda_emu/emu_test_kernels.h"

#include <cuda_runtime.h>

namespace moe::emu_test {
namespace {

// Every warp intrinsic's result, per thread: [n, 10].
__global__ void intrinsics_kernel(int* out) {
  const int t = int(threadIdx.x), lane = t % 32;
  int* o = out + t * 10;
  o[0] = __shfl_sync(0xffffffffu, t * 10, 5);                   // lane 5 of the warp
  o[1] = __shfl_xor_sync(0xffffffffu, t, 3);                    // t ^ 3
  o[2] = __shfl_up_sync(0xffffffffu, t, 2);                     // t - 2, own below lane 2
  o[3] = __shfl_down_sync(0xffffffffu, t, 4, 16);               // t + 4 within 16-lane halves
  o[4] = int(__ballot_sync(0xffffffffu, lane % 3 == 0));        // lanes 0, 3, 6, ...
  o[5] = __any_sync(0xffffffffu, lane == 31);                   // 1
  o[6] = __all_sync(0xffffffffu, lane < 31);                    // 0
  o[7] = __syncthreads_count(t % 2 == 0);                       // n / 2
  o[8] = __syncthreads_and(t >= 0) + 2 * __syncthreads_or(t == 7);  // 1 + 2
  __syncwarp();
  o[9] = lane < 16 ? __shfl_sync(0x0000ffffu, t, 1) : -1;  // a half-warp mask
}

// The lanes of the upper half-warp leave before the lower half's full-mask shuffle: its mask
// names lanes that have exited.
__global__ void exited_lane_kernel(int* out) {
  const int t = int(threadIdx.x);
  if (t % 32 >= 16) return;
  out[t] = __shfl_xor_sync(0xffffffffu, t, 1);
}

// Half the block waits at a barrier the other half never reaches (it exits).
__global__ void barrier_skipped_kernel(int* out) {
  const int t = int(threadIdx.x);
  if (t < 64) __syncthreads();
  out[t] = t;
}

// Lanes 0-15 wait in a full-mask shuffle for lanes 16-31, which wait at the block barrier for
// lanes 0-15: no thread can go on.
__global__ void deadlock_kernel(int* out) {
  const int t = int(threadIdx.x);
  if (t % 32 < 16)
    out[t] = __shfl_sync(0xffffffffu, t, 0);
  else
    __syncthreads();
}

// A kernel declared for at most 128 threads a block.
__global__ void __launch_bounds__(128) bounded_kernel(int* out) { out[threadIdx.x] = 1; }

// Thread t reads what thread t - 1 wrote to shared memory, with no barrier between: right only
// where t - 1 happens to run first (in order), wrong where the schedule differs.
__global__ void missing_barrier_kernel(int* out) {
  __shared__ int slot[256];
  const int t = int(threadIdx.x);
  slot[t] = t + 1000;
  out[t] = t == 0 ? 1000 - 1 : slot[t - 1];
}

// The same with the barrier: right whatever the schedule.
__global__ void with_barrier_kernel(int* out) {
  __shared__ int slot[256];
  const int t = int(threadIdx.x);
  slot[t] = t + 1000;
  __syncthreads();
  out[t] = t == 0 ? 1000 - 1 : slot[t - 1];
}

// Reads one element past a __shared__ array (UBSan: insufficient space for an object; ASan
// alone: global-buffer-overflow).
__global__ void shared_overflow_kernel(int* out, int past) {
  __shared__ int counts[32];
  counts[threadIdx.x] = int(threadIdx.x);
  __syncthreads();
  const int* c = counts;  // through a pointer, past the array's static bound check
  out[threadIdx.x] = c[threadIdx.x + past];
}

__global__ void write_kernel(int* out, int n, int value) {
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) out[i] = value;
}

// A grid of several blocks writing its indices: [grid.x * grid.y, block.x * block.y] of
// (blockIdx, threadIdx) packed.
__global__ void indices_kernel(int* out) {
  const int block = int(blockIdx.y * gridDim.x + blockIdx.x);
  const int thread = int(threadIdx.y * blockDim.x + threadIdx.x);
  const int per_block = int(blockDim.x * blockDim.y);
  out[block * per_block + thread] =
      int(blockIdx.x) * 1000000 + int(blockIdx.y) * 10000 + int(threadIdx.x) * 100 +
      int(threadIdx.y);
}

}  // namespace

void intrinsics(int* out, int threads) { intrinsics_kernel<<<1, threads>>>(out); }
void exited_lane(int* out) { exited_lane_kernel<<<1, 64>>>(out); }
void barrier_skipped(int* out) { barrier_skipped_kernel<<<1, 128>>>(out); }
void deadlock(int* out) { deadlock_kernel<<<1, 64>>>(out); }
void bounded(int* out, int threads, size_t shared_bytes) {
  bounded_kernel<<<1, threads, shared_bytes>>>(out);
}
void missing_barrier(int* out) { missing_barrier_kernel<<<1, 256>>>(out); }
void with_barrier(int* out) { with_barrier_kernel<<<1, 256>>>(out); }
void shared_overflow(int* out, int past) { shared_overflow_kernel<<<1, 32>>>(out, past); }
void write(int* out, int n, int value, cudaStream_t stream) {
  write_kernel<<<1, 64, 0, stream>>>(out, n, value);
}
void indices(int* out, dim3 grid, dim3 block) { indices_kernel<<<grid, block>>>(out); }

}  // namespace moe::emu_test
