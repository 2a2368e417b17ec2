#!/usr/bin/env bash
# bundle_device.sh: pack the built binaries, with the non-CUDA shared libraries they need and a
# relocatable single-node Open MPI (mpirun, orted, MCA plugins, PMIx plugins, help files), into
# one compressed file that can be carried to a GPU box that has a CUDA 13 driver, cuBLAS and NCCL
# but no MPI and no package access. There, scripts/device_run.sh unpacks it and runs commands
# against it.
#
# usage: bash scripts/bundle_device.sh [-o OUTPUT.tar.gz] [BUILD_DIR]
#   BUILD_DIR   the CMake build folder (default: build); its bin/ and lib/libmoe_spm.so are taken
#   -o FILE     where to write the bundle (default: build-device/moe-bundle.tar.gz in the repo);
#               gzip, which every box has; a name ending .tar.xz is written with xz instead
#               (smaller; the box then needs xz or python3 to unpack it)
#   -h, --help  this text
#   MOE_BUNDLE_XZ_OPTS  xz options for a .tar.xz (default "-9 -T0")
#
# The CUDA runtime must be linked statically (CMake: CUDA::cudart_static): the executables may
# need the box's cuBLAS (libcublas.so.13, libcublasLt.so.13), which is far too big to carry, but
# not libcudart.so, and NCCL is loaded at run time only by transport nccl. The bundle is refused
# where an executable needs libcudart.so or libnccl.so by name; MANIFEST.txt lists the CUDA
# libraries they do need.
#
# What goes in: every executable in BUILD_DIR/bin, BUILD_DIR/lib/libmoe_spm.so, Open MPI's
# orterun/mpirun/orted/ompi_info with the MCA plugins a single node needs (shared memory, self,
# tcp, ob1, local launch, PMIx; no UCX/OFI/verbs/PSM/OpenSHMEM plugins), PMIx's plugins, the help
# files and config, and every shared library all of those need (found with ldd), except glibc's
# own libraries and all CUDA/NVIDIA libraries (the box's own cuBLAS and driver are used). libstdc++ and libgcc_s
# are carried in lib/gcc/; device_run.sh uses them only where the box's are older.
# The layout inside: bin/ lib/ lib/gcc/ lib/openmpi/ lib/pmix/ lib/hwloc/ share/ etc/ MANIFEST.txt
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=""
BUILD=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -o|--output) [ $# -ge 2 ] || { echo "bundle_device.sh: $1 needs a file name" >&2; exit 2; }
                 OUT=$2; shift 2 ;;
    -*) echo "bundle_device.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$BUILD" ] || { echo "bundle_device.sh: one BUILD_DIR only (see --help)" >&2; exit 2; }
       BUILD=$1; shift ;;
  esac
done
BUILD=${BUILD:-build}
OUT=${OUT:-$REPO/build-device/moe-bundle.tar.gz}
case "$OUT" in *.xz) COMPRESS=xz ;; *) COMPRESS=gzip ;; esac

die() { echo "bundle_device.sh: error: $*" >&2; exit 1; }

[ -d "$BUILD/bin" ] || die "no $BUILD/bin: build first (bash scripts/build.sh), or name the build folder"
BUILD=$(cd "$BUILD" && pwd)
[ -f "$BUILD/lib/libmoe_spm.so" ] || die "no $BUILD/lib/libmoe_spm.so (the sentencepiece shim): build first"
for t in ldd "$COMPRESS" tar readelf; do command -v "$t" >/dev/null || die "'$t' not found on this machine"; done

# ---- Open MPI and PMIx as installed here -------------------------------------------------
ORTERUN=$(command -v orterun || true)
[ -n "$ORTERUN" ] || { m=$(command -v mpirun || true); [ -n "$m" ] && ORTERUN=$(readlink -f "$m"); }
[ -n "$ORTERUN" ] && [ -x "$ORTERUN" ] || die "no orterun/mpirun found: install Open MPI (scripts/setup.sh)"
OMPI_INFO=$(command -v ompi_info || true)
[ -n "$OMPI_INFO" ] || die "no ompi_info found: this needs Open MPI (openmpi-bin)"
ORTED=$(command -v orted || true)
[ -n "$ORTED" ] || ORTED=$(dirname "$ORTERUN")/orted
[ -x "$ORTED" ] || die "no orted found beside $ORTERUN"
ompi_path() { "$OMPI_INFO" --parsable --path "$1" | sed -n "s/^path:$1://p" | head -1; }
MCA_DIR=$(ompi_path pkglibdir)
OMPI_DATA=$(ompi_path pkgdatadir)
OMPI_ETC=$(ompi_path sysconfdir)
OMPI_VERSION=$("$OMPI_INFO" --version 2>/dev/null | sed -n "s/^Open MPI v//p" | head -1 || true)
[ -d "$MCA_DIR" ] || die "Open MPI plugin folder '$MCA_DIR' (ompi_info --path pkglibdir) not found"
[ -d "$OMPI_DATA" ] || die "Open MPI help folder '$OMPI_DATA' (ompi_info --path pkgdatadir) not found"

