# shellcheck shell=bash
# Shared helpers of the tapway benchmark scripts (bench/tcp.sh, bench/cni-latency.sh).
# Sourced, not run. Everything a script creates is registered here and removed by one EXIT trap,
# also on failure and on Ctrl-C. Nothing outside the namespaces and the work directory that the
# script created is touched: no host interface, no host route, no host sysctl.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
BIN=${TAPWAY_BIN_DIR:-$REPO_DIR/target/release}  # TAPWAY_BIN_DIR: compare other builds (with --no-build)
CNI_BIN=/usr/lib/cni

# Unique per run: every namespace, bridge and file name carries it (used by the scripts).
# shellcheck disable=SC2034
TAG=twb$$
WORK=
ATTACH_MODE=          # plugin | tapwayctl, decided by pick_attach_mode
DAEMON_PIDS=()        # tapwayd (and other background daemons) to stop
BG_PIDS=()            # other background processes (iperf3 servers)
NETNS_CREATED=()      # every netns created, deleted last
CLEANUP_CMDS=()       # extra commands (CNI DEL ...), run in reverse order before the kills

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The running script's header comment, which is its usage text (the start of every --help).
script_header() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# Checks the options of the same name several scripts take: --repeat N and --poll-mode MODE
# (REPEAT and POLL are the calling script's).
# shellcheck disable=SC2153
check_repeat_and_poll() {
  [[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "--repeat takes a number >= 1"
  case $POLL in adaptive | busy) ;; *) die "--poll-mode takes adaptive or busy" ;; esac
}

# Registers a command string to run at cleanup (evaluated; run in reverse order).
on_cleanup() { CLEANUP_CMDS+=("$1"); }

