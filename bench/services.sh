#!/usr/bin/env bash
# Service VIPs: tapway's in-switch DNAT (Maglev, conntrack, reverse NAT) against nftables DNAT
# rules shaped like kube-proxy's nftables mode on the reference Linux bridge CNI, in the same
# run, interleaved. Measures new TCP connections per second from a client pod to VIP:80 backed
# by 3 pods (own tool: switch/examples/connrate.rs), iperf3 single-stream throughput through
# VIP:5201 (one backend), and tapway's conn/s with 10 vs 10,000 services programmed (10
# endpoints each, one `tapwayctl sync` of a generated kubectl List; the sync times are reported).
#
#   sudo bench/services.sh [--seconds S] [--repeat N] [--threads N] [--services N]
#                          [--settle SECS] [--direct] [--markdown FILE]
#                          [--poll-mode adaptive|busy] [--cores LIST]
#                          [--attach auto|plugin|tapwayctl] [--no-build] [--keep-work]
#
# Runs as root on Debian 12; installs iperf3, iproute2, nftables and containernetworking-plugins
# if a command is missing. Everything lives in network namespaces named twb<pid>*; they, the
# daemons and the work directory are removed on exit, also on failure and Ctrl-C. eth0 and every
# other interface of the machine are left alone; sysctls are set only inside those namespaces.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  script_header
  cat <<'EOF'

Options:
  --seconds S       seconds measured per run (conn/s runs: after 0.5 s of warm-up; iperf3:
                    after 1 s of warm-up), both left out [5]
  --repeat N        rounds; each round measures every case once, the order alternating [3]
  --threads N       connrate client threads (each: connect, read, close, repeat) [4]
  --services N      the large service table for the 10-vs-N comparison [10000]
  --settle SECS     pause after each sync before the next measurement [5]
  --direct          also run iperf3 pod -> backend pod without the VIP, in both topologies
                    (what the VIP costs; adds 4 runs per round)
  --markdown FILE   write the markdown table to FILE instead of stdout
  --poll-mode MODE  tapwayd poll mode: adaptive (default) or busy
  --cores LIST      cores tapwayd's workers are pinned to ("" = one unpinned worker) [0]
  --attach MODE     how tapway pods are attached: auto, plugin, tapwayctl [auto]
  --no-build        use target/release as it is (connrate included)
  --keep-work       keep the work directory (logs, JSON, generated Lists and rules)
EOF
}

SECONDS_RUN=5
REPEAT=3
THREADS=4
NSVC=10000
SETTLE=5
DIRECT=
MARKDOWN=
POLL=adaptive
CORES=0
ATTACH=auto
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) SECONDS_RUN=${2:?}; shift 2 ;;
    --repeat) REPEAT=${2:?}; shift 2 ;;
    --threads) THREADS=${2:?}; shift 2 ;;
    --services) NSVC=${2:?}; shift 2 ;;
    --settle) SETTLE=${2:?}; shift 2 ;;
    --direct) DIRECT=1; shift ;;
    --markdown) MARKDOWN=${2:?}; shift 2 ;;
    --poll-mode) POLL=${2:?}; shift 2 ;;
    --cores) CORES=${2?}; shift 2 ;;
    --attach) ATTACH=${2:?}; shift 2 ;;
    --no-build) NO_BUILD=1; shift ;;
    --keep-work) KEEP_WORK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $SECONDS_RUN =~ ^[1-9][0-9]*$ ]] || die "--seconds takes a whole number of seconds >= 1"
check_repeat_and_poll
[[ $SETTLE =~ ^[0-9]+$ ]] || die "--settle takes a whole number of seconds"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "--threads takes a number >= 1"
if ! [[ $NSVC =~ ^[1-9][0-9]*$ ]] || [ "$NSVC" -lt 11 ] || [ "$NSVC" -gt 60000 ]; then
  die "--services takes a number between 11 and 60000"
fi

need_root
ensure_tools
command -v nft >/dev/null 2>&1 || {
  log "apt-get install -y nftables"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
}
build_release
CONNRATE=$BIN/examples/connrate
if [ -z "${NO_BUILD:-}" ]; then
  log "cargo build --release -p tapway-switch --example connrate"
  (cd "$REPO_DIR" && cargo build --release --quiet -p tapway-switch --example connrate) ||
    die "building switch/examples/connrate.rs failed"
fi
[ -x "$CONNRATE" ] || die "no $CONNRATE (cargo build --release -p tapway-switch --example connrate)"
pick_attach_mode "$ATTACH"
install_traps
make_workdir

