#!/usr/bin/env bash
# device_run.sh: run a command on the GPU box against the carried bundle (made here by
# scripts/bundle_device.sh): the bundle's binaries, non-CUDA libraries and relocated Open MPI,
# with the box's own cuBLAS and NCCL (the CUDA runtime is linked statically; the box's driver
# must support CUDA 13). Needs no MPI, no xz and no packages on the box: tar and gzip only.
#
# usage (from the repository root on the box, with build-device/moe-bundle.tar.gz carried there):
#   bash scripts/device_run.sh env-check          # what resolves where; exit 0 all ok, 3 one rank ok
#                                                 # but not mpirun (2-rank runs), 1 anything else
#   bash scripts/device_run.sh print-env          # the exports, for: eval "$(bash scripts/device_run.sh print-env)"
#   bash scripts/device_run.sh COMMAND [ARGS...]  # e.g. test_cuda_ops, or
#   bash scripts/device_run.sh mpirun --allow-run-as-root --oversubscribe -np 2 test_comm_cuda
#   bash scripts/device_run.sh -h | --help
#
# The bundle is unpacked once into build-device/bundle (again when the tarball changes). Then:
# PATH gets the bundle's bin/ first (our binaries, mpirun, orted); LD_LIBRARY_PATH the bundle's
# lib/ first, its lib/gcc/ (libstdc++, libgcc_s) only where the box's libstdc++ is older, then the
# box's CUDA libraries: /usr/local/cuda/lib64, and in python site-packages the CUDA 13 wheels'
# nvidia/cu13/lib (cuBLAS, cuBLASLt, cudart), NCCL's nvidia/nccl/lib, and the CUDA 12 wheels'
# nvidia/{cublas,cuda_runtime}/lib; OPAL_* / PMIX_* point Open MPI and PMIx at their relocated
# plugins, help files and config; MOE_TEST_DATA is <repo>/tests/data and MOE_SPM_SHIM the
# bundle's lib/libmoe_spm.so.
# Environment it honours: MOE_BUNDLE (the .tar.gz, or a .tar.xz where xz or python3 is there),
# MOE_BUNDLE_DIR (where to unpack), MOE_CUDA_LIB_DIRS (colon list searched before the defaults),
# MOE_SITE_PACKAGES (colon list of site-packages folders searched instead of the pythons' own),
# MOE_BUNDLE_LIBSTDCXX=bundle|system, and any OMPI_MCA_* you set (defaults, applied only when
# unset: pml ob1, btl self,vader,tcp, plm isolated, btl_vader_single_copy_mechanism none).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "device_run.sh: error: $*" >&2; exit 1; }

[ $# -gt 0 ] || { usage >&2; exit 2; }
case "$1" in -h|--help) usage; exit 0 ;; esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${MOE_BUNDLE:-}" ]; then TARBALL=$MOE_BUNDLE
elif [ -f "$REPO/build-device/moe-bundle.tar.gz" ] || [ ! -f "$REPO/build-device/moe-bundle.tar.xz" ]; then
  TARBALL=$REPO/build-device/moe-bundle.tar.gz
else TARBALL=$REPO/build-device/moe-bundle.tar.xz; fi
BD=${MOE_BUNDLE_DIR:-$REPO/build-device/bundle}

