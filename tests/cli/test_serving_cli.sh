#!/usr/bin/env bash
# moe-launch and moe-cli as a user meets them: start a 2-rank job, check health, run a batch
# (same output as moe-run), read the stats table, stream one generation, stop cleanly.
#   usage: test_serving_cli.sh BUILD_BIN_DIR CONFIGS_DIR
set -u
BIN=$1; CONFIGS=$2
TMP=$(mktemp -d)
source "$(dirname "$0")/serving_lib.sh"
PORT=$(free_port)
ADDR=127.0.0.1:$PORT
LAUNCH_PID=
cleanup() { [ -n "$LAUNCH_PID" ] && kill_launch "$LAUNCH_PID" "$ADDR"; rm -rf "$TMP"; }
trap cleanup EXIT

# Ids that do not fit a token id are refused before anything is sent, not wrapped.
"$BIN/moe-cli" --server "$ADDR" generate --prompt-ids 5,4294967297 >/dev/null 2>"$TMP/big"; rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < "$TMP/big")" -eq 1 ] && grep -q "4294967297 is outside the range" "$TMP/big" \
  && ok "--prompt-ids beyond int32: exit 2, one line" || bad "--prompt-ids 4294967297: exit $rc $(cat "$TMP/big")"
printf '{"id": 1, "prompt_ids": [5, 4294967297]}\n' > "$TMP/big.jsonl"
"$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/big.jsonl" >/dev/null 2>"$TMP/bigj"; rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < "$TMP/bigj")" -eq 1 ] && grep -q "big.jsonl:1: \"prompt_ids\" holds 4294967297, outside the range" "$TMP/bigj" \
  && ok "JSONL id beyond int32: exit 2, one line" || bad "JSONL 4294967297: exit $rc $(cat "$TMP/bigj")"

# moe-launch passes the coordinator's limits and the worker's overrides on, and lists them.
"$BIN/moe-launch" --help >"$TMP/lhelp" 2>&1
missing=
for f in --max-queue --rank-timeout-s --drain-timeout-s --stats-window-s --batch-retention-s --max-finished-batches --http-request-timeout-s --http-max-waiting --max-tokens-per-step --max-seqs --worker-args; do
  grep -q -- "$f" "$TMP/lhelp" || missing="$missing $f"
done
[ -z "$missing" ] && grep -q -- "--rank-timeout-s FLOAT=10 " "$TMP/lhelp" && ok "moe-launch --help lists the forwarded flags with defaults" || bad "moe-launch --help lacks:$missing"

"$BIN/moe-cli" --server "$ADDR" health >"$TMP/h0" 2>/dev/null; rc=$?
[ "$rc" -eq 3 ] && grep -q NOT_SERVING "$TMP/h0" && ok "health before start: NOT_SERVING, exit 3" || bad "health before start: exit $rc"

MPORT=$(free_port)
"$BIN/moe-launch" --np 2 --config "$CONFIGS/tiny_a.yaml" --listen "$ADDR" \
  --metrics-port "$MPORT" --stats-window-s 30 --max-tokens-per-step 128 >"$TMP/launch.out" 2>"$TMP/launch.err" &
LAUNCH_PID=$!
for _ in $(seq 1 600); do grep -q "^ready: " "$TMP/launch.out" && break; sleep 0.1; done
grep -q "^ready: $ADDR" "$TMP/launch.out" && ok "moe-launch prints ready" || { bad "moe-launch not ready: $(tail -5 "$TMP/launch.err")"; echo "$pass passed, $fail failed"; exit 1; }

grep "started moe-coordinator" "$TMP/launch.err" | grep -q -- "--stats-window-s 30 " \
  && grep "started mpirun" "$TMP/launch.err" | grep -q -- "--max-tokens-per-step 128" \
  && ok "moe-launch forwards coordinator limits and worker overrides" || bad "forwarding: $(grep started "$TMP/launch.err")"
"$BIN/moe-cli" --server "$ADDR" stats --recent >"$TMP/recent" 2>&1 && grep -q "over the recent window (" "$TMP/recent" \
  && ok "stats --recent says the span it covers" || bad "stats --recent: $(head -2 "$TMP/recent")"

"$BIN/moe-cli" --server "$ADDR" health >"$TMP/h1" 2>&1 && grep -q "^SERVING" "$TMP/h1" && ok "health: SERVING" || bad "health after start: $(cat "$TMP/h1")"

