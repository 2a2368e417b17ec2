#!/usr/bin/env bash
# Live expert rebalancing as a user meets it, on tiny_skew (its router prefers expert 0, half of
# all choices) with a skewed workload of 48 requests:
#   - moe-run at 2 and 4 ranks with rebalancing every 2 steps gives the tokens of 1 rank, and its
#     --stats-json counts the rebalances and the bytes moved;
#   - moe-launch at 4 ranks with rebalancing in its run YAML serves the workload as one batch
#     while several rebalances move experts mid-flight: no request fails, every output equals
#     the 1-rank run's, and moe-cli stats (table and --json) and /metrics count the rebalances
#     and the bytes, with the placement after them;
#   - bad rebalancing values are refused with one line naming the field and what was expected.
#   usage: test_rebalance_cli.sh BUILD_BIN_DIR TEST_DATA_DIR
set -u
BIN=$1; DATA=$2
CKPT=$DATA/tiny_skew/checkpoint
TMP=$(mktemp -d)
source "$(dirname "$0")/serving_lib.sh"
MPIRUN=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
PORT=$(free_port)
ADDR=127.0.0.1:$PORT
LAUNCH_PID=
cleanup() { [ -n "$LAUNCH_PID" ] && kill_launch "$LAUNCH_PID" "$ADDR"; rm -rf "$TMP"; }
trap cleanup EXIT
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

# The workload: 48 prompts of 8 to 24 random tokens (fixed seed), 12 new tokens each; every
# other one sampled with a seed, which must give the same tokens while experts move between
# ranks (an expert computes a row to the same bits on any rank, beside any other rows).
python3 - "$TMP/skew.jsonl" <<'PY'
import json, random, sys
rng = random.Random(7)
with open(sys.argv[1], "w") as f:
    for i in range(48):
        n = rng.randint(8, 24)
        req = {"id": i, "prompt_ids": [rng.randrange(3, 512) for _ in range(n)], "max_new_tokens": 12}
        if i % 2:
            req.update(temperature=1.0, seed=100 + i)
        f.write(json.dumps(req) + "\n")
PY
# Small steps, so that the workload takes many of them and several rebalances fall inside it.
COMMON=(--checkpoint "$CKPT" --max-tokens-per-step 32 --max-seqs 8)
REBAL=(--rebalance --rebalance-interval 2 --rebalance-window 4 --rebalance-threshold 1.0 --rebalance-redundant-slots 1)

expect 0 "--help lists the rebalancing options with defaults" "" -- "$BIN/moe-run" --help
for f in "--rebalance " "--rebalance-interval INT=64" "--rebalance-window INT=64" "--rebalance-threshold FLOAT=1.2" "--rebalance-redundant-slots INT=0"; do
  grep -q -- "$f" "$TMP/out" || bad "moe-run --help lacks '$f'"
done
"$BIN/moe-worker" --help 2>&1 | grep -q -- "--rebalance-interval INT=64" && ok "moe-worker --help lists them too" || bad "moe-worker --help lacks --rebalance-interval"

expect 0 "1 rank, no rebalancing" "" -- "$BIN/moe-run" "${COMMON[@]}" --input "$TMP/skew.jsonl" \
  --output "$TMP/ref.jsonl" --no-stats-table
for np in 2 4; do
  expect 0 "$np ranks, rebalancing every 2 steps" "rebalanced at step" -- "${MPIRUN[@]}" -np $np "$BIN/moe-run" "${COMMON[@]}" "${REBAL[@]}" \
    --input "$TMP/skew.jsonl" --output "$TMP/np$np.jsonl" --stats-json "$TMP/np$np.json" --no-stats-table
  cmp -s "$TMP/ref.jsonl" "$TMP/np$np.jsonl" && ok "$np ranks with rebalancing: same tokens as 1 rank" || bad "$np ranks with rebalancing: tokens differ from 1 rank"
  n=$(json "$TMP/np$np.json" "d['rebalance']['rebalances']"); b=$(json "$TMP/np$np.json" "d['rebalance']['bytes_moved']")
  w=$(json "$TMP/np$np.json" "d['rebalance']['weights_moved']")
  [ "$n" -ge 2 ] && [ "$b" -gt 0 ] && ok "$np ranks: --stats-json counts $n rebalances, $w weights, $b bytes" || bad "$np ranks: rebalances $n, bytes $b"
  # tiny_skew's experts: w1, w3 [128, 64] and w2 [64, 128] in fp32.
  [ "$b" -eq $((w * 3 * 64 * 128 * 4)) ] && ok "$np ranks: bytes moved = weights moved x one expert's bytes" || bad "$np ranks: $b bytes for $w weights"
