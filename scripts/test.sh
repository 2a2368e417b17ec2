#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (unit, reference and multi-rank tests) on the
# CPU, then the whole suite, the emulated GPU suites included, with AddressSanitizer and
# UndefinedBehaviorSanitizer (scripts/test_sanitized.sh, in build-asan/), a short run of each
# input parser's fuzzing harness (scripts/fuzz.sh; MOE_FUZZ_SECONDS per harness, 15 by default;
# 0 leaves it out), and the GPU test suites on the CUDA emulation, plain and under
# ThreadSanitizer (scripts/test_emulated.sh, in build-emu/ and build-tsan/). In build/ the GPU
# tests run on the GPU where there is one and skip where there is none. MOE_EMULATED=0 leaves
# the emulated pass out, MOE_SANITIZED=0 the sanitized one. The later passes' folders are built
# in the background at the lowest priority while the earlier tests run (scripts/build_passes.sh).
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
# The later passes' builds run in the background (scripts/build_passes.sh, at nice 19) while the
# tests before them run; a pass's tests wait for its build.
LOGS=build/pass-logs
BG=
stop_background() { [ -n "$BG" ] && kill -- "-$BG" 2>/dev/null; return 0; }
trap stop_background EXIT
wait_built() {
  local pass=$1
  while [ ! -f "$LOGS/$pass.rc" ]; do
    kill -0 "$BG" 2>/dev/null || { echo "test.sh: the background builds stopped before $pass's"; return 1; }
    sleep 2
  done
  if [ "$(cat "$LOGS/$pass.rc")" != 0 ]; then
    echo "test.sh: the $pass build failed; the end of $LOGS/$pass.log:"
    tail -40 "$LOGS/$pass.log"
    return 1
  fi
  tail -1 "$LOGS/$pass.log"
}

phase "setup (packages)" bash scripts/setup.sh
phase "build (build/)" bash scripts/build.sh "$@"
LATER=()
[ "${MOE_SANITIZED:-1}" != 0 ] && LATER+=(sanitized)
[ "${MOE_FUZZ_SECONDS:-15}" != 0 ] && LATER+=(fuzz)
[ "${MOE_EMULATED:-1}" != 0 ] && LATER+=(emulated)
rm -rf "$LOGS" && mkdir -p "$LOGS"
if [ ${#LATER[@]} -gt 0 ]; then
  setsid nice -n 19 bash scripts/build_passes.sh "$LOGS" "${LATER[@]}" </dev/null &
  BG=$!
  echo "== test.sh: building ${LATER[*]} in the background (logs in $LOGS/)"
fi
# In parallel (the tests that start processes of their own hold a lock: tests/CMakeLists.txt).
phase "tests (build/)" ctest --test-dir build --output-on-failure --timeout 600 -j "$(nproc)"
# The sanitized pass first: its build is the largest, and its serving tests leave CPU idle for
# the fuzz and emulated builds behind it.
if [ "${MOE_SANITIZED:-1}" != 0 ]; then
  phase "sanitized: waiting for its build" wait_built sanitized
  phase "sanitized (build-asan/)" bash scripts/test_sanitized.sh
fi
if [ "${MOE_FUZZ_SECONDS:-15}" != 0 ]; then
  phase "fuzzing: waiting for its build" wait_built fuzz
  phase "fuzzing (build-fuzz/)" bash scripts/fuzz.sh "${MOE_FUZZ_SECONDS:-15}"
fi
if [ "${MOE_EMULATED:-1}" != 0 ]; then
  phase "emulated GPU: waiting for its builds" wait_built emulated
  phase "emulated GPU (build-emu/, build-tsan/)" bash scripts/test_emulated.sh
fi
BG=
echo "== test.sh: every phase passed, in ${SECONDS} s"
printf '   %s\n' "${PHASES[@]}"