# An idle job sleeps: each rank under 2% of a core over 8 s with nothing asked of it (rank 1
# once polled its exchange 20,000 times a second, 27% of a core). Measured on the normal build
# only: a sanitizer's instrumentation makes every poll dearer (1.6% and 2.2% under ASan + UBSan).
if ldd "$BIN/moe-worker" 2>/dev/null | grep -Eq 'lib(asan|tsan|ubsan)'; then
  echo "skip - idle ranks' CPU: a sanitized build, not measured"
else
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
  ranks=()
  for p in $(pgrep -f "moe-worker --coordinator $ADDR"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = moe-worker ] && ranks+=("$p")
  done
  before=(); for p in "${ranks[@]}"; do before+=("$(ticks "$p")"); done
  sleep 8
  busy=
  for i in "${!ranks[@]}"; do
    permille=$(( ($(ticks "${ranks[$i]}") - before[i]) * 1000 / ($(getconf CLK_TCK) * 8) ))
    busy="$busy $((permille / 10)).$((permille % 10))%"
    [ "$permille" -lt 20 ] || idle_fail=1
  done
  [ "${#ranks[@]}" -eq 2 ] && [ -z "${idle_fail:-}" ] && ok "idle ranks under 2% of a core each:$busy" \
    || bad "idle ranks (${#ranks[@]} found) use a core's:$busy"
fi

"$BIN/moe-cli" --server "$ADDR" batch --input "$CONFIGS/prompts/tiny_a.jsonl" --output "$TMP/served.jsonl" 2>"$TMP/batch.err" \
  && ok "batch exit 0" || bad "batch: $(tail -2 "$TMP/batch.err")"
grep -q "tokens/s" "$TMP/batch.err" && ok "batch progress with tokens/s on stderr" || bad "batch progress: $(cat "$TMP/batch.err")"
"$BIN/moe-run" --config "$CONFIGS/tiny_a.yaml" --input "$CONFIGS/prompts/tiny_a.jsonl" --output "$TMP/run.jsonl" --no-stats-table --log-level warn
cmp -s "$TMP/served.jsonl" "$TMP/run.jsonl" && ok "served batch == moe-run output" || bad "served batch differs from moe-run"

# A line the coordinator refuses is named by the id the file gave it, not moe-cli's index.
printf '{"id": 100, "prompt_ids": [5]}\n{"id": 200, "prompt_ids": [6]}\n{"id": 300, "prompt_ids": [7, 100000]}\n' > "$TMP/bad300.jsonl"
"$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/bad300.jsonl" >/dev/null 2>"$TMP/bad300.err"; rc=$?
[ "$rc" -ne 0 ] && grep -q "item 2 (id 300): prompt_ids\[1\] is 100000" "$TMP/bad300.err" \
  && ok "a refused batch line is named by its own id (300)" || bad "refused line: exit $rc $(cat "$TMP/bad300.err")"

# String ids, and a batch resumed after an interruption: the run is cut short by keeping only
# the first 3 result lines and half of the 4th; --resume runs the rest and appends, so the file
# ends up holding every id once, with the results of the uninterrupted run.
python3 - "$CONFIGS/prompts/tiny_a.jsonl" "$TMP/strids.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        j = json.loads(line)
        j["id"] = f"q-{j['id']}"
        out.write(json.dumps(j) + "\n")
PY
"$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/strids.jsonl" --output "$TMP/strids_out.jsonl" 2>/dev/null \
  && python3 - "$TMP/strids_out.jsonl" "$TMP/run.jsonl" <<'PY' && ok "string ids come back as strings, same results" || bad "string ids: $(head -2 "$TMP/strids_out.jsonl")"
import json, sys
got = [json.loads(l) for l in open(sys.argv[1])]
want = [json.loads(l) for l in open(sys.argv[2])]
assert [g["id"] for g in got] == [f"q-{w['id']}" for w in want]
assert [g["output_ids"] for g in got] == [w["output_ids"] for w in want]
PY
head -3 "$TMP/strids_out.jsonl" > "$TMP/resumed.jsonl"; sed -n 4p "$TMP/strids_out.jsonl" | head -c 20 >> "$TMP/resumed.jsonl"
"$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/strids.jsonl" --output "$TMP/resumed.jsonl" --resume 2>"$TMP/resume.err" \
  && grep -q "resuming: 3 of 8 requests" "$TMP/resume.err" \
  && python3 - "$TMP/resumed.jsonl" "$TMP/strids_out.jsonl" <<'PY' && ok "--resume skips what the output holds and completes it" || bad "--resume: $(cat "$TMP/resume.err") $(cat "$TMP/resumed.jsonl" | head -5)"
