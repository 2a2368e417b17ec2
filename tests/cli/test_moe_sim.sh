#!/usr/bin/env bash
# The simulator checked against reality: runs recorded with --trace at 1, 2, 4 and 8 CPU ranks
# (contiguous; and a planned placement with redundant replicas and shares at 4 ranks), each
# replayed by moe-sim; the predicted tokens per expert, rows computed per rank, rows and bytes
# per rank pair must equal the run's measured statistics exactly, layer by layer. Also: a
# scaled-up simulation runs, and bad traces are refused naming the line.
#   usage: test_moe_sim.sh BUILD_BIN_DIR TEST_DATA_DIR CONFIGS_DIR
set -u
BIN=$1; DATA=$2; CONFIGS=$3
PROMPTS=$CONFIGS/prompts/tiny_a.jsonl
MPIRUN=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/serving_lib.sh"  # ok/bad, free_port, kill_launch
# same_counts MEASURED PREDICTED: every per-layer table equal.
same_counts() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
bad = []
for key in ("layers", "experts", "world_size"):
    if a[key] != b[key]: bad.append(f"{key}: measured {a[key]}, predicted {b[key]}")
for l, (x, y) in enumerate(zip(a["per_layer"], b["per_layer"])):
    for key in ("tokens_per_expert", "rows_computed_per_rank", "rows_sent", "bytes_sent"):
        if x[key] != y[key]: bad.append(f"layer {l} {key}: measured {x[key]}, predicted {y[key]}")
print("\n".join(bad[:10]))
sys.exit(1 if bad else 0)
PY
}

run_and_replay() {  # NAME NP CKPT [moe-run flags...]
  local name=$1 np=$2 ckpt=$3; shift 3
  expect 0 "$name: run with --trace" "" -- "${MPIRUN[@]}" -np "$np" "$BIN/moe-run" --checkpoint "$ckpt" \
    --input "$PROMPTS" --output "$TMP/$name.jsonl" --stats-json "$TMP/$name.json" --trace "$TMP/$name.trace" \
    --no-stats-table "$@"
  expect 0 "$name: moe-sim replays it" "" -- "$BIN/moe-sim" --trace "$TMP/$name.trace" --stats-json "$TMP/$name.sim.json"
  if msg=$(same_counts "$TMP/$name.json" "$TMP/$name.sim.json"); then
    ok "$name: predicted rows and bytes equal the measured ones"
  else
    bad "$name: predicted != measured: $msg"
  fi
}
for np in 1 2 4 8; do run_and_replay "tiny_a_np$np" $np "$DATA/tiny_a/checkpoint"; done
# 16 experts top-4, round-robin: prompts within its vocabulary.
for i in 1 2 3 4 5 6; do echo "{\"id\": $i, \"prompt_ids\": [$((i * 7)), $((i * 11)), $((i + 3))], \"max_new_tokens\": $((4 + i))}"; done > "$TMP/b.jsonl"
PROMPTS_A=$PROMPTS; PROMPTS=$TMP/b.jsonl
run_and_replay "tiny_b_np4" 4 "$DATA/tiny_b/checkpoint" --placement round_robin
PROMPTS=$PROMPTS_A
# A planned placement with redundant replicas split by shares.
expect 0 "plan with a redundant slot" "" -- "$BIN/moe-plan" --stats "$TMP/tiny_a_np4.json" --redundant-slots 1 --output "$TMP/plan.yaml"
run_and_replay "tiny_skew_planned_np4" 4 "$DATA/tiny_skew/checkpoint" --placement-file "$TMP/plan.yaml"

# A served run traced by moe-worker (--trace through moe-launch's --worker-args): the replay
# equals the statistics the coordinator measured (moe-cli stats --json) over the same steps.
ADDR=127.0.0.1:$(free_port)
"$BIN/moe-launch" --np 2 --config "$CONFIGS/tiny_a.yaml" --listen "$ADDR" \
  --metrics-port 0 --worker-args "--trace $TMP/served.trace" >"$TMP/launch.out" 2>"$TMP/launch.err" &
