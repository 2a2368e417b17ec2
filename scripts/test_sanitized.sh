#!/usr/bin/env bash
# Builds the code with AddressSanitizer and UndefinedBehaviorSanitizer into build-asan/, the
# CUDA sources on the emulation (cuda_emu/: compiled as host C++, so the kernels are
# instrumented too; nvcc's objects would not be), and runs the test suite there, the emulated
# GPU suites included. Extra arguments go to ctest, e.g. -R tokenizer.
#
# The sanitizers' options, Open MPI's leak suppressions among them, are compiled into every
# executable (common/sanitizers/options.cpp), so the binaries run the same under ctest, mpirun
# or by hand. A UndefinedBehaviorSanitizer finding aborts the process that met it. Line tables
# only (-g1: a report's frames keep their files and lines; full debug information took a third
# of the build's time) and no benchmarks (no test runs them; the normal build compiles them).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-asan
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMOE_CUDA_EMULATION=ON -DMOE_ASAN=ON -DMOE_UBSAN=ON \
  -DMOE_BENCHMARKS=OFF >/dev/null
cmake --build "$BUILD" --parallel "$(nproc)"
built=$(date +%s)
# The sentencepiece shim runs in a namespace of its own with its own copy of UBSan's runtime,
# which never sees the options compiled into the executables: it reads only this.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# In parallel: the tests that start processes of their own hold one lock (tests/CMakeLists.txt).
# Left out here (they run in the normal pass): the bundle (packaging only), the multi-node
# rehearsal and the simulator's replays (orchestration and arithmetic that the serving and
# routing tests already run under the sanitizers; together 3 minutes of a 2-core CI), the
# reference checkpoints at 4 and 8 ranks and the other 8-rank tests (the same code as at 2
# ranks, 8 instrumented processes on 2 cores), and the moe-run CLI script (its parsers are
# fuzzed, and moe-run runs under the sanitizers in cli_cpu_without_nccl):
# 5 more minutes; the device communicators and the served job's recovery at 4 ranks (the same
# code as at 2; a minute); the served rebalancing script (4-rank jobs: 79 s; the weight moves
# while the engine generates run here in mpi_np2_cuda_rebalance and the expert rebalancer's
# tests) and moe-plan's script (38 s; its planner runs here in test_placement_planner, moe-run
# in cli_cpu_without_nccl); moe-launch's recovery script (77 s, most of it waiting out
# stalls; the coordinator's recovery of killed and hung ranks runs here in ServingTest).
ctest --test-dir "$BUILD" --output-on-failure --timeout 900 -j "$(nproc)" \
  -E '^(cli_bundle|cli_multinode|cli_moe_sim|cli_moe_run|cli_serving_rebalance|cli_moe_plan|cli_recovery|mpi_np4_reference|mpi_np4_comm_cuda|mpi_np8_.*|ServingTest\..*At4Ranks)$' "$@"
echo "sanitized: build $((built - start)) s, tests $(($(date +%s) - built)) s"