# Addresses. Pods: 10.219.1.0/24 (tapway), 10.219.2.0/24 (bridge); the cluster CIDR of the
# kube-proxy-shaped rules is 10.219.0.0/16. Service VIPs: 10.220.0.0/16 (the same VIPs in both
# topologies; they are in different namespaces). Endpoints of the filler services are addresses
# in 10.222.0.0/15 that nothing answers: they only fill the tables.
T_SUBNET=10.219.1.0/24 T_GW=10.219.1.1
B_SUBNET=10.219.2.0/24 B_GW=10.219.2.1
CLUSTER_CIDR=10.219.0.0/16
SVC_CIDR=10.220.0.0/16
VIP_WEB=10.220.0.10 VIP_IPERF=10.220.0.11
WEB_PORT=80 WEB_TARGET=8080 IPERF_PORT=5201
T_NODE=${TAG}tn B_NODE=${TAG}bn
T_PODS=("${TAG}tc" "${TAG}t1" "${TAG}t2" "${TAG}t3") # client, then 3 backends
B_PODS=("${TAG}bc" "${TAG}b1" "${TAG}b2" "${TAG}b3")
BRIDGE=${TAG}br
SOCK=/run/tapway-bench-$$/tapway.sock
mkdir -p "/run/tapway-bench-$$"
on_cleanup "rm -rf /run/tapway-bench-$$"

# ---- topology A: tapway ------------------------------------------------------------------------
new_netns "$T_NODE"
start_tapwayd "$T_NODE" "$SOCK" "$WORK/state" "$T_SUBNET" "$CORES" "$POLL"
"$BIN/tapwayctl" --socket "$SOCK" service list >/dev/null 2>&1 ||
  die "this tapwayd does not answer 'service list': no service VIPs to measure"
T_CONF=$(tapway_netconf "$SOCK" "$T_SUBNET" "$T_GW")
attach_tapway_pods "$SOCK" T_CONF "$T_GW" 10.219.1 "${T_PODS[@]}"
log "tapway pods: client ${T_IPS[0]}, backends ${T_IPS[*]:1}"

# ---- topology B: Linux bridge (reference CNI) + kube-proxy-shaped nftables in the node netns ---
new_netns "$B_NODE"
B_CONF=$(bridge_netconf "$BRIDGE" "$B_SUBNET" "$B_GW")
attach_bridge_pods "$B_NODE" B_CONF "${B_PODS[@]}"
log "bridge pods: client ${B_IPS[0]}, backends ${B_IPS[*]:1} (bridge $BRIDGE in netns $B_NODE)"
# Backend replies go straight to the client over the bridge (same subnet): they must pass the
# IPv4 hooks for conntrack to undo the DNAT, as on every kube-proxy node with a bridge CNI.
# These sysctls are per netns (kernel >= 5.3): only the bench's node netns is changed.
ip netns exec "$B_NODE" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
  die "net.bridge.bridge-nf-call-iptables cannot be set in $B_NODE (needs br_netfilter)"
ip netns exec "$B_NODE" sysctl -qw net.ipv4.ip_forward=1

# Client pods: wide ephemeral range, TIME_WAIT reuse (connrate closes with an RST anyway).
for p in "${T_PODS[0]}" "${B_PODS[0]}"; do
  ip netns exec "$p" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
done

for k in 1 2 3; do
  ping_check "${T_PODS[0]}" "${T_IPS[$k]}"
  ping_check "${B_PODS[0]}" "${B_IPS[$k]}"
done

# ---- the service tables -----------------------------------------------------------------------
# kubectl-style Lists (v1 Service + discovery.k8s.io/v1 EndpointSlice) for tapway: bench/web
# (VIP:80 -> the 3 backends :8080), bench/iperf (VIP:5201 -> backend 1), and filler services
# with 10 endpoints each, for 10 and for $NSVC services in all.
python3 - "$WORK" "$NSVC" "$VIP_WEB" "$VIP_IPERF" "${T_IPS[1]}" "${T_IPS[2]}" "${T_IPS[3]}" <<'PY'
import ipaddress, json, sys
work, nsvc, vip_web, vip_iperf, b1, b2, b3 = sys.argv[1:]
nsvc = int(nsvc)
svc_base = int(ipaddress.IPv4Address("10.220.0.0"))
ep_base = int(ipaddress.IPv4Address("10.222.0.0"))

def service(ns, name, vip, port, target):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": vip, "clusterIPs": [vip],
                     "ipFamilies": ["IPv4"], "sessionAffinity": "None",
                     "ports": [{"name": "p", "port": port, "protocol": "TCP", "targetPort": target}]}}

def slice_(ns, name, addrs, target):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name + "-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "ports": [{"name": "p", "port": target, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True, "serving": True, "terminating": False}}
                          for a in addrs]}

