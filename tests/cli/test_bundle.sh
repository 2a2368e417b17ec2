#!/usr/bin/env bash
# test_bundle.sh: proves the device bundle (scripts/bundle_device.sh + scripts/device_run.sh) works
# on a machine WITHOUT Debian's Open MPI, PMIx and the other bundled libraries: it makes the bundle
# from BUILD_DIR into a temp folder, then, in a private mount namespace (unshare, needs root), hides
# /usr/lib/x86_64-linux-gnu/{openmpi,pmix2,hwloc}, /usr/share/openmpi, /etc/openmpi, /usr/bin/mpirun*,
# /usr/bin/orte*, the build folder's bin/ and lib/, and every system library the bundle carries
# (/dev/null bound over the file), and the CUDA toolkit's library folder (libcudart, cuBLAS, NCCL)
# with cuBLAS and NCCL offered instead the way the box's CUDA 13 wheels lay them out
# (site-packages nvidia/cu13/lib and nvidia/nccl/lib, found through MOE_SITE_PACKAGES), and runs
# through device_run.sh:
#   (e) env-check without the wheel layout: fails at once, naming libcublas.so.13
#   (a) env-check: passes, each CUDA library NEEDED resolves into the wheel layout, none is
#       libcudart (linked statically) or libnccl (loaded at run time)
#   (b) mpirun -np 2 moe-run on the tiny model (CPU, 2 ranks): output identical to the unbundled run
#   (c) test_comm_cuda alone: exit 0, its tests skipped with "no CUDA device" (or passed on a GPU);
#       test_cublas_library: cuBLAS dlopen'ed from the simulated wheel layout
#   (d) test_tokenizer alone (the sentencepiece shim and library from the bundle)
#
# usage: bash tests/cli/test_bundle.sh BUILD_DIR REPO_ROOT
#   e.g. bash tests/cli/test_bundle.sh build .
# The bundle is a .tar.gz, as the box gets it (no xz needed there).
# Prints "ok"/"FAIL" per check and exits 1 on any failure; prints "SKIP: <why>" and exits 0 where
# it cannot run (not root, unshare refused, no system mpirun for the reference run); CTest maps
# that through SKIP_REGULAR_EXPRESSION "SKIP:".
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# ---- inside the private mount namespace ------------------------------------------------------
if [ "${1:-}" = "--inside" ]; then
  BUILD=$2; REPO=$3; TMP=$4
  pass=0; fail=0
  ok() { echo "ok   - $1"; pass=$((pass + 1)); }
  bad() { echo "FAIL - $1"; fail=$((fail + 1)); }
  MPIFLAGS=(--oversubscribe); [ "$(id -u)" -eq 0 ] && MPIFLAGS+=(--allow-run-as-root)

  # hide: empty tmpfs over folders, /dev/null over files
  mkdir -p "$TMP/empty"; mount -t tmpfs -o ro,size=1m emptyfs "$TMP/empty"
  hid_dirs=0; hid_files=0
  hide_dir() { [ -d "$1" ] && mount --bind "$TMP/empty" "$1" && hid_dirs=$((hid_dirs + 1)) || true; }
  hide_file() { local r; r=$(readlink -f "$1") || return 0
                [ -f "$r" ] && mount --bind /dev/null "$r" && hid_files=$((hid_files + 1)) || true; }
  libs=()   # the originals of the bundled libraries, read before anything is hidden
  while IFS=$'\t' read -r dest src; do
    case "$dest" in lib/*) case "$src" in /usr/*|/lib/*|/lib64/*) libs+=("$src") ;; esac ;; esac
  done < <(grep -v '^#' "$TMP/bundle-manifest.txt" | grep $'\t')
  for d in /usr/lib/x86_64-linux-gnu/openmpi /usr/lib/x86_64-linux-gnu/pmix2 /usr/lib/x86_64-linux-gnu/hwloc \
           /usr/share/openmpi /etc/openmpi "$BUILD/bin" "$BUILD/lib"; do hide_dir "$d"; done
  for f in /usr/bin/mpirun* /usr/bin/mpiexec* /usr/bin/orte* /usr/bin/ompi_info "$REPO/build/lib/libmoe_spm.so"; do
    [ -e "$f" ] && hide_file "$f"
  done
  for f in "${libs[@]}"; do hide_file "$f"; done
  # The CUDA 13 wheel layout, offered before the toolkit's folder is hidden: the toolkit's own
  # files bound onto a site-packages tree (binding, not copying: cuBLASLt is half a gigabyte).
  SITE=$TMP/site; wheel_libs=0
  mkdir -p "$SITE/nvidia/cu13/lib" "$SITE/nvidia/nccl/lib"
  CUDA_LIB=$(readlink -f /usr/local/cuda/lib64 2>/dev/null || true)
  for n in libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
    src=$(readlink -f "$CUDA_LIB/$n" 2>/dev/null || true)
    [ -f "$src" ] || continue
    case "$n" in libnccl*) dst=$SITE/nvidia/nccl/lib/$n ;; *) dst=$SITE/nvidia/cu13/lib/$n ;; esac
    : > "$dst"; mount --bind "$src" "$dst" && wheel_libs=$((wheel_libs + 1))
  done
  [ -n "$CUDA_LIB" ] && [ -d "$CUDA_LIB" ] && hide_dir "$CUDA_LIB"
  echo "# hidden: $hid_dirs folders, $hid_files files (of ${#libs[@]} bundled files taken from system folders)"
  echo "# CUDA 13 wheel layout in $SITE: $wheel_libs libraries (the toolkit's ${CUDA_LIB:-none} hidden)"
  if /usr/bin/mpirun --version >/dev/null 2>&1 || [ -s /usr/lib/x86_64-linux-gnu/libopen-pal.so.40 ] \
     || [ -n "$(ls -A /usr/lib/x86_64-linux-gnu/openmpi 2>/dev/null)" ]; then
    bad "the system Open MPI is still usable inside the namespace"
  else
    ok "the system Open MPI, PMIx and bundled libraries are hidden"
  fi

  export MOE_BUNDLE=$TMP/moe-bundle.tar.gz MOE_BUNDLE_DIR=$TMP/bundle
  RUN=(bash "$REPO/scripts/device_run.sh")
  cd "$REPO"

  # (e) first: no CUDA 13 runtime where env-check is told to look (MOE_SITE_PACKAGES, which
  # replaces the pythons' own site-packages; the toolkit's hidden), though this machine's python
  # has torch's CUDA 13 wheels in its user site-packages (a decoy layout, as a GPU box's python
  # has them): they must not be found.
  DECOY=$TMP/userbase
  decoy_site=$(PYTHONUSERBASE=$DECOY python3 -c 'import site; print(site.getusersitepackages())' 2>/dev/null || true)
  if [ -n "$decoy_site" ] && [ "$wheel_libs" -gt 0 ]; then
    mkdir -p "$decoy_site/nvidia/cu13/lib"
    cp -P "$SITE/nvidia/cu13/lib/"* "$decoy_site/nvidia/cu13/lib/" 2>/dev/null || true
    for f in "$SITE"/nvidia/cu13/lib/*; do
      [ -e "$decoy_site/nvidia/cu13/lib/$(basename "$f")" ] && mount --bind "$f" "$decoy_site/nvidia/cu13/lib/$(basename "$f")"
    done
  fi
  if [ "$wheel_libs" -gt 0 ]; then
    if PYTHONUSERBASE=$DECOY MOE_SITE_PACKAGES=/nonexistent "${RUN[@]}" env-check >"$TMP/e.out" 2>&1; then
      bad "(e) env-check without a CUDA 13 runtime passed:"; tail -15 "$TMP/e.out" | sed 's/^/    /'
    elif grep -q "no CUDA 13 runtime" "$TMP/e.out" && grep -q "libcublas.so.13" "$TMP/e.out" \
         && ! grep -q "^== mpirun" "$TMP/e.out"; then
      ok "(e) env-check without a CUDA 13 runtime fails at once: $(grep -o 'no CUDA 13 runtime[^(]*' "$TMP/e.out" | head -1)"
    else
      bad "(e) env-check without a CUDA 13 runtime: failed, but not at once naming libcublas.so.13:"
      tail -15 "$TMP/e.out" | sed 's/^/    /'
    fi
  fi
  export MOE_SITE_PACKAGES=$SITE
  # (a)
  if "${RUN[@]}" env-check >"$TMP/a.out" 2>&1 && grep -q "env-check: OK" "$TMP/a.out"; then
    ok "(a) device_run.sh env-check"; grep -E '^== (libstdc|mpirun)|NEEDED|dlopen|torch' "$TMP/a.out" | sed 's/^/# /'
  else
    bad "(a) device_run.sh env-check:"; sed 's/^/    /' "$TMP/a.out"
  fi
  if grep -qE 'NEEDED +lib(cudart|nccl)' "$TMP/a.out"; then
    bad "(a) an executable still needs libcudart or libnccl by name:"; grep -E 'NEEDED +lib(cudart|nccl)' "$TMP/a.out" | sed 's/^/    /'
  elif [ "$wheel_libs" -gt 0 ]; then
    if grep -E 'NEEDED +libcublas' "$TMP/a.out" | grep -qv "$SITE/nvidia/cu13/lib/"; then
      bad "(a) cuBLAS resolved outside the CUDA 13 wheel layout:"; grep NEEDED "$TMP/a.out" | sed 's/^/    /'
    else
      ok "(a) no executable needs libcudart or libnccl; cuBLAS comes from nvidia/cu13/lib"
    fi
  fi
  # (b)
  if "${RUN[@]}" mpirun "${MPIFLAGS[@]}" -np 2 moe-run --config configs/tiny_a.yaml \
       --input configs/prompts/tiny_a.jsonl --output "$TMP/bundled.jsonl" >"$TMP/b.out" 2>&1; then
    if cmp -s "$TMP/ref.jsonl" "$TMP/bundled.jsonl"; then
      ok "(b) mpirun -np 2 moe-run through the bundle: output identical to the unbundled run ($(wc -l < "$TMP/bundled.jsonl") lines)"
    else
      bad "(b) mpirun -np 2 moe-run through the bundle: output differs from the unbundled run"
      diff "$TMP/ref.jsonl" "$TMP/bundled.jsonl" | head -5 | sed 's/^/    /'
    fi
  else
    bad "(b) mpirun -np 2 moe-run through the bundle failed:"; tail -15 "$TMP/b.out" | sed 's/^/    /'
  fi
  # (c)
  if [ -x "$TMP/bundle/bin/test_comm_cuda" ]; then
    if "${RUN[@]}" test_comm_cuda >"$TMP/c.out" 2>&1 && ! grep -q '\[  FAILED  \]' "$TMP/c.out" \
       && { grep -q "no CUDA device" "$TMP/c.out" || grep -q '\[  PASSED  \]' "$TMP/c.out"; }; then
      if grep -q "no CUDA device" "$TMP/c.out"; then ok "(c) test_comm_cuda alone: exit 0, tests skipped (no CUDA device)"
      else ok "(c) test_comm_cuda alone: exit 0, tests passed on the GPU"; fi
    else
      bad "(c) test_comm_cuda alone:"; tail -15 "$TMP/c.out" | sed 's/^/    /'
    fi
  else
    echo "# (c) not run: this build has no test_comm_cuda (CUDA off)"
  fi
  # (c2) cuBLAS dlopen'ed from the wheel layout (no GPU needed to load it)
  if [ -x "$TMP/bundle/bin/test_cublas_library" ]; then
    if "${RUN[@]}" test_cublas_library >"$TMP/c2.out" 2>&1 && grep -q '\[  PASSED  \] [1-9]' "$TMP/c2.out" \
       && ! grep -q '\[  FAILED  \]' "$TMP/c2.out"; then
      ok "(c2) test_cublas_library: cuBLAS loaded on first use from the box's libraries"
    else
      bad "(c2) test_cublas_library:"; tail -15 "$TMP/c2.out" | sed 's/^/    /'
    fi
  fi
  # (d)
  if [ -x "$TMP/bundle/bin/test_tokenizer" ]; then
    if "${RUN[@]}" test_tokenizer >"$TMP/d.out" 2>&1; then
      ok "(d) test_tokenizer alone: $(grep -E '^\[  PASSED  \]' "$TMP/d.out" | head -1)"
    else
      bad "(d) test_tokenizer alone:"; tail -15 "$TMP/d.out" | sed 's/^/    /'
    fi
  fi
  echo "# inside: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit $?
fi

# ---- outside ---------------------------------------------------------------------------------
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
[ $# -eq 2 ] || { usage >&2; exit 2; }
BUILD=$(cd "$1" && pwd); REPO=$(cd "$2" && pwd)
[ -x "$BUILD/bin/moe-run" ] || { echo "test_bundle.sh: no $BUILD/bin/moe-run: build first" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root for unshare --mount (uid $(id -u))"; exit 0; }
command -v unshare >/dev/null || { echo "SKIP: no unshare on this machine"; exit 0; }
unshare --mount --propagation private true 2>/dev/null || { echo "SKIP: unshare --mount is not permitted here"; exit 0; }
command -v mpirun >/dev/null || { echo "SKIP: no system mpirun for the reference run"; exit 0; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/test_bundle.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
MPIFLAGS=(--oversubscribe --allow-run-as-root)

echo "# making the bundle from $BUILD"
if ! bash "$REPO/scripts/bundle_device.sh" -o "$TMP/moe-bundle.tar.gz" "$BUILD" >"$TMP/make.out" 2>&1; then
  echo "FAIL - bundle_device.sh:"; sed 's/^/    /' "$TMP/make.out"; exit 1
fi
sed 's/^/# /' "$TMP/make.out"
size=$(stat -c %s "$TMP/moe-bundle.tar.gz")
if [ "$size" -lt $((64 * 1024 * 1024)) ]; then echo "ok   - bundle is $size bytes (< 64 MiB)"
else echo "FAIL - bundle is $size bytes (>= 64 MiB)"; exit 1; fi
tar -xzOf "$TMP/moe-bundle.tar.gz" ./MANIFEST.txt > "$TMP/bundle-manifest.txt"

echo "# reference run, unbundled: mpirun -np 2 $BUILD/bin/moe-run"
if ! (cd "$REPO" && mpirun "${MPIFLAGS[@]}" -np 2 "$BUILD/bin/moe-run" --config configs/tiny_a.yaml \
        --input configs/prompts/tiny_a.jsonl --output "$TMP/ref.jsonl") >"$TMP/ref.out" 2>&1; then
  echo "FAIL - the unbundled reference run failed:"; tail -15 "$TMP/ref.out" | sed 's/^/    /'; exit 1
fi

rc=0
unshare --mount --propagation private bash "$0" --inside "$BUILD" "$REPO" "$TMP" || rc=$?
if [ "$rc" -eq 0 ]; then echo "test_bundle.sh: all passed"; else echo "test_bundle.sh: FAILED"; fi
exit "$rc"
