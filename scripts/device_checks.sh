#!/usr/bin/env bash
# device_checks.sh: every GPU check in ONE device call, within MOE_CHECKS_BUDGET_S (540 s), run
# from the repository root on a GPU box reached through the device tool (docs/DEVICE.md), with
# build-device/moe-bundle.tar.gz carried. In order, each under its own time bound:
#   1. env-check (a failure stops everything; "one rank only" stops the 2-rank steps);
#   2. every GPU test at 1 rank, the first with MOE_CUDA_SYNC_CHECK=1 (a fault names its op);
#   3. the 2-rank steps (MPI staged on the one GPU), only where the compute mode lets two
#      processes share it and time remains beside what the benchmarks need;
#   4. reduced benchmarks: expert GEMMs against a dense cuBLAS GEMM of the same FLOPs, and the
#      model's decode (batch 1, 8, 64) and 8k-token prefill against their bounds, each split by
#      phase (route, permute, exchange, experts, combine, attention) with timing barriers;
#   5. the transformers peer, where time remains (--peer).
# A step whose bound would take the call past the budget is reported as not run, never started.
# Under $OUT (what the device tool brings back; /tmp/moe-device-checks without it), at most five
# files, each written as the checks go so that a call cut short still brings back what ran:
#   summary.txt  one line a step (ok / FAILED / SKIPPED / NOT RUN, seconds) and the verdict
#   env.log      env-check's report
#   tests.log    every test step's output, one after the other, each under a === header
#   bench.log    the benchmarks' output
#   figures.txt  the figures the tests and benchmarks printed
#
# usage: bash scripts/device_checks.sh [--peer] [--rehearsal]
#   --peer       also the transformers peer benchmark at the end (scripts/bench_transformers.py)
#   --rehearsal  the emulated build standing in for the box (bundle it with
#                scripts/bundle_device.sh build-emu): the same steps with benchmark shapes small
#                enough for the CPU, so that a real call fails only on what only a GPU can show
# Exit code: 0 every step run passed, 1 a step failed, 2 bad usage.
set -uo pipefail
cd "$(dirname "$0")/.."

PEER=0
REHEARSAL=0
for a in "$@"; do
  case "$a" in
    --peer) PEER=1 ;;
    --rehearsal) REHEARSAL=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "device_checks.sh: unknown option '$a' (expected --peer or --rehearsal)" >&2; exit 2 ;;
  esac
done
export GTEST_COLOR=no  # plain "[  PASSED  ] N tests" lines to read below
OUTDIR=${OUT:-/tmp/moe-device-checks}
mkdir -p "$OUTDIR"
BUDGET=${MOE_CHECKS_BUDGET_S:-540}
# What the benchmarks need of the budget: the 2-rank tests start only if this is left after them.
BENCH_RESERVE=${MOE_CHECKS_BENCH_RESERVE_S:-150}
# A NCCL join gives up well within a step's bound, so "a peer never joined" reaches the log
# instead of the step being killed first.
export MOE_NCCL_INIT_TIMEOUT_S=${MOE_NCCL_INIT_TIMEOUT_S:-30}
RUN=(bash scripts/device_run.sh)
MPI=(mpirun --oversubscribe -np 2)
[ "$(id -u)" -eq 0 ] && MPI=(mpirun --allow-run-as-root --oversubscribe -np 2)
HAVE_TIMEOUT=0; command -v timeout >/dev/null && HAVE_TIMEOUT=1
SUMMARY=$OUTDIR/summary.txt TESTS=$OUTDIR/tests.log BENCH=$OUTDIR/bench.log
FIGURES=$OUTDIR/figures.txt
: > "$SUMMARY"; : > "$TESTS"; : > "$BENCH"; : > "$FIGURES"
failed=0

note() { echo "$1" | tee -a "$SUMMARY"; }

