#!/usr/bin/env bash
# Following the Kubernetes API: the latency from an EndpointSlice event on the fake API server
# (kube/fake) to the service table the datapath reads (over 100 events: p50, p99), and the
# watcher's added resident memory at 10,000 Services x 10 endpoints (tapwayd's RSS with that
# table from the watch, minus its RSS with the same table from `tapwayctl sync`).
#
#   sudo bench/watch.sh [--debug]
#
# Runs the ignored test `bench_watch_latency_and_memory` of switch/tests/cluster_watch.rs in
# release mode (--debug: the debug build) and prints its figures. Root: tapwayd runs in network
# namespaces the test makes and removes; the fake API server listens on their loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
if [[ "${1:-}" == "--debug" ]]; then
  profile=()
fi
cargo test "${profile[@]}" -p tapway-switch --test cluster_watch bench_watch_latency_and_memory \
  -- --ignored --nocapture --test-threads=1 2>&1 | grep -E "^(RSS|EndpointSlice event|test result)"
