#!/usr/bin/env bash
# The main job, on a fresh machine, with no GPU and no download: set up, build, start the
# coordinator with 2 CPU ranks on the tiny model (moe-launch), run a batch through it with a
# progress bar, then 1024 requests from 32 concurrent clients (moe-bench-serving), print the
# throughput and the expert-load table, and stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
ADDR=${MOE_DEMO_ADDR:-127.0.0.1:50051}
log=$(mktemp /tmp/moe-demo-launch.XXXXXX.log)
out=$(mktemp /tmp/moe-demo-results.XXXXXX.jsonl)
build/bin/moe-launch --np 2 --config configs/tiny_a.yaml --listen "$ADDR" --metrics-port 0 \
  >"$log.ready" 2>"$log" &
launch=$!
trap 'kill -TERM $launch 2>/dev/null || true; wait $launch 2>/dev/null || true' EXIT
ready=
for _ in $(seq 1 600); do  # 60 s
  grep -q '^ready: ' "$log.ready" 2>/dev/null && { ready=1; break; }
  kill -0 $launch 2>/dev/null || { echo "moe-launch failed:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "the serving job was not ready after 60 s; moe-launch's log ($log):" >&2
  cat "$log" >&2
  exit 1
fi
echo "== serving on $ADDR: coordinator + 2 ranks (experts split over them), log in $log"
echo "== batch: configs/prompts/tiny_a.jsonl"
build/bin/moe-cli --server "$ADDR" batch --input configs/prompts/tiny_a.jsonl --output "$out"
echo "== results ($out)"
cat "$out"
echo "== throughput: 1024 requests (16 prompt + 16 new tokens each) from 32 concurrent clients"
build/bin/moe-bench-serving --server "$ADDR" --requests 1024 --warmup 64 --concurrency 32 --vocab 512 2>&1 \
  | grep -E "throughput|generated tokens|request latency|engine steps"
echo "== expert load"
build/bin/moe-cli --server "$ADDR" stats
kill -TERM $launch
wait $launch
trap - EXIT
echo "== stopped"
