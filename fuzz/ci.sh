#!/usr/bin/env bash
# The fuzz stage of scripts/test.sh: builds every fuzz target (cargo-fuzz, libFuzzer with
# AddressSanitizer and debug assertions, so an overflow on wire input is a finding too) and
# runs each for a bounded time from its corpus in fuzz/corpus/<target>/. Fails on any finding
# (panic, crash, leak, timeout, out of memory); the input is kept in
# fuzz/artifacts/<target>/, printed, and the command that replays it is shown.
#   bash fuzz/ci.sh [seconds per target]      (default: $FUZZ_SECONDS, else 20)
# Installs the nightly toolchain and cargo-fuzz when missing. The build is kept in
# fuzz/target/ (separate from the workspace's target/), so later runs only rebuild what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-${FUZZ_SECONDS:-20}}

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "==> rustup toolchain install nightly --profile minimal"
  if ! rustup toolchain install nightly --profile minimal; then
    echo "fuzz: cannot install the nightly toolchain (cargo-fuzz needs it; can rustup reach static.rust-lang.org?)" >&2
    exit 1
  fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> cargo install cargo-fuzz --locked"
  if ! cargo install cargo-fuzz --locked; then
    echo "fuzz: cannot install cargo-fuzz (can cargo reach crates.io?)" >&2
    exit 1
  fi
fi

cd fuzz
echo "==> cargo test (fuzz/: the pipeline target's node reaches every stage)"
cargo test --lib --quiet
flags=(--debug-assertions)
echo "==> cargo fuzz build (nightly, ASan, debug assertions)"
start=$(date +%s)
cargo +nightly fuzz build "${flags[@]}"
echo "    built in $(( $(date +%s) - start )) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$t" "artifacts/$t" "$scratch/$t"
  echo "==> fuzz $t (${secs} s)"
  touch "$scratch/$t.start"
  # New inputs go to the scratch directory: the corpus in the repository only changes by
  # hand (cargo fuzz cmin), so a CI run leaves the tree clean.
  if cargo +nightly fuzz run "${flags[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
    grep -E '^(Done|pipeline:|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb))' "$scratch/$t.log" | sed 's/^/    /'
  else
    failed+=("$t")
    # The panic or sanitizer report, then the end of the log (input, replay command).
    grep -E -A3 'panicked at|^==[0-9]+==ERROR|^ERROR: libFuzzer' "$scratch/$t.log" | head -n 30 >&2 || true
    tail -n 40 "$scratch/$t.log" >&2
    # Only this run's findings (older ones may still lie there).
    find "artifacts/$t" -type f -newer "$scratch/$t.start" | while read -r a; do
      echo "fuzz: $t: finding kept in fuzz/$a ($(stat -c %s "$a") bytes); first bytes:" >&2
      od -A x -t x1z -N 512 "$a" >&2
      echo "fuzz: replay with: (cd fuzz && cargo +nightly fuzz run ${flags[*]} $t $a)" >&2
    done
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]}" >&2
  exit 1
fi
