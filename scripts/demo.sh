#!/usr/bin/env bash
# The main job: build tapway, start tapwayd in two demo "node" namespaces joined by their AF_XDP
# uplinks, attach pods through the real CNI plugin (tapwayd allocating the addresses:
# tapway-ipam), show ping and TCP between pods of one node and across nodes, a Service VIP, and
# print the switch's tables and counters. Everything it creates is removed on exit, even on failure.
#   sudo bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
[ "$(id -u)" -eq 0 ] || { echo "the demo creates network namespaces: run it as root" >&2; exit 1; }

echo "==> cargo build --release"
cargo build --release --quiet -p tapway-switch -p tapway-cni
BIN=$PWD/target/release

TAG=twd$$
NODE=${TAG}node
NODE2=${TAG}node2
PODS=("${TAG}a" "${TAG}b")
POD_C=${TAG}c
WORK=$(mktemp -d /tmp/tapway-demo.XXXXXX)
SOCK=$WORK/tapway.sock
SOCK2=$WORK/tapway2.sock
# One flat pod network, 10.250.0.0/16, across the nodes; each node's IPAM takes its own /24.
SUBNET=10.250.0.0/24
SUBNET2=10.250.1.0/24
DAEMON_PIDS=()

netconf() { # netconf SOCKET RANGE-PREFIX (10.250.N)
  cat <<JSON
{"cniVersion":"1.1.0","name":"tapway-demo","type":"tapway","socket":"$1",
 "ipam":{"type":"tapway-ipam","ranges":[[{"subnet":"10.250.0.0/16","rangeStart":"$2.2","rangeEnd":"$2.254","gateway":"$2.1"}]],
         "routes":[{"dst":"0.0.0.0/0"}]}}
JSON
}

cni() { # cni COMMAND POD [SOCKET RANGE-PREFIX]
  CNI_COMMAND=$1 CNI_CONTAINERID=demo-$2 CNI_NETNS=/run/netns/$2 CNI_IFNAME=eth0 \
    CNI_PATH=$BIN:/usr/lib/cni "$BIN/tapway" <<<"$(netconf "${3:-$SOCK}" "${4:-10.250.0}")"
}

cleanup() {
  set +e
  for p in "${PODS[@]}"; do cni DEL "$p" >/dev/null 2>&1; done
  cni DEL "$POD_C" "$SOCK2" 10.250.1 >/dev/null 2>&1
  for pid in "${DAEMON_PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  for ns in "${PODS[@]}" "$POD_C" "$NODE" "$NODE2"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "==> node namespaces $NODE and $NODE2, joined by a veth pair: each end (up0) is its node's"
echo "    AF_XDP uplink (generic mode: on a veth it beats native, see docs/uplink.md)"
ip netns add "$NODE"
ip netns add "$NODE2"
ip -n "$NODE" link set lo up
ip -n "$NODE2" link set lo up
ip -n "$NODE" link add up0 type veth peer name up0 netns "$NODE2"
for n in "$NODE" "$NODE2"; do
  ip netns exec "$n" sysctl -qw net.ipv6.conf.up0.disable_ipv6=1
  ip -n "$n" link set up0 up
done
start_node() { # start_node NODE SOCKET POD-RANGE
  ip netns exec "$1" "$BIN/tapwayd" --socket "$2" --state-dir "$WORK/state-$1" \
    --pod-cidr "$3" --uplink up0 --xdp-mode generic --log-level warn &
  DAEMON_PIDS+=("$!")
  for _ in $(seq 50); do [ -S "$2" ] && break; sleep 0.1; done
}
start_node "$NODE" "$SOCK" "$SUBNET"
start_node "$NODE2" "$SOCK2" "$SUBNET2"
ctl() { "$BIN/tapwayctl" --socket "$SOCK" "$@"; }
ctl2() { "$BIN/tapwayctl" --socket "$SOCK2" "$@"; }
ctl status

for p in "${PODS[@]}"; do
  ip netns add "$p"
  ip -n "$p" link set lo up
  echo "==> CNI ADD $p (tapway plugin; tapwayd allocates the address: tapway-ipam)"
  cni ADD "$p" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("   ", r["interfaces"][0]["name"], r["interfaces"][0]["mac"], [i["address"] for i in r["ips"]])'
done
ip_of() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
A_IP=$(ip_of "${PODS[0]}"); B_IP=$(ip_of "${PODS[1]}")

echo "==> ping pod a ($A_IP) -> pod b ($B_IP) and -> gateway (host port)"
ip netns exec "${PODS[0]}" ping -c 3 -i 0.2 "$B_IP" | tail -2
ip netns exec "${PODS[0]}" ping -c 2 -i 0.2 10.250.0.1 | tail -1

# iperf TO-NETNS TO-IP [NOTE]: 5 s of TCP from pod a, with the rate received.
iperf() {
  ip netns exec "$1" iperf3 -s -1 -D -B "$2"
  sleep 0.5
  ip netns exec "${PODS[0]}" iperf3 -c "$2" -t 5 -J | python3 -c '
import json,sys
r=json.load(sys.stdin)["end"]["sum_received"]
print("    %.2f Gbit/s, %.0f MB received%s" % (r["bits_per_second"]/1e9, r["bytes"]/1e6, sys.argv[1]))' "${3:-}"
}

echo "==> TCP pod a -> pod b, iperf3 5 s"
iperf "${PODS[1]}" "$B_IP"

echo "==> Service VIP: tapwayctl sync of a kubectl-style List (Service demo/iperf, ClusterIP 10.96.0.10:80 -> pod b:5201)"
cat >"$WORK/services.json" <<JSON
{"apiVersion":"v1","kind":"List","items":[
 {"apiVersion":"v1","kind":"Service","metadata":{"namespace":"demo","name":"iperf"},
  "spec":{"type":"ClusterIP","clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10"],
          "ports":[{"name":"iperf","port":80,"targetPort":5201,"protocol":"TCP"}]}},
 {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
  "metadata":{"namespace":"demo","name":"iperf-1","labels":{"kubernetes.io/service-name":"iperf"}},
  "addressType":"IPv4","ports":[{"name":"iperf","port":5201,"protocol":"TCP"}],
  "endpoints":[{"addresses":["$B_IP"],"conditions":{"ready":true}}]}]}
