#!/usr/bin/env bash
# Cross-node pod -> pod through the AF_XDP uplinks: two tapwayd "nodes" whose uplinks are veths
# into a "fabric" bridge, against the Linux bridge equivalent (each node a bridge CNI with its
# uplink veth enslaved to its bridge), in the same run, interleaved. Measures TCP single-stream
# throughput (iperf3) and the rate of 64-byte frames (trafgen) delivered to the far pod.
#
#   sudo bench/uplink.sh [--duration SECS] [--repeat N] [--xdp-mode native|generic|auto]
#                        [--poll-mode adaptive|busy] [--uplink-mtu N] [--no-gso]
#                        [--markdown FILE] [--no-build] [--keep-work]
#
# Runs as root on Debian 12; installs iperf3, iproute2, netsniff-ng (trafgen) and
# containernetworking-plugins if missing. Everything lives in network namespaces named
# twb<pid>*, removed on exit, also on failure and Ctrl-C. No interface of the machine is touched.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  script_header
  cat <<'EOF'

Options:
  --duration SECS   seconds per run (iperf3 after 1 s of warm-up left out; trafgen) [10]
  --repeat N        runs per topology and test, interleaved tapway/bridge [3]
  --xdp-mode MODE   AF_XDP mode of both uplinks: native, generic or auto [native]
  --poll-mode MODE  tapwayd poll mode: adaptive (default) or busy
  --uplink-mtu N    MTU of the uplink veths and the fabric, in both topologies (the pods keep
                    1500): a jumbo fabric, on which tapway packs TCP segments; above 3822
                    frames take several UMEM frames (multi-buffer) [1500]
  --no-gso          TSO/GSO off on every pod's eth0 in both topologies: the bridge then carries
                    MTU-sized frames too, as tapway's uplink always does
  --markdown FILE   write the markdown table to FILE instead of stdout
  --no-build        use target/release as it is
  --keep-work       keep the work directory (logs, iperf3 JSON)
EOF
}

DURATION=10
REPEAT=3
XDP_MODE=native
POLL=adaptive
MARKDOWN=
NO_GSO=
UPLINK_MTU=1500
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=${2:?}; shift 2 ;;
    --repeat) REPEAT=${2:?}; shift 2 ;;
    --xdp-mode) XDP_MODE=${2:?}; shift 2 ;;
    --poll-mode) POLL=${2:?}; shift 2 ;;
    --markdown) MARKDOWN=${2:?}; shift 2 ;;
    --uplink-mtu) UPLINK_MTU=${2:?}; shift 2 ;;
    --no-gso) NO_GSO=1; shift ;;
    --no-build) NO_BUILD=1; shift ;;
    --keep-work) KEEP_WORK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration takes a whole number of seconds >= 1"
check_repeat_and_poll
[[ $UPLINK_MTU =~ ^[0-9]+$ ]] && [ "$UPLINK_MTU" -ge 1500 ] && [ "$UPLINK_MTU" -le 9216 ] ||
  die "--uplink-mtu takes 1500 to 9216"
case $XDP_MODE in native | generic | auto) ;; *) die "--xdp-mode takes native, generic or auto" ;; esac

need_root
ensure_tools
if ! command -v trafgen >/dev/null 2>&1; then
  log "apt-get install -y netsniff-ng (trafgen)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq netsniff-ng >/dev/null
fi
build_release
install_traps
make_workdir
mkdir -p "/run/tapway-bench-$$"
on_cleanup "rm -rf /run/tapway-bench-$$"

