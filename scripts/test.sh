#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (unit, reference and multi-rank tests) on the
# CPU, a short run of each input parser's fuzzing harness (scripts/fuzz.sh; MOE_FUZZ_SECONDS
# per harness, 15 by default; 0 leaves it out), then the same suite again built with
# AddressSanitizer and UndefinedBehaviorSanitizer (scripts/test_sanitized.sh, in build-asan/).
# GPU tests, where built, skip without a GPU. MOE_SANITIZED=0 leaves the sanitized pass out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh "$@"
# Serially: concurrent Open MPI jobs on one machine can collide on their session files.
ctest --test-dir build --output-on-failure --timeout 600
if [ "${MOE_FUZZ_SECONDS:-15}" != 0 ]; then
  bash scripts/fuzz.sh "${MOE_FUZZ_SECONDS:-15}"
fi
if [ "${MOE_SANITIZED:-1}" != 0 ]; then
  bash scripts/test_sanitized.sh
fi
