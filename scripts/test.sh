#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (unit, reference and multi-rank tests) on the
# CPU. GPU tests, where built, skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh "$@"
# Serially: concurrent Open MPI jobs on one machine can collide on their session files.
ctest --test-dir build --output-on-failure --timeout 600
