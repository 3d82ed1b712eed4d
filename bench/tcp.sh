#!/usr/bin/env bash
# TCP throughput pod -> pod: tapway (two pods on one tapwayd) against the reference Linux bridge
# CNI (two pods on Debian's containernetworking-plugins bridge + host-local), in the same run,
# interleaved, with iperf3. Prints a table and its markdown version.
#
#   sudo bench/tcp.sh [--duration SECS] [--repeat N] [--markdown FILE] [--poll-mode adaptive|busy]
#                     [--cores LIST] [--attach auto|plugin|tapwayctl] [--no-gso] [--no-build]
#                     [--keep-work]
#
# Runs as root on Debian 12; installs iperf3, iproute2, socat and containernetworking-plugins if
# a command is missing. Everything lives in network namespaces named twb<pid>*; they, the daemons
# and the work directory are removed on exit, also on failure and Ctrl-C. eth0 and every other
# interface of the machine are left alone.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  script_header
  cat <<'EOF'

Options:
  --duration SECS   seconds measured per iperf3 run, after 1 s of warm-up that is left out [10]
  --repeat N        runs per topology and scenario; runs are interleaved tapway/bridge [3]
  --markdown FILE   write the markdown table to FILE instead of stdout
  --poll-mode MODE  tapwayd poll mode: adaptive (default) or busy
  --cores LIST      cores tapwayd's workers are pinned to ("" = one unpinned worker) [0]
  --attach MODE     how tapway pods are attached: auto (the CNI plugin when it answers VERSION,
                    else tapwayctl), plugin, tapwayctl [auto]
  --no-gso          turn TSO/GSO off on every pod's eth0 (ethtool -K), in both topologies: frames
                    are then at most MTU-sized, as through a switch without the vnet header
  --no-build        use target/release as it is
  --keep-work       keep the work directory (logs, iperf3 JSON) for inspection
EOF
}

DURATION=10
REPEAT=3
MARKDOWN=
POLL=adaptive
CORES=0
ATTACH=auto
NO_GSO=
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=${2:?}; shift 2 ;;
    --repeat) REPEAT=${2:?}; shift 2 ;;
    --markdown) MARKDOWN=${2:?}; shift 2 ;;
    --poll-mode) POLL=${2:?}; shift 2 ;;
    --cores) CORES=${2?}; shift 2 ;;
    --attach) ATTACH=${2:?}; shift 2 ;;
    --no-gso) NO_GSO=1; shift ;;
    --no-build) NO_BUILD=1; shift ;;
    --keep-work) KEEP_WORK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration takes a whole number of seconds >= 1"
check_repeat_and_poll

need_root
ensure_tools
build_release
pick_attach_mode "$ATTACH"
install_traps
make_workdir

T_SUBNET=10.213.1.0/24 T_GW=10.213.1.1
B_SUBNET=10.213.2.0/24 B_GW=10.213.2.1
T_NODE=${TAG}tn B_NODE=${TAG}bn
T_PODS=("${TAG}t1" "${TAG}t2")
B_PODS=("${TAG}b1" "${TAG}b2")
BRIDGE=${TAG}br
SOCK=/run/tapway-bench-$$/tapway.sock
mkdir -p "/run/tapway-bench-$$"
on_cleanup "rm -rf /run/tapway-bench-$$"

# ---- topology A: tapway -------------------------------------------------------------------
new_netns "$T_NODE"
start_tapwayd "$T_NODE" "$SOCK" "$WORK/state" "$T_SUBNET" "$CORES" "$POLL"
T_CONF=$(tapway_netconf "$SOCK" "$T_SUBNET" "$T_GW")
attach_tapway_pods "$SOCK" T_CONF "$T_GW" 10.213.1 "${T_PODS[@]}"
log "tapway pods: ${T_PODS[0]}=${T_IPS[0]} ${T_PODS[1]}=${T_IPS[1]}"