import json, sys
got = {json.loads(l)["id"]: json.loads(l) for l in open(sys.argv[1])}
want = {json.loads(l)["id"]: json.loads(l) for l in open(sys.argv[2])}
assert len(open(sys.argv[1]).readlines()) == len(want) and got == want
PY

"$BIN/moe-cli" --server "$ADDR" stats >"$TMP/stats" 2>&1 && grep -q "imbalance" "$TMP/stats" && grep -q "rank1" "$TMP/stats" \
  && ok "stats table per expert and device" || bad "stats: $(head -5 "$TMP/stats")"

# The picture and the JSON of the statistics; moe-plan plans from that JSON.
"$BIN/moe-cli" --server "$ADDR" stats --plot "$TMP/load.svg" --json >"$TMP/stats.json" 2>/dev/null \
  && python3 - "$TMP/load.svg" "$TMP/stats.json" <<'PY' && ok "stats --plot writes an SVG (8 experts x 2 layers, 2 ranks) and --json the statistics" || bad "stats --plot/--json: $(head -c 300 "$TMP/stats.json")"
import json, sys, xml.etree.ElementTree as ET
svg = ET.parse(sys.argv[1]).getroot()
rects = svg.findall("{http://www.w3.org/2000/svg}rect")
assert len(rects) >= 1 + 16 + 8 + 2 + 4, len(rects)  # background, heat map, stripes, bars, pairs
j = json.load(open(sys.argv[2]))
assert j["routed_choices"] > 0 and j["world_size"] == 2 and len(j["placement"]["map"]) == 2, j.keys()
PY
"$BIN/moe-plan" --stats "$TMP/stats.json" --output "$TMP/plan.yaml" >"$TMP/plan.out" 2>&1 \
  && grep -q "imbalance" "$TMP/plan.out" && [ -s "$TMP/plan.yaml" ] && ok "moe-plan plans from moe-cli stats --json" || bad "moe-plan: $(tail -3 "$TMP/plan.out")"
# Every metric the Grafana dashboard (configs/grafana) plots is one /metrics serves.
python3 - "$CONFIGS/grafana/moe-serving.json" "http://127.0.0.1:$MPORT/metrics" <<'PY' && ok "the Grafana dashboard's metrics are all served" || bad "dashboard metrics missing"
import json, re, sys, urllib.request
served = set(re.findall(r"^# TYPE (\w+)", urllib.request.urlopen(sys.argv[2], timeout=10).read().decode(), re.M))
wanted = set()
for p in json.load(open(sys.argv[1]))["panels"]:
    for t in p["targets"]:
        wanted |= set(re.findall(r"\bmoe_\w+", t["expr"]))
missing = wanted - served
assert wanted and not missing, missing
PY

"$BIN/moe-cli" --server "$ADDR" generate --prompt-ids 183,14,173,485,369,501,64 --max-new-tokens 16 >"$TMP/gen" 2>/dev/null
[ "$(tr '\n' ',' < "$TMP/gen")" = "134,469,461,460,362,469,461,460,453,257,401,72,292,49,218,226," ] \
  && ok "generate streams transformers' tokens" || bad "generate: $(tr '\n' ',' < "$TMP/gen")"
# A priority orders admission only: the same tokens; the first tokens of interactive requests
# and of batch items are timed apart in /metrics (the waiting order itself: test_waiting_queue).
"$BIN/moe-cli" --server "$ADDR" generate --prompt-ids 183,14,173,485,369,501,64 --max-new-tokens 16 --priority -3 >"$TMP/genp" 2>/dev/null
cmp -s "$TMP/gen" "$TMP/genp" && ok "generate --priority -3: the same tokens" || bad "generate --priority: $(tr '\n' ',' < "$TMP/genp")"
printf '{"id": 1, "prompt_ids": [5, 6], "priority": "high"}\n' > "$TMP/badprio.jsonl"
"$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/badprio.jsonl" >/dev/null 2>"$TMP/badprio.err"; rc=$?
[ "$rc" -eq 2 ] && grep -q '"priority"' "$TMP/badprio.err" && ok "a batch line's priority of the wrong type: exit 2, named" || bad "bad priority: exit $rc, $(cat "$TMP/badprio.err")"
python3 - "http://127.0.0.1:$MPORT/metrics" <<'PY' && ok "/metrics: time to first token, interactive and batch apart" || bad "no TTFT histogram in /metrics"
import re, sys, urllib.request
m = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
n = {c: int(re.search(r'^moe_time_to_first_token_seconds_count\{class="%s"\} (\d+)$' % c, m, re.M).group(1))
     for c in ("interactive", "batch")}
