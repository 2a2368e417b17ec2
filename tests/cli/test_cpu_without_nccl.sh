#!/usr/bin/env bash
# test_cpu_without_nccl.sh: a backend: cpu run needs no NCCL. NCCL is loaded at run time, only
# when a NCCL communicator is made (comm/nccl_library.h), so:
#   (a) no executable in BUILD_DIR/bin names libnccl in its NEEDED entries (readelf);
#   (b) moe-run on the tiny model, backend cpu, 1 and 2 ranks, in a private mount namespace where
#       every libnccl.so* the loader could find has /dev/null bound over it: exit 0 and the same
#       output as the run with NCCL visible.
# (b) needs root and unshare --mount; where it cannot run, only (a) is checked (and said so).
#
# usage: bash tests/cli/test_cpu_without_nccl.sh BUILD_DIR REPO_ROOT
set -uo pipefail

if [ "${1:-}" = "--inside" ]; then
  BIN=$2; REPO=$3; TMP=$4; shift 4
  MPIRUN=(mpirun --oversubscribe --allow-run-as-root)
  hidden=0
  for f in "$@"; do mount --bind /dev/null "$f" && hidden=$((hidden + 1)); done
  echo "# hidden: $hidden NCCL library files"
  rc=0
  cd "$REPO"
  "$BIN/moe-run" --config configs/tiny_a.yaml --input configs/prompts/tiny_a.jsonl \
    --output "$TMP/hidden1.jsonl" >"$TMP/hidden1.out" 2>&1 || rc=1
  "${MPIRUN[@]}" -np 2 "$BIN/moe-run" --config configs/tiny_a.yaml \
    --input configs/prompts/tiny_a.jsonl --output "$TMP/hidden2.jsonl" >"$TMP/hidden2.out" 2>&1 || rc=1
  exit $rc
fi

case "${1:-}" in -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR REPO_ROOT" >&2; exit 2; }
BUILD=$(cd "$1" && pwd); REPO=$(cd "$2" && pwd); BIN=$BUILD/bin
[ -x "$BIN/moe-run" ] || { echo "no $BIN/moe-run: build first" >&2; exit 1; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
pass=0; fail=0
ok() { echo "ok   - $1"; pass=$((pass + 1)); }
bad() { echo "FAIL - $1"; fail=$((fail + 1)); }

# (a)
needing=()
for f in "$BIN"/*; do
  [ -f "$f" ] && head -c 4 "$f" | grep -q ELF || continue
  readelf -d "$f" 2>/dev/null | grep -q 'NEEDED.*\[libnccl' && needing+=("$(basename "$f")")
done
if [ "${#needing[@]}" -eq 0 ]; then ok "(a) no executable needs libnccl by name"
else bad "(a) these executables need libnccl by name: ${needing[*]}"; fi

# (b)
if [ "$(id -u)" -ne 0 ] || ! unshare --mount --propagation private true 2>/dev/null; then
  echo "# (b) not run: hiding NCCL needs root and unshare --mount"
else
  (cd "$REPO" && "$BIN/moe-run" --config configs/tiny_a.yaml --input configs/prompts/tiny_a.jsonl \
     --output "$TMP/ref.jsonl") >"$TMP/ref.out" 2>&1 || { bad "(b) the run with NCCL visible failed"; tail -5 "$TMP/ref.out"; }
  # Every libnccl the loader could find: its cache, the CUDA toolkit, and the RUNPATHs.
  libs=()
  while IFS= read -r p; do [ -n "$p" ] && libs+=("$(readlink -f "$p")"); done < <(
    { ldconfig -p 2>/dev/null | awk '/libnccl\.so/ {print $NF}'
      ls /usr/local/cuda/lib64/libnccl.so* /usr/local/cuda/targets/*/lib/libnccl.so* 2>/dev/null
      readelf -d "$BIN/moe-run" | sed -n 's/.*R\(UN\)\{0,1\}PATH.*\[\(.*\)\]/\2/p' | tr ':' '\n' |
        while read -r d; do ls "$d"/libnccl.so* 2>/dev/null; done
    } | sort -u)
  mapfile -t libs < <(printf '%s\n' "${libs[@]:-}" | sed '/^$/d' | sort -u)
  echo "# NCCL files hidden: ${libs[*]:-none found (nothing to hide)}"
  if unshare --mount --propagation private bash "$0" --inside "$BIN" "$REPO" "$TMP" "${libs[@]}"; then
    if cmp -s "$TMP/ref.jsonl" "$TMP/hidden1.jsonl" && cmp -s "$TMP/ref.jsonl" "$TMP/hidden2.jsonl"; then
      ok "(b) moe-run, backend cpu, 1 and 2 ranks with NCCL hidden: same output as with it"
    else
      bad "(b) moe-run with NCCL hidden gave different output"
    fi
  else
    bad "(b) moe-run, backend cpu, with NCCL hidden failed:"
    tail -5 "$TMP/hidden1.out" "$TMP/hidden2.out" 2>/dev/null | sed 's/^/    /'
  fi
fi
echo "# $pass passed, $fail failed"
[ "$fail" -eq 0 ]
