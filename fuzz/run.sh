#!/usr/bin/env bash
# Bounded fuzzing run of every target (CI runs this): builds all targets with cargo-fuzz, then
# fuzzes each for FUZZ_SECONDS (default 30) starting from fuzz/corpus/<target>/ and the inputs
# kept in fuzz/regressions/<target>/. Fails on the first crash and prints the crashing input.
#
#   fuzz/run.sh                       # every target, 30 s each
#   FUZZ_SECONDS=600 fuzz/run.sh audit workflow   # some targets, longer
#
# Toolchain: nightly when rustup has one, otherwise the default toolchain with RUSTC_BOOTSTRAP=1
# (cargo-fuzz needs -Z flags for the sanitizer and coverage instrumentation). cargo-fuzz is
# installed when missing. New corpus entries found during the run go to a scratch directory, not
# into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/tollgate-fuzz-target}"
ALL_TARGETS=(workflow duration config slack email_link audit api_body)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  CARGO=(cargo +nightly)
else
  echo "fuzz: no nightly toolchain; using $(rustc --version) with RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
  CARGO=(cargo)
fi

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

start=$(date +%s)
# `cargo fuzz build` builds one target or all of them.
if [ "${#TARGETS[@]}" -eq "${#ALL_TARGETS[@]}" ]; then
  "${CARGO[@]}" fuzz build
else
  for t in "${TARGETS[@]}"; do "${CARGO[@]}" fuzz build "$t"; done
fi
echo "fuzz: built in $(($(date +%s) - start)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${TARGETS[@]}"; do
  echo "== fuzz $t (${SECONDS_PER_TARGET} s)"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$artifacts" "$scratch/$t"
  seeds=("fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && seeds+=("fuzz/regressions/$t")
  log="$scratch/$t.log"
  # New inputs go to the scratch corpus (first directory); the seeds are only read.
  if "${CARGO[@]}" fuzz run "$t" "$scratch/$t" "${seeds[@]}" -- \
      -max_total_time="$SECONDS_PER_TARGET" -artifact_prefix="$artifacts/" -print_final_stats=1 \
      >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || tail -n 3 "$log"
  else
    echo "fuzz: $t FAILED"
    # The assertion or panic first (libFuzzer's stack trace would push it out of the tail).
    grep -m 1 -A 12 'panicked at' "$log" | cut -c 1-400 || true
    grep -v -E '^#[0-9]+\s' "$log" | tail -n 40
    crash=$(grep -oE 'Test unit written to \S+' "$log" | tail -n 1 | sed 's/Test unit written to //')
    if [ -n "$crash" ]; then
      echo "fuzz: crashing input: $crash"
      echo "fuzz: reproduce with: ${CARGO[*]} fuzz run $t $crash"
    fi
    failed+=("$t")
  fi
done

echo "fuzz: finished in $(($(date +%s) - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: failing targets: ${failed[*]}"
  exit 1
fi
