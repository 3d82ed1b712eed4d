#!/usr/bin/env bash
# The container image (scripts/image.sh) is real and runs, the way deploy/daemonset.yaml runs it:
#   - the saved archive (`image.sh --save`) imported into a private containerd's k8s.io
#     namespace, as docs/kubernetes.md loads it onto nodes, and run there;
#   - `tapwayd --help` from the image;
#   - the install-cni init container's command, with the node's /opt/cni/bin bind-mounted from
#     a temp dir: the plugin lands there, static, and answers VERSION on this host;
#   - tapwayd from the image in a "node" network namespace with exactly the manifest's
#     capabilities (read from deploy/daemonset.yaml; every other one dropped), podman's default
#     seccomp profile, the manifest's host paths bind-mounted (/run/netns with slave
#     propagation, so a pod netns made after tapwayd started is visible to it), and an AF_XDP
#     uplink (a veth in generic mode) to a "far" netns;
#   - the probes' /readyz and /healthz answer 200 on the manifest's metrics address;
#   - the cni-conf container's command: it takes the range from tapwayd's status and writes the
#     conflist (also with a cluster CIDR, for nodes on one L2), and stops on SIGTERM;
#   - a pod attached with tapwayctl from the image, and one through the installed plugin and
#     the written conflist (exec'd on the host, as a runtime does), each pinging its gateway;
#     the first also pings the far end of the uplink;
#   - the list is not longer than needed: without any one of its capabilities tapwayd with an
#     uplink does not start, and without SYS_ADMIN an attach fails (setns);
#   - SIGTERM stops tapwayd cleanly (exit 0).
# Everything runs in namespaces and temp dirs of its own (podman with a private storage root,
# runroot and containers.conf); containers, the image, the namespaces and the temp dir are
# removed at exit, also on failure. Needs root, podman, runc, conmon, busybox-static and the
# debug binaries (`cargo build --workspace`); the image is built from debug binaries to keep CI
# short (scripts/image.sh without --debug builds the release image).
#
#   sudo scripts/image-test.sh
set -euo pipefail
# shellcheck source=plugin/tests/runtimes/lib.sh
source "$(dirname "$0")/../plugin/tests/runtimes/lib.sh"

RT_NEED=(podman runc conmon containerd ctr)
rt_init image twim 231
# This test's SUBNET numbers are 180..189 (10.231.180.0/24).
SUBNET_PREFIX=10.231.180
SUBNET=$SUBNET_PREFIX.0/24
GATEWAY=$SUBNET_PREFIX.1
IMG=localhost/tapway:test-$TAG
DS=$RT_ROOT/deploy/daemonset.yaml
HOST=$WORK/host # the "node's" directories that the manifest mounts
mkdir -p "$HOST/opt/cni/bin" "$HOST/etc/cni/net.d" "$HOST/run/tapway" "$HOST/var/lib/tapway"

cat >"$WORK/containers.conf" <<TOML
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$WORK/events.json"
tmp_dir = "$WORK/libpod-tmp"

[network]
network_backend = "cni"
network_config_dir = "$WORK/cni-conf"
TOML
rt_podman_storage
pm() {
  podman --root "$WORK/storage" --runroot "$WORK/runroot" --storage-driver vfs --tmpdir "$WORK/libpod-tmp" \
    --cgroup-manager cgroupfs --runtime runc --events-backend file "$@"
}
on_cleanup "pm rmi -f $IMG"
on_cleanup "pm rm -f -t 0 ${TAG}d ${TAG}conf ${TAG}nocap"

rt_log "building $IMG from the debug binaries"
bash "$RT_ROOT/scripts/image.sh" --debug --tag "$IMG" --save "$WORK/image.tar" >"$WORK/image.log" 2>&1 \
  || rt_die "scripts/image.sh failed: $(tail -5 "$WORK/image.log")"
rt_log "$(grep '^built' "$WORK/image.log")"

# The archive loads into containerd the way docs/kubernetes.md loads it onto nodes (a private
# containerd; the kubelet's images live in the k8s.io namespace), and runs there.
CSOCK=$WORK/containerd.sock
cat >"$WORK/containerd.toml" <<TOML
version = 2
root = "$WORK/ctd-root"
state = "$WORK/ctd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CSOCK"
[ttrpc]
  address = "$CSOCK.ttrpc"
[plugins."io.containerd.runtime.v2.task"]
  platforms = ["linux/amd64"]
