#!/usr/bin/env bash
# Installs what building and testing tapway needs on Debian 12 (as root). Idempotent: skips
# what is already there. Sourced by demo.sh and test.sh.
set -euo pipefail

need_apt=()
for pair in ip:iproute2 ping:iputils-ping iperf3:iperf3 socat:socat python3:python3 cc:build-essential nft:nftables; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
[ -x /usr/lib/cni/host-local ] || need_apt+=(containernetworking-plugins)
# The runtime tests (plugin/tests/runtimes/): podman 4.3 and containerd 1.6 with runc, an image
# built from busybox-static, and python3-grpcio for the CRI client (crictl is not in Debian 12).
for pair in podman:podman runc:runc conmon:conmon containerd:containerd; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_apt+=(busybox-static)
/usr/bin/python3 -c 'import grpc' 2>/dev/null || need_apt+=(python3-grpcio)
# The AF_XDP uplink (xsk-rs) builds libxdp and libbpf from source: clang/llc for the XDP
# programs, libelf and zlib for libbpf, m4 and libpcap for xdp-tools' configure.
for pkg in make clang llvm libelf-dev zlib1g-dev m4 pkg-config libpcap-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The metrics test (switch/tests/metrics.rs) runs Prometheus' own binary and promtool in a
# namespace of its own. Without recommends: they would bring node-exporter, another service.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "==> apt-get install prometheus"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# Where systemd runs, Debian starts and enables the package's service: not wanted here.
if [ -d /run/systemd/system ] && systemctl is-enabled --quiet prometheus.service 2>/dev/null; then
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    # Debian 12's own cargo (1.63) is too old for the dependencies: use rustup.
    echo "==> installing the Rust toolchain with rustup"
    command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
modprobe tun 2>/dev/null || true
[ -c /dev/net/tun ] || { echo "tapway needs /dev/net/tun (the tun module)" >&2; exit 1; }
