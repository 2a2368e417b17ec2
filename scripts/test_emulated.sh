#!/usr/bin/env bash
# Runs the CUDA code on the CPU, in the emulation build (cuda_emu/, -DMOE_CUDA_EMULATION=ON: the
# .cu sources compiled as host C++, a block's threads run as fibers): every GPU test suite but
# NCCL's, plain in build-emu/, then the kernels' and the MoE dispatch ops' suites under
# ThreadSanitizer in build-tsan/, where a missing barrier between a block's threads is a data
# race. The same suites under AddressSanitizer and UBSan run in scripts/test_sanitized.sh, whose
# build is emulated too. Only the GPU tests' targets are built. Extra arguments go to the plain
# pass's ctest, e.g. -R CudaEdges.
#
# Left out under ThreadSanitizer: the kernels whose threads share nothing (grid-stride element-
# wise loops: add, cast, random_fill, pack/unpack, weighted_combine) at their large sizes (65,536
# blocks and more). TSan has nothing to find between their threads, and there they take minutes;
# they run plain and under ASan + UBSan.
#
# The plain pass compiles at -O1 without debug information: what it checks is the kernels'
# results without instrumentation, not their speed, and -O1 compiles in two thirds of -O3's time.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

GPU_TESTS=(test_emulator emu_probe test_cuda_kernels test_cuda_edges test_cuda_fault test_cuda_ops
           test_cuda_moe_ops test_cublas_library test_comm_cuda test_cuda_reference test_cuda_rebalance)
cmake -S . -B build-emu -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1" -DMOE_CUDA_EMULATION=ON >/dev/null
cmake --build build-emu --parallel "$(nproc)" --target "${GPU_TESTS[@]}"
built=$(date +%s)
# In parallel: the tests that start processes of their own hold one lock (tests/CMakeLists.txt).
ctest --test-dir build-emu --output-on-failure --timeout 600 -j "$(nproc)" \
  -R '^(cuda\.|mpi_np[0-9]+_(cuda_|comm_cuda))' "$@"
plain=$(date +%s)

cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMOE_CUDA_EMULATION=ON -DMOE_TSAN=ON >/dev/null
cmake --build build-tsan --parallel "$(nproc)" --target test_cuda_kernels test_cuda_moe_ops emu_probe
tsan_built=$(date +%s)
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
ctest --test-dir build-tsan --output-on-failure --timeout 600 -j "$(nproc)" \
  -R '^cuda\.(CudaKernels\.|CudaMoeOps\.|emu\.tsan_)' \
  -E 'RandomFillMatchesHost|AddMatchesCpu|CastF32ToBf16MatchesHost|PackAndUnpackMatchCpu|WeightedCombineInAndOutOfBf16MatchesCpu'
echo "emulated: plain build $((built - start)) s, tests $((plain - built)) s;" \
     "ThreadSanitizer build $((tsan_built - plain)) s, tests $(($(date +%s) - tsan_built)) s"