done
grep -q "rebalancing: [0-9]* rebalances" "$TMP/err" && ok "moe-run logs the rebalancing totals" || bad "no rebalancing summary: $(tail -3 "$TMP/err")"
# Above the threshold only: tiny_skew's worst layer is far below 100, so the loads are looked at
# and nothing moves.
expect 0 "4 ranks, threshold 100" "" -- "${MPIRUN[@]}" -np 4 "$BIN/moe-run" "${COMMON[@]}" "${REBAL[@]:0:5}" --rebalance-threshold 100 \
  --input "$TMP/skew.jsonl" --output "$TMP/high.jsonl" --stats-json "$TMP/high.json" --no-stats-table
c=$(json "$TMP/high.json" "d['rebalance']['checks']"); n=$(json "$TMP/high.json" "d['rebalance']['rebalances']")
[ "$c" -gt 0 ] && [ "$n" -eq 0 ] && ok "threshold 100: $c checks, no rebalance" || bad "threshold 100: $c checks, $n rebalances"

# Bad values: exit 2, one line naming the field and what is expected.
expect 2 "interval 0 refused" "rebalance_interval is 0, expected an integer in \\[1, " -- "$BIN/moe-run" "${COMMON[@]}" --rebalance --rebalance-interval 0 --prompt-ids 1,2
expect 2 "window 0 refused" "rebalance_window is 0, expected an integer in \\[1, 4096\\]" -- "$BIN/moe-run" "${COMMON[@]}" --rebalance-window 0 --prompt-ids 1,2
expect 2 "negative redundant slots refused" "rebalance_redundant_slots is -1, expected an integer in \\[0, " -- "$BIN/moe-run" "${COMMON[@]}" --rebalance-redundant-slots -1 --prompt-ids 1,2
printf 'checkpoint: %s\nrebalance: true\nrebalance_threshold: -0.5\n' "$CKPT" > "$TMP/neg.yaml"
expect 2 "negative threshold in YAML refused" "rebalance_threshold is -0.500000, expected a number >= 1" -- "$BIN/moe-run" --config "$TMP/neg.yaml" --prompt-ids 1,2
printf 'checkpoint: %s\nrebalance: true\nrebalance_interval: often\n' "$CKPT" > "$TMP/word.yaml"
expect 2 "a word for the interval refused" "word.yaml: field 'rebalance_interval' is 'often', expected an integer >= 1" -- "$BIN/moe-run" --config "$TMP/word.yaml" --prompt-ids 1,2
[ "$(wc -l < "$TMP/err")" -eq 1 ] && ok "the refusal is one line" || bad "refusal not one line: $(cat "$TMP/err")"

# Serving at 4 ranks with rebalancing from the run YAML.
cat > "$TMP/serve.yaml" <<EOF
checkpoint: $CKPT
max_tokens_per_step: 32
max_seqs: 8
rebalance: true
rebalance_interval: 2
rebalance_window: 4
rebalance_threshold: 1.0
rebalance_redundant_slots: 1
EOF
MPORT=$(free_port)
"$BIN/moe-launch" --np 4 --config "$TMP/serve.yaml" --listen "$ADDR" --metrics-port "$MPORT" \
  >"$TMP/launch.out" 2>"$TMP/launch.err" &
LAUNCH_PID=$!
for _ in $(seq 1 600); do grep -q "^ready: " "$TMP/launch.out" && break; sleep 0.1; done
grep -q "^ready: $ADDR" "$TMP/launch.out" && ok "moe-launch --np 4 with rebalancing is ready" || { bad "not ready: $(tail -5 "$TMP/launch.err")"; echo "$pass passed, $fail failed"; exit 1; }

