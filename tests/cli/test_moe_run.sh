#!/usr/bin/env bash
# moe-run as a user meets it: outputs, exit codes and one-line errors.
#   usage: test_moe_run.sh BUILD_BIN_DIR TEST_DATA_DIR CONFIGS_DIR
set -u
BIN=$1; DATA=$2; CONFIGS=$3
CKPT=$DATA/tiny_a/checkpoint
MPIRUN=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/serving_lib.sh"  # ok, bad, expect

# one_line NAME: the last command's stderr is exactly one line.
one_line() {
  local n; n=$(grep -c . "$TMP/err")
  if [ "$n" -eq 1 ]; then ok "$1: one line"; else bad "$1: $n lines of stderr: $(cat "$TMP/err")"; fi
}

expect 0 "--help lists options with defaults" "" -- "$BIN/moe-run" --help
grep -q -- "--max-tokens-per-step INT=512" "$TMP/out" && ok "--help shows --max-tokens-per-step 512" || bad "--help content"
# Every option line says its default: "=VALUE" after the option, or "default" in its text.
nodefault=$(grep -E '^ +--' "$TMP/out" | grep -v -e '=' -e 'default' || true)
[ -z "$nodefault" ] && ok "--help: every option has its default" || bad "--help lacks defaults: $nodefault"
expect 2 "unknown flag" "moe-run: The following argument was not expected: --bogus \\(see --help\\)" -- "$BIN/moe-run" --bogus
one_line "unknown flag"
expect 2 "flag value of the wrong type" "max-new-tokens = abc" -- "$BIN/moe-run" --checkpoint "$CKPT" --max-new-tokens abc
one_line "flag value of the wrong type"
expect 2 "missing checkpoint folder" "no-such-dir" -- "$BIN/moe-run" --checkpoint "$TMP/no-such-dir" --prompt-ids 1,2
one_line "missing checkpoint folder"
expect 2 "unwritable --output, refused before generating" "no-such-dir/out.jsonl: cannot open for writing" -- "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,2 --output "$TMP/no-such-dir/out.jsonl" --log-level info
if grep -q "tokens generated" "$TMP/err"; then bad "generated before refusing the output path"; else ok "nothing generated for an unwritable --output"; fi
expect 2 "bad --prompt-ids" "not an integer" -- "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,x,3
expect 2 "token outside vocabulary" "outside the vocabulary" -- "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,99999
expect 2 "prompt beyond context" "exceeds the context" -- "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,2 --max-new-tokens 100000
printf '{"id": 1, "prompt_ids": [1, 2]}\n{"id": 2, "prompt_ids": "oops"}\n' > "$TMP/bad.jsonl"
expect 2 "malformed JSONL names file and line" "bad.jsonl:2" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/bad.jsonl"
# The JSON parser stops at a NUL byte: what follows it on the line must not be ignored.
printf '{"id": 1, "prompt_ids": [1, 2]}\0garbage\n' > "$TMP/nul.jsonl"
expect 2 "a NUL byte in a JSONL line" "nul.jsonl:1: a NUL byte at column 32" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/nul.jsonl"
one_line "a NUL byte in a JSONL line"
# Whitespace alone tokenizes to no pieces: the prompt is then the bos id alone.
printf '{"id": 0, "prompt": " ", "max_new_tokens": 2}\n' > "$TMP/blank.jsonl"
expect 0 "a whitespace-only text prompt" "" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/blank.jsonl" --output "$TMP/blank.out.jsonl" --no-stats-table
grep -q '"id":0,' "$TMP/blank.out.jsonl" 2>/dev/null && ok "a result for the whitespace-only prompt" || bad "no result for the whitespace-only prompt"
# config.json sizes past their bounds: refused by name before any table is sized from them
# (timeout: 10^8 experts once spent minutes building the placement table).
huge_config() {  # huge_config NAME FIELD=VALUE...: a copy of tiny_a with config.json edited
  local dir=$TMP/$1; shift
  mkdir -p "$dir"; for f in "$CKPT"/*; do ln -sf "$f" "$dir/"; done; rm "$dir/config.json"
  local edits=()
  for kv in "$@"; do edits+=(-e "s/\"${kv%%=*}\": [^,]*,/\"${kv%%=*}\": ${kv#*=},/"); done
  sed -E "${edits[@]}" "$CKPT/config.json" > "$dir/config.json"
}
huge_config heads num_attention_heads=2097152 num_key_value_heads=1 head_dim=1024
expect 2 "query width past an int" "num_attention_heads is 2097152, expected an integer in \\[1, 1024\\]" -- timeout 60 "$BIN/moe-run" --checkpoint "$TMP/heads" --prompt-ids 1,2
huge_config experts num_local_experts=100000000
expect 2 "10^8 experts on cpu" "num_local_experts is 100000000, expected an integer in \\[1, 1024\\]" -- timeout 60 "$BIN/moe-run" --checkpoint "$TMP/experts" --prompt-ids 1,2
printf 'checkpoint: %s\nmax_seqs: -1\n' "$CKPT" > "$TMP/bad.yaml"
expect 2 "config field out of range" "max_seqs is -1, expected an integer in \\[0, 65536\\]" -- "$BIN/moe-run" --config "$TMP/bad.yaml" --prompt-ids 1,2
expect 2 "bad dtype" "dtype is 'fp8', expected auto, f32 or bf16" -- "$BIN/moe-run" --checkpoint "$CKPT" --dtype fp8 --prompt-ids 1,2
expect 2 "gpu_memory_utilization out of range" "gpu_memory_utilization is 1.5" -- "$BIN/moe-run" --checkpoint "$CKPT" --gpu-memory-utilization 1.5 --prompt-ids 1,2
expect 2 "num_layers without synthetic" "num_layers is 1, expected 0 unless synthetic" -- "$BIN/moe-run" --checkpoint "$CKPT" --num-layers 1 --prompt-ids 1,2
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo "skip - cuda backend without a GPU (this machine has one)"
else
  expect 2 "cuda backend without a GPU" "backend is cuda, but .*(no CUDA device|no CUDA backend)" -- "$BIN/moe-run" --checkpoint "$CKPT" --backend cuda --prompt-ids 1,2
  expect 2 "cuda backend without a GPU, 2 ranks" "backend is cuda" -- "${MPIRUN[@]}" -np 2 "$BIN/moe-run" --checkpoint "$CKPT" --backend cuda --prompt-ids 1,2
fi
printf 'checkpoint: %s\nplacment: contiguous\n' "$CKPT" > "$TMP/typo.yaml"
expect 2 "config unknown field" "placment" -- "$BIN/moe-run" --config "$TMP/typo.yaml" --prompt-ids 1,2
expect 2 "bad rank count error under mpirun" "outside the vocabulary" -- "${MPIRUN[@]}" -np 2 "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,99999

# The same output file at 1 and 4 ranks, with the load table printed.
expect 0 "1 rank batch" "" -- "$BIN/moe-run" --config "$CONFIGS/tiny_a.yaml" --input "$CONFIGS/prompts/tiny_a.jsonl" --output "$TMP/np1.jsonl"
expect 0 "4 rank batch" "imbalance" -- "${MPIRUN[@]}" -np 4 "$BIN/moe-run" --config "$CONFIGS/tiny_a.yaml" --input "$CONFIGS/prompts/tiny_a.jsonl" --output "$TMP/np4.jsonl" --stats-json "$TMP/stats.json"
if [ -s "$TMP/np1.jsonl" ] && cmp -s "$TMP/np1.jsonl" "$TMP/np4.jsonl"; then ok "np4 output == np1 output"; else bad "np4 output differs from np1"; fi
[ "$(wc -l < "$TMP/np4.jsonl")" -eq "$(grep -c . "$CONFIGS/prompts/tiny_a.jsonl")" ] && ok "one result per request" || bad "result count"
grep -q '"rows_sent"' "$TMP/stats.json" && ok "--stats-json written" || bad "--stats-json"

# Uneven work at 4 ranks: 3 prompts (one rank has none), 1 to 30 tokens, 1 to 40 new tokens;
# ranks run out of work at very different steps and still nobody hangs (ctest's timeout would
# catch a hang), with the 1-rank tokens.
printf '%s\n' '{"id": 0, "prompt_ids": [7], "max_new_tokens": 1}' \
  "{\"id\": 1, \"prompt_ids\": [$(seq -s, 10 39)], \"max_new_tokens\": 40}" \
  '{"id": 2, "prompt_ids": [9, 8], "max_new_tokens": 2}' > "$TMP/uneven.jsonl"
expect 0 "uneven, 1 rank" "" -- "$BIN/moe-run" --checkpoint "$CKPT" --ignore-eos --input "$TMP/uneven.jsonl" --output "$TMP/u1.jsonl" --no-stats-table
expect 0 "uneven, 4 ranks" "" -- timeout 120 "${MPIRUN[@]}" -np 4 "$BIN/moe-run" --checkpoint "$CKPT" --ignore-eos --input "$TMP/uneven.jsonl" --output "$TMP/u4.jsonl" --no-stats-table
if [ -s "$TMP/u1.jsonl" ] && cmp -s "$TMP/u1.jsonl" "$TMP/u4.jsonl"; then ok "uneven np4 == np1"; else bad "uneven np4 differs from np1"; fi
grep -q '"id":1,"output_ids":\[\([0-9]*,\)\{39\}[0-9]*\]' "$TMP/u4.jsonl" && ok "40 tokens for the long request" || bad "long request length: $(cat "$TMP/u4.jsonl")"

# An explicit map with a replicated expert (configs/tiny_c_explicit.yaml) at 2 ranks gives the
# tokens of the 1-rank run.
expect 0 "explicit map, 2 ranks" "" -- "${MPIRUN[@]}" -np 2 "$BIN/moe-run" --config "$CONFIGS/tiny_c_explicit.yaml" --prompt-ids 5,6,7,8 --no-stats-table
cp "$TMP/out" "$TMP/explicit_np2"
expect 0 "contiguous override, 1 rank" "" -- "$BIN/moe-run" --config "$CONFIGS/tiny_c_explicit.yaml" --placement contiguous --prompt-ids 5,6,7,8 --no-stats-table
if [ -s "$TMP/out" ] && cmp -s "$TMP/out" "$TMP/explicit_np2"; then ok "explicit np2 == np1"; else bad "explicit np2 differs from np1"; fi

# Synthetic weights: a folder with config.json only; the same tokens at 1 and 2 ranks (each
# tensor depends only on the seed and its name, not on which rank makes it), other tokens for
# another seed, and the first layers only with --num-layers.
mkdir -p "$TMP/synth" && cp "$CKPT/config.json" "$TMP/synth/"
SYN=(--checkpoint "$TMP/synth" --synthetic --ignore-eos --prompt-ids 5,6,7,8 --max-new-tokens 12 --no-stats-table)
expect 0 "synthetic, 1 rank" "synthetic weights" -- "$BIN/moe-run" "${SYN[@]}" --seed 7 --log-level info
cp "$TMP/out" "$TMP/syn1"
expect 0 "synthetic, 2 ranks" "" -- "${MPIRUN[@]}" -np 2 "$BIN/moe-run" "${SYN[@]}" --seed 7
if [ -s "$TMP/syn1" ] && cmp -s "$TMP/out" "$TMP/syn1"; then ok "synthetic np2 == np1"; else bad "synthetic np2 differs from np1"; fi
expect 0 "synthetic, another seed" "" -- "$BIN/moe-run" "${SYN[@]}" --seed 8
if ! cmp -s "$TMP/out" "$TMP/syn1"; then ok "another seed, other tokens"; else bad "seed 8 gave seed 7's tokens"; fi
expect 0 "synthetic, first layer only" "1 layers" -- "$BIN/moe-run" "${SYN[@]}" --seed 7 --num-layers 1 --log-level info
expect 2 "synthetic folder without config.json" "config.json: not found" -- "$BIN/moe-run" --checkpoint "$TMP" --synthetic --prompt-ids 1,2
# The CPU backend reproducing the GPU's bf16 roundings runs end to end.
expect 0 "dtype bf16 on cpu" "cpu \\(bf16\\)" -- "$BIN/moe-run" --checkpoint "$CKPT" --dtype bf16 --prompt-ids 5,6,7,8 --no-stats-table --log-level info

# Sampling: seeded requests give the same tokens at 1, 2, 4 and 8 ranks (each rank samples its
# own sequences; the draw depends on the seed and the token's index only), temperature 0 is
# greedy, and the stop conditions end the output where they say. And the same logprobs, bit for
# bit: a row's logits do not depend on the batch, the rank count, or prefill versus decode (the
# CPU kernels sum in a fixed order per row), so no sample near a tie can flip either. Beyond the
# 4 requests below, 28 seeded ones with 1 to 40 prompt tokens and logprobs, in batches of
# varied composition: other ranks, the reverse order, 3 sequences at a time, prompts cut into
# 5-token prefill chunks, and some alone.
cat > "$TMP/sampled.jsonl" <<'JSONL'
{"id": 0, "prompt_ids": [5, 6, 7, 8], "max_new_tokens": 24, "temperature": 1.0, "top_p": 0.9, "seed": 11, "ignore_eos": true}
{"id": 1, "prompt_ids": [9, 10, 11], "max_new_tokens": 24, "temperature": 0.8, "top_k": 20, "seed": 12, "ignore_eos": true}
{"id": 2, "prompt_ids": [12, 13], "max_new_tokens": 24, "temperature": 1.2, "min_p": 0.05, "repetition_penalty": 1.1, "seed": 13, "ignore_eos": true, "logprobs": 2}
{"id": 3, "prompt_ids": [14, 15, 16, 17, 18], "max_new_tokens": 24, "temperature": 0, "ignore_eos": true}
JSONL
python3 - "$TMP/sampled.jsonl" <<'PY'
import json, random, sys
r = random.Random(29)
with open(sys.argv[1], "a") as f:
    for i in range(4, 32):
        f.write(json.dumps({"id": i, "prompt_ids": [r.randrange(3, 512) for _ in range(r.randint(1, 40))],
                            "max_new_tokens": 16, "temperature": r.choice([0.7, 1.0, 1.5]),
                            "seed": 1000 + i, "ignore_eos": True, "logprobs": 1}) + "\n")
PY
# same_results WANT GOT: the results of GOT's ids equal WANT's, logprobs bit for bit.
same_results() {
  python3 - "$1" "$2" <<'PY'
import json, sys
want = {j["id"]: j for j in map(json.loads, open(sys.argv[1]))}
got = [json.loads(l) for l in open(sys.argv[2])]
assert got, "no results"
for g in got:
    w = want[g["id"]]
    assert (g["output_ids"], g["finish_reason"], g.get("logprobs")) == (w["output_ids"], w["finish_reason"], w.get("logprobs")), \
        f"id {g['id']}: {g['output_ids']} vs {w['output_ids']}"
PY
}
expect 0 "sampled, 1 rank" "" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/sampled.jsonl" --output "$TMP/sampled1.jsonl" --no-stats-table
for np in 2 4 8; do
  expect 0 "sampled, $np ranks" "" -- "${MPIRUN[@]}" -np $np "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/sampled.jsonl" --output "$TMP/sampled$np.jsonl" --no-stats-table
  same_results "$TMP/sampled1.jsonl" "$TMP/sampled$np.jsonl" && ok "seeded sampling np$np == np1, logprobs bit for bit" || bad "seeded sampling np$np differs from np1"
done
tac "$TMP/sampled.jsonl" > "$TMP/reversed.jsonl"
expect 0 "sampled, reverse order, 3 sequences at a time" "" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/reversed.jsonl" --output "$TMP/sampled_rev.jsonl" --max-seqs 3 --no-stats-table
same_results "$TMP/sampled1.jsonl" "$TMP/sampled_rev.jsonl" && ok "seeded sampling: another batch composition, the same results" || bad "seeded sampling changes with the batch composition"
expect 0 "sampled, 5-token prefill chunks, 2 ranks" "" -- "${MPIRUN[@]}" -np 2 "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/sampled.jsonl" --output "$TMP/sampled_chunk.jsonl" --max-tokens-per-step 5 --no-stats-table
same_results "$TMP/sampled1.jsonl" "$TMP/sampled_chunk.jsonl" && ok "seeded sampling: prompts prefilled in 5-token chunks, the same results" || bad "seeded sampling changes with prefill chunking"
alone_ok=1
for i in 2 9 20 31; do
  sed -n "$((i + 1))p" "$TMP/sampled.jsonl" > "$TMP/alone.jsonl"
  "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/alone.jsonl" --output "$TMP/alone_out.jsonl" --no-stats-table 2>/dev/null \
    && same_results "$TMP/sampled1.jsonl" "$TMP/alone_out.jsonl" || { alone_ok=; bad "seeded request $i alone differs from the same in the batch"; }
done
[ -n "$alone_ok" ] && ok "seeded requests alone == the same inside the batch"
python3 - "$TMP/sampled1.jsonl" <<'PY' && ok "logprobs where asked, 2 alternatives each" || bad "logprobs missing or malformed"
import json, sys
r = {j["id"]: j for j in map(json.loads, open(sys.argv[1]))}
lp = r[2]["logprobs"]
assert len(lp) == len(r[2]["output_ids"]) and all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in lp)
assert all("logprobs" not in r[i] for i in (0, 1, 3))
assert all(len(e["top_logprobs"]) == 1 for e in r[4]["logprobs"])
PY
expect 0 "greedy, 1 rank" "" -- "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 14,15,16,17,18 --max-new-tokens 24 --ignore-eos --no-stats-table
greedy=$(tr -d '\n' < "$TMP/out")
t0=$(python3 -c "import json,sys; print(','.join(map(str, [j for j in map(json.loads, open(sys.argv[1])) if j['id'] == 3][0]['output_ids'])))" "$TMP/sampled1.jsonl")
[ "$greedy" = "$t0" ] && ok "temperature 0 is greedy" || bad "temperature 0 ($t0) differs from greedy ($greedy)"
# The greedy run's 5th token as a stop token: the output ends there, with finish_reason stop;
# with min_tokens past it, the token is barred until then.
stop=$(echo "$greedy" | cut -d, -f5)
first=$(echo "$greedy" | tr ',' '\n' | grep -n -x "$stop" | head -1 | cut -d: -f1)
printf '{"id": 0, "prompt_ids": [14, 15, 16, 17, 18], "max_new_tokens": 24, "ignore_eos": true, "stop_token_ids": [%s]}\n' "$stop" > "$TMP/stop.jsonl"
expect 0 "stop token" "" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/stop.jsonl" --no-stats-table
python3 - "$TMP/out" "$greedy" "$first" <<'PY' && ok "stop token ends the output, finish_reason stop" || bad "stop token: $(cat "$TMP/out")"
import json, sys
r = json.loads(open(sys.argv[1]).readline())
want = [int(t) for t in sys.argv[2].split(",")][: int(sys.argv[3])]
assert r["output_ids"] == want and r["finish_reason"] == "stop", r
PY
printf '{"id": 0, "prompt_ids": [14, 15, 16, 17, 18], "max_new_tokens": 24, "ignore_eos": true, "stop_token_ids": [%s], "min_tokens": 24}\n' "$stop" > "$TMP/mintok.jsonl"
expect 0 "min_tokens" "" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/mintok.jsonl" --no-stats-table
python3 - "$TMP/out" "$stop" <<'PY' && ok "min_tokens bars the stop token" || bad "min_tokens: $(cat "$TMP/out")"
import json, sys
r = json.loads(open(sys.argv[1]).readline())
assert len(r["output_ids"]) == 24 and int(sys.argv[2]) not in r["output_ids"] and r["finish_reason"] == "length", r
PY
# Batch files as users have them: string ids kept as strings, OpenAI's batch format (custom_id,
# body) with results in OpenAI's batch output shape; one format per file, ids once each.
printf '{"id": "first", "prompt_ids": [14, 15, 16, 17, 18], "max_new_tokens": 24, "ignore_eos": true}\n{"id": 42, "prompt_ids": [5, 6]}\n' > "$TMP/strid.jsonl"
expect 0 "string and integer ids" "" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/strid.jsonl" --no-stats-table
python3 - "$TMP/out" "$greedy" <<'PY' && ok "ids come back with their type" || bad "ids: $(cat "$TMP/out")"
import json, sys
a, b = [json.loads(l) for l in open(sys.argv[1])]
assert a["id"] == "first" and b["id"] == 42 and ",".join(map(str, a["output_ids"])) == sys.argv[2], (a, b)
PY
printf '{"custom_id": "req-1", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": [14, 15, 16, 17, 18], "max_tokens": 24, "temperature": 0, "ignore_eos": true}}\n{"custom_id": "req-2", "method": "POST", "url": "/v1/completions", "body": {"prompt": "The licenses for", "max_tokens": 4}}\n' > "$TMP/openai_batch.jsonl"
expect 0 "OpenAI batch file" "" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/openai_batch.jsonl" --no-stats-table
python3 - "$TMP/out" "$greedy" <<'PY' && ok "OpenAI batch output lines" || bad "OpenAI batch output: $(cat "$TMP/out")"
import json, sys
a, b = [json.loads(l) for l in open(sys.argv[1])]
assert a["custom_id"] == "req-1" and a["error"] is None and a["response"]["status_code"] == 200, a
body = a["response"]["body"]
assert body["object"] == "text_completion" and body["choices"][0]["finish_reason"] == "length"
assert ",".join(map(str, body["choices"][0]["token_ids"])) == sys.argv[2]
assert body["usage"]["completion_tokens"] == 24 and body["usage"]["prompt_tokens"] == 5
assert b["custom_id"] == "req-2" and isinstance(b["response"]["body"]["choices"][0]["text"], str)
PY
printf '{"custom_id": "a", "body": {"prompt": [1, 2]}}\n{"id": 3, "prompt_ids": [1, 2]}\n' > "$TMP/mixed.jsonl"
expect 2 "mixed formats refused" "mixes OpenAI batch lines" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/mixed.jsonl"
printf '{"id": "x", "prompt_ids": [1, 2]}\n{"id": "x", "prompt_ids": [3]}\n' > "$TMP/dup.jsonl"
expect 2 "duplicate string id refused" 'id "x" appears twice' -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/dup.jsonl"

# Small input defects, each refused with exit 2 and the culprit named.
expect 2 "--prompt-ids with a trailing comma" "ends with a comma" -- "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,2,
expect 2 "--log-level typo" "loud not in" -- "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,2 --log-level loud
one_line "--log-level typo"
expect 2 "--config given a folder" "$TMP: is a folder" -- "$BIN/moe-run" --config "$TMP" --prompt-ids 1,2
# A model far past this machine's memory is refused at once, with the sizes, not by an
# allocation failing minutes into the load.
mkdir -p "$TMP/huge" && python3 -c "
import json, sys; c = json.load(open(sys.argv[1])); c.update(hidden_size=8192, intermediate_size=28672, num_hidden_layers=64, num_attention_heads=64, num_key_value_heads=8); json.dump(c, open(sys.argv[2], 'w'))" "$CKPT/config.json" "$TMP/huge/config.json"
expect 2 "model past the host's memory" "the weights it holds need .* GiB .* but this machine has .* GiB free" -- timeout 60 "$BIN/moe-run" --checkpoint "$TMP/huge" --synthetic --prompt-ids 1,2
expect 2 "KV cache past the host's memory" "the KV cache of 65536 sequences x 1048576 positions needs .* GiB but this machine has" -- timeout 60 "$BIN/moe-run" --checkpoint "$CKPT" --prompt-ids 1,2 --max-seqs 65536 --max-seq-len 1048576
printf '[a, b]: 1\n' > "$TMP/listkey.yaml"
expect 2 "YAML list as a field name" "listkey.yaml: line 1: a field name must be a plain word" -- "$BIN/moe-run" --config "$TMP/listkey.yaml" --prompt-ids 1,2

# Inputs stream: read, run and written a chunk of whole lines at a time. Chunks of ~200 bytes
# (a few lines each) at 2 ranks give the output of the whole file at once; a line without an
# end (/dev/zero) is refused by its length, at 1 and 2 ranks; ids stay unique and line numbers
# right across chunks.
expect 0 "chunked input at 2 ranks" "" -- "${MPIRUN[@]}" -np 2 "$BIN/moe-run" --config "$CONFIGS/tiny_a.yaml" --input "$CONFIGS/prompts/tiny_a.jsonl" --output "$TMP/chunked.jsonl" --input-chunk-bytes 200 --no-stats-table
cmp -s "$TMP/chunked.jsonl" "$TMP/np1.jsonl" && ok "chunked input gives the output of the whole file" || bad "chunked output differs"
expect 2 "/dev/zero as input" "/dev/zero:1: the line is longer than 16 MiB" -- timeout 60 "$BIN/moe-run" --checkpoint "$CKPT" --input /dev/zero
expect 2 "/dev/zero as input at 2 ranks" "/dev/zero:1: the line is longer than 16 MiB" -- timeout 60 "${MPIRUN[@]}" -np 2 "$BIN/moe-run" --checkpoint "$CKPT" --input /dev/zero
{ for i in 1 2 3 4 5 6; do printf '{"id": %d, "prompt_ids": [1, 2], "max_new_tokens": 2}\n' "$i"; done
  printf '{"id": 3, "prompt_ids": [1]}\n'; } > "$TMP/dup_late.jsonl"
expect 2 "a duplicate id in a later chunk" 'dup_late.jsonl:7: id 3 appears twice' -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/dup_late.jsonl" --input-chunk-bytes 60 --output "$TMP/dup_late.out"
# A chunk of blank lines alone fixes no format: the OpenAI lines after it are not "mixed" with
# plain ones (found by tests/fuzz/fuzz_batch_requests.cpp, reading in chunks against whole).
{ for i in $(seq 1 40); do echo; done; printf '{"custom_id": "late", "body": {"prompt": [1, 2], "max_tokens": 2}}\n'; } > "$TMP/blank_first.jsonl"
expect 0 "blank lines filling the first chunks, then OpenAI lines" "" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/blank_first.jsonl" --input-chunk-bytes 16 --output "$TMP/blank_first.out"
grep -q '"custom_id":"late"' "$TMP/blank_first.out" && ok "... answered in OpenAI's batch output shape" || bad "blank_first output: $(head -c 200 "$TMP/blank_first.out")"

printf '{"id": 0, "prompt_ids": [1, 2], "temperature": -1}\n' > "$TMP/badtemp.jsonl"
expect 2 "negative temperature refused" "temperature is -1" -- "$BIN/moe-run" --checkpoint "$CKPT" --input "$TMP/badtemp.jsonl"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