def build(n):
    items = [service("bench", "web", vip_web, 80, 8080), slice_("bench", "web", [b1, b2, b3], 8080),
             service("bench", "iperf", vip_iperf, 5201, 5201), slice_("bench", "iperf", [b1], 5201)]
    for i in range(n - 2):
        vip = str(ipaddress.IPv4Address(svc_base + 256 + i))  # 10.220.1.0 onwards
        eps = [str(ipaddress.IPv4Address(ep_base + 10 * i + j)) for j in range(10)]
        name = "fill-%05d" % i
        items.append(service("filler", name, vip, 80, 8080))
        items.append(slice_("filler", name, eps, 8080))
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}

for n, f in ((10, "services-10.json"), (nsvc, "services-big.json")):
    with open("%s/%s" % (work, f), "w") as fh:
        json.dump(build(n), fh)
PY

# kube-proxy nftables-mode rules (pkg/proxy/nftables, v1.29+) for the same 10 services on the
# bridge node: a verdict map from daddr . l4proto . dport to a per-service chain, numgen random
# mod N to per-endpoint chains that mark hairpin traffic and dnat, the masquerade chain in
# postrouting, and the filter-side checks (no-endpoint services, firewall, cluster-IP checks).
python3 - "$WORK/kube-proxy.nft" "$CLUSTER_CIDR" "$SVC_CIDR" "$VIP_WEB" "$VIP_IPERF" \
  "${B_IPS[1]}" "${B_IPS[2]}" "${B_IPS[3]}" <<'PY'
import hashlib, ipaddress, sys
out, cluster_cidr, svc_cidr, vip_web, vip_iperf, b1, b2, b3 = sys.argv[1:]
svc_base = int(ipaddress.IPv4Address("10.220.0.0"))
ep_base = int(ipaddress.IPv4Address("10.222.0.0"))

def h(s):  # kube-proxy: base32(sha256(name))[:8]
    import base64
    return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:8]

services = [("bench/web/tcp/p", vip_web, 80, [(b, 8080) for b in (b1, b2, b3)]),
            ("bench/iperf/tcp/p", vip_iperf, 5201, [(b1, 5201)])]
for i in range(8):
    vip = str(ipaddress.IPv4Address(svc_base + 256 + i))
    services.append(("filler/fill-%05d/tcp/p" % i, vip, 80,
                     [(str(ipaddress.IPv4Address(ep_base + 10 * i + j)), 8080) for j in range(10)]))

L = []
w = L.append
w("table ip kube-proxy {")
w('  comment "rules for kube-proxy"')
w("  set cluster-ips { type ipv4_addr; comment \"Active ClusterIPs\"; elements = { %s } }"
  % ", ".join(s[1] for s in services))
w("  set nodeport-ips { type ipv4_addr; comment \"IPs that accept NodePort traffic\"; }")
w("  map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; comment \"vmap to drop or reject packets to services with no endpoints\"; }")
w("  map no-endpoint-nodeports { type inet_proto . inet_service : verdict; }")
w("  map firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict; }")
w("  map service-nodeports { type inet_proto . inet_service : verdict; }")
elems = []
for name, vip, port, eps in services:
    elems.append("%s . tcp . %d : goto service-%s-%s" % (vip, port, h(name), name))
w("  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"; elements = { %s } }"
  % ", ".join(elems))
w("  chain filter-prerouting { type filter hook prerouting priority -110; policy accept; ct state new jump firewall-check; }")
w("  chain filter-input { type filter hook input priority -110; policy accept; ct state new jump nodeport-endpoints-check; ct state new jump service-endpoints-check; }")
w("  chain filter-forward { type filter hook forward priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump cluster-ips-check; }")
w("  chain filter-output { type filter hook output priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump firewall-check; }")
w("  chain filter-output-post-dnat { type filter hook output priority -90; policy accept; ct state new jump cluster-ips-check; }")
w("  chain nat-prerouting { type nat hook prerouting priority -100; policy accept; jump services; }")
w("  chain nat-output { type nat hook output priority -100; policy accept; jump services; }")
w("  chain nat-postrouting { type nat hook postrouting priority 100; policy accept; jump masquerading; }")
w("  chain firewall-check { ip daddr . meta l4proto . th dport vmap @firewall-ips; }")
w("  chain reject-chain { reject; }")
w("  chain service-endpoints-check { ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }")
w("  chain nodeport-endpoints-check { ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports; }")
w("  chain cluster-ips-check { ip daddr @cluster-ips reject; ip daddr %s drop; }" % svc_cidr)
w("  chain mark-for-masquerade { meta mark set meta mark | 0x4000; }")
w("  chain masquerading { meta mark & 0x4000 == 0 return; meta mark set meta mark ^ 0x4000; masquerade fully-random; }")
w("  chain services { ip daddr . meta l4proto . th dport vmap @service-ips; ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports; }")
for name, vip, port, eps in services:
    epchains = []
    for ip, tp in eps:
        ename = "%s__%s/%d" % (name, ip, tp)
        ec = "endpoint-%s-%s" % (h(ename), ename)
        epchains.append(ec)
        w("  chain %s { ip saddr %s jump mark-for-masquerade; meta l4proto tcp dnat to %s:%d; }" % (ec, ip, ip, tp))
    vm = ", ".join("%d : goto %s" % (k, c) for k, c in enumerate(epchains))
    w("  chain service-%s-%s { ip daddr %s tcp dport %d ip saddr != %s jump mark-for-masquerade; numgen random mod %d vmap { %s }; }"
      % (h(name), name, vip, port, cluster_cidr, len(epchains), vm))