LAUNCH_PID=$!
for _ in $(seq 1 600); do grep -q "^ready: " "$TMP/launch.out" && break; sleep 0.1; done
if grep -q "^ready: " "$TMP/launch.out"; then
  "$BIN/moe-cli" --server "$ADDR" batch --input "$PROMPTS" --output "$TMP/served.jsonl" 2>/dev/null \
    && "$BIN/moe-cli" --server "$ADDR" stats --json >"$TMP/served.json" 2>"$TMP/stats.err" \
    && ok "served a batch through moe-launch with moe-worker --trace" || bad "served batch or stats: $(tail -2 "$TMP/stats.err")"
  kill -TERM "$LAUNCH_PID"; wait "$LAUNCH_PID"
  expect 0 "moe-sim replays moe-worker's trace" "" -- "$BIN/moe-sim" --trace "$TMP/served.trace" --stats-json "$TMP/served.sim.json"
  if msg=$(same_counts "$TMP/served.json" "$TMP/served.sim.json"); then
    ok "served: predicted rows and bytes equal the coordinator's statistics"
  else
    bad "served: predicted != measured: $msg"
  fi
else
  bad "moe-launch not ready: $(tail -3 "$TMP/launch.err")"
fi
kill_launch "$LAUNCH_PID" "$ADDR"

# Scaled up: Mixtral 8x7B's dimensions on 8 to 256 ranks of 8 GPUs.
expect 0 "scaled to 8..256 ranks" "" -- "$BIN/moe-sim" --trace "$TMP/tiny_a_np4.trace" --mixtral-8x7b \
  --ranks 8,64,256 --placement contiguous,round_robin,planned --redundant-slots 0,1
[ "$(grep -cE '^ +(8|64|256) ' "$TMP/out")" -eq 12 ] && ok "12 configurations predicted" || bad "scaled table: $(cat "$TMP/out")"
grep -qE '^ +64 +8 planned r=1' "$TMP/out" && ok "64 ranks on 8 nodes" || bad "no 64-rank planned row"

# The cost model calibrated on the measured step times a trace records (W lines), and the
# recorded run predicted against its measured steps (the figure is stated, not asserted).
[ "$(grep -c '^W ' "$TMP/tiny_a_np2.trace")" -eq "$(($(grep -c '^W ' "$TMP/tiny_a_np1.trace") * 2))" ] \
  && ok "the trace holds one measured step per rank and step" || bad "W lines: $(grep -c '^W ' "$TMP/tiny_a_np2.trace")"
expect 0 "calibrated on the 2-rank run" "" -- "$BIN/moe-sim" --trace "$TMP/tiny_a_np4.trace" --calibrate "$TMP/tiny_a_np2.trace" --placement trace
grep -q "calibrated on .*tiny_a_np2.trace (2 ranks, " "$TMP/out" && grep -qE "^  4 ranks: measured [0-9.]+ ms per step, predicted [0-9.]+ ms, error [-+][0-9.]+%" "$TMP/out" \
  && ok "prints the fit and the 4-rank run's predicted against measured step time" || bad "calibration output: $(cat "$TMP/out")"
expect 0 "an explicit cost flag wins over the fit" "" -- "$BIN/moe-sim" --trace "$TMP/tiny_a_np2.trace" --calibrate "$TMP/tiny_a_np2.trace" --expert-tflops 77
grep -q "cost model: experts 77 TFLOP/s" "$TMP/out" && ok "--expert-tflops 77 kept" || bad "explicit flag: $(grep 'cost model' "$TMP/out")"
grep -v '^W ' "$TMP/tiny_a_np2.trace" > "$TMP/untimed.trace"
expect 2 "calibrating on a trace without measured times" "untimed.trace: no measured times" -- "$BIN/moe-sim" --trace "$TMP/untimed.trace" --calibrate "$TMP/untimed.trace"
head -2 "$TMP/tiny_a_np2.trace" > "$TMP/badw"; echo "W 0 0 0.1 0.2" >> "$TMP/badw"
expect 2 "a short W line" "badw:3: expected 'W step src total" -- "$BIN/moe-sim" --trace "$TMP/badw"

