#!/usr/bin/env bash
# device_checks.sh: every GPU check of issue 4 in as few device calls as possible, on a GPU box
# reached through the device tool (docs/DEVICE.md): run from the repository root there, with
# build-device/moe-bundle.tar.xz carried. Full logs go to $OUT (the folder the device tool brings
# back; /tmp/moe-device-checks without it); a summary is printed last.
#
# usage: bash scripts/device_checks.sh tests|bench|peer|all [--layers N]
#   tests  the GPU tests: kernels, Ops, communicators and the reference end to end, at 1 rank
#          (NCCL) and 2 ranks on the one GPU (MPI staged through pinned host memory)
#   bench  moe-bench-experts and moe-bench-model (decode and prefill), each beside its bound
#   peer   scripts/bench_transformers.py with the layer count moe-bench-model used (or --layers)
#   all    the three, in that order
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
RUN=(bash scripts/device_run.sh)
MPI=(mpirun --oversubscribe -np 2)
[ "$(id -u)" -eq 0 ] && MPI=(mpirun --allow-run-as-root --oversubscribe -np 2)
summary=()

# step NAME LOG -- command...: runs it, keeps its output in $OUTDIR/LOG, notes pass or fail.
step() {
  local name=$1 log=$OUTDIR/$2; shift 3
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  local verdict="ok"
  [ $rc -ne 0 ] && verdict="FAILED rc=$rc"
  # GoogleTest's own count: a run whose every test skipped (no GPU) is no pass.
  if [ $rc -eq 0 ] && grep -q '\[  PASSED  \] 0 tests' "$log"; then verdict="SKIPPED (no GPU?)"; fi
  local line
  line=$(printf '%-52s %s (%ds)' "$name" "$verdict" $((SECONDS - t0)))
  summary+=("$line")
  echo "$line"
  return $rc
}

if [ "$what" = tests ] || [ "$what" = all ]; then
  step "env-check" env.log -- "${RUN[@]}" env-check
  for t in test_cuda_kernels test_cuda_ops test_comm_cuda test_cuda_reference; do
    step "$t, 1 rank" "$t.log" -- "${RUN[@]}" "$t"
  done
  for t in test_comm_cuda test_cuda_reference; do
    step "$t, 2 ranks on one GPU (MPI staged)" "$t.np2.log" -- "${RUN[@]}" "${MPI[@]}" "$t"
  done
  # The reference figures, as the tests printed them.
  grep -h "figures" "$OUTDIR"/test_cuda_reference*.log > "$OUTDIR/figures.txt" 2>/dev/null
fi

if [ "$what" = bench ] || [ "$what" = all ]; then
  step "moe-bench-experts" bench_experts.log -- "${RUN[@]}" moe-bench-experts
  step "moe-bench-model" bench_model.log -- "${RUN[@]}" moe-bench-model
fi

if [ "$what" = peer ] || [ "$what" = all ]; then
  if [ -z "$LAYERS" ] && [ -f "$OUTDIR/bench_model.log" ]; then
    LAYERS=$(sed -n 's/.*synthetic weights, \([0-9]*\) of .*/\1/p' "$OUTDIR/bench_model.log" | head -1)
  fi
  if [ -z "$LAYERS" ]; then
    summary+=("transformers peer: skipped (give --layers N: the count moe-bench-model used)")
  else
    # The box's own python, not device_run.sh (the bundle's libraries would shadow torch's).
    PY=python3
    [ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3
    step "transformers peer, $LAYERS layers" bench_transformers.log -- \
      "$PY" scripts/bench_transformers.py --num-layers "$LAYERS"
  fi
fi

echo
echo "== summary (logs in $OUTDIR)"
printf '%s\n' "${summary[@]}"
for f in figures.txt bench_experts.log bench_model.log bench_transformers.log; do
  [ -s "$OUTDIR/$f" ] && { echo "== $f"; tail -40 "$OUTDIR/$f"; }
done
! printf '%s\n' "${summary[@]}" | grep -q FAILED
