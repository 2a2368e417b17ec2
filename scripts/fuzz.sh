#!/usr/bin/env bash
# Builds the libFuzzer harnesses of the input parsers (tests/fuzz/, one per parser) with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer into build-fuzz/, and runs each in turn.
#   usage: scripts/fuzz.sh [SECONDS_PER_HARNESS] [HARNESS...]
#   harnesses: safetensors checkpoint_index model_config run_config batch_requests admission
#   (default: all)
# SECONDS_PER_HARNESS defaults to 15 (what CI runs). One fuzzing job at a time. Seeds: the
# committed ones in tests/fuzz/corpus/<harness>/ and the matching files of tests/data and
# configs/; what the fuzzer learns is kept in build-fuzz/corpus/<harness>/ for the next run.
# A finding stops that harness and is saved in build-fuzz/artifacts/<harness>/; the script
# prints how to reproduce it and exits 1 at the end. MOE_FUZZ_KEEP_GOING=1 (long campaigns)
# runs each harness in libFuzzer's fork mode, which records every finding and goes on.
# MOE_FUZZ_BUILD names another build folder than build-fuzz.
# Where clang or libFuzzer is missing it says SKIPPED and exits 0 (MOE_FUZZ_REQUIRED=1: exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${1:-15}
shift || true
ALL=(safetensors checkpoint_index model_config run_config batch_requests admission)
HARNESSES=("$@")
[ ${#HARNESSES[@]} -eq 0 ] && HARNESSES=("${ALL[@]}")
BUILD=${MOE_FUZZ_BUILD:-build-fuzz}  # another folder lets a long campaign run beside a rebuild

skip() {
  echo "fuzz: SKIPPED: $1"
  [ "${MOE_FUZZ_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
}
case "$SECONDS_EACH" in ''|*[!0-9]*) echo "fuzz: seconds per harness must be a whole number, got '$SECONDS_EACH'" >&2; exit 2;; esac
for h in "${HARNESSES[@]}"; do
  [ -f "tests/fuzz/fuzz_$h.cpp" ] || { echo "fuzz: unknown harness '$h' (expected one of ${ALL[*]})" >&2; exit 2; }
done

CXX_FUZZ=$(command -v clang++ || true)
[ -n "$CXX_FUZZ" ] || skip "no clang++ (Debian: apt-get install clang libclang-rt-dev)"
CC_FUZZ=$(command -v clang || true)
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe/p.cpp"
"$CXX_FUZZ" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>"$probe/err" \
  || skip "clang++ cannot link libFuzzer with the sanitizers ($(head -1 "$probe/err")); Debian: apt-get install libclang-rt-dev"

start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_C_COMPILER="$CC_FUZZ" \
  -DCMAKE_CXX_COMPILER="$CXX_FUZZ" -DMOE_CUDA=OFF -DMOE_TESTS=OFF -DMOE_FUZZ=ON >/dev/null
targets=()
for h in "${HARNESSES[@]}"; do targets+=("fuzz_$h"); done
cmake --build "$BUILD" --parallel "$(nproc)" --target "${targets[@]}"
built=$(date +%s)

# The parsers that read a file by path get it written under here; removed whatever happens.
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/moe-fuzz-scratch.XXXXXX")
[ -d /dev/shm ] && [ -w /dev/shm ] && { rmdir "$SCRATCH"; SCRATCH=$(mktemp -d /dev/shm/moe-fuzz-scratch.XXXXXX); }
trap 'rm -rf "$probe" "$SCRATCH"' EXIT
export MOE_FUZZ_SCRATCH=$SCRATCH

# Seeds from the repository's own files, beside the committed ones.
seeds_from_repo() {
  local h=$1 dir=$2 f
  case $h in
    checkpoint_index) cp tests/data/*/checkpoint/model.safetensors.index.json "$dir/" 2>/dev/null || true ;;
    model_config)
      for f in tests/data/*/checkpoint/config.json configs/models/*/config.json; do
        [ -f "$f" ] && cp "$f" "$dir/$(echo "$f" | tr / _)"
      done ;;
    run_config) cp configs/*.yaml "$dir/" ;;
    batch_requests) cp configs/prompts/*.jsonl "$dir/" ;;
  esac
  return 0
}

failed=()
for h in "${HARNESSES[@]}"; do
  work="$BUILD/corpus/$h" seeds="$BUILD/seeds/$h" art="$BUILD/artifacts/$h"
  mkdir -p "$work" "$seeds" "$art"
  seeds_from_repo "$h" "$seeds"
  args=(-max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$art/")
  [ -f "tests/fuzz/$h.dict" ] && args+=(-dict="tests/fuzz/$h.dict")
  [ "${MOE_FUZZ_KEEP_GOING:-0}" = 1 ] && args+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  echo "fuzz: $h for ${SECONDS_EACH}s"
  log="$BUILD/fuzz_$h.log"
  # libFuzzer stops itself at max_total_time; the outer limit only guards a wedged process.
  rc=0
  touch "$art/.started"
  timeout -k 10 $((SECONDS_EACH + 120)) "$BUILD/bin/fuzz_$h" "${args[@]}" "$work" \
    "tests/fuzz/corpus/$h" "$seeds" >"$log" 2>&1 || rc=$?
  # The last progress line: runs, coverage, corpus (and in fork mode the findings so far).
  { grep -E "^#[0-9]+" "$log" || true; } | tail -1 | sed 's/^/fuzz:   /'
  # In fork mode libFuzzer exits 0 past its findings: the new artifacts are what counts.
  new=$(find "$art" -type f -newer "$art/.started" ! -name .started | sort)
  if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
    failed+=("$h")
    echo "fuzz: $h FAILED (exit $rc); the end of $log:"
    grep -E "ERROR|SUMMARY|==[0-9]+==|runtime error|terminate called|what\(\)" "$log" | head -20 | sed 's/^/fuzz:   /'
    for a in $new; do echo "fuzz:   reproduce: MOE_FUZZ_SCRATCH=/tmp $BUILD/bin/fuzz_$h $a"; done
  fi
done
echo "fuzz: build $((built - start)) s, fuzzing $(( $(date +%s) - built )) s, ${#HARNESSES[@]} harnesses"
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: findings in: ${failed[*]}" >&2
  exit 1
fi