TOML
# containerd 1.6 puts its shims' sockets in /run/containerd/s whatever the config says.
[ -e /run/containerd ] || on_cleanup "rm -rf /run/containerd"
containerd --config "$WORK/containerd.toml" >"$WORK/containerd.txt" 2>&1 &
on_cleanup "kill $!; sleep 0.5; kill -9 $!"
kctr() { ctr --address "$CSOCK" -n k8s.io "$@"; }
wait_until 30 kctr version >/dev/null 2>&1 || rt_die "containerd did not start: $(tail -3 "$WORK/containerd.txt")"
kctr images import --snapshotter native "$WORK/image.tar" >"$WORK/ctr.txt" 2>&1 \
  || rt_die "ctr -n k8s.io images import: $(cat "$WORK/ctr.txt")"
on_cleanup "ctr --address '$CSOCK' -n k8s.io containers rm ${TAG}ctr"
kctr run --rm --snapshotter native "$IMG" "${TAG}ctr" /usr/bin/tapwayd --version >"$WORK/ctr-run.txt" 2>&1 \
  || rt_die "ctr run: $(cat "$WORK/ctr-run.txt")"
grep -q "^tapwayd " "$WORK/ctr-run.txt" || rt_die "ctr run: $(cat "$WORK/ctr-run.txt")"
rt_log "imported into containerd's k8s.io namespace and run: $(cat "$WORK/ctr-run.txt")"

# The manifest's tapwayd capabilities, from its one `add: [...]` line.
CAPS=$(sed -n 's/^ *add: \[\(.*\)\]$/\1/p' "$DS" | tr -d ' ')
[ -n "$CAPS" ] && [ "$(sed -n 's/^ *add: \[\(.*\)\]$/\1/p' "$DS" | wc -l)" = 1 ] \
  || rt_die "expected one capabilities add: [...] line in $DS"
# What every container of the manifest runs with (drop: [ALL]), podman's default seccomp.
CTR=(--rm --network none --cap-drop all)

rt_log "tapwayd --help from the image"
pm run "${CTR[@]}" "$IMG" --help >"$WORK/help.txt" 2>&1 || rt_die "tapwayd --help: $(cat "$WORK/help.txt")"
grep -q -- "--pod-cidr" "$WORK/help.txt" || rt_die "tapwayd --help lacks --pod-cidr: $(cat "$WORK/help.txt")"

rt_log "install-cni init container: the plugin into the node's /opt/cni/bin"
# The init container's command, as in the manifest.
pm run "${CTR[@]}" --read-only -v "$HOST/opt/cni/bin:/host/opt/cni/bin" --entrypoint /opt/tapway/install-cni.sh "$IMG" \
  --skip-conf --binary /opt/tapway/cni/tapway --bin-dir /host/opt/cni/bin >"$WORK/install.log" 2>&1 \
  || rt_die "install-cni in the image: $(cat "$WORK/install.log")"
[ -x "$HOST/opt/cni/bin/tapway" ] || rt_die "no plugin in the bin dir: $(cat "$WORK/install.log")"
[ -x "$HOST/opt/cni/bin/tapway-ipam" ] || rt_die "no tapway-ipam in the bin dir: $(cat "$WORK/install.log")"
# (Outputs are captured before grep -q: with pipefail a writer cut off by grep fails the line.)
for p in tapway tapway-ipam; do
  linked=$(ldd "$HOST/opt/cni/bin/$p" 2>&1 || true)
  case "$linked" in *"not a dynamic executable"* | *"statically linked"*) ;; *) rt_die "the installed $p is not static: $linked" ;; esac
done
version=$(echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION "$HOST/opt/cni/bin/tapway" 2>&1 || true)
case "$version" in *supportedVersions*) ;; *) rt_die "the installed plugin does not answer VERSION: $version" ;; esac
ln -s /usr/lib/cni/host-local "$HOST/opt/cni/bin/host-local"

rt_log "tapwayd from the image in node netns $NODE with --cap-add $CAPS"
ip netns add "$NODE" || rt_die "ip netns add $NODE"
on_cleanup "ip netns del '$NODE'"
ip -n "$NODE" link set lo up
# The manifest's host paths at the same paths inside, /run/netns and /var/run/netns with the
# propagation of mountPropagation: HostToContainer (rslave). The pod range is a flag here: the
# test has no API server (in a cluster it comes from the Node object).
NODE_MOUNTS=(-v /run/netns:/run/netns:rslave -v /var/run/netns:/var/run/netns:rslave
  -v "$HOST/run/tapway:/run/tapway" -v "$HOST/var/lib/tapway:/var/lib/tapway" -v /dev/net/tun:/dev/net/tun
  -v /sys/fs/bpf:/sys/fs/bpf:rslave)