# ---- topology B: Linux bridge (reference CNI), plugins exec'd inside the node netns ---------
new_netns "$B_NODE"
B_CONF=$(bridge_netconf "$BRIDGE" "$B_SUBNET" "$B_GW")
attach_bridge_pods "$B_NODE" B_CONF "${B_PODS[@]}"
log "bridge pods: ${B_PODS[0]}=${B_IPS[0]} ${B_PODS[1]}=${B_IPS[1]} (bridge $BRIDGE in netns $B_NODE)"

if [ -n "$NO_GSO" ]; then
  no_gso "${T_PODS[@]}" "${B_PODS[@]}"
  log "TSO/GSO off on every pod's eth0: no super-frames in either topology"
fi

ping_check "${T_PODS[0]}" "${T_IPS[1]}"
ping_check "${B_PODS[0]}" "${B_IPS[1]}"

# iperf3 servers in pod 2 of each topology.
start_iperf3_server "${T_PODS[1]}" "${T_IPS[1]}"
start_iperf3_server "${B_PODS[1]}" "${B_IPS[1]}"

CLK_TCK=$(getconf CLK_TCK)
daemon_ticks() {
  awk '{print $14 + $15}' "/proc/$TAPWAYD_PID/stat" 2>/dev/null ||
    die "tapwayd (pid $TAPWAYD_PID) is gone; its log: $(tail -c 600 "$WORK/tapwayd-$T_NODE.log" 2>/dev/null)"
}