# step NAME LOG BOUND_S -- command...: runs it for at most BOUND_S seconds, appends its output to
# LOG under a header, notes the verdict in summary.txt.
step() {
  local name=$1 log=$2 bound=$3; shift 4
  if [ $((SECONDS + bound)) -gt "$BUDGET" ]; then
    note "$(printf '%-58s NOT RUN (its %ds bound would pass the %ds budget)' "$name" "$bound" "$BUDGET")"
    return 1
  fi
  local t0=$SECONDS rc tmp
  tmp=$(mktemp)
  if [ "$HAVE_TIMEOUT" = 1 ]; then timeout -k 10 "$bound" "$@" >"$tmp" 2>&1; else "$@" >"$tmp" 2>&1; fi
  rc=$?
  { echo "=== $name (rc $rc, $((SECONDS - t0)) s): $*"; cat "$tmp"; echo; } >> "$log"
  grep -h '^\[ figures  \]' "$tmp" >> "$FIGURES" 2>/dev/null
  local verdict="ok"
  [ $rc -ne 0 ] && verdict="FAILED rc=$rc"
  [ $rc -eq 124 ] && [ "$HAVE_TIMEOUT" = 1 ] && verdict="FAILED (timed out after ${bound}s)"
  # GoogleTest's own count: a run whose every test skipped (no GPU) is no pass.
  if [ $rc -eq 0 ] && grep -q '\[  PASSED  \] 0 tests' "$tmp"; then verdict="SKIPPED (no GPU?)"; fi
  local counts
  counts=$(grep -ho '\[  \(PASSED\|FAILED\|SKIPPED\) \] [0-9]* tests\?' "$tmp" | sed 's/\[ *//; s/ *\]//' | sort -u | tr '\n' ' ')
  note "$(printf '%-58s %s (%ds) %s' "$name" "$verdict" $((SECONDS - t0)) "$counts")"
  case "$verdict" in FAILED*) failed=1 ;; esac
  rm -f "$tmp"
  return $rc
}

# Whether two processes may share the GPU: an Exclusive_Process compute mode lets one context
# on a device, so the 2-rank steps would fail for a reason that is not ours.
shared_gpu_ok() {
  local mode
  command -v nvidia-smi >/dev/null || { note "compute mode: unknown (no nvidia-smi); trying the 2-rank steps"; return 0; }
  mode=$(nvidia-smi --query-gpu=compute_mode --format=csv,noheader 2>/dev/null | head -1)
  case "$mode" in
    *Exclusive*|*Prohibited*) note "compute mode: $mode: one process per GPU, so no 2-rank steps"; return 1 ;;
    *) note "compute mode: ${mode:-unknown}: 2 ranks may share the GPU"; return 0 ;;
  esac
}

finish() {
  note "== $((SECONDS))s of the ${BUDGET}s budget used; $([ $failed = 0 ] && echo 'every step run passed' || echo 'a step FAILED')"
  echo "== figures"; cat "$FIGURES"
  echo "== bench"; grep -E 'target:|phases of|route [0-9]|ratio|TFLOP|of dense' "$BENCH" 2>/dev/null | tail -40
  exit $failed
}

# ---- 1. env-check -----------------------------------------------------------------------------
note "device_checks.sh $(date -u +%FT%TZ) $([ $REHEARSAL = 1 ] && echo '(rehearsal: emulated build)')"
MULTI_RANK=1
if ! step "env-check" "$OUTDIR/env.log" 180 -- "${RUN[@]}" env-check; then
  if grep -q "OK for one rank" "$OUTDIR/env.log"; then
    note "env-check: Open MPI is not usable here: 1-rank steps only (see env.log)"
    MULTI_RANK=0; failed=0
  else
    note "env-check failed: nothing else is run (the first problem is named in env.log)"
    tail -20 "$OUTDIR/env.log"
    finish
  fi
fi

# ---- 2. every GPU test at 1 rank --------------------------------------------------------------
step "test_cuda_kernels, 1 rank, MOE_CUDA_SYNC_CHECK=1" "$TESTS" 120 -- \
  env MOE_CUDA_SYNC_CHECK=1 "${RUN[@]}" test_cuda_kernels
