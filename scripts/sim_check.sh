#!/usr/bin/env bash
# The simulator's step time against reality on this machine's CPU: one synthetic Mixtral-shaped
# model (hidden 512, 4 layers, 8 experts top-2) runs the same batch at 1, 2 and 4 ranks with
# --trace (each trace also records every rank's measured step times); moe-sim calibrates its cost
# model on one run and predicts the others' step times, printing the error of each. A
# benchmark, not a test: the figures move with the machine's load.
#   usage: scripts/sim_check.sh [--calibrate-on NP] [--threads T]   (defaults: 2 and 1)
#   needs: build/bin/moe-run, build/bin/moe-sim (scripts/build.sh), mpirun
set -euo pipefail
cd "$(dirname "$0")/.."
CAL=2; THREADS=1
while [ $# -gt 0 ]; do
  case $1 in
    --calibrate-on) CAL=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "sim_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
BIN=$PWD/build/bin
for b in moe-run moe-sim; do
  [ -x "$BIN/$b" ] || { echo "sim_check.sh: $BIN/$b not built; run scripts/build.sh" >&2; exit 1; }
done
MPIRUN=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
mkdir "$TMP/model"
python3 - "$TMP" <<'PY'
import json, random, sys
tmp = sys.argv[1]
c = json.load(open("tests/data/tiny_a/checkpoint/config.json"))
c.update(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
         num_key_value_heads=2, vocab_size=2000, max_position_embeddings=512)
json.dump(c, open(f"{tmp}/model/config.json", "w"))
rng = random.Random(7)  # fixed: the same batch every time
with open(f"{tmp}/prompts.jsonl", "w") as f:
    for i in range(48):
        n = rng.randrange(8, 64)
        f.write(json.dumps({"id": i, "prompt_ids": [rng.randrange(2000) for _ in range(n)],
                            "max_new_tokens": rng.randrange(8, 32)}) + "\n")
PY
echo "model: synthetic, hidden 512, intermediate 1536, 4 layers, 8 experts top-2, f32; 48 prompts of" \
     "8-63 tokens, 8-31 new; --threads $THREADS per rank on $(nproc) cores"
for np in 1 2 4; do
  "${MPIRUN[@]}" -np "$np" "$BIN/moe-run" --checkpoint "$TMP/model" --synthetic --threads "$THREADS" \
    --max-seqs 16 --input "$TMP/prompts.jsonl" --output "$TMP/out$np.jsonl" --trace "$TMP/t$np.trace" \
    --no-stats-table --log-level warn
done
cmp -s "$TMP/out1.jsonl" "$TMP/out2.jsonl" && cmp -s "$TMP/out1.jsonl" "$TMP/out4.jsonl" \
  || { echo "sim_check.sh: the runs' tokens differ between rank counts" >&2; exit 1; }
"$BIN/moe-sim" --trace "$TMP/t1.trace" --calibrate "$TMP/t$CAL.trace" --placement trace | grep "^calibrated"
echo
printf '%-6s %-12s %-12s %s\n' ranks "measured ms" "predicted ms" error
for np in 1 2 4; do
  "$BIN/moe-sim" --trace "$TMP/t$np.trace" --calibrate "$TMP/t$CAL.trace" --placement trace \
    | sed -nE "s/^  ([0-9]+) ranks: measured ([0-9.]+) ms per step, predicted ([0-9.]+) ms, error (.*)$/\1 \2 \3 \4/p" \
    | while read -r n m p e; do
        note=""; [ "$n" = "$CAL" ] && note="  (calibrated on this run)"
        [ "$((n * THREADS))" -gt "$(nproc)" ] && note="$note  (oversubscribed: $((n * THREADS)) threads on $(nproc) cores)"
        printf '%-6s %-12s %-12s %s%s\n' "$n" "$m" "$p" "$e" "$note"
      done
done
