#!/usr/bin/env bash
# Start a whole dpow network on loopback and put work through it:
# a registrar/bootstrap node, a service node and N workers (separate `dpow node` processes),
# the service registered, M requests across every block kind, and a summary.
#
#   testnet/run.sh                    4 workers, 50 requests, low-difficulty test profile
#   testnet/run.sh --keep             leave the network running until Ctrl-C
#   testnet/run.sh --profile nano     Nano's real thresholds (slow on a CPU)
#   testnet/run.sh --netns            every node on its own host in a network namespace (root):
#                                     a public segment and two homes behind NAT
#   testnet/run.sh --help             every option
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ " $* " == *" --netns "* ]]; then
  scripts/deps.sh --netns
else
  scripts/deps.sh
fi
if command -v sccache >/dev/null && [[ -z "${RUSTC_WRAPPER:-}" ]]; then
  export RUSTC_WRAPPER=sccache
fi
echo "== building dpow (release)" >&2
cargo build --release --locked -p dpow-node --bin dpow -p dpow-testnet --bin dpow-testnet >&2
exec target/release/dpow-testnet "$@"
