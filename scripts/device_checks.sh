#!/usr/bin/env bash
# device_checks.sh: every GPU check in as few device calls as possible, on a GPU box reached
# through the device tool (docs/DEVICE.md): run from the repository root there, with
# build-device/moe-bundle.tar.gz carried. Full logs go to $OUT (the folder the device tool brings
# back; /tmp/moe-device-checks without it); a summary is printed last.
#
# usage: bash scripts/device_checks.sh tests|bench|peer|all [--layers N]
#   tests  first, alone (well under 10 minutes): env-check, then the GPU tests at 1 rank, the
#          first of them with MOE_CUDA_SYNC_CHECK=1 (a fault names its op), then 2 ranks on the
#          one GPU (MPI staged through pinned host memory) where the compute mode allows it
#   bench  moe-bench-experts and moe-bench-model (decode and prefill), each beside its bound
#   peer   scripts/bench_transformers.py with the layer count moe-bench-model used (or --layers)
#   all    the three, in that order
# Every step runs under its own time bound (`timeout`, where the box has it), and a step whose
# bound would take the whole call past MOE_CHECKS_BUDGET_S (default 540 s) is not started but
# reported as not run. A failed env-check stops everything: nothing after it could load.
set -uo pipefail
cd "$(dirname "$0")/.."

what=${1:-}
LAYERS=""
[ "${2:-}" = "--layers" ] && LAYERS=${3:-}
case "$what" in
  tests|bench|peer|all) ;;
  -h|--help|"") sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; [ -n "$what" ]; exit $? ;;
  *) echo "device_checks.sh: unknown check '$what' (expected tests, bench, peer or all)" >&2; exit 2 ;;
esac
export GTEST_COLOR=no  # plain "[  PASSED  ] N tests" lines to read below
OUTDIR=${OUT:-/tmp/moe-device-checks}
mkdir -p "$OUTDIR"
BUDGET=${MOE_CHECKS_BUDGET_S:-540}
RUN=(bash scripts/device_run.sh)
MPI=(mpirun --oversubscribe -np 2)
[ "$(id -u)" -eq 0 ] && MPI=(mpirun --allow-run-as-root --oversubscribe -np 2)
HAVE_TIMEOUT=0; command -v timeout >/dev/null && HAVE_TIMEOUT=1
summary=()

note() { summary+=("$1"); echo "$1"; }

# step NAME LOG BOUND_S -- command...: runs it (at most BOUND_S seconds), keeps its output in
# $OUTDIR/LOG, notes pass or fail.
step() {
  local name=$1 log=$OUTDIR/$2 bound=$3; shift 4
  if [ $((SECONDS + bound)) -gt "$BUDGET" ]; then
    note "$(printf '%-56s NOT RUN (its %ds bound would pass the %ds budget)' "$name" "$bound" "$BUDGET")"
    return 1
  fi
  local t0=$SECONDS rc
  if [ "$HAVE_TIMEOUT" = 1 ]; then timeout -k 10 "$bound" "$@" >"$log" 2>&1; else "$@" >"$log" 2>&1; fi
  rc=$?
  local verdict="ok"
  [ $rc -ne 0 ] && verdict="FAILED rc=$rc"
  [ $rc -eq 124 ] && [ "$HAVE_TIMEOUT" = 1 ] && verdict="FAILED (timed out after ${bound}s)"
  # GoogleTest's own count: a run whose every test skipped (no GPU) is no pass.
  if [ $rc -eq 0 ] && grep -q '\[  PASSED  \] 0 tests' "$log"; then verdict="SKIPPED (no GPU?)"; fi
  note "$(printf '%-56s %s (%ds)' "$name" "$verdict" $((SECONDS - t0)))"
  return $rc
}

# Whether two processes may share the GPU: an Exclusive_Process compute mode lets one context
# on a device, so the 2-rank steps would fail for a reason that is not ours.
shared_gpu_ok() {
  local mode
  if ! command -v nvidia-smi >/dev/null; then
    note "compute mode: unknown (no nvidia-smi); trying the 2-rank steps"
    return 0
  fi
  mode=$(nvidia-smi --query-gpu=compute_mode --format=csv,noheader 2>/dev/null | head -1)
  case "$mode" in
    *Exclusive*|*Prohibited*)
      note "compute mode: $mode: one process per GPU, so the 2-rank steps on one GPU are not run"
      return 1 ;;
    *) note "compute mode: ${mode:-unknown}: 2 ranks may share the GPU"; return 0 ;;
  esac
}