JSON
ctl sync "$WORK/services.json"
ip netns exec "${PODS[1]}" iperf3 -s -1 -D -B "$B_IP"
sleep 0.5
echo "==> TCP pod a -> VIP 10.96.0.10:80 (DNAT to pod b inside tapwayd), iperf3 3 s"
ip netns exec "${PODS[0]}" iperf3 -c 10.96.0.10 -p 80 -t 3 -J | python3 -c '
import json,sys
j=json.load(sys.stdin); r=j["end"]["sum_received"]; c=j["start"]["connected"][0]
print("    connected to %s:%s; %.2f Gbit/s, %.0f MB received" % (c["remote_host"], c["remote_port"], r["bits_per_second"]/1e9, r["bytes"]/1e6))'
echo "==> tapwayctl service list"; ctl service list
echo "==> tapwayctl conntrack list"; ctl conntrack list

echo "==> CNI ADD $POD_C on the other node ($NODE2, range $SUBNET2)"
ip netns add "$POD_C"
ip -n "$POD_C" link set lo up
cni ADD "$POD_C" "$SOCK2" 10.250.1 | python3 -c 'import json,sys; r=json.load(sys.stdin); print("   ", r["interfaces"][0]["name"], [i["address"] for i in r["ips"]])'
C_IP=$(ip_of "$POD_C")
echo "==> across nodes: ping pod a ($A_IP, $NODE) -> pod c ($C_IP, $NODE2) through both AF_XDP uplinks"
ip netns exec "${PODS[0]}" ping -c 3 -i 0.2 "$C_IP" | tail -2
echo "==> TCP pod a -> pod c across nodes, iperf3 5 s"
iperf "$POD_C" "$C_IP" " (1500-byte segments on the wire: see docs/uplink.md for jumbo fabrics)"
echo "==> $NODE's uplink: $(ctl status | grep '^uplink')"
ctl --json stats | python3 -c '
import json,sys
s=json.load(sys.stdin)["switch"]
print("    super-frames cut: %d into %d segments; sent without a copy: %d; received without a copy: %d; GRO super-frames: %d"
      % (s.get("uplink_tx_gso_frames",0), s.get("uplink_tx_segments",0), s.get("uplink_tx_zero_copy",0),
         s.get("uplink_rx_zero_copy",0), s.get("uplink_rx_gro_frames",0)))'
echo "==> pod c's MAC as $NODE learned it (on the uplink port)"; ctl fdb | grep -i "$(ip -n "$POD_C" -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')" || true

echo "==> tapwayctl ports"; ctl ports
echo "==> tapwayctl ipam (the addresses tapwayd handed out, and to whom)"; ctl ipam
echo "==> tapwayctl fdb"; ctl fdb
echo "==> tapwayctl stats"; ctl stats
echo "==> done; cleaning up"
