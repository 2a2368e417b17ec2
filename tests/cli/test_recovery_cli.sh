#!/usr/bin/env bash
# Faults under moe-launch, as a user on a cluster meets them: a rank killed (kill -9) or
# stopped (SIGSTOP) mid-batch costs a restart of the worker job, not the batch: moe-cli's output
# equals moe-run's. SIGTERM during a batch drains it and the client still writes every result.
# With no restarts left the batch fails with UNAVAILABLE and the reason. Prints the recovery
# times (fault to SERVING again).
#   usage: test_recovery_cli.sh BUILD_BIN_DIR CONFIGS_DIR
set -u
BIN=$1; CONFIGS=$2
TMP=$(mktemp -d)
source "$(dirname "$0")/serving_lib.sh"
LAUNCH_PID=; CLI_PID=
cleanup() {
  [ -n "$CLI_PID" ] && kill -KILL "$CLI_PID" 2>/dev/null
  [ -n "$LAUNCH_PID" ] && kill_launch "$LAUNCH_PID" "$ADDR"
  rm -rf "$TMP"
}
trap cleanup EXIT

# The pid of MPI rank $1 of the job serving $ADDR (mpirun's own command line names moe-worker
# too: the rank is told apart by its environment).
rank_pid() {
  for p in $(pgrep -f "moe-worker --coordinator $ADDR"); do
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" && { echo "$p"; return; }
  done
}
# Seconds from $1 (date +%s.%N of the fault) until health has gone NOT_SERVING (the loss
# noticed) and come back to SERVING (the new job attached), at most $2 s; "timeout" otherwise.
until_serving() {
  local t0=$1 lost=
  for _ in $(seq 1 $(( $2 * 20 ))); do
    if "$BIN/moe-cli" --server "$ADDR" health >/dev/null 2>&1; then
      [ -n "$lost" ] && { awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }'; return; }
    else
      lost=1
    fi
    sleep 0.05
  done
  echo timeout
}
# Waits until the batch client has seen some progress (its progress line counts up).
until_progress() {
  for _ in $(seq 1 1200); do grep -q "tokens/s" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
launch() {  # extra moe-launch flags
  PORT=$(free_port); ADDR=127.0.0.1:$PORT
  "$BIN/moe-launch" --np 2 --config "$CONFIGS/tiny_a.yaml" --listen "$ADDR" --metrics-port 0 \
    --rank-timeout-s 3 --restart-backoff-s 0.5 --log-level info "$@" >"$TMP/launch.out" 2>"$TMP/launch.err" &
  LAUNCH_PID=$!
  for _ in $(seq 1 600); do grep -q "^ready: " "$TMP/launch.out" && return 0; sleep 0.1; done
  bad "moe-launch not ready: $(tail -5 "$TMP/launch.err")"; return 1
}

# 800 prompts of 1 to 24 tokens, 16 to 31 new tokens: long enough to be mid-batch when the
# fault comes, short enough for CI. Every other one is sampled with a seed: the sequences a
# fault interrupts are prefilled again with their tokens so far, in other batches on other
# ranks than moe-run's, and must still end as moe-run's did (a row's logits do not depend on
# the batch or on prefill versus decode).
python3 - "$TMP/in.jsonl" <<'PY'
import json, random, sys
r = random.Random(7)
with open(sys.argv[1], "w") as f:
    for i in range(800):
        req = {"id": i, "prompt_ids": [r.randrange(3, 512) for _ in range(r.randrange(1, 25))],
               "max_new_tokens": r.randrange(16, 32)}
        if i % 2:
            req.update(temperature=1.0, seed=i, ignore_eos=True)
        f.write(json.dumps(req) + "\n")
PY
"$BIN/moe-run" --config "$CONFIGS/tiny_a.yaml" --input "$TMP/in.jsonl" --output "$TMP/want.jsonl" --no-stats-table --log-level warn \
  || { bad "moe-run reference"; exit 1; }

# ---- kill -9 of rank 1, then SIGSTOP of rank 0, in one service ----------------------------
launch --max-restarts 3 || exit 1
for fault in KILL STOP; do
  rank=1; [ "$fault" = STOP ] && rank=0
  "$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/in.jsonl" --output "$TMP/out_$fault.jsonl" 2>"$TMP/cli_$fault.err" &
  CLI_PID=$!
  until_progress "$TMP/cli_$fault.err" || bad "$fault: no batch progress"
  victim=$(rank_pid $rank)
  [ -n "$victim" ] || bad "$fault: no rank $rank found"
  t0=$(date +%s.%N)
  kill -"$fault" "$victim"
  secs=$(until_serving "$t0" 60)
  wait "$CLI_PID"; rc=$?; CLI_PID=
  [ "$rc" -eq 0 ] && cmp -s "$TMP/out_$fault.jsonl" "$TMP/want.jsonl" \
    && ok "SIG$fault of rank $rank mid-batch: the batch completes with moe-run's output (SERVING again after $secs s)" \
    || bad "SIG$fault of rank $rank: moe-cli exit $rc, $(tail -2 "$TMP/cli_$fault.err"); $(wc -l < "$TMP/out_$fault.jsonl") lines"
  echo "recovery after SIG$fault of rank $rank: $secs s from the fault to SERVING"
done
grep -q "restart 1 of 3" "$TMP/launch.err" && grep -q "restart 2 of 3" "$TMP/launch.err" \
  && ok "moe-launch logs each restart" || bad "restart logs: $(grep -i restart "$TMP/launch.err" | head -5)"
grep -q "re-submitted" "$TMP/launch.err" && ok "the coordinator re-submits the unfinished sequences" || bad "no re-submission logged"
"$BIN/moe-cli" --server "$ADDR" stats > "$TMP/stats.txt" 2>&1
grep -q "Recovery: 2 worker job restart(s)" "$TMP/stats.txt" \
  && ok "moe-cli stats counts the 2 worker restarts" || bad "stats: $(head -5 "$TMP/stats.txt")"

# ---- SIGSTOP of the coordinator: slow is not dead, no worker job is restarted for it --------
# moe-launch judges the job by the coordinator's word on it (or mpirun leaving), not by a health
# check a stopped coordinator cannot answer; the coordinator does not count the job's silence
# while it did not run itself, even past --rank-timeout-s (3 s here).
coord=$(pgrep -f "moe-coordinator --listen $ADDR" | head -1)
kill -STOP "$coord"; sleep 4; kill -CONT "$coord"; sleep 3
"$BIN/moe-cli" --server "$ADDR" health 2>&1 | grep -q "^SERVING" && ! grep -q "restart 3 of 3" "$TMP/launch.err" \
  && ok "SIGSTOP of the idle coordinator for 4 s: no restart, SERVING after it" \
  || bad "idle coordinator stopped 4 s: $(grep -E "restart|lost|health" "$TMP/launch.err" | tail -3)"
"$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/in.jsonl" --output "$TMP/out_cstop.jsonl" 2>"$TMP/cli_cstop.err" &
CLI_PID=$!
until_progress "$TMP/cli_cstop.err" || bad "coordinator stop: no batch progress"
kill -STOP "$coord"; sleep 5; kill -CONT "$coord"
wait "$CLI_PID"; rc=$?; CLI_PID=
[ "$rc" -eq 0 ] && cmp -s "$TMP/out_cstop.jsonl" "$TMP/want.jsonl" && ! grep -q "restart 3 of 3" "$TMP/launch.err" \
  && ok "SIGSTOP of the coordinator for 5 s mid-batch: no restart, moe-run's output" \
  || bad "coordinator stopped 5 s mid-batch: moe-cli exit $rc, $(tr '\r' '\n' < "$TMP/cli_cstop.err" | tail -2 | paste -sd' '); $(grep -E "restart|lost" "$TMP/launch.err" | tail -2)"
grep -q "the coordinator itself did not run for" "$TMP/launch.err" \
  && ok "the coordinator logs its own stall" || bad "no stall logged by the coordinator"

# ---- SIGTERM mid-batch: the drain finishes it and the client writes every result ----------
"$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/in.jsonl" --output "$TMP/out_drain.jsonl" 2>"$TMP/cli_drain.err" &
CLI_PID=$!
until_progress "$TMP/cli_drain.err" || bad "drain: no batch progress"
kill -TERM "$LAUNCH_PID"
wait "$CLI_PID"; rc=$?; CLI_PID=
[ "$rc" -eq 0 ] && cmp -s "$TMP/out_drain.jsonl" "$TMP/want.jsonl" \
  && ok "SIGTERM mid-batch: every result written" || bad "drain: moe-cli exit $rc, $(tail -2 "$TMP/cli_drain.err"); $(wc -l < "$TMP/out_drain.jsonl") lines"
wait "$LAUNCH_PID"; rc=$?; LAUNCH_PID=
[ "$rc" -eq 0 ] && ok "moe-launch exits 0 after the drain" || bad "moe-launch exit $rc after SIGTERM"

# ---- no restart left: the batch fails with UNAVAILABLE and the reason ----------------------
launch --max-restarts 0 || exit 1
"$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/in.jsonl" --output "$TMP/out_fail.jsonl" 2>"$TMP/cli_fail.err" &
CLI_PID=$!
until_progress "$TMP/cli_fail.err" || bad "give-up: no batch progress"
kill -KILL "$(rank_pid 1)"
wait "$CLI_PID"; rc=$?; CLI_PID=
[ "$rc" -eq 3 ] && grep -q "UNAVAILABLE\|worker job was lost" "$TMP/cli_fail.err" \
  && ok "no restarts left: the batch fails with UNAVAILABLE and why (exit 3)" || bad "give-up: moe-cli exit $rc, $(tail -3 "$TMP/cli_fail.err")"
wait "$LAUNCH_PID"; rc=$?; LAUNCH_PID=
[ "$rc" -eq 1 ] && grep -q "giving up" "$TMP/launch.err" && ok "moe-launch gives up with exit 1 and says so" \
  || bad "moe-launch exit $rc: $(tail -3 "$TMP/launch.err")"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
