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
# Lint while building. `cargo clippy` would check every dependency (metadata only) and `cargo
# test` would then compile them all again; with clippy's driver as the workspace's compiler the
# one build that makes the test binaries also runs clippy's lints on our crates (`-D warnings`,
# as `cargo clippy -- -D warnings` would), and dependencies are compiled once. A lint stops the
# build like a compile error. Locally `cargo clippy` works as ever.
CLIPPY_DRIVER="$(dirname "$(rustup which rustc 2>/dev/null || command -v rustc)")/clippy-driver"
if [[ ! -x "$CLIPPY_DRIVER" ]]; then
  echo "clippy-driver not found beside rustc: rustup component add clippy" >&2
  exit 1
fi
export RUSTC_WORKSPACE_WRAPPER="$CLIPPY_DRIVER"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
step() { local t=$SECONDS; "$@"; echo "   ($((SECONDS - t)) s)"; }

echo "== build every target with clippy's lints (workspace, all features)"
step cargo test --workspace --all-targets --all-features --locked --no-run
echo "== build the light worker with clippy's lints (no ledger feature, its own target directory)"
# The same binary `testnet/tests/light_worker.rs` builds (it inherits this environment, so it
# finds it fresh), and the light build's own tests, linted as `cargo clippy --all-targets` would.
step env CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/light" \
  cargo build -p dpow-node --no-default-features --all-targets --locked
echo "== cargo test"
# The GPU, browser, network-namespace and full-disk tests skip themselves when no OpenCL
# platform, Chromium, Node.js, namespaces (root, iproute2, nftables) or tmpfs mounts (root)
# are found, except here: CI must run them (DPOW_REQUIRE_WASM, above, covers Node.js).
DPOW_REQUIRE_OPENCL=1 DPOW_REQUIRE_CHROMIUM=1 DPOW_REQUIRE_NETNS=1 DPOW_REQUIRE_TMPFS=1 \
  step cargo test --workspace --all-features --locked