inf = int(re.search(r'^moe_time_to_first_token_seconds_bucket\{class="interactive",le="\+Inf"\} (\d+)$', m, re.M).group(1))
assert n["interactive"] >= 2 and n["batch"] >= 1 and inf == n["interactive"], (n, inf)
PY

"$BIN/moe-cli" --server "$ADDR" generate --prompt "The licenses for most software" --max-new-tokens 12 >"$TMP/text" 2>"$TMP/text.err"; rc=$?
printf '{"id": 1, "prompt": "The licenses for most software", "max_new_tokens": 12}\n' > "$TMP/text.jsonl"
"$BIN/moe-run" --config "$CONFIGS/tiny_a.yaml" --input "$TMP/text.jsonl" --no-stats-table --log-level warn > "$TMP/text_run.jsonl"
want=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["output_text"])' "$TMP/text_run.jsonl" 2>/dev/null)
[ "$rc" -eq 0 ] && [ "$(cat "$TMP/text")" = "$want" ] && ok "generate --prompt streams moe-run's decoded text" || bad "generate --prompt: exit $rc, got '$(cat "$TMP/text")', want '$want'"

# Whitespace alone tokenizes to no pieces; the coordinator's prompt is then the bos id alone.
"$BIN/moe-cli" --server "$ADDR" generate --prompt " " --max-new-tokens 2 >/dev/null 2>"$TMP/blank.err"; rc=$?
[ "$rc" -eq 0 ] && ok "generate --prompt ' ' (whitespace only)" || bad "generate --prompt ' ': exit $rc $(tail -3 "$TMP/blank.err")"
"$BIN/moe-cli" --server "$ADDR" generate --prompt-ids 1,99999 >/dev/null 2>"$TMP/inv"; rc=$?
[ "$rc" -eq 2 ] && grep -q "INVALID_ARGUMENT" "$TMP/inv" && ok "invalid request: exit 2, one line" || bad "invalid request: exit $rc $(cat "$TMP/inv")"

# A request far past the context is refused from its size before it is buffered: the message
# limit comes from the context (moe-launch passes it) and the queue bound, so the coordinator's
# memory does not grow with what a client sends.
grep -q "requests up to .* MiB" "$TMP/launch.err" && ok "the coordinator states its message limit" || bad "no message limit logged"
python3 -c 'import json; print(json.dumps({"id": 1, "prompt_ids": [300] * 7000000, "max_new_tokens": 1}))' > "$TMP/huge.jsonl"
"$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/huge.jsonl" >/dev/null 2>"$TMP/huge.err"; rc=$?
cpid=$(pgrep -f "moe-coordinator --listen $ADDR" | head -1)
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$cpid/status")
[ "$rc" -eq 3 ] && grep -q "RESOURCE_EXHAUSTED" "$TMP/huge.err" && [ "$peak_kb" -lt 200000 ] \
  && ok "a 7M-token request (14 MB) is refused by its size (coordinator peak $((peak_kb / 1024)) MiB)" \
  || bad "huge request: exit $rc, $(cat "$TMP/huge.err"), coordinator peak ${peak_kb} kB"

kill -TERM "$LAUNCH_PID"; wait "$LAUNCH_PID"; rc=$?; LAUNCH_PID=
[ "$rc" -eq 0 ] && ok "moe-launch stops cleanly on SIGTERM" || bad "moe-launch exit $rc: $(tail -5 "$TMP/launch.err")"
sleep 0.5
pgrep -f "moe-worker --coordinator $ADDR" >/dev/null && bad "workers left running" || ok "no worker left running"
pgrep -f "moe-coordinator --listen $ADDR" >/dev/null && bad "coordinator left running" || ok "no coordinator left running"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