# PMIx (external on Debian 12: libpmix2, plugins under .../pmix2/lib/pmix). Found from the library
# the ext3x plugin links, then its package's file list; absent is allowed (an internal PMIx).
PMIX_LIB=$(ldd "$MCA_DIR"/mca_pmix_*.so 2>/dev/null | awk '$1 ~ /^libpmix\.so/ && $3 ~ /^\// {print $3; exit}')
PMIX_PLUGINS=""; PMIX_HELP=""
if [ -n "$PMIX_LIB" ]; then
  if command -v dpkg >/dev/null && dpkg -L libpmix2 >/dev/null 2>&1; then
    PMIX_PLUGINS=$(dpkg -L libpmix2 | grep -E '/pmix_mca_[^/]*\.so$' | head -1 | xargs -r dirname)
    PMIX_HELP=$(dpkg -L libpmix2 | grep -E '/help-pmix-runtime\.txt$' | head -1 | xargs -r dirname)
  fi
  for d in /usr/lib/x86_64-linux-gnu/pmix2/lib/pmix /usr/lib/pmix2/lib/pmix /usr/lib64/pmix; do
    [ -z "$PMIX_PLUGINS" ] && [ -d "$d" ] && PMIX_PLUGINS=$d
  done
  [ -n "$PMIX_HELP" ] || { d=$(dirname "$(dirname "$PMIX_PLUGINS")")/share/pmix; [ -d "$d" ] && PMIX_HELP=$d; }
  [ -n "$PMIX_PLUGINS" ] || die "Open MPI uses an external PMIx ($PMIX_LIB) but its plugin folder was not found"
fi

# ---- what is excluded ------------------------------------------------------------------------
# glibc's own libraries: the box's glibc is the same age or newer, and must match its ld.so.
GLIBC_RE='^(ld-linux[^ ]*|linux-vdso|linux-gate|lib(c|m|dl|pthread|rt|resolv|util|anl|nsl|mvec|BrokenLocale|thread_db|c_malloc_debug|memusage|pcprofile)\.so)'
# CUDA and NVIDIA libraries: the box's own driver, runtime, cuBLAS and NCCL are used.
CUDA_RE='^lib(cuda|cudart|cublas|cublasLt|nccl|nvidia[-a-z]*|nvrtc[-a-z]*|nvJitLink|nvToolsExt|nvtx3interop|cupti|cufft|cufftw|curand|cusparse|cusolver|nvml)\.so'
# Open MPI plugins a single node never needs, and that pull in fabric libraries (or OpenSHMEM).
SKIP_PLUGIN_RE='^mca_(atomic|memheap|scoll|spml|sshmem)_|ucx|ofi|openib|verbs|psm|portals|usnic|ugni|mxm|fca|hcoll|ompi_monitoring_prof'
FABRIC_RE='^lib(ucp|ucs|uct|ucm|fabric|ibverbs|rdmacm|efa|psm_infinipath|psm2|infinipath|mlx[0-9]|hcoll|mxm)\.so'

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/moe-bundle.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
B=$STAGE; chmod 0755 "$B"
mkdir -p "$B/bin" "$B/lib/gcc" "$B/lib/openmpi" "$B/lib/pmix" "$B/lib/hwloc" \
         "$B/share/openmpi" "$B/share/pmix" "$B/etc/openmpi"
MANIFEST=$B/MANIFEST.txt
: > "$MANIFEST.files"
record() { printf '%s\t%s\n' "$1" "$2" >> "$MANIFEST.files"; }   # bundle path, source path

