#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit, property and integration tests (the
# integration tests build namespaces and need root), and every fuzz target for a bounded time
# (fuzz/ci.sh; FUZZ_SECONDS per target, default 20). Installs its own dependencies.
#   sudo bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "warning: not root: the integration tests will skip themselves" >&2
fi
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo build (the integration tests exec the binaries)"
cargo build --workspace --quiet
[ "$(id -u)" -eq 0 ] && export TAPWAY_IT_REQUIRE=1  # root: integration tests must run, not skip
echo "==> cargo test"
cargo test --workspace -- --test-threads=2
echo "==> fuzz targets (fuzz/ci.sh: cargo-fuzz on nightly, ${FUZZ_SECONDS:-20} s each)"
bash fuzz/ci.sh
echo "==> CNI plugin under real runtimes (podman, containerd CRI)"
for t in plugin/tests/runtimes/podman.sh plugin/tests/runtimes/containerd.sh; do
  bash "$t"
done
# Built from the debug binaries above (a release build would add minutes); scripts/image.sh
# without --debug builds the release image.
echo "==> the container image, run with podman as deploy/daemonset.yaml runs it"
bash scripts/image-test.sh