# The uplink too, so the AF_XDP capabilities are exercised: a veth (generic XDP) whose peer, in
# a "far" netns, holds an address of the pod subnet, as a pod on another node would.
FAR=${TAG}f
ip netns add "$FAR" && on_cleanup "ip netns del '$FAR'"
ip link add "${TAG}u0" netns "$NODE" type veth peer name "${TAG}u1" netns "$FAR" || rt_die "veth"
ip -n "$NODE" link set "${TAG}u0" up
ip -n "$FAR" link set "${TAG}u1" up
ip -n "$FAR" addr add "$SUBNET_PREFIX.200/24" dev "${TAG}u1"
UPLINK=(--uplink "${TAG}u0" --xdp-mode generic)
# The manifest's metrics address, where its probes go.
METRICS=$(awk '/- --metrics-address/ { getline; print $2; exit }' "$DS")
[ -n "$METRICS" ] || rt_die "no --metrics-address in $DS"
pm run -d --name "${TAG}d" --network "ns:/run/netns/$NODE" --read-only --cap-drop all --cap-add "$CAPS" "${NODE_MOUNTS[@]}" \
  "$IMG" --pod-cidr "$SUBNET" "${UPLINK[@]}" --metrics-address "$METRICS" --log-level info >>"$WORK/podman.log" 2>&1 \
  || rt_die "podman run tapwayd: $(tail -5 "$WORK/podman.log")"
SOCK=$HOST/run/tapway/tapway.sock
wait_until 30 tctl status >/dev/null 2>&1 || rt_die "tapwayd from the image did not come up: $(pm logs "${TAG}d" 2>&1 | tail -5)"
status=$(tctl status 2>&1 || true)
case "$status" in *"pod range $SUBNET"*"uplink ${TAG}u0"*) ;; *) rt_die "status: $status" ;; esac
# The probes, as the kubelet makes them on the node (the node netns here).
http_get() {
  printf 'GET %s HTTP/1.0\r\n\r\n' "$1" | in_node timeout 5 /bin/busybox nc "${METRICS%:*}" "${METRICS##*:}" 2>&1 || true
}
for probe in /readyz /healthz; do
  wait_until 30 eval "http_get $probe | head -1 | grep -q ' 200'" || rt_die "$probe on $METRICS: $(http_get $probe)"
done
case "$(http_get /metrics)" in *tapway_port_rx_frames_total*) ;; *) rt_die "/metrics on $METRICS: $(http_get /metrics | head -5)" ;; esac
rt_log "the probes' /readyz and /healthz answer 200 on $METRICS, /metrics serves"

rt_log "cni-conf container: the conflist with the range tapwayd reports"
# Its command as in the manifest: it stays, checking the range (stopped at the end).
pm run -d --name "${TAG}conf" --network none --cap-drop all --read-only -v "$HOST/run/tapway:/run/tapway" \
  -v "$HOST/etc/cni/net.d:/host/etc/cni/net.d" --entrypoint /opt/tapway/install-cni.sh "$IMG" \
  --skip-binary --from-tapwayd --keep-running --tapwayctl /usr/bin/tapwayctl --conf-dir /host/etc/cni/net.d --ipam tapway-ipam --portmap \
  >>"$WORK/podman.log" 2>&1 || rt_die "podman run cni-conf: $(tail -5 "$WORK/podman.log")"
CONF=$HOST/etc/cni/net.d/10-tapway.conflist
wait_until 30 test -s "$CONF" || rt_die "cni-conf wrote no conflist: $(pm logs "${TAG}conf" 2>&1 | tail -5)"
/usr/bin/python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
r = c["plugins"][0]["ipam"]["ranges"]
assert r == [[{"subnet": sys.argv[2], "gateway": sys.argv[3]}]], r
assert c["plugins"][0]["ipam"]["type"] == "tapway-ipam", c
assert c["plugins"][0]["socket"] == "/run/tapway/tapway.sock"
assert [p["type"] for p in c["plugins"]] == ["tapway", "portmap"]' "$CONF" "$SUBNET" "$GATEWAY" \
  || rt_die "conflist: $(cat "$CONF")"

