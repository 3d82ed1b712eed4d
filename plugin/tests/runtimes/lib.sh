# Shared by the runtime tests (podman.sh, containerd.sh): a "node" network namespace running
# its own tapwayd, a private CNI bin dir and config dir, a busybox image built from the
# busybox-static Debian package, and cleanup that runs on exit, failure or Ctrl-C.
#
# Nothing here touches the machine's own network: the runtime itself runs inside the node netns
# (nsenter --net, so mounts stay visible to later commands), tapwayd's host port tapway0 with the
# gateway address lives there, and every pod netns is made by the runtime. Every name carries
# the test's prefix and pid.
#
# Environment: TAPWAY_BIN_DIR (the built binaries, default target/debug), RT_CNI_VERSION (the
# conflist's cniVersion, default 1.0.0; 1.1.0 shows what the runtime makes of it),
# TAPWAY_IT_REQUIRE=1 (a missing prerequisite fails instead of skipping).
# shellcheck shell=bash

RT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
RT_BIN=${TAPWAY_BIN_DIR:-$RT_ROOT/target/debug}
RT_CLEANUP=()
RT_FAILED=0

rt_log() { printf '[%s %s] %s\n' "$RT_NAME" "$(date +%T)" "$*" >&2; }
rt_die() { rt_log "FAIL: $*"; RT_FAILED=1; exit 1; }

# rt_skip WHY: a missing prerequisite. Fails under TAPWAY_IT_REQUIRE=1 (scripts/test.sh as root).
rt_skip() {
  if [ "${TAPWAY_IT_REQUIRE:-}" = 1 ]; then rt_die "cannot run: $1 (TAPWAY_IT_REQUIRE=1)"; fi
  echo "SKIP: $RT_NAME: $1"
  exit 0
}

# on_cleanup CMD…: run CMD (a string, eval'd) at exit, last registered first.
on_cleanup() { RT_CLEANUP+=("$*"); }

