#!/usr/bin/env bash
# Does forwarding go on while tapwayd programs 10,000 services? A pod→pod iperf3 stream is
# reported every 0.5 s while `tapwayctl sync` loads a generated kubectl List of 10,000 Services
# with 10 endpoints each; a stall would show as an interval near 0.
#   sudo bench/sync-forwarding.sh [--services N] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SERVICES=10000 NO_BUILD=
while [ $# -gt 0 ]; do
  case "$1" in
    --services) SERVICES=$2; shift 2 ;;
    --no-build) NO_BUILD=1; shift ;;
    *) die "unknown option $1" ;;
  esac
done
need_root
ensure_tools
install_traps
make_workdir
[ -n "$NO_BUILD" ] || build_release
N=tsf$$
new_netns "$N"
new_netns "${N}a"
new_netns "${N}b"
ip netns exec "$N" "$BIN/tapwayd" --socket "$WORK/s" --state-dir "$WORK/st" --pod-cidr 10.99.0.0/16 \
  --log-level warn >"$WORK/tapwayd.log" 2>&1 &
DAEMON_PIDS+=("$!")
for _ in $(seq 100); do "$BIN/tapwayctl" --socket "$WORK/s" status >/dev/null 2>&1 && break; sleep 0.1; done
for p in a:2 b:3; do
  "$BIN/tapwayctl" --socket "$WORK/s" attach --netns "/run/netns/$N${p%%:*}" --ip "10.99.0.${p#*:}/16" \
    --gateway 10.99.0.1 >/dev/null
done
ping_check "${N}a" 10.99.0.3
python3 - "$SERVICES" >"$WORK/list.json" <<'PY'
import json, sys
n = int(sys.argv[1]); items = []
for i in range(n):
    vip = f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}"
    items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "bulk", "name": f"s{i}"},
                  "spec": {"clusterIP": vip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                  "metadata": {"namespace": "bulk", "name": f"s{i}-1", "labels": {"kubernetes.io/service-name": f"s{i}"}},
                  "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                  "endpoints": [{"addresses": [f"10.244.{(i * 10 + j) // 256 % 256}.{(i * 10 + j) % 256}"]} for j in range(10)]})
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)
PY
start_iperf3_server "${N}b" 10.99.0.3
ip netns exec "${N}a" iperf3 -c 10.99.0.3 -t 6 -i 0.5 -J >"$WORK/iperf3.json" &
IPERF=$!
sleep 2
start=$(date +%s.%N)
"$BIN/tapwayctl" --socket "$WORK/s" sync "$WORK/list.json"
end=$(date +%s.%N)
wait "$IPERF"
python3 - "$WORK/iperf3.json" "$start" "$end" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); t0 = j["start"]["timestamp"]["timesecs"]
print(f"sync wall time {float(sys.argv[3]) - float(sys.argv[2]):.2f} s, started {float(sys.argv[2]) - t0:.1f} s into the stream")
print("iperf3 Gbit/s per 0.5 s:", " ".join("%.1f" % (i["sum"]["bits_per_second"] / 1e9) for i in j["intervals"]))
PY