# ---- unpack (once per bundle) ---------------------------------------------------------------
digest() { if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else cksum "$1" | cut -d' ' -f1,2; fi; }
if [ -f "$TARBALL" ]; then
  sum=$(digest "$TARBALL")
  if [ ! -f "$BD/.unpacked" ] || [ "$(cat "$BD/.unpacked")" != "$sum" ]; then
    parent=$(dirname "$BD"); mkdir -p "$parent"
    tmp=$(mktemp -d "$parent/.bundle-unpack.XXXXXX")
    # tar with gzip is nearly everywhere; an xz bundle needs xz. Where the decompressor is
    # missing, python3's tarfile (zlib, lzma) unpacks either.
    case "$TARBALL" in *.xz) unz=xz; flag=J ;; *) unz=gzip; flag=z ;; esac
    if command -v "$unz" >/dev/null; then tar -C "$tmp" "-x${flag}f" "$TARBALL"
    elif command -v python3 >/dev/null; then
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$TARBALL" "$tmp"
    else false; fi || { rm -rf "$tmp"; die "could not unpack $TARBALL (needs $unz, or python3, here)"; }
    echo "$sum" > "$tmp/.unpacked"
    rm -rf "$BD"; mv "$tmp" "$BD"
    echo "device_run.sh: unpacked $TARBALL into $BD" >&2
  fi
elif [ ! -f "$BD/.unpacked" ]; then
  die "no bundle: $TARBALL not found (and nothing unpacked in $BD). Build on the build machine,
  run 'bash scripts/bundle_device.sh', and carry build-device/moe-bundle.tar.gz"
fi
for d in bin lib lib/openmpi; do [ -d "$BD/$d" ] || die "the bundle in $BD has no $d/: remake it with scripts/bundle_device.sh"; done
[ -x "$BD/bin/orterun" ] || die "the bundle has no bin/orterun (Open MPI): remake it with scripts/bundle_device.sh"

# ---- libstdc++: the newer of the bundle's and the box's -------------------------------------
glibcxx_max() { [ -f "$1" ] && grep -ao 'GLIBCXX_3\.4\.[0-9]*' "$1" 2>/dev/null | sort -V -u | tail -1 || true; }
SYS_STDCXX=$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}' || true)
for f in /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6; do
  [ -n "$SYS_STDCXX" ] || { [ -e "$f" ] && SYS_STDCXX=$f; }
done
BUN_V=$(glibcxx_max "$BD/lib/gcc/libstdc++.so.6")
SYS_V=$( [ -n "$SYS_STDCXX" ] && glibcxx_max "$(readlink -f "$SYS_STDCXX")" || true)
case "${MOE_BUNDLE_LIBSTDCXX:-auto}" in
  bundle) USE_GCC=1 ;;
  system) USE_GCC=0 ;;
  *) if [ -z "$SYS_V" ]; then USE_GCC=1
     elif [ "$(printf '%s\n%s\n' "$SYS_V" "$BUN_V" | sort -V | tail -1)" = "$SYS_V" ]; then USE_GCC=0
     else USE_GCC=1; fi ;;
esac

# ---- the box's CUDA libraries ----------------------------------------------------------------
CUDA_DIRS=()
add_dir() { local d; for d in "$@"; do
  [ -d "$d" ] || continue; d=$(cd "$d" && pwd -P)
  local x; for x in "${CUDA_DIRS[@]:-}"; do [ "$x" = "$d" ] && continue 2; done
  CUDA_DIRS+=("$d"); done; }
IFS=: read -r -a user_dirs <<<"${MOE_CUDA_LIB_DIRS:-}"
add_dir "${user_dirs[@]:-}"
add_dir "${CUDA_HOME:-/nonexistent}/lib64" /usr/local/cuda/lib64 /usr/local/cuda/lib \
        /usr/local/cuda/targets/x86_64-linux/lib
# site-packages of the box's pythons (PyTorch's pip wheels ship libnccl.so.2 and cuBLAS there)
SITE=()
if [ -n "${MOE_SITE_PACKAGES:-}" ]; then  # given: those alone
  IFS=: read -r -a user_site <<<"$MOE_SITE_PACKAGES"
  for s in "${user_site[@]:-}"; do [ -n "$s" ] && SITE+=("$s"); done