cleanup() {
  local rc=$? i pid ns
  trap - EXIT INT TERM
  set +e
  for ((i = ${#CLEANUP_CMDS[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUP_CMDS[$i]}" >/dev/null 2>&1
  done
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${BG_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for pid in "${DAEMON_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${DAEMON_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for ((i = ${#NETNS_CREATED[@]} - 1; i >= 0; i--)); do
    ns=${NETNS_CREATED[$i]}
    ip netns del "$ns" 2>/dev/null
  done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ -n "${KEEP_WORK:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}

install_traps() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

need_root() {
  [ "$(id -u)" -eq 0 ] || die "this benchmark creates network namespaces: run it as root"
}

# Installs the Debian packages whose commands are missing (apt-get only when something is).
ensure_tools() {
  local need=() pair cmd pkg
  for pair in ip:iproute2 iperf3:iperf3 socat:socat python3:python3 ping:iputils-ping; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
  done
  { [ -x "$CNI_BIN/bridge" ] && [ -x "$CNI_BIN/host-local" ]; } || need+=(containernetworking-plugins)
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install -y ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  modprobe tun 2>/dev/null || true
  [ -c /dev/net/tun ] || die "tapwayd needs /dev/net/tun (the tun module)"
  command -v cargo >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo" ] ||
    die "cargo not found: run scripts/deps.sh (installs Rust with rustup) or install Rust first"
  command -v cargo >/dev/null 2>&1 || PATH=$HOME/.cargo/bin:$PATH
}

# Builds the release binaries. The plugin crate may be unfinished: then only the switch is
# required, and pods are attached with tapwayctl.
build_release() {
  if [ -n "${NO_BUILD:-}" ]; then
    log "skipping cargo build (--no-build)"
  else
    log "cargo build --release -p tapway-switch -p tapway-cni"
    if ! (cd "$REPO_DIR" && cargo build --release --quiet -p tapway-switch -p tapway-cni); then
      warn "building the CNI plugin failed; building the switch alone"
      (cd "$REPO_DIR" && cargo build --release --quiet -p tapway-switch) || die "cargo build failed"
    fi
  fi
  if [ ! -x "$BIN/tapwayd" ] || [ ! -x "$BIN/tapwayctl" ]; then die "no tapwayd/tapwayctl in $BIN"; fi
}

# True when target/release/tapway answers CNI VERSION with a JSON that lists 1.0.0.
plugin_works() {
  local out
  [ -x "$BIN/tapway" ] || return 1
  out=$(printf '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION timeout 5 "$BIN/tapway" 2>/dev/null) || return 1
  python3 -c 'import json,sys; sys.exit(0 if "1.0.0" in json.loads(sys.argv[1]).get("supportedVersions", []) else 1)' "$out" 2>/dev/null
}

# Sets ATTACH_MODE from $1 (auto | plugin | tapwayctl).
pick_attach_mode() {
  case $1 in
    auto) if plugin_works; then ATTACH_MODE=plugin; else ATTACH_MODE=tapwayctl; fi ;;
    plugin) plugin_works || die "--attach plugin: $BIN/tapway does not answer CNI VERSION"; ATTACH_MODE=plugin ;;
    tapwayctl) ATTACH_MODE=tapwayctl ;;
    *) die "--attach takes auto, plugin or tapwayctl" ;;
  esac
  if [ "$ATTACH_MODE" = plugin ]; then
    log "tapway pods are attached through the CNI plugin $BIN/tapway (as a runtime would)"
  else
    warn "tapway pods are attached with 'tapwayctl attach' (the CNI plugin is not usable); the datapath measured is the same"
  fi
}

make_workdir() {
  WORK=$(mktemp -d "/tmp/tapway-bench-$$.XXXXXX")
  chmod 700 "$WORK"
}

# new_netns NAME: creates it, registers it for deletion, brings lo up.
new_netns() {
  ip netns add "$1" || die "ip netns add $1 failed"
  NETNS_CREATED+=("$1")
  ip -n "$1" link set lo up
}

# start_tapwayd NODE SOCK STATEDIR CIDR CORES POLLMODE: runs tapwayd inside netns NODE and
# waits for its control socket. Sets TAPWAYD_PID.
start_tapwayd() {
  local node=$1 sock=$2 state=$3 cidr=$4 cores=$5 poll=$6 args
  args=(--socket "$sock" --state-dir "$state" --pod-cidr "$cidr" --poll-mode "$poll" --log-level warn)
  [ -n "$cores" ] && args+=(--cores "$cores")
  # Extra flags for this one tapwayd (e.g. --metrics-address), from the caller's TAPWAYD_EXTRA.
  args+=(${TAPWAYD_EXTRA:-})
  log "tapwayd in netns $node: ${args[*]}"
  ip netns exec "$node" "$BIN/tapwayd" "${args[@]}" >"$WORK/tapwayd-$node.log" 2>&1 &
  TAPWAYD_PID=$!
  DAEMON_PIDS+=("$TAPWAYD_PID")
  for _ in $(seq 100); do
    if "$BIN/tapwayctl" --socket "$sock" status >/dev/null 2>&1; then return 0; fi
    kill -0 "$TAPWAYD_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/tapwayd-$node.log" >&2
  die "tapwayd did not come up on $sock"
}

# The netconf of the tapway network. tapway_netconf SOCK SUBNET GATEWAY
tapway_netconf() {
  cat <<JSON
{"cniVersion":"1.0.0","name":"benchnet","type":"tapway","socket":"$1","stateDir":"$WORK/tapway-cni",
 "ipam":{"type":"host-local","ranges":[[{"subnet":"$2","gateway":"$3"}]],
         "routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$WORK/ipam-tapway"}}
JSON
}

# The netconf of the reference bridge network. bridge_netconf BRIDGE SUBNET GATEWAY
bridge_netconf() {
  cat <<JSON
{"cniVersion":"1.0.0","name":"benchbr","type":"bridge","bridge":"$1","isGateway":true,"ipMasq":false,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"$2","gateway":"$3"}]],
         "routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$WORK/ipam-bridge"}}
JSON
}

# cni_exec RUNNER_NETNS PLUGIN COMMAND CONTAINERID POD_NETNS NETCONF: execs a CNI plugin the
# way libcni does. RUNNER_NETNS empty = in this netns; otherwise the plugin runs inside that
# netns (the "node"), so the bridge and host-side veths are created there, not on the host.
cni_exec() {
  local runner=$1 plugin=$2 cmd=$3 cid=$4 podns=$5 conf=$6 pre=()
  [ -n "$runner" ] && pre=(ip netns exec "$runner")
  printf '%s' "$conf" | "${pre[@]}" env CNI_COMMAND="$cmd" CNI_CONTAINERID="$cid" \
    CNI_NETNS="/run/netns/$podns" CNI_IFNAME=eth0 CNI_PATH="$CNI_BIN:$BIN" "$plugin"
}

# First IPv4 address (without prefix) from a CNI result on stdin.
result_ipv4() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
for ip in r.get("ips", []):
    a = ip["address"].split("/")[0]
    if ":" not in a:
        print(a); break
else:
    sys.exit("no IPv4 address in the CNI result")'
}

