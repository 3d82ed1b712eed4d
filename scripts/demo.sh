#!/usr/bin/env bash
# The main job: build tapway, start tapwayd in a demo "node" namespace, attach two pods through
# the real CNI plugin (with host-local IPAM), show ping and a TCP transfer, print the switch's
# tables and counters. Everything it creates is removed on exit, even on failure.
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
PODS=("${TAG}a" "${TAG}b")
WORK=$(mktemp -d /tmp/tapway-demo.XXXXXX)
SOCK=$WORK/tapway.sock
SUBNET=10.250.0.0/24
DAEMON_PID=

NETCONF=$(cat <<JSON
{"cniVersion":"1.1.0","name":"tapway-demo","type":"tapway","socket":"$SOCK",
 "ipam":{"type":"host-local","ranges":[[{"subnet":"$SUBNET","gateway":"10.250.0.1"}]],
         "routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$WORK/ipam"}}
JSON
)

cni() { # cni COMMAND POD
  CNI_COMMAND=$1 CNI_CONTAINERID=demo-$2 CNI_NETNS=/run/netns/$2 CNI_IFNAME=eth0 \
    CNI_PATH=$BIN:/usr/lib/cni "$BIN/tapway" <<<"$NETCONF"
}

cleanup() {
  set +e
  for p in "${PODS[@]}"; do cni DEL "$p" >/dev/null 2>&1; done
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  for ns in "${PODS[@]}" "$NODE"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "==> node namespace $NODE, tapwayd with pod range $SUBNET"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip netns exec "$NODE" "$BIN/tapwayd" --socket "$SOCK" --state-dir "$WORK/state" \
  --pod-cidr "$SUBNET" --log-level warn &
DAEMON_PID=$!
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
ctl() { "$BIN/tapwayctl" --socket "$SOCK" "$@"; }
ctl status

for p in "${PODS[@]}"; do
  ip netns add "$p"
  ip -n "$p" link set lo up
  echo "==> CNI ADD $p (tapway plugin + host-local IPAM)"
  cni ADD "$p" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("   ", r["interfaces"][0]["name"], r["interfaces"][0]["mac"], [i["address"] for i in r["ips"]])'
done
ip_of() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
A_IP=$(ip_of "${PODS[0]}"); B_IP=$(ip_of "${PODS[1]}")

echo "==> ping pod a ($A_IP) -> pod b ($B_IP) and -> gateway (host port)"
ip netns exec "${PODS[0]}" ping -c 3 -i 0.2 "$B_IP" | tail -2
ip netns exec "${PODS[0]}" ping -c 2 -i 0.2 10.250.0.1 | tail -1

echo "==> TCP pod a -> pod b, iperf3 5 s"
ip netns exec "${PODS[1]}" iperf3 -s -1 -D -B "$B_IP"
sleep 0.5
ip netns exec "${PODS[0]}" iperf3 -c "$B_IP" -t 5 -J | python3 -c '
import json,sys
r=json.load(sys.stdin)["end"]["sum_received"]
print("    %.2f Gbit/s, %.0f MB received" % (r["bits_per_second"]/1e9, r["bytes"]/1e6))'

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

echo "==> tapwayctl ports"; ctl ports
echo "==> tapwayctl fdb"; ctl fdb
echo "==> tapwayctl stats"; ctl stats
echo "==> done; cleaning up"
