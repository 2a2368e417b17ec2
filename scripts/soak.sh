#!/usr/bin/env bash
# The serving stack under hostile load (issue 29), a run of its own (not in CI): moe-launch serves
# tiny_a on 2 CPU ranks while moe-bench-serving sends REQUESTS Generate requests at concurrency
# 64, and for the whole run, beside them:
#   - slowloris: 160 connections on the OpenAI port and 48 on the metrics port trickle a byte of
#     their headers every 0.5 s (a cut one is opened again);
#   - poison, one every 2 s in turn: a batch line with 5M stop_token_ids (gRPC, moe-cli batch), and
#     on the OpenAI port a 5 MB stop string, a 7 MB text prompt and a 100 MB body;
#   - a Prometheus scrape and an OpenAI completion every second, each timed.
# Passes when no normal request failed, every poison request was refused, no worker job was
# restarted, and every scrape and completion answered; prints the figures.
#   usage: bash scripts/soak.sh [REQUESTS (100000)] [BUILD_DIR (build)]
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-100000}
BIN=${2:-build}/bin
for b in moe-launch moe-cli moe-bench-serving moe-coordinator moe-worker; do
  [ -x "$BIN/$b" ] || { echo "soak: no $BIN/$b: build first (bash scripts/build.sh)" >&2; exit 2; }