# A load distribution scaled up: the statistics of the 4-rank run make up the routing of 8 to
# 64 ranks; the same seed gives the same table, and every made-up choice is counted.
expect 0 "loads scaled to 8..64 ranks" "" -- "$BIN/moe-sim" --loads "$TMP/tiny_a_np4.json" --mixtral-8x7b \
  --ranks 8,64 --placement contiguous,planned --tokens-per-rank 64 --steps 3 --stats-json "$TMP/loads.sim.json"
cp "$TMP/out" "$TMP/loads1"
[ "$(grep -cE '^ +(8|64) ' "$TMP/loads1")" -eq 4 ] && ok "4 configurations predicted from loads" || bad "loads table: $(cat "$TMP/loads1")"
"$BIN/moe-sim" --loads "$TMP/tiny_a_np4.json" --mixtral-8x7b --ranks 8,64 --placement contiguous,planned \
  --tokens-per-rank 64 --steps 3 >"$TMP/loads2" 2>&1
cmp -s "$TMP/loads1" "$TMP/loads2" && ok "the same seed gives the same prediction" || bad "two runs differ"
python3 - "$TMP/loads.sim.json" <<'PY' && ok "8 ranks x 3 steps x 64 tokens x top-2 choices per layer" || bad "made-up choices miscounted"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["world_size"] == 8 and j["layers"] == 32, (j["world_size"], j["layers"])
for layer in j["per_layer"]:
    assert sum(layer["tokens_per_expert"]) == 8 * 3 * 64 * 2, sum(layer["tokens_per_expert"])
PY
expect 2 "loads without dimensions" "no model dimensions; give --hidden" -- "$BIN/moe-sim" --loads "$TMP/tiny_a_np4.json"
expect 2 "trace and loads together" "excludes" -- "$BIN/moe-sim" --loads "$TMP/tiny_a_np4.json" --trace "$TMP/tiny_a_np4.trace"
echo '{"layers": 1}' > "$TMP/badloads.json"
expect 2 "a bad statistics file" "badloads.json: field 'experts'" -- "$BIN/moe-sim" --loads "$TMP/badloads.json" --mixtral-8x7b

# Bad traces.
printf 'not a trace\n' > "$TMP/bad1"
expect 2 "wrong first line" "bad1:1: expected 'moe-routing-trace 1'" -- "$BIN/moe-sim" --trace "$TMP/bad1"
head -2 "$TMP/tiny_a_np2.trace" > "$TMP/bad2"; echo "S 0 0 0 2 1 2" >> "$TMP/bad2"
expect 2 "too few expert ids" "bad2:3: expected 4 expert ids" -- "$BIN/moe-sim" --trace "$TMP/bad2"
head -2 "$TMP/tiny_a_np2.trace" > "$TMP/bad3"; echo "S 0 0 0 1 1 8" >> "$TMP/bad3"
expect 2 "expert out of range" "bad3:3: expert 8 outside \\[0, 8\\)" -- "$BIN/moe-sim" --trace "$TMP/bad3"
sed -E '2s/"hidden": ?[0-9]+/"hidden":"x"/' "$TMP/tiny_a_np2.trace" > "$TMP/bad4"
expect 2 "a header field of another type" "bad4: the header's .hidden. is .x., expected a number" -- "$BIN/moe-sim" --trace "$TMP/bad4"
expect 2 "ranks not whole nodes" "not a whole number of nodes" -- "$BIN/moe-sim" --trace "$TMP/tiny_a_np2.trace" --ranks 12

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
