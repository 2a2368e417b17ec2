#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (unit, reference and multi-rank tests) on the
# CPU, a short run of each input parser's fuzzing harness (scripts/fuzz.sh; MOE_FUZZ_SECONDS
# per harness, 10 by default; 0 leaves it out), the GPU test suites on the CUDA emulation, plain
# and under ThreadSanitizer (scripts/test_emulated.sh, in build-emu/ and build-tsan/), then the
# whole suite, the emulated GPU suites included, with AddressSanitizer and
# UndefinedBehaviorSanitizer (scripts/test_sanitized.sh, in build-asan/). In build/ the GPU
# tests run on the GPU where there is one and skip where there is none. MOE_EMULATED=0 leaves
# the emulated pass out, MOE_SANITIZED=0 the sanitized one. The passes run one after another: a
# pass's build beside another's tests (even as SCHED_IDLE) slowed the tests 2-3 fold on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's wall time, printed as it ends and again in a table at the end.
PHASES=()
phase() {
  local name=$1 t0=$SECONDS
  shift
  echo "== test.sh: $name"
  "$@"
  PHASES+=("$(printf '%-40s %5d s' "$name" $((SECONDS - t0)))")
  echo "== test.sh: $name done in $((SECONDS - t0)) s"
}
phase "setup (packages)" bash scripts/setup.sh
phase "build (build/)" bash scripts/build.sh "$@"
# In parallel (the tests that start processes of their own hold a lock: tests/CMakeLists.txt).
phase "tests (build/)" ctest --test-dir build --output-on-failure --timeout 600 -j "$(nproc)"
if [ "${MOE_FUZZ_SECONDS:-10}" != 0 ]; then
  phase "fuzzing (build-fuzz/)" bash scripts/fuzz.sh "${MOE_FUZZ_SECONDS:-10}"
fi
if [ "${MOE_EMULATED:-1}" != 0 ]; then
  phase "emulated GPU (build-emu/, build-tsan/)" bash scripts/test_emulated.sh
fi
if [ "${MOE_SANITIZED:-1}" != 0 ]; then
  phase "sanitized (build-asan/)" bash scripts/test_sanitized.sh
fi
echo "== test.sh: every phase passed, in ${SECONDS} s"
printf '   %s\n' "${PHASES[@]}"