else
  for py in python3 /opt/torch/.venv/bin/python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    while IFS= read -r s; do [ -n "$s" ] && SITE+=("$s"); done < <("$py" -c \
      'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
  done
  for s in /opt/*/.venv/lib/python3*/site-packages /usr/local/lib/python3*/dist-packages /usr/lib/python3/dist-packages; do
    [ -d "$s" ] && SITE+=("$s")
  done
fi
for s in "${SITE[@]:-}"; do
  # CUDA 13 wheels put cuBLAS, cuBLASLt and cudart together under nvidia/cu13/lib; NCCL keeps
  # nvidia/nccl/lib; the CUDA 12 wheels had a folder per library.
  [ -n "$s" ] && add_dir "$s/nvidia/cu13/lib" "$s/nvidia/nccl/lib" "$s/nvidia/cublas/lib" \
                         "$s/nvidia/cuda_runtime/lib"
done
# libnccl.so.2 known to the loader cache but in none of the folders above
nccl_cache=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 .*x86-64/ {print $NF; exit}' || true)
[ -n "$nccl_cache" ] && add_dir "$(dirname "$nccl_cache")"

# ---- the environment -------------------------------------------------------------------------
BOX_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}  # for the box's own python (torch), untouched by ours
LDP=$BD/lib
[ "$USE_GCC" = 1 ] && LDP=$LDP:$BD/lib/gcc
for d in "${CUDA_DIRS[@]:-}"; do [ -n "$d" ] && LDP=$LDP:$d; done
export LD_LIBRARY_PATH=$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=$BD/bin:$PATH
# Open MPI, relocated (the Debian build's own paths are /usr/lib/x86_64-linux-gnu/openmpi/...)
export OPAL_PREFIX=$BD OPAL_EXEC_PREFIX=$BD OPAL_BINDIR=$BD/bin OPAL_LIBDIR=$BD/lib \
       OPAL_LIBEXECDIR=$BD/bin OPAL_PKGLIBDIR=$BD/lib/openmpi OPAL_DATAROOTDIR=$BD/share \
       OPAL_DATADIR=$BD/share OPAL_PKGDATADIR=$BD/share/openmpi OPAL_SYSCONFDIR=$BD/etc/openmpi
export OMPI_MCA_mca_base_component_path=$BD/lib/openmpi
# PMIx (external library, with its own plugins and help files)
export PMIX_PREFIX=$BD PMIX_EXEC_PREFIX=$BD PMIX_LIBDIR=$BD/lib PMIX_PKGLIBDIR=$BD/lib/pmix \
       PMIX_DATADIR=$BD/share PMIX_PKGDATADIR=$BD/share/pmix PMIX_SYSCONFDIR=$BD/etc
export PMIX_MCA_mca_base_component_path=$BD/lib/pmix
# hwloc: no plugins (the box's, if any, are of another version)
export HWLOC_PLUGINS_PATH=$BD/lib/hwloc
# single node: shared memory + self (+ tcp), ob1, local launch without ssh; in containers the
# CMA single-copy path is often refused, so it is off unless you ask for it.
: "${OMPI_MCA_pml:=ob1}" "${OMPI_MCA_btl:=self,vader,tcp}" "${OMPI_MCA_plm:=isolated}"
: "${OMPI_MCA_btl_vader_single_copy_mechanism:=none}"
export OMPI_MCA_pml OMPI_MCA_btl OMPI_MCA_plm OMPI_MCA_btl_vader_single_copy_mechanism
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export MOE_TEST_DATA=$REPO/tests/data
export MOE_SPM_SHIM=$BD/lib/libmoe_spm.so
export MOE_BUNDLE_DIR=$BD

