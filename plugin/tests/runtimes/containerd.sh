#!/usr/bin/env bash
# containerd 1.6's CRI plugin runs pods on a tapway network, driven through the CRI API
# (RunPodSandbox, CreateContainer, ExecSync, StopPodSandbox, RemovePodSandbox) exactly as the
# kubelet drives it; crictl is not in Debian 12, so cri.py (python3-grpcio) is the CRI client.
#   - each sandbox gets an address from host-local, and tapwayd a port owned by the sandbox ID
#     and labelled with the pod's namespace/name (from CNI_ARGS K8S_POD_*);
#   - containers in two pods reach each other (ping, HTTP over TCP) and the node's gateway
#     (tapway0), and the node reaches them, also through a hostPort (the reference portmap
#     plugin chained after tapway);
#   - StopPodSandbox removes the port and releases the address, RemovePodSandbox (a second DEL,
#     with CNI_NETNS="") succeeds, and nothing is left;
#   - with tapwayd stopped, RunPodSandbox fails with tapwayd's error and nothing stays behind.
#
# Isolation: containerd runs with its own config, root, state, gRPC/ttrpc sockets, CNI conf and
# bin dirs (all under one temp dir) inside a node netns of its own, where tapwayd and its gateway
# port live; pod netns are mounted under its state dir. The sandbox and container image is built
# here from busybox-static and imported with ctr (no registry). Everything is removed on exit,
# also on failure. Needs root, containerd, runc, python3-grpcio, busybox-static, and
# `cargo build --workspace`.
#
#   sudo plugin/tests/runtimes/containerd.sh
set -euo pipefail
# shellcheck source=plugin/tests/runtimes/lib.sh
source "$(dirname "$0")/lib.sh"

RT_NEED=(containerd ctr runc)
rt_init containerd twrc 78
/usr/bin/python3 -c 'import grpc' 2>/dev/null || rt_skip "python3-grpcio is missing"
CRI=$(dirname "$0")/cri.py
NET=${TAG}net
IMG=localhost/${TAG}img:latest
CSOCK=$WORK/containerd.sock

rt_start_node
rt_install_cni "$NET"

cat >"$WORK/config.toml" <<TOML
version = 2
root = "$WORK/root"
state = "$WORK/state"
temp = "$WORK/tmp"
plugin_dir = ""
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CSOCK"
[ttrpc]
  address = "$WORK/containerd.sock.ttrpc"
[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$IMG"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$WORK/cni-bin"
    conf_dir = "$WORK/cni-conf"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "runc"
        Root = "$WORK/runc"
TOML

# containerd 1.6 puts its shims' sockets in /run/containerd/s whatever the config says: remove
# the directory afterwards if this test made it (each shim removes its own socket on exit).
[ -e /run/containerd ] || on_cleanup "rm -rf /run/containerd"
nsenter --net="/run/netns/$NODE" containerd --config "$WORK/config.toml" --log-level info >"$WORK/containerd.log" 2>&1 &
CPID=$!
# Sandboxes first (their DELs release ports and addresses), then containerd and its shims.
on_cleanup "kill $CPID; sleep 0.5; kill -9 $CPID"
on_cleanup "for p in \$(/usr/bin/python3 '$CRI' '$CSOCK' podsandboxes); do /usr/bin/python3 '$CRI' '$CSOCK' stopp \$p; /usr/bin/python3 '$CRI' '$CSOCK' rmp \$p; done"
cri() { /usr/bin/python3 "$CRI" "$CSOCK" "$@" 2>>"$WORK/cri.log"; }
wait_until 30 cri version >/dev/null || rt_die "containerd's CRI did not answer on $CSOCK"
rt_log "containerd CRI: $(cri version), network $NET, subnet $SUBNET"

rt_log "building and importing the image from busybox-static"
rt_rootfs_tar "$WORK/layer.tar"
/usr/bin/python3 - "$WORK" "$IMG" <<'PY'
# A docker-archive (manifest.json, config, one layer) that `ctr images import` understands.
import hashlib, json, os, sys, tarfile
work, ref = sys.argv[1:]
layer = os.path.join(work, "layer.tar")
digest = hashlib.sha256(open(layer, "rb").read()).hexdigest()
config = {"architecture": "amd64", "os": "linux",
          "config": {"Cmd": ["/bin/sleep", "3600"], "Env": ["PATH=/bin"]},
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + digest]}}
cfg = json.dumps(config).encode()
cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
with open(os.path.join(work, cfg_name), "wb") as f:
    f.write(cfg)