w("}")
open(out, "w").write("\n".join(L) + "\n")
PY
ip netns exec "$B_NODE" nft -f "$WORK/kube-proxy.nft" || die "nft -f $WORK/kube-proxy.nft failed in $B_NODE"
log "nftables: kube-proxy-shaped table 'ip kube-proxy' with 10 services loaded in $B_NODE"

# ---- servers: connrate on :8080 in the 3 backends of each topology, iperf3 -s in backend 1 -----
wait_listen() { # NETNS PORT
  for _ in $(seq 50); do
    [ -n "$(ip netns exec "$1" ss -ltnH "sport = :$2")" ] && return 0
    sleep 0.1
  done
  die "nothing listens on :$2 in $1"
}
for k in 1 2 3; do
  for pr in "${T_PODS[$k]}:t$k" "${B_PODS[$k]}:b$k"; do
    p=${pr%%:*} id=${pr#*:}
    ip netns exec "$p" "$CONNRATE" server --port "$WEB_TARGET" --threads 2 --id "$id" >"$WORK/connrate-$p.log" 2>&1 &
    BG_PIDS+=("$!")
    wait_listen "$p" "$WEB_TARGET"
  done
done
for p in "${T_PODS[1]}" "${B_PODS[1]}"; do
  ip netns exec "$p" iperf3 -s -p "$IPERF_PORT" >"$WORK/iperf3-server-$p.log" 2>&1 &
  BG_PIDS+=("$!")
  wait_listen "$p" "$IPERF_PORT"
done

CTL=("$BIN/tapwayctl" --socket "$SOCK")
SYNCS=$WORK/syncs.txt
: >"$SYNCS"
# do_sync FILE LABEL [nosettle]: one `tapwayctl sync`, then the --settle pause. Records the
# daemon's elapsed_us and the wall time of the whole command (reading and converting the List
# included), and tapwayd's resident memory after the pause.
do_sync() {
  local out t0 t1
  out=$WORK/sync-$2.json
  t0=$EPOCHREALTIME
  "${CTL[@]}" --json sync "$1" >"$out" 2>"$WORK/sync-$2.err" || die "tapwayctl sync $1 failed: $(head -c 400 "$WORK/sync-$2.err")"
  t1=$EPOCHREALTIME
  python3 - "$out" "$2" "$t0" "$t1" >>"$SYNCS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(sys.argv[2], r["elapsed_us"], "%.1f" % ((float(sys.argv[4]) - float(sys.argv[3])) * 1000),
      r["added"], r["updated"], r["removed"], r["unchanged"])
PY
  log "sync $2: $(tail -n1 "$SYNCS" | awk '{printf "daemon %s µs, tapwayctl wall %s ms, +%s ~%s -%s =%s", $2, $3, $4, $5, $6, $7}')"
  [ "${3:-}" = nosettle ] || sleep "$SETTLE"
  # tapwayd's resident memory with this table (kB), after the pause.
  printf '%s %s\n' "$2" "$(awk '/^VmRSS:/ {print $2}' "/proc/$TAPWAYD_PID/status" 2>/dev/null || echo 0)" >>"$WORK/rss.txt"
}

log "programming tapway: $NSVC services from empty, the same again (no change), then 10"
printf 'start %s\n' "$(awk '/^VmRSS:/ {print $2}' "/proc/$TAPWAYD_PID/status" 2>/dev/null || echo 0)" >"$WORK/rss.txt"
do_sync "$WORK/services-big.json" "0-to-$NSVC" nosettle
do_sync "$WORK/services-big.json" "$NSVC-again" nosettle
do_sync "$WORK/services-10.json" "$NSVC-to-10"
STATE=10

CLK_TCK=$(getconf CLK_TCK)
daemon_ticks() {
  awk '{print $14 + $15}' "/proc/$TAPWAYD_PID/stat" 2>/dev/null ||
    die "tapwayd (pid $TAPWAYD_PID) is gone; its log: $(tail -c 600 "$WORK/tapwayd-$T_NODE.log" 2>/dev/null)"
}