ELFS=()      # everything whose shared-library needs must be met
# 1. our executables
n_bin=0
for f in "$BUILD"/bin/*; do
  [ -f "$f" ] && [ -x "$f" ] || continue
  head -c 4 "$f" | grep -q 'ELF' || { cp -p "$f" "$B/bin/"; record "bin/$(basename "$f")" "$f"; continue; }
  cp -p "$f" "$B/bin/"; record "bin/$(basename "$f")" "$f"; ELFS+=("$f"); n_bin=$((n_bin + 1))
done
[ "$n_bin" -gt 0 ] || die "no executables in $BUILD/bin"
# The CUDA runtime linked in, NCCL loaded at run time: neither may be NEEDED by name.
CUDA_NEEDED=""
for f in "${ELFS[@]}"; do
  need=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  bad=$(grep -E '^lib(cudart|nccl)\.so' <<<"$need" | tr '\n' ' ' || true)
  [ -z "$bad" ] || die "$(basename "$f") needs ${bad% } by name: link cudart statically (CUDA::cudart_static) and load NCCL at run time (comm/nccl_library.h), then rebuild"
  CUDA_NEEDED+=" $(grep -E '^lib(cuda|cublas|cublasLt|nvidia|nvrtc|nvJitLink)' <<<"$need" | tr '\n' ' ' || true)"
done
CUDA_NEEDED=$(tr ' ' '\n' <<<"$CUDA_NEEDED" | sed '/^$/d' | sort -u | tr '\n' ' ')
cp -p "$BUILD/lib/libmoe_spm.so" "$B/lib/"; record lib/libmoe_spm.so "$BUILD/lib/libmoe_spm.so"
ELFS+=("$BUILD/lib/libmoe_spm.so")

# 2. Open MPI executables (mpirun and mpiexec are orterun under other names)
for f in "$ORTERUN" "$ORTED" "$OMPI_INFO"; do
  cp -pL "$f" "$B/bin/$(basename "$f")"; record "bin/$(basename "$f")" "$(readlink -f "$f")"; ELFS+=("$f")
done
[ "$(basename "$ORTERUN")" = orterun ] || mv "$B/bin/$(basename "$ORTERUN")" "$B/bin/orterun"
ln -sf orterun "$B/bin/mpirun"; ln -sf orterun "$B/bin/mpiexec"

# 3. Open MPI MCA plugins: all but the fabric/OpenSHMEM ones and any whose libraries are missing
kept=0; skipped=()
for f in "$MCA_DIR"/*.so; do
  name=$(basename "$f")
  if [[ "$name" =~ $SKIP_PLUGIN_RE ]]; then skipped+=("$name"); continue; fi
  bad=$(ldd "$f" 2>/dev/null | RE=$FABRIC_RE awk '$3 == "not" || $1 ~ ENVIRON["RE"] {print $1}')
  if [ -n "$bad" ]; then skipped+=("$name"); continue; fi
  cp -pL "$f" "$B/lib/openmpi/"; record "lib/openmpi/$name" "$f"; ELFS+=("$f"); kept=$((kept + 1))
done
for need in mca_btl_self.so mca_btl_vader.so mca_btl_tcp.so mca_pml_ob1.so mca_odls_default.so \
            mca_ess_hnp.so mca_ess_pmi.so mca_ess_singleton.so mca_plm_isolated.so mca_oob_tcp.so; do
  [ -f "$B/lib/openmpi/$need" ] || die "Open MPI plugin $need missing from $MCA_DIR"
done
compgen -G "$B/lib/openmpi/mca_pmix_*.so" >/dev/null || die "no Open MPI pmix plugin in $MCA_DIR"

# 4. PMIx plugins and help, Open MPI help and config
if [ -n "$PMIX_PLUGINS" ]; then
  for f in "$PMIX_PLUGINS"/*.so; do
    [ -e "$f" ] || continue
    cp -pL "$f" "$B/lib/pmix/"; record "lib/pmix/$(basename "$f")" "$f"; ELFS+=("$f")
  done
  ELFS+=("$PMIX_LIB")
  [ -n "$PMIX_HELP" ] && cp -pL "$PMIX_HELP"/* "$B/share/pmix/" 2>/dev/null || true
fi
cp -pL "$OMPI_DATA"/help-*.txt "$OMPI_DATA"/*.ini "$B/share/openmpi/" 2>/dev/null || true
[ -d "$OMPI_DATA/amca-param-sets" ] && cp -pLr "$OMPI_DATA/amca-param-sets" "$B/share/openmpi/"
if [ -d "$OMPI_ETC" ]; then
  for f in "$OMPI_ETC"/openmpi-mca-params.conf "$OMPI_ETC"/openmpi-default-hostfile; do
    [ -f "$f" ] && cp -pL "$f" "$B/etc/openmpi/"
  done
fi
record share/openmpi "$OMPI_DATA"; record etc/openmpi "$OMPI_ETC"
[ -n "$PMIX_HELP" ] && record share/pmix "$PMIX_HELP"

# 5. every shared library all of the above need, minus glibc and CUDA
missing=()
declare -A SEEN=()
while read -r soname arrow path _; do
  [ "$arrow" = "=>" ] || continue
  [[ "$soname" =~ $GLIBC_RE ]] && continue
  [[ "$soname" =~ $CUDA_RE ]] && continue
  if [ "$path" = "not" ]; then missing+=("$soname"); continue; fi
  [ -n "${SEEN[$soname]:-}" ] && continue
  SEEN[$soname]=1
  case "$soname" in
    libmoe_spm.so) continue ;;
    libstdc++.so.*|libgcc_s.so.*) dest=lib/gcc ;;
    *) dest=lib ;;
  esac
  cp -L "$path" "$B/$dest/$soname"; chmod 0755 "$B/$dest/$soname"
  record "$dest/$soname" "$(readlink -f "$path")"
done < <(for e in "${ELFS[@]}"; do ldd "$e" 2>/dev/null || true; done | sort -u)
if [ "${#missing[@]}" -gt 0 ]; then
  die "these libraries are needed but not found here: $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"
fi
[ -f "$B/lib/gcc/libstdc++.so.6" ] || die "libstdc++.so.6 not found by ldd (unexpected)"

# 6. manifest: what, from where, built on what. glibc_needed: the newest GLIBC_x.y symbol
# version any bundled binary or library asks for (glibc itself is the box's).
GLIBC_NEEDED=$(find "$B/bin" "$B/lib" -type f \( -perm -u+x -o -name '*.so*' \) -print0 2>/dev/null |
               xargs -0 -r objdump -T 2>/dev/null | grep -o 'GLIBC_2\.[0-9]*' | sort -V -u | tail -1)
{
  echo "# moe-runtime device bundle; unpack with scripts/device_run.sh"
  echo "built:      $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
  echo "glibc:      $(ldd --version 2>/dev/null | head -1)"
  echo "glibc_needed: ${GLIBC_NEEDED#GLIBC_}"
  echo "build_dir:  $BUILD"
  echo "open_mpi:   ${OMPI_VERSION:-unknown} ($ORTERUN; plugins from $MCA_DIR, $kept kept)"
  echo "pmix:       ${PMIX_LIB:-internal} (plugins from ${PMIX_PLUGINS:-none})"
  echo "skipped_plugins: ${skipped[*]:-none}"
  echo "cuda_needed: ${CUDA_NEEDED:-none} (from the box; cudart is linked in, NCCL dlopen'ed)"
  echo "glibcxx_max: $(grep -ao 'GLIBCXX_3\.4\.[0-9]*' "$B/lib/gcc/libstdc++.so.6" | sort -t. -k3,3n -u | tail -1)"
  echo "# files (bundle path <TAB> source)"
  sort "$MANIFEST.files"
} > "$MANIFEST"
rm -f "$MANIFEST.files"

mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
n_lib=$(find "$B/lib" -maxdepth 2 -name '*.so*' -not -path '*/openmpi/*' -not -path '*/pmix/*' | wc -l)
raw=$(du -sm "$B" | cut -f1)
echo "bundle_device.sh: $n_bin executables, $n_lib libraries, $kept Open MPI plugins, ${raw} MiB unpacked; compressing ..."
if [ "$COMPRESS" = xz ]; then
  read -r -a XZ_OPTS <<<"${MOE_BUNDLE_XZ_OPTS:--9 -T0}"
  tar -C "$B" --owner=0 --group=0 --numeric-owner -cf - . | xz "${XZ_OPTS[@]}" -c > "$OUT.part"
else
  # gzip's default level: -9 took 33 s for a 158 MiB Release bundle and saved 0.4 MiB of 54.
  tar -C "$B" --owner=0 --group=0 --numeric-owner -cf - . | gzip -6 -c > "$OUT.part"
fi
mv -f "$OUT.part" "$OUT"
size=$(stat -c %s "$OUT")
echo "bundle_device.sh: wrote $OUT ($size bytes, $(awk -v s="$size" 'BEGIN{printf "%.1f", s/1048576}') MiB)"
if [ "$size" -ge $((64 * 1024 * 1024)) ]; then
  echo "bundle_device.sh: warning: the bundle is over the 64 MiB that can be carried" >&2
fi