with open(os.path.join(work, "manifest.json"), "w") as f:
    json.dump([{"Config": cfg_name, "RepoTags": [ref], "Layers": ["layer.tar"]}], f)
with tarfile.open(os.path.join(work, "image.tar"), "w") as t:
    for name in ("manifest.json", cfg_name, "layer.tar"):
        t.add(os.path.join(work, name), arcname=name)
PY
ctr --address "$CSOCK" -n k8s.io images import --snapshotter native "$WORK/image.tar" >>"$WORK/ctr.log" 2>&1 \
  || rt_die "ctr images import failed: $(tail -3 "$WORK/ctr.log")"

run_pod() {  # run_pod NAME [HOSTIP:HOSTPORT:CTRPORT] -> sets POD_ID, POD_IP, POD_NETNS, CTR_ID
  local name=$1 uid
  uid=$(cat /proc/sys/kernel/random/uuid)
  POD_ID=$(cri runp "$name" "$uid" "${TAG}ns" "${@:2}") || rt_die "RunPodSandbox $name: $(tail -3 "$WORK/cri.log")"
  local st
  st=$(cri inspectp "$POD_ID") || rt_die "PodSandboxStatus $name"
  POD_IP=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ip"])' "$st")
  POD_NETNS=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["netns"])' "$st")
  CTR_ID=$(cri create "$POD_ID" "${name}-c" "$IMG" "$name" "$uid" "${TAG}ns" /bin/sleep 600) \
    || rt_die "CreateContainer in $name: $(tail -3 "$WORK/cri.log")"
  cri start "$CTR_ID" || rt_die "StartContainer in $name: $(tail -3 "$WORK/cri.log")"
}
in_ctr() { cri exec "$1" 20 "${@:2}"; }

rt_log "RunPodSandbox ${TAG}a and ${TAG}b, a container in each"
run_pod "${TAG}a"; POD_A=$POD_ID IP_A=$POD_IP NETNS_A=$POD_NETNS CTR_A=$CTR_ID
run_pod "${TAG}b" "$GATEWAY:18080:8080"; POD_B=$POD_ID IP_B=$POD_IP CTR_B=$CTR_ID
rt_log "a=$IP_A ($NETNS_A) b=$IP_B"
case $IP_A in "$SUBNET_PREFIX".*) ;; *) rt_die "a got '$IP_A', not from $SUBNET" ;; esac
[ "$IP_A" != "$IP_B" ] || rt_die "both pods got $IP_A"
case $NETNS_A in "$WORK/state/"*) ;; *) rt_die "pod netns $NETNS_A is not under containerd's state dir" ;; esac

# tapwayd: one port per sandbox, owned by the sandbox ID, labelled with the pod's namespace,
# name, UID and infra (sandbox) container ID from CNI_ARGS.
tctl --json ports >"$WORK/ports.json"
/usr/bin/python3 - "$WORK/ports.json" "$POD_A" "$IP_A" "${TAG}a" "${TAG}ns" <<'PY' || rt_die "tapwayd's ports: $(cat "$WORK/ports.json")"
import json, sys
ports, cid, ip, name, ns = json.load(open(sys.argv[1])), *sys.argv[2:]
pods = [p for p in ports if p["kind"] != "host"]
assert len(pods) == 2, "expected 2 pod ports, got %d" % len(pods)
[p] = [p for p in pods if p["owner"].get("container_id") == cid]
assert p["ips"] == [ip + "/24"], p["ips"]
assert p["owner"].get("pod_name") == name and p["owner"].get("pod_namespace") == ns, p["owner"]
assert p["owner"].get("pod_uid"), p["owner"]
assert p["owner"].get("pod_infra_container_id") == cid, p["owner"]
PY
[ "$(reservations "$NET" | tr '\n' ' ')" = "$(printf '%s\n' "$IP_A" "$IP_B" | sort | tr '\n' ' ')" ] \
  || rt_die "host-local reservations: $(reservations "$NET" | tr '\n' ' ')"

