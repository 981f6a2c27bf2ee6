#!/usr/bin/env bash
# Reruns hookgate's cargo-fuzz targets (fuzz/), one after the other, one libFuzzer process at a
# time:
#   scripts/fuzz.sh              every target for 600 s each
#   scripts/fuzz.sh 60           every target for 60 s each (a quick pass)
#   scripts/fuzz.sh 300 timestamps delivery_ids
#
# Installs cargo-fuzz if missing. cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them. Targets are built with debug assertions (so overflow checks)
# and AddressSanitizer. Each run starts from the committed seeds (fuzz/corpus/<target>/, only
# read) plus what earlier runs found (fuzz/target/corpus/<target>/, not in git). Logs are in
# fuzz/target/logs/. Exits 1 if any target crashed, panicked or hung, and prints where the
# input is (fuzz/artifacts/<target>/); rerun one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -a <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
[ $# -gt 0 ] && shift
case "$seconds" in
  '' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install)" >&2
  cargo install cargo-fuzz
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# Every target at once (the first build compiles hookgate and Pingora instrumented: minutes).
cargo fuzz build -a

mkdir -p fuzz/target/logs
failed=()
summary=()
for target in "${targets[@]}"; do
  work="fuzz/target/corpus/$target"
  log="fuzz/target/logs/$target.log"
  mkdir -p "$work" "fuzz/corpus/$target"
  echo "== $target: ${seconds}s (log: $log)" >&2
  # -timeout: an input taking more than 10 s counts as a hang (a crash).
  if cargo fuzz run -a "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=CRASH
    failed+=("$target")
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
  corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1 || true)
  summary+=("$(printf '%-18s %-6s execs %-10s exec/s %-7s %s %s' \
    "$target" "$status" "${execs:-?}" "${rate:-?}" "$cov" "$corpus")")
  if [ "$status" = CRASH ]; then
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY:|Test unit written to' "$log" | head -n 5 >&2 || true
    sed -n 's/.*Test unit written to \(.*\)$/crash input: \1/p' "$log" | sort -u >&2 || true
  fi
done

printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