rt_cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  [ $rc -ne 0 ] && RT_FAILED=1
  if [ "$RT_FAILED" = 1 ] && [ -n "${WORK:-}" ]; then
    for f in "$WORK"/*.log; do
      [ -s "$f" ] || continue
      echo "---- tail of $f" >&2
      tail -n 30 "$f" >&2
    done
  fi
  for ((i = ${#RT_CLEANUP[@]} - 1; i >= 0; i--)); do
    eval "${RT_CLEANUP[$i]}" >/dev/null 2>&1 || true
  done
  exit $rc
}

rt_init() {
  RT_NAME=$1
  TAG=$2$$
  [ "$(id -u)" -eq 0 ] || rt_skip "not root"
  for c in ip nsenter iptables "${RT_NEED[@]}"; do
    command -v "$c" >/dev/null 2>&1 || rt_skip "$c is missing (scripts/deps.sh installs it)"
  done
  [ -x /usr/lib/cni/host-local ] || rt_skip "/usr/lib/cni/host-local is missing"
  dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
    || rt_skip "busybox-static is missing (the image needs a static busybox)"
  for b in tapway tapwayd tapwayctl; do
    [ -x "$RT_BIN/$b" ] || rt_skip "$RT_BIN/$b is missing: cargo build --workspace first"
  done
  trap rt_cleanup EXIT
  trap 'exit 130' INT TERM
  WORK=$(mktemp -d "/tmp/$TAG.XXXXXX")
  # Unmount anything the runtime left under the work dir before removing it.
  on_cleanup "rm -rf --one-file-system '$WORK'"
  on_cleanup "findmnt -rn -o TARGET | grep '^$WORK/' | sort -r | xargs -r -n1 umount -l"
  # A /24 of the 10/8 unique to this run (the node netns is private anyway). GATEWAY is
  # tapwayd's address on tapway0, used by the tests that source this file.
  SUBNET_PREFIX="10.$3.$(($$ % 250 + 1))"
  SUBNET="$SUBNET_PREFIX.0/24"
  # shellcheck disable=SC2034
  GATEWAY="$SUBNET_PREFIX.1"
  NODE=${TAG}n
  SOCK=$WORK/run/tapway.sock
  mkdir -p "$WORK/run" "$WORK/cni-bin" "$WORK/cni-conf"
}

# Starts tapwayd in a fresh node netns.
rt_start_node() {
  ip netns add "$NODE" || rt_die "ip netns add $NODE"
  on_cleanup "ip netns del '$NODE'"
  ip -n "$NODE" link set lo up
  # nsenter, not `ip netns exec`: tapwayd must share the runtime's mount namespace to see the
  # pod netns bind mounts it makes later (containerd puts them under its state dir).
  # (Not through the in_node function: $! must be tapwayd's own pid.)
  nsenter --net="/run/netns/$NODE" "$RT_BIN/tapwayd" --socket "$SOCK" --state-dir "$WORK/tapwayd-state" \
    --pod-cidr "$SUBNET" --poll-mode adaptive --log-level info >"$WORK/tapwayd.log" 2>&1 &
  local pid=$!
  TAPWAYD_PID=$pid
  on_cleanup "kill $pid; sleep 0.3; kill -9 $pid"
  for _ in $(seq 100); do
    tctl status >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rt_die "tapwayd did not come up"
}

# Stops tapwayd (SIGTERM) and waits for it to exit.
rt_stop_tapwayd() {
  kill "$TAPWAYD_PID" 2>/dev/null || true
  wait_until 10 eval "! kill -0 $TAPWAYD_PID 2>/dev/null" || rt_die "tapwayd did not stop"
}

tctl() { "$RT_BIN/tapwayctl" --socket "$SOCK" "$@"; }

# Runs a command inside the node netns without a new mount namespace.
in_node() { nsenter --net="/run/netns/$NODE" "$@"; }

# rt_install_cni NETWORK: installs the plugin and the tapway network's conflist the way users do,
# with plugin/install-cni.sh (tapway with host-local, then the reference portmap for hostPort),
# into private dirs: the plugin in $WORK/cni-bin next to links to the reference plugins, the
# conflist as $WORK/cni-conf/10-NETWORK.conflist, every state and log path under $WORK.
rt_install_cni() {
  local net=$1
  for p in host-local portmap tuning loopback; do
    ln -s "/usr/lib/cni/$p" "$WORK/cni-bin/$p"
  done
  sh "$RT_ROOT/plugin/install-cni.sh" --binary "$RT_BIN/tapway" --bin-dir "$WORK/cni-bin" \
    --conf-dir "$WORK/cni-conf" --name "$net" --subnet "$SUBNET" --socket "$SOCK" --portmap \
    --cni-version "${RT_CNI_VERSION:-1.0.0}" \
    --state-dir "$WORK/tapway-cni" --ipam-data-dir "$WORK/ipam" --log-file "$WORK/cni.log" \
    --log-level info >/dev/null || rt_die "install-cni.sh failed"
  [ -f "$WORK/cni-conf/10-$net.conflist" ] || rt_die "install-cni.sh wrote no 10-$net.conflist"
}
# podman's storage in $WORK (vfs), and $WORK/containers.conf (written by the caller) in force.
# podman 4.3 keeps its blob-info cache in /var/lib/containers/cache whatever the storage root:
# it is removed afterwards if this test made it.
rt_podman_storage() {
  cat >"$WORK/storage.conf" <<TOML
[storage]
driver = "vfs"
graphroot = "$WORK/storage"
runroot = "$WORK/runroot"
TOML
  [ -e /var/lib/containers ] || on_cleanup "rm -rf /var/lib/containers"
  export CONTAINERS_CONF=$WORK/containers.conf CONTAINERS_STORAGE_CONF=$WORK/storage.conf
}


# rt_rootfs_tar FILE: a rootfs with busybox-static and its applets, as a tar.
rt_rootfs_tar() {
  local r=$WORK/rootfs
  mkdir -p "$r/bin" "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/www"
  cp /bin/busybox "$r/bin/busybox"
  for a in sh sleep ping ip nc httpd cat echo ls hostname; do ln -s busybox "$r/bin/$a"; done
  echo "root:x:0:0:root:/:/bin/sh" >"$r/etc/passwd"
  echo "root:x:0:" >"$r/etc/group"
  echo "hello from tapway" >"$r/www/index.html"
  tar -C "$r" --owner=0 --group=0 -cf "$1" .
}

# Host-local's reservations of NETWORK (one file per address).
reservations() {
  find "$WORK/ipam/$1" -maxdepth 1 -type f ! -name lock ! -name 'last_reserved_ip*' -printf '%f\n' 2>/dev/null | sort
}

# Pod ports tapwayd has (excluding the host port), as "ifname netns" lines.
pod_ports() { tctl --json ports | /usr/bin/python3 -c '
import json,sys
for p in json.load(sys.stdin):
    if p.get("kind") != "host":
        o = p.get("owner") or {}
        print(o.get("container_id"), p.get("netns"), " ".join(p.get("ips") or []))'; }

# wait_until SECONDS CMD…: retries CMD until it succeeds.
wait_until() {
  local t=$1; shift
  for _ in $(seq $((t * 5))); do "$@" && return 0; sleep 0.2; done
  return 1
}