rt_log "traffic: a→b, b→a, a→gateway, node→a, HTTP a→b, node→b through the host port"
in_ctr "$CTR_A" ip -4 addr show eth0 | grep -q "inet $IP_A/24" || rt_die "a's eth0 lacks $IP_A"
in_ctr "$CTR_A" ping -c 2 -W 2 "$IP_B" >/dev/null || rt_die "a cannot ping b"
in_ctr "$CTR_B" ping -c 2 -W 2 "$IP_A" >/dev/null || rt_die "b cannot ping a"
in_ctr "$CTR_A" ping -c 2 -W 2 "$GATEWAY" >/dev/null || rt_die "a cannot ping the gateway (tapway0)"
in_node ping -c 2 -W 2 "$IP_A" >/dev/null || rt_die "the node cannot ping a"
in_ctr "$CTR_B" httpd -p 8080 -h /www || rt_die "httpd in b"
http_get() {
  in_ctr "$CTR_A" sh -c "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $IP_B 8080" >"$WORK/http.txt" 2>&1 \
    && grep -q "hello from tapway" "$WORK/http.txt"
}
wait_until 10 http_get || rt_die "a cannot fetch http://$IP_B:8080/ from b: $(cat "$WORK/http.txt")"
# The hostPort went to portmap as runtimeConfig.portMappings (containerd capitalises the keys):
# the node reaches b's 8080 on its port 18080.
printf 'GET /index.html HTTP/1.0\r\n\r\n' | in_node timeout 5 /bin/busybox nc -w 2 "$GATEWAY" 18080 >"$WORK/http-hostport.txt" 2>&1 || true
grep -q "hello from tapway" "$WORK/http-hostport.txt" \
  || rt_die "the node cannot reach b through the host port $GATEWAY:18080 (portmap): $(cat "$WORK/http-hostport.txt")"

rt_log "StopPodSandbox a: its port goes, its address is released; RemovePodSandbox a"
cri stopp "$POD_A" || rt_die "StopPodSandbox a: $(tail -3 "$WORK/cri.log")"
pod_ports >"$WORK/ports.txt"
grep -q "^$POD_A " "$WORK/ports.txt" && rt_die "a's port is still there after StopPodSandbox"
grep -q "^$POD_B " "$WORK/ports.txt" || rt_die "b's port went with a's"
[ "$(reservations "$NET" | tr '\n' ' ')" = "$IP_B " ] || rt_die "after stop a, reservations: $(reservations "$NET" | tr '\n' ' ')"
cri rmp "$POD_A" || rt_die "RemovePodSandbox a (its DEL has CNI_NETNS=\"\"): $(tail -3 "$WORK/cri.log")"
[ ! -e "$NETNS_A" ] || rt_die "a's netns $NETNS_A is still there"

rt_log "RemovePodSandbox b without a stop first"
cri rmp "$POD_B" 2>/dev/null || { cri stopp "$POD_B" && cri rmp "$POD_B"; } || rt_die "removing b"
[ -z "$(pod_ports)" ] || rt_die "ports left: $(pod_ports)"
[ -z "$(reservations "$NET")" ] || rt_die "reservations left: $(reservations "$NET" | tr '\n' ' ')"
[ -z "$(cri podsandboxes)" ] || rt_die "sandboxes left: $(cri podsandboxes)"
# containerd sent DEL on stop and again on remove (the second one without a netns).
n=$(grep -c "DEL $POD_A/eth0: IPAM host-local released" "$WORK/cni.log" || true)
[ "$n" -ge 2 ] || rt_die "expected 2 DELs of a (StopPodSandbox, RemovePodSandbox), the plugin log has $n"

rt_log "tapwayd stopped: RunPodSandbox fails with tapwayd's error and leaves nothing behind"
rt_stop_tapwayd
if cri runp "${TAG}d" "$(cat /proc/sys/kernel/random/uuid)" "${TAG}ns" >/dev/null; then
  rt_die "RunPodSandbox succeeded with tapwayd stopped"
fi
rt_log "containerd: $(tail -1 "$WORK/cri.log")"
tail -1 "$WORK/cri.log" | grep -q "tapwayd" || rt_die "containerd's error does not name tapwayd: $(tail -1 "$WORK/cri.log")"
[ -z "$(reservations "$NET")" ] || rt_die "the failed ADD left reservations: $(reservations "$NET" | tr '\n' ' ')"
[ -z "$(cri podsandboxes)" ] || rt_die "a failed sandbox is listed: $(cri podsandboxes)"
rt_log "PASS (a=$IP_A b=$IP_B)"