RESULTS=$WORK/results.txt
: >"$RESULTS"
# run_one TOPO SCENARIO STREAMS REP: one iperf3 client run, appends "topo scenario rep gbps cpu".
run_one() {
  local topo=$1 scen=$2 streams=$3 rep=$4 client server json t0 t1 c0 c1 gbps cpu=-
  if [ "$topo" = tapway ]; then client=${T_PODS[0]}; server=${T_IPS[1]}; else client=${B_PODS[0]}; server=${B_IPS[1]}; fi
  json=$WORK/iperf3-$topo-$scen-$rep.json
  [ "$topo" = tapway ] && c0=$(daemon_ticks)
  t0=$EPOCHREALTIME
  if ! ip netns exec "$client" iperf3 -c "$server" -t "$DURATION" -O 1 -P "$streams" -J >"$json" 2>&1; then
    sleep 1 # the server may still be finishing the previous test: one retry
    ip netns exec "$client" iperf3 -c "$server" -t "$DURATION" -O 1 -P "$streams" -J >"$json" 2>&1 ||
      die "iperf3 $topo $scen failed: $(head -c 400 "$json")"
  fi
  t1=$EPOCHREALTIME
  gbps=$(python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$json")
  if [ "$topo" = tapway ]; then
    c1=$(daemon_ticks)
    cpu=$(python3 -c 'import sys; t,c0,c1,a,b=map(float,sys.argv[1:]); print("%.0f" % (100*(c1-c0)/t/(b-a)))' "$CLK_TCK" "$c0" "$c1" "$t0" "$t1")
  fi
  printf '%s %s %s %s %s\n' "$topo" "$scen" "$rep" "$gbps" "$cpu" >>"$RESULTS"
  if [ "$topo" = tapway ]; then
    log "$(printf 'run %d/%d %-7s %-8s %7.2f Gbit/s  (tapwayd %s%% of a core)' "$rep" "$REPEAT" "$topo" "$scen" "$gbps" "$cpu")"
  else
    log "$(printf 'run %d/%d %-7s %-8s %7.2f Gbit/s' "$rep" "$REPEAT" "$topo" "$scen" "$gbps")"
  fi
}

check_quiet
log "measuring: ${DURATION} s per run (+1 s warm-up left out), $REPEAT repeats, order ABBA per repeat"
for rep in $(seq "$REPEAT"); do
  for sc in 1:single 4:p4; do
    streams=${sc%%:*}; scen=${sc#*:}
    if [ $((rep % 2)) -eq 1 ]; then order=(tapway bridge); else order=(bridge tapway); fi
    for topo in "${order[@]}"; do run_one "$topo" "$scen" "$streams" "$rep"; done
  done
done

STATS=$WORK/stats.json
"$BIN/tapwayctl" --socket "$SOCK" --json stats >"$STATS" 2>/dev/null || echo '{}' >"$STATS"

MACHINE=$(machine_summary)
CMDLINE="bench/tcp.sh --duration $DURATION --repeat $REPEAT --poll-mode $POLL --cores '$CORES'"
[ "$ATTACH" = auto ] || CMDLINE+=" --attach $ATTACH"
[ -z "$NO_GSO" ] || CMDLINE+=" --no-gso"
python3 - "$RESULTS" "$STATS" "$MARKDOWN" "$MACHINE" "$CMDLINE" "$ATTACH_MODE" "$POLL" "$DURATION" <<'PY'
import json, statistics, sys, datetime
results, stats_file, md_file, machine, cmdline, attach, poll, duration = sys.argv[1:]
rows = {}
cpu = {}
for line in open(results):
    topo, scen, rep, gbps, c = line.split()
    rows.setdefault((topo, scen), []).append(float(gbps))
    if c != "-":
        cpu.setdefault(scen, []).append(float(c))
names = {"single": "TCP, 1 stream", "p4": "TCP, 4 streams (-P 4)"}
def fmt(v):
    return "%.2f (%.2f–%.2f)" % (statistics.median(v), min(v), max(v))
table = []
for scen in ("single", "p4"):
    t, b = rows.get(("tapway", scen), []), rows.get(("bridge", scen), [])
    if not t or not b:
        continue
    ratio = statistics.median(t) / statistics.median(b)
    c = cpu.get(scen, [])
    table.append((names[scen], fmt(t), fmt(b), "%.2f×" % ratio, "%.0f%%" % statistics.median(c) if c else "-", len(t)))

hdr = ("scenario", "tapway Gbit/s median (min–max)", "bridge Gbit/s median (min–max)", "tapway/bridge", "tapwayd CPU", "runs")
w = [max(len(str(r[i])) for r in table + [hdr]) for i in range(len(hdr))]
print()
print("  ".join(str(h).ljust(w[i]) for i, h in enumerate(hdr)))
for r in table:
    print("  ".join(str(x).ljust(w[i]) for i, x in enumerate(r)))

gso = ""
try:
    st = json.load(open(stats_file))
    pods = [p for p in st.get("ports", []) if p.get("ifname") != "tapway0"]
    pk = sum(p["rx_packets"] for p in pods)
    g = sum(p["rx_gso_packets"] for p in pods)
    by = sum(p["rx_bytes"] for p in pods)
    drops = {}
    for p in st.get("ports", []):
        for k, v in p.get("drops", {}).items():
            drops[k] = drops.get(k, 0) + v
    if pk:
        gso = ("tapwayd pod ports received %d frames, %d of them GSO super-frames (%.0f%%), "
               "%.0f bytes per frame on average; drops: %s"
               % (pk, g, 100.0 * g / pk, by / pk, ", ".join("%s=%d" % kv for kv in sorted(drops.items())) or "none"))
except Exception as e:  # stats are a bonus, never a failure
    gso = "(tapwayd stats unavailable: %s)" % e
busy_note = ("tapwayd polls in busy mode: its worker spins on its core during the bridge runs too, so the "
             "bridge figures are those of a node that gave one core to tapwayd" if poll == "busy" else "")
if gso:
    print()
    print(gso)
if busy_note:
    print(busy_note)

md = []
md.append("Measured %s UTC on %s." % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"), machine))
md.append("Command: `%s`; tapway pods attached with %s; tapwayd poll mode `%s`; %s s per run after a 1 s warm-up."
          % (cmdline, "the tapway CNI plugin" if attach == "plugin" else "`tapwayctl attach` (not through the CNI plugin)", poll, duration))
md.append("")
md.append("| " + " | ".join(hdr) + " |")
md.append("|" + "|".join("---" for _ in hdr) + "|")
for r in table:
    md.append("| " + " | ".join(str(x) for x in r) + " |")
if gso:
    md.append("")
    md.append(gso + ".")
if busy_note:
    md.append(busy_note + ".")
text = "\n".join(md) + "\n"
if md_file:
    with open(md_file, "w") as f:
        f.write(text)
    print("\nmarkdown written to %s" % md_file)
else:
    print()
    print(text, end="")
PY