done
python3 -c "import openai" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check openai
TMP=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port) MPORT=$(free_port) OPORT=$(free_port)
ADDR=127.0.0.1:$PORT
LAUNCH_PID= HOSTILE_PID=
cleanup() {
  [ -n "$HOSTILE_PID" ] && kill "$HOSTILE_PID" 2>/dev/null
  [ -n "$LAUNCH_PID" ] && kill -TERM "$LAUNCH_PID" 2>/dev/null && wait "$LAUNCH_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

"$BIN/moe-launch" --np 2 --config configs/tiny_a.yaml --listen "$ADDR" --metrics-port "$MPORT" \
  --openai-port "$OPORT" --served-model-name tiny-a --max-queue 8192 >"$TMP/launch.out" 2>"$TMP/launch.err" &
LAUNCH_PID=$!
for _ in $(seq 1 600); do grep -q "^ready: " "$TMP/launch.out" && break; sleep 0.1; done
grep -q "^ready: " "$TMP/launch.out" || { echo "soak: moe-launch not ready:"; tail -5 "$TMP/launch.err"; exit 1; }
echo "soak: serving on $ADDR (metrics :$MPORT, OpenAI :$OPORT); $REQUESTS requests at concurrency 64"

# The poison files for moe-cli batch.
python3 - "$TMP" <<'EOF'
import json, sys
tmp = sys.argv[1]
with open(f"{tmp}/stop_ids.jsonl", "w") as f:
    f.write(json.dumps({"id": 1, "prompt_ids": [5, 6], "stop_token_ids": [7] * 5_000_000}) + "\n")
EOF

# Hostile load in the background until $TMP/stop appears; its figures in $TMP/hostile.json.
python3 - "$TMP" "$BIN" "$ADDR" "$MPORT" "$OPORT" <<'EOF' &
import json, os, socket, subprocess, sys, threading, time, urllib.request
import openai
tmp, bin_dir, addr, mport, oport = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
stop = threading.Event()
fig = {"slow_reopened": 0, "poison": {}, "scrape_s": [], "completion_s": [], "unanswered": []}

def slowloris(port, n):
    conns = []
    def opened():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        return s
    conns = [opened() for _ in range(n)]
    while not stop.wait(0.5):
        for i, s in enumerate(conns):
            try:
                s.send(b"a")
            except OSError:
                s.close()
                conns[i] = opened()
                fig["slow_reopened"] += 1
    for s in conns:
        s.close()

def poison_once(kind):
    if kind == "stop_ids":
        r = subprocess.run([f"{bin_dir}/moe-cli", "--server", addr, "batch", "--input",
                            f"{tmp}/{kind}.jsonl"], capture_output=True, text=True)
        return r.returncode != 0 and ("INVALID_ARGUMENT" in r.stderr or "RESOURCE_EXHAUSTED" in r.stderr
                                      or "stop" in r.stderr)
    if kind == "text_7mb":
        body = json.dumps({"model": "tiny-a", "prompt": "a " * 3_500_000, "max_tokens": 1}).encode()
    elif kind == "stop_str":
        body = json.dumps({"model": "tiny-a", "prompt": [5, 6], "max_tokens": 1,
                           "stop": ["x" * 5_000_000]}).encode()
    else:  # body_100mb: headers claim 100 MB, refused from them
        body = None
    try:
        if body is not None:
            req = urllib.request.Request(f"http://127.0.0.1:{oport}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=60)
            return False
        with socket.create_connection(("127.0.0.1", oport), timeout=30) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 104857600\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 413")
    except urllib.error.HTTPError as e:
        return e.code in (400, 413)

def poison():
    kinds = ["stop_ids", "stop_str", "text_7mb", "body_100mb"]
    i = 0
    while not stop.wait(2):
        k = kinds[i % len(kinds)]
        i += 1
        ok = poison_once(k)
        d = fig["poison"].setdefault(k, {"sent": 0, "refused": 0})
        d["sent"] += 1
        d["refused"] += int(ok)

def probes():
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{oport}/v1", api_key="none",
                           timeout=10, max_retries=0)
    while not stop.wait(1):
        t = time.time()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
                r.read()
            fig["scrape_s"].append(time.time() - t)
        except OSError as e:
            fig["unanswered"].append(f"scrape: {e}")
        t = time.time()
        try:
            client.completions.create(model="tiny-a", prompt=[5, 6], max_tokens=4, temperature=0)
            fig["completion_s"].append(time.time() - t)
        except openai.APIError as e:
            fig["unanswered"].append(f"completion: {e}")

threads = [threading.Thread(target=slowloris, args=(oport, 160)),
           threading.Thread(target=slowloris, args=(mport, 48)),
           threading.Thread(target=poison), threading.Thread(target=probes)]
for t in threads:
    t.start()
while not os.path.exists(f"{tmp}/stop"):
    time.sleep(0.2)
stop.set()
for t in threads:
    t.join()
with open(f"{tmp}/hostile.json", "w") as f:
    json.dump(fig, f)
EOF
HOSTILE_PID=$!
sleep 2
rc=0
"$BIN/moe-bench-serving" --server "$ADDR" --requests "$REQUESTS" --concurrency 64 | tee "$TMP/bench.out" || rc=$?
touch "$TMP/stop"
wait "$HOSTILE_PID" || true
HOSTILE_PID=

python3 - "$TMP/hostile.json" "$rc" "$(grep -c 'the worker job is lost' "$TMP/launch.err" || true)" <<'EOF'
import json, sys
fig, bench_rc, restarts = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
def stats(xs):
    xs = sorted(xs)
    return f"{len(xs)} answered, max {xs[-1]:.3f} s, median {xs[len(xs) // 2]:.3f} s" if xs else "none"
print(f"scrapes beside the slowloris:     {stats(fig['scrape_s'])}")
print(f"completions beside the slowloris: {stats(fig['completion_s'])}")
print(f"slowloris connections reopened after a cut: {fig['slow_reopened']}")
bad = []
for k, d in sorted(fig["poison"].items()):
    print(f"poison {k:<12} {d['refused']}/{d['sent']} refused")
    if d["refused"] != d["sent"]:
        bad.append(f"poison {k} not refused")
if fig["unanswered"]:
    bad.append(f"{len(fig['unanswered'])} probes unanswered: {fig['unanswered'][:3]}")
if bench_rc != 0:
    bad.append("normal requests failed (moe-bench-serving exit %d)" % bench_rc)
if restarts:
    bad.append(f"{restarts} worker-job restarts")
print("soak: " + ("PASSED" if not bad else "FAILED: " + "; ".join(bad)))
sys.exit(1 if bad else 0)
EOF