step "test_cuda_edges, 1 rank" "$TESTS" 150 -- "${RUN[@]}" test_cuda_edges
step "test_cuda_fault, 1 rank" "$TESTS" 60 -- "${RUN[@]}" test_cuda_fault
step "test_cublas_library, 1 rank" "$TESTS" 30 -- "${RUN[@]}" test_cublas_library
step "test_cuda_ops, 1 rank" "$TESTS" 90 -- "${RUN[@]}" test_cuda_ops
step "test_cuda_moe_ops, 1 rank" "$TESTS" 90 -- "${RUN[@]}" test_cuda_moe_ops
step "test_comm_cuda, 1 rank" "$TESTS" 60 -- "${RUN[@]}" test_comm_cuda
step "test_cuda_reference, 1 rank" "$TESTS" 120 -- "${RUN[@]}" test_cuda_reference

# ---- 3. 2 ranks on the one GPU (MPI staged), if time remains beside the benchmarks ---------------
two_rank() {
  local name=$1 bound=$2; shift 2
  if [ $((SECONDS + bound + BENCH_RESERVE)) -gt "$BUDGET" ]; then
    note "$(printf '%-58s NOT RUN (kept %ds for the benchmarks)' "$name" "$BENCH_RESERVE")"
    return
  fi
  step "$name" "$TESTS" "$bound" -- "${RUN[@]}" "${MPI[@]}" "$@"
}
if [ "$MULTI_RANK" = 1 ] && shared_gpu_ok; then
  two_rank "test_comm_cuda, 2 ranks on one GPU (MPI staged)" 60 test_comm_cuda
  two_rank "test_cuda_moe_ops, 2 ranks on one GPU (MPI staged)" 90 test_cuda_moe_ops
  two_rank "test_cuda_reference, 2 ranks on one GPU (MPI staged)" 150 test_cuda_reference
  two_rank "test_cuda_rebalance, 2 ranks on one GPU (MPI staged)" 120 test_cuda_rebalance
fi

# ---- 4. reduced benchmarks ----------------------------------------------------------------------
if [ "$REHEARSAL" = 1 ]; then
  # Shapes the CPU runs in seconds: the steps, their arguments and their output, not the figures.
  EXPERTS_ARGS=(--experts 4 --hidden 64 --intermediate 128 --rows 64,256 --warmup 1 --repeats 2)
  MODEL_ARGS=(--config configs/tiny_a.yaml --mode both --batch 1,8 --context 16 --tokens 256
              --seq-len 128 --warmup 1 --repeats 2 --phases --bound-bytes 1048576 --bound-gemm 64)
else
  EXPERTS_ARGS=(--rows 4096,32768 --warmup 3 --repeats 10)
  MODEL_ARGS=(--mode both --batch 1,8,64 --context 512 --tokens 8192 --seq-len 2048
              --num-layers 8 --warmup 2 --repeats 5 --phases)
fi
step "moe-bench-experts (expert GEMMs vs dense cuBLAS)" "$BENCH" 120 -- \
  "${RUN[@]}" moe-bench-experts "${EXPERTS_ARGS[@]}"
step "moe-bench-model (decode 1/8/64, prefill 8k, phases)" "$BENCH" 240 -- \
  "${RUN[@]}" moe-bench-model "${MODEL_ARGS[@]}"

# ---- 5. the transformers peer -------------------------------------------------------------------
if [ "$PEER" = 1 ]; then
  LAYERS=$(sed -n 's/.*synthetic weights, \([0-9]*\) of .*/\1/p' "$BENCH" | head -1)
  PY=python3
  [ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3
  step "transformers peer, ${LAYERS:-8} layers" "$BENCH" 240 -- \
    "$PY" scripts/bench_transformers.py --num-layers "${LAYERS:-8}"
fi

finish
