#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, and every test including the OpenCL
# backend on PoCL. Installs the system packages it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh --test
# The browser worker's WebAssembly kernel must build here (node/build.rs otherwise only warns).
export DPOW_REQUIRE_WASM=1
if command -v sccache >/dev/null && [[ -z "${RUSTC_WRAPPER:-}" ]]; then
  export RUSTC_WRAPPER=sccache
fi

# CI builds once from clean: incremental state would only cost disk (and sccache cannot cache
# incrementally built crates).
if [[ -n "${CI:-}" ]]; then
  export CARGO_INCREMENTAL=0
fi
# The build is tens of GB; when a machine's disk runs out the linker dies with a bus error, so
# say how much there was.
disk() { echo "== disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free; target $(du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null | cut -f1)"; }
disk
trap disk EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "== cargo clippy (the light build: no ledger feature, in its own target directory)"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/light" \
  cargo clippy -p dpow-node --no-default-features --all-targets --locked -- -D warnings
echo "== cargo test"
# The GPU, browser, network-namespace and full-disk tests skip themselves when no OpenCL
# platform, Chromium, Node.js, namespaces (root, iproute2, nftables) or tmpfs mounts (root)
# are found, except here: CI must run them (DPOW_REQUIRE_WASM, above, covers Node.js).
DPOW_REQUIRE_OPENCL=1 DPOW_REQUIRE_CHROMIUM=1 DPOW_REQUIRE_NETNS=1 DPOW_REQUIRE_TMPFS=1 \
  cargo test --workspace --all-features --locked
