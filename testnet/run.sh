#!/usr/bin/env bash
# Start a local dpow network and put work through it.
#
# Until the swarm lands (issue 3) this builds `dpow` and exercises the local path every node
# uses: a key per role, work for every block kind at a low test difficulty, each answer checked
# by `dpow work validate`, and a short hash-rate measurement.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'USAGE'
usage: testnet/run.sh [--profile NAME]

  --profile NAME   difficulty profile: test (default, finishes in seconds), nano, banano,
                   multiplier-proposal
USAGE
}

profile=test
while (($#)); do
  case "$1" in
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "testnet: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

scripts/deps.sh
if command -v sccache >/dev/null && [[ -z "${RUSTC_WRAPPER:-}" ]]; then
  export RUSTC_WRAPPER=sccache
fi
echo "== building dpow (release)" >&2
cargo build --release --locked -p dpow-node --bin dpow
dpow=target/release/dpow

data=$(mktemp -d -t dpow-testnet.XXXXXX)
trap 'rm -rf "$data"' EXIT

echo "== keys"
for role in registrar service worker; do
  printf '%-10s ' "$role"
  "$dpow" keys new --out "$data/$role.key" | sed -n 's/^account *//p'
done

echo "== work for every block kind (profile $profile)"
root=7F7122E843B27524F4F1D6BD14AEFD1C8F01D36AE8653D37417533C0D4BC2BE6
for kind in send receive open change epoch; do
  line=$("$dpow" --json work generate --hash "$root" --kind "$kind" --profile "$profile")
  work=$(sed -n 's/.*"work": "\([0-9a-f]*\)".*/\1/p' <<<"$line")
  ms=$(sed -n 's/.*"elapsed_ms": \([0-9.]*\).*/\1/p' <<<"$line")
  "$dpow" work validate --hash "$root" --work "$work" --kind "$kind" --profile "$profile" >/dev/null
  printf '%-8s work %s  valid  %8.1f ms\n' "$kind" "$work" "$ms"
done

echo "== hash rate"
"$dpow" bench --seconds 1 --no-gpu