# Address of eth0 in a netns (for pods attached with tapwayctl).
netns_ipv4() {
  ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1 | head -n1
}

# attach_tapway_pods SOCK CONF_VAR GW PREFIX POD...: creates each pod netns and attaches it to
# the tapwayd on SOCK, through the tapway CNI plugin (ATTACH_MODE=plugin, netconf in the variable
# named CONF_VAR) or with tapwayctl at PREFIX.2, PREFIX.3, ...; their addresses go to T_IPS.
attach_tapway_pods() {
  local sock=$1 confvar=$2 gw=$3 prefix=$4 i=2 p ip_
  shift 4
  T_IPS=()
  for p in "$@"; do
    new_netns "$p"
    if [ "$ATTACH_MODE" = plugin ]; then
      on_cleanup "cni_exec '' '$BIN/tapway' DEL '$p' '$p' \"\$$confvar\""
      ip_=$(cni_exec "" "$BIN/tapway" ADD "$p" "$p" "${!confvar}" | result_ipv4) ||
        die "CNI ADD of $p through the tapway plugin failed"
      T_IPS+=("$ip_")
    else
      on_cleanup "'$BIN/tapwayctl' --socket '$sock' detach --netns /run/netns/$p --ifname eth0"
      "$BIN/tapwayctl" --socket "$sock" attach --netns "/run/netns/$p" --ifname eth0 \
        --ip "$prefix.$i/24" --gateway "$gw" >/dev/null || die "tapwayctl attach $p failed"
      T_IPS+=("$(netns_ipv4 "$p")")
    fi
    i=$((i + 1))
  done
}

# attach_bridge_pods NODE CONF_VAR POD...: creates each pod netns and attaches it with the
# reference bridge plugin run inside netns NODE (netconf in the variable named CONF_VAR); their
# addresses go to B_IPS.
attach_bridge_pods() {
  local node=$1 confvar=$2 p ip_
  shift 2
  B_IPS=()
  for p in "$@"; do
    new_netns "$p"
    on_cleanup "cni_exec '$node' '$CNI_BIN/bridge' DEL '$p' '$p' \"\$$confvar\""
    ip_=$(cni_exec "$node" "$CNI_BIN/bridge" ADD "$p" "$p" "${!confvar}" | result_ipv4) ||
      die "CNI ADD of $p through the bridge plugin failed"
    B_IPS+=("$ip_")
  done
}

# no_gso POD...: turns TSO/GSO off on eth0 of each pod (ethtool installed on demand).
no_gso() {
  command -v ethtool >/dev/null 2>&1 || { log "apt-get install -y ethtool"; apt-get install -y -qq ethtool >/dev/null; }
  local p
  for p in "$@"; do
    ip netns exec "$p" ethtool -K eth0 tso off gso off >/dev/null 2>&1 || die "ethtool -K eth0 tso off gso off failed in $p"
  done
}

# start_iperf3_server NETNS IP: iperf3 -s in NETNS on IP:5201, waited for.
start_iperf3_server() {
  ip netns exec "$1" iperf3 -s -B "$2" >"$WORK/iperf3-server-$1.log" 2>&1 &
  BG_PIDS+=("$!")
  for _ in $(seq 50); do
    [ -n "$(ip netns exec "$1" ss -ltnH 'sport = :5201')" ] && return 0
    sleep 0.1
  done
  die "iperf3 server in $1 did not start"
}

# ping_check NETNS DST: fails loudly when DST is unreachable from NETNS.
ping_check() {
  ip netns exec "$1" ping -c 2 -i 0.2 -W 2 "$2" >/dev/null 2>&1 || die "no ping from $1 to $2"
}

# Warns when the machine is busy (load average, a compiler running): the numbers would be noisy.
check_quiet() {
  local load busy=
  load=$(cut -d' ' -f1 /proc/loadavg)
  pgrep -x rustc >/dev/null 2>&1 && busy=" (rustc is running)"
  if [ -n "$busy" ] || python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 1.0 else 1)' "$load"; then
    warn "the machine is busy: load average $load$busy; other work shares the cores and skews both topologies"
  fi
  LOAD_AT_START=$load
}

machine_summary() {
  local model cores
  model=$(lscpu 2>/dev/null | awk -F: '/^Model name/ {gsub(/^[ \t]+/, "", $2); print $2; exit}')
  cores=$(nproc)
  printf '%s, %s CPUs, kernel %s, load average %s at start' "${model:-unknown CPU}" "$cores" "$(uname -r)" "${LOAD_AT_START:-?}"
}
