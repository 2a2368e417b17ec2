#!/usr/bin/env bash
# A Generate's time to first token while a large batch runs (issue 29's priorities): tiny_a on
# 2 CPU ranks under moe-launch, a batch of ITEMS items (16 to 31 new tokens each) submitted with
# moe-cli, then PROBES Generates of 1 new token, one every 0.2 s while the batch runs, each timed
# from its start to its token (moe-cli's whole run: process start included). Prints the probes'
# median and max beside the batch's own time, and the coordinator's TTFT histogram counts.
#   bash scripts/bench_priority.sh [ITEMS=3000] [PROBES=10] [BUILD=build]
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=${1:-3000}; PROBES=${2:-10}; BIN=${3:-build}/bin
for b in moe-launch moe-cli moe-coordinator moe-worker; do
  [ -x "$BIN/$b" ] || { echo "bench_priority: no $BIN/$b: build first (bash scripts/build.sh)" >&2; exit 2; }
done
TMP=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port) MPORT=$(free_port)
ADDR=127.0.0.1:$PORT
LAUNCH_PID=
cleanup() {
  [ -n "$LAUNCH_PID" ] && kill -TERM "$LAUNCH_PID" 2>/dev/null && wait "$LAUNCH_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
"$BIN/moe-launch" --np 2 --config configs/tiny_a.yaml --listen "$ADDR" --metrics-port "$MPORT" \
  --max-queue 32768 >"$TMP/launch.out" 2>"$TMP/launch.err" &
LAUNCH_PID=$!
for _ in $(seq 1 600); do grep -q "^ready: " "$TMP/launch.out" && break; sleep 0.1; done
grep -q "^ready: " "$TMP/launch.out" || { echo "bench_priority: moe-launch not ready:"; tail -5 "$TMP/launch.err"; exit 1; }
python3 - "$TMP/batch.jsonl" "$ITEMS" <<'PY'
import json, random, sys
r = random.Random(7)
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"id": i, "prompt_ids": [r.randrange(3, 512) for _ in range(r.randrange(1, 25))],
                            "max_new_tokens": r.randrange(16, 32), "ignore_eos": True}) + "\n")
PY
python3 - "$BIN" "$ADDR" "$MPORT" "$TMP" "$PROBES" <<'PY'
import statistics, subprocess, sys, time, urllib.request
bin_dir, addr, mport, tmp, probes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
t0 = time.monotonic()
batch = subprocess.Popen([f"{bin_dir}/moe-cli", "--server", addr, "batch", "--input", f"{tmp}/batch.jsonl",
                          "--output", f"{tmp}/out.jsonl"], stderr=subprocess.DEVNULL)
time.sleep(0.3)  # the batch is admitted and every slot is busy
ttft = []
for i in range(probes):
    if batch.poll() is not None:
        break
    s = time.monotonic()
    subprocess.run([f"{bin_dir}/moe-cli", "--server", addr, "generate", "--prompt-ids", "5,6,7,8",
                    "--max-new-tokens", "1"], check=True, capture_output=True)
    ttft.append(time.monotonic() - s)
    time.sleep(0.2)
batch.wait()
batch_s = time.monotonic() - t0
metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
items = sum(1 for _ in open(f"{tmp}/batch.jsonl"))
if ttft:
    print(f"batch of {items} items: {batch_s:.1f} s; {len(ttft)} Generates during it: time to first "
          f"token median {statistics.median(ttft):.3f} s, max {max(ttft):.3f} s")
else:
    print(f"batch of {items} items done in {batch_s:.1f} s, before any probe")
for line in metrics.splitlines():
    if line.startswith("moe_time_to_first_token_seconds_") and ("_sum" in line or "_count" in line):
        print("  " + line)
PY