RESULTS=$WORK/results.txt
: >"$RESULTS"
# run_conn TOPO CASE REP [SECONDS WARMUP_MS]: one connrate client run to VIP:80; appends
# "conn case rep conn_per_s p50 p99 errors backends cpu".
run_conn() {
  local topo=$1 case_=$2 rep=$3 secs=${4:-$SECONDS_RUN} warm=${5:-500} client json c0='' c1 t0 t1 cpu=-
  if [ "$topo" = tapway ]; then client=${T_PODS[0]}; else client=${B_PODS[0]}; fi
  json=$WORK/conn-$case_-$rep.json
  [ "$topo" = tapway ] && c0=$(daemon_ticks)
  t0=$EPOCHREALTIME
  ip netns exec "$client" "$CONNRATE" client --addr "$VIP_WEB:$WEB_PORT" --threads "$THREADS" \
    --seconds "$secs" --warmup-ms "$warm" >"$json" 2>"$json.err" ||
    die "connrate $case_ failed: $(head -c 400 "$json") $(head -c 400 "$json.err")"
  t1=$EPOCHREALTIME
  if [ "$topo" = bridge ]; then
    # The kernel's flows of this run (closed by RST: they stay 10 s in CLOSE).
    ip netns exec "$B_NODE" cat /proc/sys/net/netfilter/nf_conntrack_count >>"$WORK/nf-ct-count.txt" 2>/dev/null || true
  fi
  if [ "$topo" = tapway ]; then
    c1=$(daemon_ticks)
    cpu=$(python3 -c 'import sys; t,c0,c1,a,b=map(float,sys.argv[1:]); print("%.0f" % (100*(c1-c0)/t/(b-a)))' "$CLK_TCK" "$c0" "$c1" "$t0" "$t1")
  fi
  python3 - "$json" "$case_" "$rep" "$cpu" >>"$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("conn", sys.argv[2], sys.argv[3], r["conn_per_s"], r["p50_us"], r["p99_us"], r["errors"],
      ",".join("%s=%d" % kv for kv in sorted(r["replies"].items())), sys.argv[4])
PY
  log "$(tail -n1 "$RESULTS" | awk -v n="$REPEAT" '{printf "run %s/%s %-10s %9.0f conn/s  p50 %s µs  p99 %s µs  errors %s  replies %s  tapwayd %s%%", $3, n, $2, $4, $5, $6, $7, $8, $9}')"
}