# With the ConfigMap's cluster-cidr (uplinks: one L2), as the manifest passes it in the env.
mkdir -p "$WORK/conf-l2"
pm run "${CTR[@]}" --read-only -e TAPWAY_CLUSTER_CIDR=10.231.0.0/16 -v "$HOST/run/tapway:/run/tapway" \
  -v "$WORK/conf-l2:/host/etc/cni/net.d" --entrypoint /opt/tapway/install-cni.sh "$IMG" \
  --skip-binary --from-tapwayd --tapwayctl /usr/bin/tapwayctl --conf-dir /host/etc/cni/net.d >"$WORK/conf-l2.txt" 2>&1 \
  || rt_die "cni-conf with a cluster CIDR: $(cat "$WORK/conf-l2.txt")"
/usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["plugins"][0]["ipam"]["ranges"]
assert r == [[{"subnet": "10.231.0.0/16", "rangeStart": sys.argv[2] + ".2", "rangeEnd": sys.argv[2] + ".254", "gateway": sys.argv[2] + ".1"}]], r
' "$WORK/conf-l2/10-tapway.conflist" "$SUBNET_PREFIX" || rt_die "conflist with a cluster CIDR: $(cat "$WORK/conf-l2/10-tapway.conflist")"

rt_log "a pod made after tapwayd started, attached with tapwayctl from the image"
POD_A=${TAG}a POD_B=${TAG}b
ip netns add "$POD_A" && on_cleanup "ip netns del '$POD_A'"
pm run "${CTR[@]}" -v "$HOST/run/tapway:/run/tapway" --entrypoint /usr/bin/tapwayctl "$IMG" \
  attach --netns "/run/netns/$POD_A" --ip "$SUBNET_PREFIX.5/24" --gateway "$GATEWAY" >"$WORK/attach.txt" 2>&1 \
  || rt_die "tapwayctl attach from the image: $(cat "$WORK/attach.txt")"
ip netns exec "$POD_A" ping -c 2 -W 2 "$GATEWAY" >/dev/null || rt_die "pod a cannot ping the gateway $GATEWAY"
ip netns exec "$POD_A" ping -c 2 -W 2 "$SUBNET_PREFIX.200" >/dev/null || rt_die "pod a cannot ping the far end of the uplink"

rt_log "a pod through the installed plugin and the written conflist, exec'd on the host"
ip netns add "$POD_B" && on_cleanup "ip netns del '$POD_B'"
# The conflist's tapway entry as a runtime passes it, with the socket and the state where this
# test keeps them.
netconf() {
  /usr/bin/python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
p = c["plugins"][0]
p.update(cniVersion=c["cniVersion"], name=c["name"], socket=sys.argv[2], stateDir=sys.argv[3])
p["ipam"]["dataDir"] = sys.argv[4]
print(json.dumps(p))' "$CONF" "$SOCK" "$WORK/tapway-cni" "$WORK/ipam"
}
cni() {
  netconf | CNI_COMMAND=$1 CNI_CONTAINERID=${TAG}b CNI_NETNS=/run/netns/$POD_B CNI_IFNAME=eth0 \
    CNI_PATH=$HOST/opt/cni/bin "$HOST/opt/cni/bin/tapway"
}
cni ADD >"$WORK/add.json" 2>"$WORK/add.err" || rt_die "plugin ADD: $(cat "$WORK/add.json" "$WORK/add.err")"
IP_B=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])' <"$WORK/add.json")
ip netns exec "$POD_B" ping -c 2 -W 2 "$GATEWAY" >/dev/null || rt_die "pod b ($IP_B) cannot ping the gateway"
ip netns exec "$POD_B" ping -c 2 -W 2 "$SUBNET_PREFIX.5" >/dev/null || rt_die "pod b cannot ping pod a"
# (pod_ports lists the uplink too, without a netns.)
pods() { pod_ports | grep -c " /run/netns/" || true; }
[ "$(pods)" = 2 ] || rt_die "expected 2 pod ports: $(pod_ports)"
cni DEL >/dev/null 2>"$WORK/del.err" || rt_die "plugin DEL: $(cat "$WORK/del.err")"
[ "$(pods)" = 1 ] || rt_die "DEL left: $(pod_ports)"