mac_of() { ip -n "$1" -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'; }
rx_packets() { ip -n "$1" -j -s link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'; }

# plug FABRIC INDEX NODE: a single-queue veth fa<INDEX> (in FABRIC, on br0) <-> up0 (in NODE).
plug() {
  local fab=$1 i=$2 node=$3
  ip -n "$fab" link add "fa$i" mtu "$UPLINK_MTU" numrxqueues 1 numtxqueues 1 type veth peer name up0 netns "$node" numrxqueues 1 numtxqueues 1
  ip -n "$fab" link set "fa$i" master br0 up
  ip netns exec "$node" sysctl -qw net.ipv6.conf.up0.disable_ipv6=1
  ip -n "$node" link set up0 mtu "$UPLINK_MTU" up
}

# A fabric stands in for the physical network between nodes, which runs no netfilter: with
# br_netfilter loaded (the bridge CNI's kube-proxy needs it on the nodes), its bridge would
# pass every frame through iptables. Off in both fabrics; the bridge topology's node bridges
# keep it.
new_fabric() {
  new_netns "$1"
  ip -n "$1" link add br0 type bridge
  ip -n "$1" link set br0 up
  for t in iptables ip6tables arptables; do
    ip netns exec "$1" sysctl -qw "net.bridge.bridge-nf-call-$t=0" 2>/dev/null || true
  done
}

# ---- topology A: tapway, two nodes with AF_XDP uplinks --------------------------------------
T_FAB=${TAG}tf
new_fabric "$T_FAB"
T_PODS=() T_IPS=() T_SOCKS=() T_PIDS=()
for i in 1 2; do
  node=${TAG}tn$i pod=${TAG}tp$i sock=/run/tapway-bench-$$/n$i.sock
  new_netns "$node"
  plug "$T_FAB" "$i" "$node"
  args=(--socket "$sock" --state-dir "$WORK/state$i" --pod-cidr "10.214.$i.0/24" --poll-mode "$POLL"
    --log-level info --uplink up0 --xdp-mode "$XDP_MODE")
  log "tapwayd in netns $node: ${args[*]}"
  ip netns exec "$node" "$BIN/tapwayd" "${args[@]}" >"$WORK/tapwayd-$i.log" 2>&1 &
  T_PIDS+=("$!")
  DAEMON_PIDS+=("$!")
  for _ in $(seq 100); do
    "$BIN/tapwayctl" --socket "$sock" status >/dev/null 2>&1 && break
    kill -0 "${T_PIDS[-1]}" 2>/dev/null || { cat "$WORK/tapwayd-$i.log" >&2; die "tapwayd $i exited"; }
    sleep 0.1
  done
  new_netns "$pod"
  on_cleanup "'$BIN/tapwayctl' --socket '$sock' detach --netns /run/netns/$pod --ifname eth0"
  "$BIN/tapwayctl" --socket "$sock" attach --netns "/run/netns/$pod" --ifname eth0 \
    --ip "10.214.$i.2/16" --gateway "10.214.$i.1" >/dev/null || die "tapwayctl attach $pod failed"
  T_PODS+=("$pod") T_IPS+=("10.214.$i.2") T_SOCKS+=("$sock")
done
MODE_GOT=$("$BIN/tapwayctl" --socket "${T_SOCKS[0]}" --json status | python3 -c 'import json,sys; print(json.load(sys.stdin).get("uplink",{}).get("mode","?"))')
log "tapway: pods ${T_IPS[*]} on two nodes, uplinks in AF_XDP $MODE_GOT mode"

# ---- topology B: Linux bridge CNI per node, uplink veth enslaved to the node's bridge ---------
B_FAB=${TAG}bf
new_fabric "$B_FAB"
B_PODS=() B_IPS=()
for i in 1 2; do
  node=${TAG}bn$i pod=${TAG}bp$i
  new_netns "$node"
  conf=$(cat <<JSON
{"cniVersion":"1.0.0","name":"benchbr$i","type":"bridge","bridge":"brn","isGateway":true,"ipMasq":false,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.215.0.0/16","rangeStart":"10.215.$i.2","rangeEnd":"10.215.$i.254","gateway":"10.215.$i.1"}]],
         "routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$WORK/ipam-bridge$i"}}
JSON
)
  new_netns "$pod"
  on_cleanup "cni_exec '$node' '$CNI_BIN/bridge' DEL '$pod' '$pod' '$conf'"
  ip_=$(cni_exec "$node" "$CNI_BIN/bridge" ADD "$pod" "$pod" "$conf" | result_ipv4) ||
    die "CNI ADD of $pod through the bridge plugin failed"
  plug "$B_FAB" "$i" "$node"
  ip -n "$node" link set up0 master brn
  B_PODS+=("$pod") B_IPS+=("$ip_")
done
log "bridge: pods ${B_IPS[*]} on two nodes, uplink veths enslaved to each node's bridge"

if [ -n "$NO_GSO" ]; then
  no_gso "${T_PODS[@]}" "${B_PODS[@]}"
  log "TSO/GSO off on every pod's eth0: MTU-sized frames in both topologies"
fi

ping_check "${T_PODS[0]}" "${T_IPS[1]}"
ping_check "${B_PODS[0]}" "${B_IPS[1]}"

start_iperf3_server "${T_PODS[1]}" "${T_IPS[1]}"
start_iperf3_server "${B_PODS[1]}" "${B_IPS[1]}"

# trafgen configs: 60-byte frames (64 on the wire with the FCS) pod 1 -> pod 2, UDP to port 9.
trafgen_conf() { # SRC_NETNS DST_NETNS SRC_IP DST_IP FILE
  cat >"$5" <<EOF
{
  eth(da=$(mac_of "$2" eth0), sa=$(mac_of "$1" eth0), type=0x0800),
  ipv4(saddr=$3, daddr=$4, ttl=64),
  udp(sp=9, dp=9),
  fill(0x00, 18)
}
EOF
}
trafgen_conf "${T_PODS[0]}" "${T_PODS[1]}" "${T_IPS[0]}" "${T_IPS[1]}" "$WORK/tapway.trafgen"
trafgen_conf "${B_PODS[0]}" "${B_PODS[1]}" "${B_IPS[0]}" "${B_IPS[1]}" "$WORK/bridge.trafgen"

CLK_TCK=$(getconf CLK_TCK)
daemons_ticks() { # CPU ticks of both tapwayd
  local t=0 pid
  for pid in "${T_PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "$t"
}

RESULTS=$WORK/results.txt
: >"$RESULTS"
# run_one TOPO TEST REP: appends "topo test rep value cpu" (value: Gbit/s or Mpps).
run_one() {
  local topo=$1 test=$2 rep=$3 client server_ns server_ip value c0 c1 t0 t1 cpu=- r0 r1
  if [ "$topo" = tapway ]; then
    client=${T_PODS[0]} server_ns=${T_PODS[1]} server_ip=${T_IPS[1]}
  else
    client=${B_PODS[0]} server_ns=${B_PODS[1]} server_ip=${B_IPS[1]}
  fi
  [ "$topo" = tapway ] && c0=$(daemons_ticks)
  t0=$EPOCHREALTIME
  if [ "$test" = tcp ]; then
    local json=$WORK/iperf3-$topo-$rep.json
    ip netns exec "$client" iperf3 -c "$server_ip" -t "$DURATION" -O 1 -J >"$json" 2>&1 ||
      { sleep 1; ip netns exec "$client" iperf3 -c "$server_ip" -t "$DURATION" -O 1 -J >"$json" 2>&1; } ||
      die "iperf3 $topo failed: $(head -c 400 "$json")"
    value=$(python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$json")
  else
    r0=$(rx_packets "$server_ns" eth0)
    ip netns exec "$client" timeout "$DURATION" trafgen -o eth0 -c "$WORK/$topo.trafgen" --cpus 1 -q \
      >"$WORK/trafgen-$topo-$rep.log" 2>&1 || true
    t1=$EPOCHREALTIME
    sleep 0.2
    r1=$(rx_packets "$server_ns" eth0)
    value=$(python3 -c 'import sys; r0,r1,a,b=map(float,sys.argv[1:]); print("%.3f" % ((r1-r0)/(b-a)/1e6))' "$r0" "$r1" "$t0" "$t1")
  fi
  t1=${t1:-$EPOCHREALTIME}
  if [ "$topo" = tapway ]; then
    c1=$(daemons_ticks)
    cpu=$(python3 -c 'import sys; t,c0,c1,a,b=map(float,sys.argv[1:]); print("%.0f" % (100*(c1-c0)/t/(b-a)))' "$CLK_TCK" "$c0" "$c1" "$t0" "$t1")
  fi
  printf '%s %s %s %s %s\n' "$topo" "$test" "$rep" "$value" "$cpu" >>"$RESULTS"
  log "$(printf 'run %d/%d %-7s %-4s %8s %s' "$rep" "$REPEAT" "$topo" "$test" "$value" "$([ "$test" = tcp ] && echo Gbit/s || echo Mpps)")"
}

check_quiet
log "measuring: $DURATION s per run, $REPEAT repeats, interleaved"
for rep in $(seq "$REPEAT"); do
  for test in tcp pps; do
    if [ $((rep % 2)) -eq 1 ]; then order=(tapway bridge); else order=(bridge tapway); fi
    for topo in "${order[@]}"; do run_one "$topo" "$test" "$rep"; done
  done
done

STATS=$WORK/stats.json
"$BIN/tapwayctl" --socket "${T_SOCKS[0]}" --json stats >"$STATS" 2>/dev/null || echo '{}' >"$STATS"
# For --keep-work: both nodes' counters and every pod's interface counters.
"$BIN/tapwayctl" --socket "${T_SOCKS[1]}" --json stats >"$WORK/stats2.json" 2>/dev/null || true
for p in "${T_PODS[@]}" "${B_PODS[@]}"; do ip -n "$p" -s -s link show eth0 >"$WORK/link-$p.txt" 2>&1 || true; done

MACHINE=$(machine_summary)
CMDLINE="bench/uplink.sh --duration $DURATION --repeat $REPEAT --xdp-mode $XDP_MODE --poll-mode $POLL --uplink-mtu $UPLINK_MTU"
[ -z "$NO_GSO" ] || CMDLINE+=" --no-gso"
python3 - "$RESULTS" "$STATS" "$MARKDOWN" "$MACHINE" "$CMDLINE" "$MODE_GOT" <<'PY'
import json, statistics, sys, datetime
results, stats_file, md_file, machine, cmdline, mode = sys.argv[1:]
rows, cpu = {}, {}
for line in open(results):
    topo, test, rep, v, c = line.split()
    rows.setdefault((topo, test), []).append(float(v))
    if c != "-":
        cpu.setdefault(test, []).append(float(c))
names = {"tcp": "TCP 1 stream, Gbit/s", "pps": "64-byte frames delivered, Mpps"}
fmt = lambda v: "%.2f (%.2f–%.2f)" % (statistics.median(v), min(v), max(v))
table = []
for test in ("tcp", "pps"):
    t, b = rows.get(("tapway", test), []), rows.get(("bridge", test), [])
    if t and b:
        c = cpu.get(test, [])
        table.append((names[test], fmt(t), fmt(b), "%.2f×" % (statistics.median(t) / statistics.median(b)),
                      "%.0f%%" % statistics.median(c) if c else "-", len(t)))
hdr = ("test", "tapway (AF_XDP %s) median (min–max)" % mode, "bridge median (min–max)", "tapway/bridge",
       "CPU of both tapwayd", "runs")
w = [max(len(str(r[i])) for r in table + [hdr]) for i in range(len(hdr))]
print()
for r in [hdr] + table:
    print("  ".join(str(x).ljust(w[i]) for i, x in enumerate(r)))
note = ""
try:
    st = json.load(open(stats_file))
    sw = st.get("switch", {})
    note = ("node 1 uplink: %d super-frames cut into %d segments, %d checksums completed, %d tx-full; "
            "%d frames sent and %d received without a copy; UMEM %d MiB, %d pool buffers on the rx side"
            % (sw.get("uplink_tx_gso_frames", 0), sw.get("uplink_tx_segments", 0),
               sw.get("uplink_tx_csum_completed", 0), sw.get("uplink_tx_full", 0),
               sw.get("uplink_tx_zero_copy", 0), sw.get("uplink_rx_zero_copy", 0),
               sw.get("uplink_umem_frames", 0) * 4096 >> 20, sw.get("uplink_pool_rx_lent", 0)))
except Exception as e:
    note = "(tapwayd stats unavailable: %s)" % e
print()
print(note)
md = ["Measured %s UTC on %s." % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"), machine),
      "Command: `%s`." % cmdline, "",
      "| " + " | ".join(hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
md += ["| " + " | ".join(str(x) for x in r) + " |" for r in table]
md += ["", note + "."]
text = "\n".join(md) + "\n"
if md_file:
    open(md_file, "w").write(text)
    print("\nmarkdown written to %s" % md_file)
else:
    print()
    print(text, end="")
PY
