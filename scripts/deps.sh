#!/usr/bin/env bash
# Install the system packages dpow's build and tests need, if they are missing.
# Debian/Ubuntu; runs apt-get as root (or through sudo). Safe to run again: it does nothing
# when everything is present.
#
#   scripts/deps.sh            packages for building dpow
#   scripts/deps.sh --opencl   also OpenCL headers and PoCL (a CPU OpenCL driver) for GPU tests
#   scripts/deps.sh --netns    also iproute2 and nftables (the testnet on network namespaces)
#   scripts/deps.sh --test     everything the test suite needs: OpenCL/PoCL, Chromium,
#                              Node.js (the WebAssembly kernel's tests), sccache (caches
#                              RocksDB's C++ build between runs), iproute2 and nftables
set -euo pipefail

# libclang-dev: bindgen for RocksDB's C API (librocksdb-sys).
# rustc, libstd-rust-dev-wasm32, lld: Debian's rustc 1.63 with the wasm32 standard library
# and its linker, which node/build.rs uses (as /usr/bin/rustc) to build the browser worker's
# WebAssembly kernel; rustup's toolchain stays the one on PATH for everything else.
want=(pkg-config libclang-dev rustc libstd-rust-dev-wasm32 lld)
for arg in "$@"; do
  case "$arg" in
    --opencl) want+=(ocl-icd-opencl-dev pocl-opencl-icd) ;;
    --netns) want+=(iproute2 nftables) ;;
    --test) want+=(ocl-icd-opencl-dev pocl-opencl-icd chromium nodejs sccache iproute2 nftables) ;;
    *) echo "deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "dpow: please install these packages with your system's package manager: ${missing[*]}" >&2
  exit 1
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "dpow: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "dpow: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