# run_iperf TOPO REP [direct]: iperf3 single stream client -> VIP:5201 (or, with "direct",
# straight to backend 1, no VIP); appends "iperf topo[-direct] rep gbps - ...".
run_iperf() {
  local topo=$1 rep=$2 how=${3:-} client dst key json gbps
  if [ "$topo" = tapway ]; then client=${T_PODS[0]} dst=${T_IPS[1]}; else client=${B_PODS[0]} dst=${B_IPS[1]}; fi
  key=$topo
  if [ "$how" = direct ]; then key=$topo-direct; else dst=$VIP_IPERF; fi
  json=$WORK/iperf3-$key-$rep.json
  if ! ip netns exec "$client" iperf3 -c "$dst" -p "$IPERF_PORT" -t "$SECONDS_RUN" -O 1 -J >"$json" 2>&1; then
    sleep 1 # the server may still be finishing the previous test: one retry
    ip netns exec "$client" iperf3 -c "$dst" -p "$IPERF_PORT" -t "$SECONDS_RUN" -O 1 -J >"$json" 2>&1 ||
      die "iperf3 $key failed: $(head -c 400 "$json")"
  fi
  gbps=$(python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$json")
  printf 'iperf %s %s %s - - - - -\n' "$key" "$rep" "$gbps" >>"$RESULTS"
  log "$(printf 'run %d/%d iperf3 %-7s %7.2f Gbit/s %s' "$rep" "$REPEAT" "$topo" "$gbps" "$([ "$how" = direct ] && echo "pod->pod, no VIP" || echo "via VIP")")"
}

# ---- verification: the VIP really is translated, in both topologies, to all 3 backends --------
: >"$WORK/verify.txt"
verify() { # TOPO
  local json=$WORK/conn-verify-$1.json client
  if [ "$1" = tapway ]; then client=${T_PODS[0]}; else client=${B_PODS[0]}; fi
  ip netns exec "$client" "$CONNRATE" client --addr "$VIP_WEB:$WEB_PORT" --threads 1 --seconds 1 \
    --warmup-ms 0 >"$json" 2>/dev/null || die "$1: no connection to VIP $VIP_WEB:$WEB_PORT completed: $(head -c 300 "$json")"
  python3 - "$json" "$1" <<'PY' || die "$1: the VIP did not spread connections over the 3 backends"
import json, sys
r = json.load(open(sys.argv[1]))
rep = r["replies"]
print("%s: %d connections to the VIP in 1 s, %d errors, answered by %s"
      % (sys.argv[2], r["conns"], r["errors"], ", ".join("%s=%d" % kv for kv in sorted(rep.items()))), file=sys.stderr)
sys.exit(0 if len(rep) == 3 and min(rep.values()) > 0 else 1)
PY
}
verify tapway
verify bridge
ip netns exec "$B_NODE" nft list chain ip kube-proxy nat-prerouting >/dev/null || die "nft table vanished"
ping_check "${T_PODS[0]}" "${T_IPS[1]}"

check_quiet
# Warm-up, not counted: one conn/s run per topology, so that both conntracks (tapway's and the
# kernel's, whose closed flows linger 10 s) carry their steady-state load before round 1.
for topo in tapway bridge; do
  if [ "$topo" = tapway ]; then client=${T_PODS[0]}; else client=${B_PODS[0]}; fi
  ip netns exec "$client" "$CONNRATE" client --addr "$VIP_WEB:$WEB_PORT" --threads "$THREADS" \
    --seconds "$SECONDS_RUN" --warmup-ms 0 >"$WORK/conn-warmup-$topo.json" 2>&1 ||
    die "warm-up connrate ($topo) failed: $(head -c 400 "$WORK/conn-warmup-$topo.json")"
done
log "warm-up done: $(python3 -c 'import json,sys; print(", ".join("%s %.0f conn/s" % (t, json.load(open(f))["conn_per_s"]) for t, f in zip(("tapway", "nftables"), sys.argv[1:])))' "$WORK/conn-warmup-tapway.json" "$WORK/conn-warmup-bridge.json")"
log "measuring: $REPEAT rounds; conn/s runs ${SECONDS_RUN} s (+0.5 s warm-up), iperf3 ${SECONDS_RUN} s (+1 s), $THREADS client threads"
for rep in $(seq "$REPEAT"); do
  if [ "$STATE" = 10 ]; then
    run_conn tapway t10 "$rep"
    run_conn bridge nft "$rep"
    run_iperf tapway "$rep"
    run_iperf bridge "$rep"
    if [ -n "$DIRECT" ]; then run_iperf tapway "$rep" direct; run_iperf bridge "$rep" direct; fi
    do_sync "$WORK/services-big.json" "10-to-$NSVC-r$rep"; STATE=big
    run_conn tapway tbig "$rep"
  else
    run_conn tapway tbig "$rep"
    do_sync "$WORK/services-10.json" "$NSVC-to-10-r$rep"; STATE=10
    if [ -n "$DIRECT" ]; then run_iperf bridge "$rep" direct; run_iperf tapway "$rep" direct; fi
    run_iperf bridge "$rep"
    run_iperf tapway "$rep"
    run_conn bridge nft "$rep"
    run_conn tapway t10 "$rep"
  fi
done

"${CTL[@]}" --json service list >"$WORK/service-list.json" 2>/dev/null || echo '[]' >"$WORK/service-list.json"
"${CTL[@]}" --json stats >"$WORK/stats.json" 2>/dev/null || echo '{}' >"$WORK/stats.json"
CT_COUNT=$(sort -n "$WORK/nf-ct-count.txt" 2>/dev/null | tail -n1)

MACHINE=$(machine_summary)
BUILD_INFO="tapwayd binary from $(date -u -r "$BIN/tapwayd" '+%Y-%m-%d %H:%M') UTC; source tree at $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')"
[ -z "$(git -C "$REPO_DIR" status --porcelain --untracked-files=no 2>/dev/null)" ] || BUILD_INFO+=" with uncommitted changes"
BUILD_INFO+=" when measured"
CMDLINE="bench/services.sh --seconds $SECONDS_RUN --repeat $REPEAT --threads $THREADS --services $NSVC --settle $SETTLE --poll-mode $POLL --cores '$CORES'"
[ "$ATTACH" = auto ] || CMDLINE+=" --attach $ATTACH"
[ -z "$DIRECT" ] || CMDLINE+=" --direct"
python3 - "$RESULTS" "$SYNCS" "$WORK/rss.txt" "$WORK/service-list.json" "$WORK/stats.json" "$MARKDOWN" "$MACHINE" "$CMDLINE" \
  "$ATTACH_MODE" "$POLL" "$NSVC" "$CT_COUNT" "$VIP_WEB:$WEB_PORT" "$BUILD_INFO" <<'PY'
import json, statistics, sys, datetime
(results, syncs, rss_file, svc_list, stats_file, md_file, machine, cmdline, attach, poll, nsvc, ct_count,
 web, build_info) = sys.argv[1:]
nsvc = int(nsvc)
conn, lat50, lat99, errs, cpu, iperf = {}, {}, {}, {}, {}, {}
byrep = {}
for line in open(results):
    f = line.split()
    byrep[(f[1], f[2])] = float(f[3])
    if f[0] == "conn":
        c = f[1]
        conn.setdefault(c, []).append(float(f[3]))
        lat50.setdefault(c, []).append(float(f[4]))
        lat99.setdefault(c, []).append(float(f[5]))
        errs[c] = errs.get(c, 0) + int(f[6])
        if f[8] != "-":
            cpu.setdefault(c, []).append(float(f[8]))
    elif f[0] == "iperf":
        iperf.setdefault(f[1], []).append(float(f[3]))
sy = {}
for line in open(syncs):
    label, us, wall, a, u, r, un = line.split()
    kind = label.rsplit("-r", 1)[0] if "-r" in label else label
    sy.setdefault(kind, []).append((int(us), float(wall), int(a), int(u), int(r), int(un)))
rss = {"start": [], "10": [], "big": []}
for line in open(rss_file):
    label, kb = line.split()
    target = label.rsplit("-r", 1)[0].split("-")[-1]  # "start", "0-to-N", "N-again", "N-to-10", "10-to-N"
    rss[target if target in ("start", "10") else "big"].append(int(kb) / 1024.0)

med = statistics.median
def fmt(v, p="%.0f"):
    return (p + " (" + p + "–" + p + ")") % (med(v), min(v), max(v)) if v else "-"
def ratio(a, b):
    return med(a) / med(b) if a and b and med(b) > 0 else float("nan")
def goal(r, g):
    return "≥ %.2f×: **%s**" % (g, "met" if r >= g else "not met")

big = "%s services" % format(nsvc, ",")
rows = []
r1 = ratio(conn.get("t10"), conn.get("nft"))
rows.append(("new TCP conn/s to VIP:80 (10 services)", fmt(conn.get("t10", [])), fmt(conn.get("nft", [])),
             "%.2f×" % r1, goal(r1, 1.0)))
rows.append(("connect+reply latency p50 / p99, µs",
             "%.0f / %.0f" % (med(lat50["t10"]), med(lat99["t10"])) if "t10" in lat50 else "-",
             "%.0f / %.0f" % (med(lat50["nft"]), med(lat99["nft"])) if "nft" in lat50 else "-", "", ""))
r3 = ratio(iperf.get("tapway"), iperf.get("bridge"))
rows.append(("iperf3 1 stream via VIP:5201, Gbit/s", fmt(iperf.get("tapway", []), "%.2f"),
             fmt(iperf.get("bridge", []), "%.2f"), "%.2f×" % r3, ""))
if iperf.get("tapway-direct") and iperf.get("bridge-direct"):
    r4 = ratio(iperf.get("tapway-direct"), iperf.get("bridge-direct"))
    rows.append(("iperf3 1 stream pod→pod, no VIP, Gbit/s", fmt(iperf.get("tapway-direct", []), "%.2f"),
                 fmt(iperf.get("bridge-direct", []), "%.2f"), "%.2f×" % r4, ""))
hdr = ("measurement", "tapway median (min–max)", "bridge + kube-proxy nftables median (min–max)",
       "tapway/nftables", "goal (issue 4)")
r2 = ratio(conn.get("tbig"), conn.get("t10"))
rows2 = [("new TCP conn/s to VIP:80", fmt(conn.get("t10", [])), fmt(conn.get("tbig", [])), "%.2f×" % r2, goal(r2, 0.95)),
         ("latency p50 / p99, µs",
          "%.0f / %.0f" % (med(lat50["t10"]), med(lat99["t10"])) if "t10" in lat50 else "-",
          "%.0f / %.0f" % (med(lat50["tbig"]), med(lat99["tbig"])) if "tbig" in lat50 else "-", "", ""),
         ("tapwayd CPU during the conn/s runs, % of a core", fmt(cpu.get("t10", [])), fmt(cpu.get("tbig", [])), "", "")]
hdr2 = ("tapway", "10 services", big + " × 10 endpoints", "%s/10" % format(nsvc, ","), "goal (issue 4)")
srows = []
names = [("0-to-%d" % nsvc, "0 → %s (all added)" % format(nsvc, ",")),
         ("%d-again" % nsvc, "%s → the same List (no change)" % format(nsvc, ",")),
         ("10-to-%d" % nsvc, "10 → %s" % format(nsvc, ",")),
         ("%d-to-10" % nsvc, "%s → 10" % format(nsvc, ","))]
for k, label in names:
    v = sy.get(k, [])
    if not v:
        continue
    srows.append((label, fmt([x[0] / 1000 for x in v], "%.1f"), fmt([x[1] for x in v], "%.0f"),
                  "+%d ~%d -%d =%d" % v[-1][2:], len(v)))
hdrs = ("tapwayctl sync", "daemon elapsed_us, ms", "tapwayctl wall time, ms", "added/updated/removed/unchanged", "times")

def table(h, rs):
    w = [max(len(str(r[i])) for r in rs + [h]) for i in range(len(h))]
    out = ["  ".join(str(x).ljust(w[i]) for i, x in enumerate(h))]
    out += ["  ".join(str(x).ljust(w[i]) for i, x in enumerate(r)) for r in rs]
    return "\n".join(out)
def mdtable(h, rs):
    out = ["| " + " | ".join(h) + " |", "|" + "|".join("---" for _ in h) + "|"]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rs]
    return "\n".join(out)

