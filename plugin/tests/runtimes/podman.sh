#!/usr/bin/env bash
# podman 4.3 (CNI network backend) runs containers on a tapway network, end to end:
#   - containers get addresses from host-local (one of them a static `--ip`, which podman passes
#     as CNI_ARGS IP=), and tapwayd has one port per container, owned by its container ID;
#   - they reach each other (ping, HTTP over TCP) and the node (tapway0, the gateway), and the
#     node reaches them, also through a published port (`-p`, the reference portmap plugin
#     chained after tapway);
#   - `podman stop` removes the container's port and releases its address; `podman rm` of a
#     running one does the same; nothing is left at the end;
#   - 6 containers started and removed in parallel get distinct addresses and leave nothing;
#   - with tapwayd stopped, `podman run` fails with tapwayd's error and no address stays reserved.
#
# Isolation: podman gets its own containers.conf (CONTAINERS_CONF), storage root and runroot,
# tmpdir, CNI config dir and CNI plugin dir, all under one temp dir, and runs inside a node netns
# of its own (where tapwayd and its gateway port live). The image is built here from the
# busybox-static package and imported (no registry). Everything is removed on exit, also on
# failure. Needs root, podman, runc, conmon, busybox-static, and `cargo build --workspace`.
#
#   sudo plugin/tests/runtimes/podman.sh
set -euo pipefail
# shellcheck source=plugin/tests/runtimes/lib.sh
source "$(dirname "$0")/lib.sh"

RT_NEED=(podman runc conmon)
rt_init podman twrp 77
NET=${TAG}net
IMG=localhost/${TAG}img:latest

rt_start_node
rt_install_cni "$NET"

cat >"$WORK/containers.conf" <<TOML
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
default_capabilities = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE",
  "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT", "NET_RAW"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$WORK/events.log"
tmp_dir = "$WORK/libpod-tmp"
volume_path = "$WORK/volumes"

[network]
network_backend = "cni"
cni_plugin_dirs = ["$WORK/cni-bin"]
network_config_dir = "$WORK/cni-conf"
default_network = "$NET"
default_subnet = "$SUBNET"
TOML
rt_podman_storage
pm() {
  in_node podman --root "$WORK/storage" --runroot "$WORK/runroot" --storage-driver vfs \
    --tmpdir "$WORK/libpod-tmp" --network-config-dir "$WORK/cni-conf" --cgroup-manager cgroupfs \
    --runtime runc --events-backend file "$@"
}
# Containers first (their DEL releases ports and addresses), then the image.
on_cleanup "pm rm -f -t 0 ${TAG}a ${TAG}b ${TAG}c ${TAG}d ${TAG}p1 ${TAG}p2 ${TAG}p3 ${TAG}p4 ${TAG}p5 ${TAG}p6; pm rmi -f $IMG"

rt_log "podman $(podman --version | awk '{print $3}'), network $NET, subnet $SUBNET"
pm network ls --format '{{.Name}}' >"$WORK/networks.txt" 2>>"$WORK/podman.log" \
  || rt_die "podman network ls: $(tail -3 "$WORK/podman.log")"
grep -qx "$NET" "$WORK/networks.txt" || rt_die "podman does not list $NET: $(cat "$WORK/networks.txt")"

rt_log "building the image from busybox-static"
rt_rootfs_tar "$WORK/rootfs.tar"
pm import --change 'CMD ["/bin/sh"]' "$WORK/rootfs.tar" "$IMG" >>"$WORK/podman.log" 2>&1 \
  || rt_die "podman import failed"