finish() {
  echo
  echo "== summary (logs in $OUTDIR)"
  printf '%s\n' "${summary[@]}"
  for f in figures.txt bench_experts.log bench_model.log bench_transformers.log; do
    [ -s "$OUTDIR/$f" ] && { echo "== $f"; tail -40 "$OUTDIR/$f"; }
  done
  ! printf '%s\n' "${summary[@]}" | grep -q 'FAILED'
  exit $?
}

if [ "$what" = tests ] || [ "$what" = all ]; then
  if ! step "env-check" env.log 180 -- "${RUN[@]}" env-check; then
    note "env-check failed: nothing else is run (see env.log: the first problem is named there)"
    tail -20 "$OUTDIR/env.log"
    finish
  fi
  # The first test run synchronises after every launch, so a fault names the op that made it.
  step "test_cuda_kernels, 1 rank, MOE_CUDA_SYNC_CHECK=1" test_cuda_kernels.log 120 -- \
    env MOE_CUDA_SYNC_CHECK=1 "${RUN[@]}" test_cuda_kernels
  step "test_cuda_edges, 1 rank" test_cuda_edges.log 150 -- "${RUN[@]}" test_cuda_edges
  step "test_cuda_fault, 1 rank" test_cuda_fault.log 60 -- "${RUN[@]}" test_cuda_fault
  step "test_cuda_ops, 1 rank" test_cuda_ops.log 90 -- "${RUN[@]}" test_cuda_ops
  step "test_cuda_moe_ops, 1 rank" test_cuda_moe_ops.log 90 -- "${RUN[@]}" test_cuda_moe_ops
  step "test_comm_cuda, 1 rank" test_comm_cuda.log 60 -- "${RUN[@]}" test_comm_cuda
  step "test_cuda_reference, 1 rank" test_cuda_reference.log 120 -- "${RUN[@]}" test_cuda_reference
  if shared_gpu_ok; then
    step "test_comm_cuda, 2 ranks on one GPU (MPI staged)" test_comm_cuda.np2.log 60 -- \
      "${RUN[@]}" "${MPI[@]}" test_comm_cuda
    step "test_cuda_moe_ops, 2 ranks on one GPU (MPI staged)" test_cuda_moe_ops.np2.log 90 -- \
      "${RUN[@]}" "${MPI[@]}" test_cuda_moe_ops
    step "test_cuda_reference, 2 ranks on one GPU (MPI staged)" test_cuda_reference.np2.log 150 -- \
      "${RUN[@]}" "${MPI[@]}" test_cuda_reference
  fi
  # The reference figures, as the tests printed them.
  grep -h "figures" "$OUTDIR"/test_cuda_reference*.log > "$OUTDIR/figures.txt" 2>/dev/null
fi

if [ "$what" = bench ] || [ "$what" = all ]; then
  [ "$what" = all ] || BUDGET=$((SECONDS + ${MOE_CHECKS_BUDGET_S:-540}))
  step "moe-bench-experts" bench_experts.log 240 -- "${RUN[@]}" moe-bench-experts
  step "moe-bench-model" bench_model.log 300 -- "${RUN[@]}" moe-bench-model
fi

if [ "$what" = peer ] || [ "$what" = all ]; then
  [ "$what" = all ] || BUDGET=$((SECONDS + ${MOE_CHECKS_BUDGET_S:-540}))
  if [ -z "$LAYERS" ] && [ -f "$OUTDIR/bench_model.log" ]; then
    LAYERS=$(sed -n 's/.*synthetic weights, \([0-9]*\) of .*/\1/p' "$OUTDIR/bench_model.log" | head -1)
  fi
  if [ -z "$LAYERS" ]; then
    note "transformers peer: skipped (give --layers N: the count moe-bench-model used)"
  else
    # The box's own python, not device_run.sh (the bundle's libraries would shadow torch's).
    PY=python3
    [ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3
    step "transformers peer, $LAYERS layers" bench_transformers.log 300 -- \
      "$PY" scripts/bench_transformers.py --num-layers "$LAYERS"
  fi
fi

finish