notes = []
def paired(a, b):
    reps = sorted({r for (c, r) in byrep if c == a} & {r for (c, r) in byrep if c == b}, key=int)
    return ", ".join("%.2f" % (byrep[(a, r)] / byrep[(b, r)]) for r in reps if byrep[(b, r)] > 0) or "-"
notes.append("per-round ratios (same round, adjacent runs): tapway/nftables conn/s %s; %s/10 conn/s %s; "
             "iperf3 tapway/nftables %s" % (paired("t10", "nft"), format(nsvc, ","), paired("tbig", "t10"),
                                            paired("tapway", "bridge")))
if iperf.get("tapway-direct"):
    notes.append("per-round iperf3 via VIP / pod→pod without VIP: tapway %s; nftables %s"
                 % (paired("tapway", "tapway-direct"), paired("bridge", "bridge-direct")))
errtot = sum(errs.values())
notes.append("connection errors in the measured windows: %s" % (
    ", ".join("%s=%d" % kv for kv in sorted(errs.items())) if errtot else "none"))
try:
    sl = json.load(open(svc_list))
    sl = sl.get("services", sl) if isinstance(sl, dict) else sl
    for s in sl:
        if "%s:%s" % (s.get("vip"), s.get("port")) == web:
            notes.append("tapway %s new flows per backend: %s (Maglev table %d)" % (web, ", ".join(
                "%s=%d" % (b["ip"], st["new_flows"]) for b, st in zip(s["backends"], s["backend_stats"])), s["maglev_size"]))