run_ctr() {  # run_ctr NAME [podman run flags…]
  local name=$1; shift
  pm run -d --name "$name" --network "$NET" "$@" "$IMG" /bin/sleep 600 >>"$WORK/podman.log" 2>&1 \
    || rt_die "podman run $name failed: $(tail -5 "$WORK/podman.log"; tail -5 "$WORK/cni.log" 2>/dev/null)"
}
ctr_ip() { pm inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$1"; }
ctr_id() { pm inspect -f '{{.Id}}' "$1"; }

STATIC_IP=$SUBNET_PREFIX.77
rt_log "starting containers ${TAG}a, ${TAG}b (--ip $STATIC_IP)"
run_ctr "${TAG}a"
run_ctr "${TAG}b" --ip "$STATIC_IP" -p "$GATEWAY:18080:8080"
IP_A=$(ctr_ip "${TAG}a"); IP_B=$(ctr_ip "${TAG}b")
ID_A=$(ctr_id "${TAG}a"); ID_B=$(ctr_id "${TAG}b")
rt_log "a=$IP_A b=$IP_B"
[ "$IP_B" = "$STATIC_IP" ] || rt_die "--ip $STATIC_IP gave $IP_B"
case $IP_A in "$SUBNET_PREFIX".*) ;; *) rt_die "a got $IP_A, not from $SUBNET" ;; esac
[ "$IP_A" != "$IP_B" ] || rt_die "both containers got $IP_A"

# tapwayd: one port per container, owned by the container ID, with its address.
pod_ports >"$WORK/ports.txt"
[ "$(wc -l <"$WORK/ports.txt")" -eq 2 ] || rt_die "expected 2 pod ports, tapwayd has: $(cat "$WORK/ports.txt")"
grep -q "^$ID_A .* $IP_A/24" "$WORK/ports.txt" || rt_die "no port for a ($ID_A $IP_A): $(cat "$WORK/ports.txt")"
grep -q "^$ID_B .* $IP_B/24" "$WORK/ports.txt" || rt_die "no port for b ($ID_B $IP_B): $(cat "$WORK/ports.txt")"
[ "$(reservations "$NET" | tr '\n' ' ')" = "$(printf '%s\n' "$IP_A" "$IP_B" | sort | tr '\n' ' ')" ] \
  || rt_die "host-local reservations: $(reservations "$NET" | tr '\n' ' ')"

# Inside the container: eth0 has the address, the default route goes via the gateway.
pm exec "${TAG}a" ip -4 addr show eth0 | grep -q "inet $IP_A/24" || rt_die "a's eth0 lacks $IP_A"
pm exec "${TAG}a" ip route | grep -q "default via $GATEWAY" || rt_die "a has no default route via $GATEWAY"

rt_log "traffic: a→b, b→a, a→gateway, node→a, HTTP a→b, node→b through the host port"
pm exec "${TAG}a" ping -c 2 -W 2 "$IP_B" >/dev/null || rt_die "a cannot ping b"
pm exec "${TAG}b" ping -c 2 -W 2 "$IP_A" >/dev/null || rt_die "b cannot ping a"
pm exec "${TAG}a" ping -c 2 -W 2 "$GATEWAY" >/dev/null || rt_die "a cannot ping the gateway (tapway0)"
in_node ping -c 2 -W 2 "$IP_A" >/dev/null || rt_die "the node cannot ping a"
pm exec -d "${TAG}b" httpd -f -p 8080 -h /www >>"$WORK/podman.log" 2>&1 || rt_die "httpd in b"
# busybox-static's wget crashes (static glibc), so HTTP goes through nc.
http_get() {
  pm exec "${TAG}a" sh -c "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $IP_B 8080" >"$WORK/http.txt" 2>&1 \
    && grep -q "hello from tapway" "$WORK/http.txt"
}
wait_until 10 http_get || rt_die "a cannot fetch http://$IP_B:8080/ from b: $(cat "$WORK/http.txt")"
# -p went to portmap as runtimeConfig.portMappings: the node reaches b's 8080 on its port 18080.
printf 'GET /index.html HTTP/1.0\r\n\r\n' | in_node timeout 5 /bin/busybox nc -w 2 "$GATEWAY" 18080 >"$WORK/http-hostport.txt" 2>&1 || true
grep -q "hello from tapway" "$WORK/http-hostport.txt" \
  || rt_die "the node cannot reach b through the host port $GATEWAY:18080 (portmap): $(cat "$WORK/http-hostport.txt")"

rt_log "podman stop a: its port goes, its address is released"
pm stop -t 1 "${TAG}a" >>"$WORK/podman.log" 2>&1 || rt_die "podman stop a"
pod_ports >"$WORK/ports.txt"
grep -q "^$ID_A " "$WORK/ports.txt" && rt_die "a's port is still there after stop: $(cat "$WORK/ports.txt")"
grep -q "^$ID_B " "$WORK/ports.txt" || rt_die "b's port went with a's"
[ "$(reservations "$NET" | tr '\n' ' ')" = "$IP_B " ] || rt_die "after stop a, reservations: $(reservations "$NET" | tr '\n' ' ')"

