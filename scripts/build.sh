#!/usr/bin/env bash
# Configures and builds into build/ (executables in build/bin). Extra arguments go to cmake,
# e.g. scripts/build.sh -DMOE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build --parallel "$(nproc)"