# Every capability of the list is needed: without any one of them tapwayd with an uplink does
# not start (NET_ADMIN: the host port's TAP; NET_RAW: the AF_XDP socket; IPC_LOCK: the UMEM
# beyond RLIMIT_MEMLOCK; SYS_ADMIN: the XDP program, bpf(2)), and without SYS_ADMIN one
# without an uplink cannot attach a pod (setns).
without() { echo "$CAPS" | tr ',' '\n' | grep -vx "$1" | paste -sd,; }
i=0
for cap in $(echo "$CAPS" | tr ',' ' '); do
  i=$((i + 1))
  n=${TAG}x$i
  ip netns add "$n" && on_cleanup "ip netns del '$n'"
  ip link add "${TAG}v$i" netns "$n" type veth peer name "${TAG}w$i" netns "$FAR" || rt_die "veth $i"
  ip -n "$n" link set "${TAG}v$i" up
  ip -n "$FAR" link set "${TAG}w$i" up
  mkdir -p "$WORK/x$i/run" "$WORK/x$i/state"
  on_cleanup "pm rm -f -t 0 ${TAG}x$i"
  pm run -d --name "${TAG}x$i" --network "ns:/run/netns/$n" --cap-drop all --cap-add "$(without "$cap")" \
    -v /run/netns:/run/netns:rslave -v "$WORK/x$i/run:/run/tapway" -v "$WORK/x$i/state:/var/lib/tapway" \
    -v /dev/net/tun:/dev/net/tun -v /sys/fs/bpf:/sys/fs/bpf:rslave "$IMG" --pod-cidr "$SUBNET" \
    --uplink "${TAG}v$i" --xdp-mode generic >>"$WORK/podman.log" 2>&1 || rt_die "podman run without $cap"
  wait_until 30 eval "[ \"\$(pm inspect -f '{{.State.Running}}' ${TAG}x$i)\" = false ]" \
    || rt_die "tapwayd with an uplink runs without $cap: is it needed?"
  pm logs "${TAG}x$i" >"$WORK/x$i.txt" 2>&1 || true
  rt_log "without $cap: exit $(pm inspect -f '{{.State.ExitCode}}' "${TAG}x$i"), $(grep -v '^ *$' "$WORK/x$i.txt" | tail -1 | cut -c1-150)"
done

NOCAPS=$(without SYS_ADMIN)
NOSOCK=$WORK/nocap/run
mkdir -p "$NOSOCK" "$WORK/nocap/state"
ip netns add "${TAG}n2" && on_cleanup "ip netns del '${TAG}n2'"
pm run -d --name "${TAG}nocap" --network "ns:/run/netns/${TAG}n2" --cap-drop all --cap-add "$NOCAPS" \
  -v /run/netns:/run/netns:rslave -v "$NOSOCK:/run/tapway" -v "$WORK/nocap/state:/var/lib/tapway" \
  -v /dev/net/tun:/dev/net/tun "$IMG" --pod-cidr "$SUBNET" \
  >>"$WORK/podman.log" 2>&1 || rt_die "podman run tapwayd without SYS_ADMIN: $(tail -5 "$WORK/podman.log")"
wait_until 30 "$RT_BIN/tapwayctl" --socket "$NOSOCK/tapway.sock" status >/dev/null 2>&1 \
  || rt_die "tapwayd without SYS_ADMIN did not come up: $(pm logs "${TAG}nocap" 2>&1 | tail -5)"
if "$RT_BIN/tapwayctl" --socket "$NOSOCK/tapway.sock" attach --netns "/run/netns/$POD_A" --ifname eth9 \
  --ip "$SUBNET_PREFIX.9/24" >"$WORK/nocap.txt" 2>&1; then
  rt_die "attach worked without SYS_ADMIN: is it needed? $(cat "$WORK/nocap.txt")"
fi
rt_log "without SYS_ADMIN, no uplink: attach fails: $(tail -1 "$WORK/nocap.txt")"
pm rm -f -t 0 "${TAG}nocap" >>"$WORK/podman.log" 2>&1 || true

rt_log "SIGTERM: cni-conf (a shell as PID 1) and tapwayd from the image stop cleanly"
# Exit 0, not 137: the shell traps SIGTERM instead of waiting to be killed.
pm stop -t 20 "${TAG}conf" >>"$WORK/podman.log" 2>&1 || rt_die "podman stop cni-conf"
code=$(pm inspect -f '{{.State.ExitCode}}' "${TAG}conf")
[ "$code" = 0 ] || rt_die "cni-conf exited with $code on SIGTERM"
pm stop -t 20 "${TAG}d" >>"$WORK/podman.log" 2>&1 || rt_die "podman stop"
code=$(pm inspect -f '{{.State.ExitCode}}' "${TAG}d")
[ "$code" = 0 ] || rt_die "tapwayd exited with $code: $(pm logs "${TAG}d" 2>&1 | tail -5)"
pm logs "${TAG}d" >"$WORK/tapwayd.txt" 2>&1 || true
grep -q "stopping; pod interfaces stay" "$WORK/tapwayd.txt" || rt_die "no clean stop in the log: $(tail -5 "$WORK/tapwayd.txt")"
rt_log "PASS (image $IMG, capabilities $CAPS)"