rt_log "podman start a again, a third container with --mac-address, rm -f of running ones"
pm start "${TAG}a" >>"$WORK/podman.log" 2>&1 || rt_die "podman start a"
MAC_C=02:42:0a:4d:00:99
run_ctr "${TAG}c" --mac-address "$MAC_C"
pm exec "${TAG}c" ip link show eth0 | grep -q "link/ether $MAC_C" || rt_die "c's eth0 lacks --mac-address $MAC_C"
IP_A2=$(ctr_ip "${TAG}a"); IP_C=$(ctr_ip "${TAG}c")
[ "$(pod_ports | wc -l)" -eq 3 ] || rt_die "expected 3 pod ports: $(pod_ports)"
pm exec "${TAG}c" ping -c 2 -W 2 "$IP_A2" >/dev/null || rt_die "c cannot ping the restarted a"
pm rm -f -t 1 "${TAG}a" "${TAG}b" "${TAG}c" >>"$WORK/podman.log" 2>&1 || rt_die "podman rm -f"
[ -z "$(pod_ports)" ] || rt_die "ports left after rm: $(pod_ports)"
[ -z "$(reservations "$NET")" ] || rt_die "reservations left after rm: $(reservations "$NET" | tr '\n' ' ')"
[ ! -s "$WORK/tapway-cni/pending.json" ] || grep -q '^\[\]$' "$WORK/tapway-cni/pending.json" \
  || rt_die "pending detaches left: $(cat "$WORK/tapway-cni/pending.json")"

rt_log "6 containers started in parallel (parallel ADDs), then removed in parallel"
pids=()
for i in 1 2 3 4 5 6; do
  pm run -d --name "${TAG}p$i" --network "$NET" "$IMG" /bin/sleep 600 >>"$WORK/podman-par.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || rt_die "a parallel podman run failed: $(tail -5 "$WORK/podman-par.log")"; done
pod_ports >"$WORK/ports.txt"
[ "$(wc -l <"$WORK/ports.txt")" -eq 6 ] || rt_die "expected 6 pod ports: $(cat "$WORK/ports.txt")"
[ "$(awk '{print $3}' "$WORK/ports.txt" | sort -u | wc -l)" -eq 6 ] || rt_die "addresses not distinct: $(cat "$WORK/ports.txt")"
[ "$(reservations "$NET" | wc -l)" -eq 6 ] || rt_die "expected 6 reservations: $(reservations "$NET" | tr '\n' ' ')"
IP_P6=$(ctr_ip "${TAG}p6")
pm exec "${TAG}p1" ping -c 1 -W 2 "$IP_P6" >/dev/null || rt_die "p1 cannot ping p6"
pids=()
for i in 1 2 3 4 5 6; do
  pm rm -f -t 1 "${TAG}p$i" >>"$WORK/podman-par.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || rt_die "a parallel podman rm failed: $(tail -5 "$WORK/podman-par.log")"; done
[ -z "$(pod_ports)" ] || rt_die "ports left after parallel rm: $(pod_ports)"
[ -z "$(reservations "$NET")" ] || rt_die "reservations left after parallel rm: $(reservations "$NET" | tr '\n' ' ')"

rt_log "tapwayd stopped: podman run fails with tapwayd's error and leaves no address behind"
rt_stop_tapwayd
if pm run -d --name "${TAG}d" --network "$NET" "$IMG" /bin/sleep 600 >"$WORK/run-down.txt" 2>&1; then
  rt_die "podman run succeeded with tapwayd stopped"
fi
rt_log "podman: $(tail -1 "$WORK/run-down.txt")"
grep -q "tapwayd" "$WORK/run-down.txt" || rt_die "podman's error does not name tapwayd: $(cat "$WORK/run-down.txt")"
[ -z "$(reservations "$NET")" ] || rt_die "the failed ADD left reservations: $(reservations "$NET" | tr '\n' ' ')"
pm rm -f "${TAG}d" >>"$WORK/podman.log" 2>&1 || true
rt_log "PASS (a=$IP_A b=$IP_B c=$IP_C)"