# ---- env-check -------------------------------------------------------------------------------
# The first thing env-check does: the CUDA side, where a box without a CUDA 13 runtime is told
# at once, naming what is missing, and not by the first test that cannot load.
# `timeout SECONDS command...` where the box has coreutils' timeout, else the command unbounded.
bounded() { if command -v timeout >/dev/null; then timeout "$@"; else shift; "$@"; fi; }
box_python() {
  local py
  for py in /opt/torch/.venv/bin/python3 python3; do
    command -v "$py" >/dev/null 2>&1 && { echo "$py"; return 0; }
  done
  return 1
}
# The folder of the first LD_LIBRARY_PATH entry (or loader cache entry) holding $1.
resolve_lib() {
  local d
  IFS=: read -r -a dirs <<<"$LD_LIBRARY_PATH"
  for d in "${dirs[@]}"; do [ -n "$d" ] && [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }; done
  ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n && /x86-64/ {print $NF; found=1; exit} END {exit !found}'
}
cuda_check() {
  local py tv f b soname path drv need missing=() needed=()
  echo "== CUDA"
  if py=$(box_python); then
    tv=$(LD_LIBRARY_PATH=$BOX_LD_LIBRARY_PATH bounded 120 "$py" -c \
         'import torch; print("torch", torch.__version__, "built for CUDA", torch.version.cuda)' 2>/dev/null \
         || echo "no torch importable by $py")
    echo "   box python: $py: $tv"
  else
    echo "   box python: none (no python3 on PATH)"
  fi
  if command -v nvidia-smi >/dev/null; then
    drv=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -1)
    echo "   driver: CUDA ${drv:-unknown} (nvidia-smi)"
    if [ -n "$drv" ] && [ "${drv%%.*}" -lt 13 ]; then
      echo "== env-check: FAILED: the driver supports CUDA $drv; these binaries (cudart 13, linked" \
           "statically) need a driver for CUDA 13 or newer" >&2
      return 1
    fi
  fi
  # Every CUDA library NEEDED by a bundled executable (ldd: the whole tree), and where the loader
  # finds it.
  declare -A where=()
  for f in "$BD"/bin/*; do
    [ -f "$f" ] && [ ! -L "$f" ] && head -c 4 "$f" | grep -q ELF || continue
    while read -r soname _ path _; do
      [[ "$soname" =~ $CUDA_RE ]] || continue
      [ "$path" = not ] && path=""
      [ -n "${where[$soname]:-}" ] || where[$soname]=$path
    done < <(ldd "$f" 2>/dev/null | grep '=>')
  done
  mapfile -t needed < <(printf '%s\n' "${!where[@]}" | sed '/^$/d' | sort)
  for soname in "${needed[@]:-}"; do
    [ -n "$soname" ] || continue
    if [ -n "${where[$soname]}" ]; then
      printf '   NEEDED %-22s -> %s\n' "$soname" "$(readlink -f "${where[$soname]}")"
    else
      printf '   NEEDED %-22s -> NOT FOUND\n' "$soname"; missing+=("$soname")
    fi
  done
  [ "${#needed[@]}" -gt 0 ] || echo "   (no executable needs a CUDA library by name)"
  # NCCL is not NEEDED (dlopen'ed by transport nccl): where it would come from.
  if path=$(resolve_lib libnccl.so.2); then
    echo "   dlopen libnccl.so.2         -> $(readlink -f "$path") (transport nccl)"
  else
    echo "   dlopen libnccl.so.2         -> not found: transport nccl will fail, transport mpi works"
  fi
  # cuBLAS is not NEEDED by the runtime's executables either (dlopen'ed by backend cuda).
  if path=$(resolve_lib libcublas.so.13); then
    echo "   dlopen libcublas.so.13      -> $(readlink -f "$path") (backend cuda)"
  else
    echo "   dlopen libcublas.so.13      -> NOT FOUND: backend cuda cannot start"; missing+=(libcublas.so.13)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== env-check: FAILED: no CUDA 13 runtime here: ${missing[*]} not found in LD_LIBRARY_PATH" \
         "or the loader cache (looked in /usr/local/cuda/lib64 and site-packages" \
         "nvidia/cu13/lib, nvidia/cublas/lib; ${tv:-no torch}); set MOE_CUDA_LIB_DIRS to the" \
         "folder that holds them" >&2
    return 1
  fi
}

CUDA_RE='^lib(cuda|cudart|cublas|cublasLt|nccl|nvidia[-a-z]*|nvrtc[-a-z]*|nvJitLink)\.so'
GLIBC_RE='^(ld-linux[^ ]*|lib(c|m|dl|pthread|rt|resolv|util|anl|nsl|mvec)\.so)'
env_check() {
  local problems=() mpi_problems=() b f line soname path where need have
  echo "== bundle: $BD"
  sed -n '2,6p' "$BD/MANIFEST.txt" 2>/dev/null | sed 's/^/   /'
  if [ "$USE_GCC" = 1 ]; then
    echo "== libstdc++: the bundle's (${BUN_V:-?}); the box's is ${SYS_V:-absent} (${SYS_STDCXX:-none})"
  else
    echo "== libstdc++: the box's ${SYS_STDCXX} (${SYS_V}); the bundle's is ${BUN_V:-?}"
  fi
  echo "== LD_LIBRARY_PATH:"; tr ':' '\n' <<<"$LD_LIBRARY_PATH" | sed 's/^/   /'
  # The bundle's binaries and libraries were linked against the build machine's glibc: an older
  # one here fails every executable at start ("GLIBC_2.xx not found"), so say so first.
  need=$(sed -n 's/^glibc_needed: *//p' "$BD/MANIFEST.txt" 2>/dev/null)
  have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
  [ -n "$have" ] || have=$(ldd --version 2>/dev/null | head -1 | grep -o '[0-9]*\.[0-9]*$')
  echo "== glibc: the box has ${have:-unknown}; the bundle needs ${need:-unknown (MANIFEST.txt has no glibc_needed)}"
  if [ -n "$need" ] && [ -n "$have" ] &&
     [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    echo "== env-check: FAILED: this box's glibc $have is older than the $need the bundle's" \
         "binaries need; build the bundle on a machine with glibc $have or older" >&2
    return 1
  fi
  cuda_check || return 1

  declare -A shown=()
  for b in moe-run orterun orted ompi_info; do
    [ -x "$BD/bin/$b" ] || problems+=("bin/$b is missing from the bundle")
  done
  echo "== shared libraries of the bundle's $(find "$BD/bin" -type f | wc -l) executables (ldd)"
  for f in "$BD"/bin/*; do
    [ -f "$f" ] && [ ! -L "$f" ] && head -c 4 "$f" | grep -q ELF || continue
    b=$(basename "$f")
    while IFS= read -r line; do
      soname=$(awk '{print $1}' <<<"$line"); path=$(awk '{print $3}' <<<"$line")
      [[ "$line" == *"=>"* ]] || continue
      if [ "$path" = "not" ]; then
        if [[ "$soname" =~ $CUDA_RE ]]; then
          problems+=("$b: $soname not found: a CUDA library the box must provide; set MOE_CUDA_LIB_DIRS to the folder that holds it")
        else
          problems+=("$b: $soname not found: it should be in the bundle; remake it with scripts/bundle_device.sh")
        fi
        echo "   $b: $soname => NOT FOUND"; continue
      fi
      [ -n "${shown[$soname]:-}" ] && continue; shown[$soname]=1
      [[ "$soname" =~ $GLIBC_RE ]] && continue
      case "$path" in
        "$BD"/lib/gcc/*) where="bundle (gcc)" ;;
        "$BD"/*) where=bundle ;;
        *) if [[ "$soname" =~ $CUDA_RE ]]; then where="box CUDA"; else where=box; fi ;;
      esac
      [ "$where" = bundle ] || printf '   %-28s %-13s %s\n' "$soname" "[$where]" "$path"
    done < <(ldd "$f" 2>&1)
  done
  echo "   (${#shown[@]} libraries in all; those not listed, glibc aside, come from the bundle)"
  # every plugin must load too (Open MPI skips a broken one silently)
  local nplug=0 bad
  for f in "$BD"/lib/openmpi/*.so "$BD"/lib/pmix/*.so; do
    [ -e "$f" ] || continue; nplug=$((nplug + 1))
    bad=$(ldd "$f" 2>&1 | awk '$3 == "not" {print $1}' | tr '\n' ' ')
    [ -z "$bad" ] || problems+=("plugin $(basename "$f"): not found: $bad")
  done
  echo "== $nplug Open MPI / PMIx plugins checked"

  # Open MPI: needed for 2-rank runs only (a 1-rank test starts MPI as a singleton, which needs
  # none of mpirun's plugins), so a problem here stops only those.
  echo "== mpirun"
  if out=$(mpirun --version 2>&1); then echo "   $(head -1 <<<"$out") ($(command -v mpirun))"
  else mpi_problems+=("mpirun --version failed: $(head -3 <<<"$out" | tr '\n' ' ')"); fi
  local comps
  comps=$(ompi_info --parsable 2>/dev/null | sed -n 's/^mca:\(btl\|pml\|plm\|odls\|pmix\|ess\):\([a-z0-9_]*\):version:"mca:.*/\1:\2/p' | sort -u | tr '\n' ' ' || true)
  echo "   components: $comps"
  for c in btl:self btl:vader btl:tcp pml:ob1 plm:isolated odls:default ess:hnp ess:singleton; do
    grep -qw "$c" <<<"$comps" || mpi_problems+=("Open MPI component $c does not load (ompi_info): check OPAL_PREFIX=$OPAL_PREFIX")
  done
  if out=$(bounded 60 mpirun --oversubscribe -np 2 true 2>&1); then echo "   mpirun -np 2 true: ok"
  else mpi_problems+=("mpirun -np 2 true failed: $(tail -5 <<<"$out" | tr '\n' ' ')"); fi

  echo "== GPU"
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L 2>&1 | sed 's/^/   /' || true
  else echo "   nvidia-smi: not present (no NVIDIA driver tools on this machine)"; fi

  if [ "${#problems[@]}" -gt 0 ]; then
    echo "== env-check: FAILED (${#problems[@]} problems)" >&2
    printf '   - %s\n' "${problems[@]}" "${mpi_problems[@]}" >&2
    return 1
  fi
  if [ "${#mpi_problems[@]}" -gt 0 ]; then
    echo "== env-check: OK for one rank; Open MPI FAILED (${#mpi_problems[@]} problems): no 2-rank runs" >&2
    printf '   - %s\n' "${mpi_problems[@]}" >&2
    return 3
  fi
  echo "== env-check: OK"
}

