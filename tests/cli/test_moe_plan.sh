#!/usr/bin/env bash
# moe-plan end to end: statistics of a skewed run at 4 ranks -> a placement YAML -> moe-run with
# it gives the same tokens and a lower measured device imbalance; bad statistics and bad
# placement files are refused with one line naming the file and field.
#   usage: test_moe_plan.sh BUILD_BIN_DIR TEST_DATA_DIR CONFIGS_DIR
set -u
BIN=$1; DATA=$2; CONFIGS=$3
CKPT=$DATA/tiny_skew/checkpoint   # its router prefers expert 0
PROMPTS=$CONFIGS/prompts/tiny_a.jsonl
MPIRUN=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/serving_lib.sh"  # ok, bad, expect
# json FILE EXPR: a value of a JSON file (python3's json).
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

expect 0 "--help lists options with defaults" "" -- "$BIN/moe-plan" --help
nodefault=$(grep -E '^ +--' "$TMP/out" | grep -v -e '=' -e 'default' -e 'required' || true)
[ -z "$nodefault" ] && ok "--help: every option has its default" || bad "--help lacks defaults: $nodefault"

expect 0 "skewed run, contiguous" "" -- "${MPIRUN[@]}" -np 4 "$BIN/moe-run" --checkpoint "$CKPT" \
  --input "$PROMPTS" --output "$TMP/contig.jsonl" --stats-json "$TMP/contig.json" --no-stats-table
for r in 0 1; do
  expect 0 "moe-plan --redundant-slots $r" "wrote" -- "$BIN/moe-plan" --stats "$TMP/contig.json" \
    --redundant-slots $r --output "$TMP/plan$r.yaml"
  cp "$TMP/out" "$TMP/plan$r.txt"
  grep -q "Predicted rows computed per device" "$TMP/plan$r.txt" && ok "plan $r: table printed" || bad "plan $r: no table"
  expect 0 "moe-run --placement-file plan$r" "" -- "${MPIRUN[@]}" -np 4 "$BIN/moe-run" --checkpoint "$CKPT" \
    --input "$PROMPTS" --output "$TMP/plan$r.jsonl" --stats-json "$TMP/plan$r.json" --no-stats-table \
    --placement-file "$TMP/plan$r.yaml"
  cmp -s "$TMP/contig.jsonl" "$TMP/plan$r.jsonl" && ok "plan $r: same tokens as contiguous" || bad "plan $r: tokens differ"
  before=$(json "$TMP/contig.json" "d['device_imbalance']"); after=$(json "$TMP/plan$r.json" "d['device_imbalance']")
  python3 -c "import sys; sys.exit(0 if $after < $before else 1)" && ok "plan $r: measured device imbalance $before -> $after" \
    || bad "plan $r: measured device imbalance $before -> $after did not drop"
  # The statistics name the placement they were measured under: planning again from them keeps it.
  expect 0 "replanning plan$r from its own statistics" "" -- "$BIN/moe-plan" --stats "$TMP/plan$r.json" --redundant-slots $r
  grep -Eq "expert weights moved: [0-9]+$" "$TMP/out" && ok "plan $r: replanning reports the weights moved" || bad "plan $r: no weights moved line"
done
# One redundant slot per rank: hot experts replicated, with shares.
grep -q "placement_shares" "$TMP/plan1.yaml" && ok "redundant plan has shares" || bad "no shares in the redundant plan"

# Bad statistics.
echo '{"layers": 2, "experts": 8, "world_size": 4, "per_layer": [{"tokens_per_expert": [1, 2]}, {}]}' > "$TMP/short.json"
expect 2 "too few expert counts" "short.json: field 'per_layer\\[0\\].tokens_per_expert' is not a list of 8 counts" -- "$BIN/moe-plan" --stats "$TMP/short.json"
echo '{"layers": 2,' > "$TMP/trunc.json"
expect 2 "truncated JSON" "trunc.json: not valid JSON" -- "$BIN/moe-plan" --stats "$TMP/trunc.json"
expect 2 "missing statistics file" "nope.json: cannot open" -- "$BIN/moe-plan" --stats "$TMP/nope.json"
expect 2 "too few slots" "cannot hold 8 experts" -- "$BIN/moe-plan" --stats "$TMP/contig.json" --slots-per-rank 1
expect 2 "nodes not dividing ranks" "3 nodes do not divide 4 ranks" -- "$BIN/moe-plan" --stats "$TMP/contig.json" --nodes 3

# Bad placement files given to moe-run.
printf 'placement_map: [[[0], [1]]]\n' > "$TMP/few.yaml"
expect 2 "placement file with too few experts" "few.yaml: placement_map layer 0 lists 2 experts, expected 8" -- \
  "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,2 --placement-file "$TMP/few.yaml"
printf 'placement_map: [[[0], [0], [0], [0], [0], [0], [0], [0, 0]]]\n' > "$TMP/twice.yaml"
expect 2 "placement file listing a rank twice" "layer 0 expert 7 lists rank 0 twice" -- \
  "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,2 --placement-file "$TMP/twice.yaml"
printf 'placement_map: [[[0], [0], [0], [0], [0], [0], [0], [0]]]\nplacement_shares: [[[1], [1], [1], [1], [1], [1], [1], [x]]]\n' > "$TMP/shares.yaml"
expect 2 "placement file with a bad share" "shares.yaml: field 'placement_shares'" -- \
  "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,2 --placement-file "$TMP/shares.yaml"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
