#!/usr/bin/env bash
# The main job on the tiny model, on the CPU, no GPU and no download: set up, build, then
# generate for a few prompts on 2 ranks (experts split over them) and print the load table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
ROOT_FLAG=""
[ "$(id -u)" -eq 0 ] && ROOT_FLAG="--allow-run-as-root"
out=$(mktemp /tmp/moe-demo.XXXXXX.jsonl)
mpirun $ROOT_FLAG --oversubscribe -np 2 build/bin/moe-run \
  --config configs/tiny_a.yaml --input configs/prompts/tiny_a.jsonl --output "$out"
echo "--- results ($out) ---"
cat "$out"
