#!/usr/bin/env bash
# Run the cargo-fuzz targets in fuzz/ (the harnesses of dpow_testkit::fuzz), one at a time,
# at the lowest priority. Not part of scripts/test.sh: `cargo test` runs the same harnesses on
# a bounded number of inputs (testnet/tests/fuzz_inputs.rs); this is the long run whose
# figures docs/security.md records.
#
#   scripts/fuzz.sh [--runs N] [--time SECONDS] [--asan] [--list] [TARGET...]
#
#   --runs N        executions per target (default 10000000)
#   --time SECONDS  stop a target after this long, whichever comes first
#   --asan          build with AddressSanitizer (default: no sanitizer; the code is safe Rust
#                   and the sanitizer costs about half the speed)
#   --list          print the targets and exit
#   TARGET...       the targets to run (default: all)
#
# Each target's corpus lives in fuzz/corpus/TARGET (not committed), seeded at start with valid
# messages from the harness's seeds; crashes go to fuzz/artifacts/TARGET, logs to
# fuzz/logs/TARGET.log. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Exit status 1 if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

runs=10000000
time=""
sanitizer=none
list=0
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --time) time="$2"; shift 2 ;;
    --asan) sanitizer=address; shift ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

if ! cargo +nightly fuzz --help >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked (and a nightly toolchain)" >&2
  exit 2
fi
mapfile -t all < <(cargo +nightly fuzz list)
if [[ $list == 1 ]]; then
  printf '%s\n' "${all[@]}"
  exit 0
fi
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")

if command -v sccache >/dev/null && [[ -z "${RUSTC_WRAPPER:-}" ]]; then
  export RUSTC_WRAPPER=sccache
fi
nice -n 19 cargo +nightly fuzz build --sanitizer "$sanitizer"

mkdir -p logs
failed=()
printf '%-20s %12s %8s %9s %8s  %s\n' target runs seconds exec/s corpus result
for t in "${targets[@]}"; do
  limits=(-runs="$runs")
  [[ -z $time ]] || limits+=(-max_total_time="$time")
  log="logs/$t.log"
  start=$(date +%s)
  result=ok
  # One process (libFuzzer's default, as -jobs=1), at the lowest priority: the machine is
  # shared. The target writes its seeds into its corpus first (DPOW_FUZZ_SEEDS).
  if ! DPOW_FUZZ_SEEDS="corpus/$t" nice -n 19 cargo +nightly fuzz run --sanitizer "$sanitizer" \
      "$t" "corpus/$t" -- "${limits[@]}" -timeout=30 -print_final_stats=1 >"$log" 2>&1; then
    result="CRASH (see fuzz/$log and fuzz/artifacts/$t)"
    failed+=("$t")
  fi
  secs=$(( $(date +%s) - start ))
  done_runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "corpus/$t" -type f | wc -l)
  printf '%-20s %12s %8s %9s %8s  %s\n' "$t" "${done_runs:-?}" "$secs" "${rate:-?}" "$corpus" "$result"
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "crashed: ${failed[*]}" >&2
  exit 1
fi