case "$1" in
  env-check) env_check ;;
  print-env)
    for v in PATH LD_LIBRARY_PATH OPAL_PREFIX OPAL_EXEC_PREFIX OPAL_BINDIR OPAL_LIBDIR OPAL_LIBEXECDIR \
             OPAL_PKGLIBDIR OPAL_DATAROOTDIR OPAL_DATADIR OPAL_PKGDATADIR OPAL_SYSCONFDIR \
             OMPI_MCA_mca_base_component_path PMIX_PREFIX PMIX_EXEC_PREFIX PMIX_LIBDIR PMIX_PKGLIBDIR \
             PMIX_DATADIR PMIX_PKGDATADIR PMIX_SYSCONFDIR PMIX_MCA_mca_base_component_path \
             HWLOC_PLUGINS_PATH OMPI_MCA_pml OMPI_MCA_btl OMPI_MCA_plm \
             OMPI_MCA_btl_vader_single_copy_mechanism MOE_TEST_DATA MOE_SPM_SHIM MOE_BUNDLE_DIR \
             OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM; do
      [ -n "${!v:-}" ] && printf 'export %s=%q\n' "$v" "${!v}"
    done ;;
  *)
    command -v "$1" >/dev/null 2>&1 || die "'$1': no such command in the bundle's bin/ or on PATH"
    exec "$@" ;;
esac
