#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (unit, reference and multi-rank tests) on the
# CPU. GPU tests, where built, skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh "$@"
ctest --test-dir build --output-on-failure --timeout 600 -j "$(nproc)"
