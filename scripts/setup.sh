#!/usr/bin/env bash
# Installs every system dependency from Debian's packages. Idempotent: a second run installs
# nothing new. The CUDA toolkit (with cuBLAS and NCCL) is not a Debian package here; where it
# sits at /usr/local/cuda the build compiles the CUDA targets too, and without it the CPU side
# still builds and passes.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  openmpi-bin libopenmpi-dev              # MPI: ranks, bootstrap, CPU all-to-all
  libgrpc++-dev protobuf-compiler-grpc    # gRPC with its C++ plugin (serving)
  libprotobuf-dev protobuf-compiler       # Protobuf
  libyaml-cpp-dev                         # run configs
  nlohmann-json3-dev                      # config.json, safetensors headers, JSONL
  libopenblas-dev                         # CPU GEMMs
  libgtest-dev libgmock-dev libbenchmark-dev  # tests and benchmarks
  libcli11-dev libspdlog-dev              # command lines and logs
  libcpp-httplib-dev                      # the coordinator's /metrics endpoint
  libsentencepiece-dev                    # text prompts where a tokenizer.model exists
  openssl                                 # test certificates for the TLS tests
  clang libclang-rt-dev                   # libFuzzer for the parsers' harnesses (scripts/fuzz.sh)
  libboost-context-dev                    # fibers for the CUDA emulation (cuda_emu/)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
