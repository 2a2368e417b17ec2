// emu_probe: runs one of the emulator tests' kernels and exits, for the checks that the
// sanitizers see GPU-style bugs through the emulation (tests/CMakeLists.txt): under
// ThreadSanitizer a missing barrier is a data race (and the same kernel with its barrier is
// clean); in the ASan + UBSan build a read past a __shared__ array is an overflow.
//
// usage: emu_probe missing-barrier|with-barrier|shared-overflow
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

#include "tests/cuda_emu/emu_test_kernels.h"

int main(int argc, char** argv) {
  const char* what = argc > 1 ? argv[1] : "";
  int* out = nullptr;
  if (cudaMalloc(reinterpret_cast<void**>(&out), 256 * sizeof(int)) != cudaSuccess) return 1;
  if (std::strcmp(what, "missing-barrier") == 0) {
    moe::emu_test::missing_barrier(out);
  } else if (std::strcmp(what, "with-barrier") == 0) {
    moe::emu_test::with_barrier(out);
  } else if (std::strcmp(what, "shared-overflow") == 0) {
    moe::emu_test::shared_overflow(out, 1);
  } else {
    std::fprintf(stderr, "usage: emu_probe missing-barrier|with-barrier|shared-overflow\n");
    return 2;
  }
  const cudaError_t e = cudaDeviceSynchronize();
  std::printf("emu_probe %s: %s\n", what, cudaGetErrorName(e));
  cudaFree(out);
  return e == cudaSuccess ? 0 : 1;
}