except Exception as e:
    notes.append("(tapway service list unavailable: %s)" % e)
try:
    st = json.load(open(stats_file))
    drops = {}
    for p in st.get("ports", []):
        for k, v in p.get("drops", {}).items():
            drops[k] = drops.get(k, 0) + v
    sw = st.get("switch", {})
    keys = ("ct_created", "ct_expired", "ct_evicted", "ct_entries", "ct_max", "svc_rejected", "svc_arp_requests")
    notes.append("tapwayd drops: %s; conntrack and service counters: %s" % (
        ", ".join("%s=%d" % kv for kv in sorted(drops.items()) if kv[1]) or "none",
        ", ".join("%s=%s" % (k, sw[k]) for k in keys if k in sw) or "n/a"))
except Exception as e:
    notes.append("(tapwayd stats unavailable: %s)" % e)
if rss["start"] and rss["big"]:
    notes.append("tapwayd resident memory: %.0f MiB with no services, %.0f MiB with %s services (median), %.0f MiB "
                 "back at 10 (freed memory stays with the process)" % (rss["start"][0], med(rss["big"]),
                                                                      format(nsvc, ","), med(rss["10"] or [0])))
notes.append("kernel conntrack entries in the bridge node netns right after an nftables run: up to %s"
             % (ct_count or "?"))

print()
print(table(hdr, rows))
print()
print(table(hdr2, rows2))
print()
print(table(hdrs, srows))
print()
print("\n".join(notes))

md = []
md.append("Measured %s UTC on %s." % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"), machine))
md.append("Command: `%s`; tapway pods attached with %s; tapwayd poll mode `%s`; %s." % (
    cmdline, "the tapway CNI plugin" if attach == "plugin" else "`tapwayctl attach` (not through the CNI plugin)", poll,
    build_info))
md.append("")
md.append(mdtable(hdr, rows))
md.append("")
md.append(mdtable(hdr2, rows2))
md.append("")
md.append(mdtable(hdrs, srows))
md.append("")
md += ["- " + n + "." for n in notes]
text = "\n".join(md) + "\n"
if md_file:
    with open(md_file, "w") as f:
        f.write(text)
    print("\nmarkdown written to %s" % md_file)
else:
    print()
    print(text, end="")
PY