# The batch, and beside it single generations of the same prompts, all in flight together.
"$BIN/moe-cli" --server "$ADDR" batch --input "$TMP/skew.jsonl" --output "$TMP/served.jsonl" 2>"$TMP/batch.err" &
BATCH=$!
for i in 4 18 40; do
  ids=$(sed -n "$((i + 1))p" "$TMP/skew.jsonl" | python3 -c "import json,sys; print(','.join(map(str, json.load(sys.stdin)['prompt_ids'])))")
  "$BIN/moe-cli" --server "$ADDR" generate --prompt-ids "$ids" --max-new-tokens 12 >"$TMP/gen$i" 2>"$TMP/gen$i.err" &
  eval "GEN$i=\$!"
done
wait "$BATCH" && ok "batch under rebalancing: exit 0" || bad "batch: $(tail -3 "$TMP/batch.err")"
for i in 4 18 40; do
  eval "pid=\$GEN$i"
  if wait "$pid"; then
    want=$(sed -n "$((i + 1))p" "$TMP/ref.jsonl" | python3 -c "import json,sys; print(' '.join(map(str, json.load(sys.stdin)['output_ids'])))")
    got=$(grep -E '^[0-9]+$' "$TMP/gen$i" | tr '\n' ' ' | sed 's/ $//')
    [ "$got" = "$want" ] && ok "generate $i beside the batch: the 1-rank tokens" || bad "generate $i: '$got' != '$want'"
  else
    bad "generate $i failed: $(tail -2 "$TMP/gen$i.err")"
  fi
done
cmp -s "$TMP/ref.jsonl" "$TMP/served.jsonl" && ok "served batch == 1-rank moe-run, request by request" || bad "served batch differs from the 1-rank run"
python3 - "$TMP/served.jsonl" <<'PY' && ok "no request failed: 48 results, all finished by length" || bad "failed or missing results"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
assert len(r) == 48 and all(x["finish_reason"] == "length" for x in r), r[:2]
PY
grep -q "rebalanced at step" "$TMP/launch.err" && ok "the workers logged rebalances" || bad "no rebalance in the worker log"

"$BIN/moe-cli" --server "$ADDR" stats --json >"$TMP/stats.json" 2>"$TMP/stats.err" && ok "stats --json" || bad "stats --json: $(cat "$TMP/stats.err")"
n=$(json "$TMP/stats.json" "d['rebalance']['rebalances']"); b=$(json "$TMP/stats.json" "d['rebalance']['bytes_moved']")
[ "$n" -ge 2 ] && [ "$b" -gt 0 ] && ok "stats --json: $n rebalances, $b bytes moved" || bad "stats --json: rebalances $n, bytes $b"
python3 - "$TMP/stats.json" <<'PY' && ok "stats: the placement reported is not the starting one any more" || bad "stats: placement still the contiguous one"
import json, sys
d = json.load(open(sys.argv[1]))
contiguous = [[[e // 2] for e in range(8)] for _ in range(d["layers"])]
assert d["placement"]["map"] != contiguous, d["placement"]
PY
"$BIN/moe-cli" --server "$ADDR" stats >"$TMP/table" 2>&1 && grep -Eq "^Live rebalancing: [0-9]+ rebalance\(s\), [0-9]+ expert weight\(s\) moved" "$TMP/table" \
  && ok "stats table: the rebalancing line" || bad "stats table: $(head -5 "$TMP/table")"
curl -s "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics"
m=$(awk '$1 == "moe_rebalances_total" {print $2}' "$TMP/metrics"); mb=$(awk '$1 == "moe_rebalance_bytes_moved_total" {print $2}' "$TMP/metrics")
[ "${m:-0}" = "$n" ] && [ "${mb:-0}" = "$b" ] && grep -q "^moe_rebalance_seconds_total " "$TMP/metrics" \
  && ok "/metrics: moe_rebalances_total $m, bytes $mb, as the stats" || bad "/metrics: rebalances '$m' bytes '$mb' (stats $n, $b)"

kill -TERM "$LAUNCH_PID"; wait "$LAUNCH_PID"; rc=$?; LAUNCH_PID=
[ "$rc" -eq 0 ] && ok "moe-launch drains and exits 0" || bad "moe-launch exit $rc"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
