#!/bin/sh
# Installs the tapway CNI plugin: copies the binary (and tapway-ipam, found beside it) into the
# CNI bin dir and writes a conflist into the CNI config dir. `--dry-run` prints what it would do and changes nothing.
#
#   plugin/install-cni.sh --subnet 10.244.1.0/24 [--dry-run]
#   plugin/install-cni.sh --from-tapwayd [--keep-running]     # the range tapwayd reports
#
# Options (defaults in brackets):
#   --binary PATH       the built plugin [target/release/tapway, else target/debug/tapway]
#   --bin-dir DIR       CNI bin dir [/opt/cni/bin]
#   --conf-dir DIR      CNI config dir [/etc/cni/net.d]
#   --name NAME         network name [tapway]
#   --subnet CIDR       the node's pod range, as tapwayd's --pod-cidr; repeat it for dual-stack
#                       (one IPv4 and one IPv6 range)
#   --from-tapwayd      take the ranges from tapwayd's status (`tapwayctl --json status` on
#                       --socket) instead of --subnet, waiting until tapwayd answers and has one
#                       (it learns them from the Node's spec.podCIDRs in a cluster)
#   --tapwayctl PATH    tapwayctl for --from-tapwayd [tapwayctl in PATH, else target/*/tapwayctl]
#   --keep-running      with --from-tapwayd: stay, and rewrite the conflist whenever the range
#                       tapwayd reports changes (checked every --interval seconds) [no]
#   --interval N        seconds between status checks [10]
#   --gateway IP        gateway of the IPv4 range [first address of the subnet, where tapwayd
#                       puts it]; IPv6 ranges get host-local's default, network + 1, which is
#                       tapwayd's gateway too
#   --cluster-cidr CIDR the cluster's IPv4 pod network when nodes share one L2 over AF_XDP
#                       uplinks: pods then get addresses of the node's range with the cluster's
#                       prefix (`subnet` the cluster CIDR, `rangeStart`/`rangeEnd` the node's
#                       range, docs/uplink.md) [$TAPWAY_CLUSTER_CIDR, else none]
#   --socket PATH       tapwayd's control socket [/run/tapway/tapway.sock]
#   --cni-version V     cniVersion of the conflist [1.0.0; 1.1.0 needs libcni >= 1.2 in the runtime]
#   --mtu N             pod MTU [tapwayd's default]
#   --portmap           append the reference portmap plugin (hostPort support)
#   --bandwidth         accepted for old command lines: tapway takes the bandwidth capability
#                       itself (tapwayd polices the pod's port), no extra plugin is needed
#   --priority N        file name prefix, lower sorts first [10]
#   --state-dir DIR     the plugin's state dir (`stateDir`) [the plugin's /var/lib/tapway/cni]
#   --ipam TYPE         the conflist's IPAM: host-local (exec'd per pod) or tapway-ipam (tapwayd
#                       allocates in the attach itself, no exec) [host-local]
#   --ipam-data-dir DIR host-local's reservations (`ipam.dataDir`) [host-local's /var/lib/cni/networks]
#   --log-file FILE     also log to FILE (`logFile`), at --log-level (error|warn|info|debug) [warn]
#   --skip-binary       write the conflist only
#   --skip-conf         install the binary only (no range needed)
#   --dry-run           print the actions and the conflist only
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
binary=""
bin_dir=/opt/cni/bin
conf_dir=/etc/cni/net.d
name=tapway
subnets=""
gateway=""
from_tapwayd=0
tapwayctl=""
keep_running=0
interval=10
skip_binary=0
skip_conf=0
cluster_cidr=${TAPWAY_CLUSTER_CIDR:-}
socket=/run/tapway/tapway.sock
cni_version=1.0.0
mtu=""
portmap=0
bandwidth=0
priority=10
state_dir=""
ipam_type=host-local
ipam_data_dir=""
log_file=""
log_level=""
dry_run=0

die() { echo "install-cni: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) need "$@"; binary=$2; shift 2 ;;
        --bin-dir) need "$@"; bin_dir=$2; shift 2 ;;
        --conf-dir) need "$@"; conf_dir=$2; shift 2 ;;
        --name) need "$@"; name=$2; shift 2 ;;
        --subnet) need "$@"; subnets="$subnets $2"; shift 2 ;;
        --from-tapwayd) from_tapwayd=1; shift ;;
        --tapwayctl) need "$@"; tapwayctl=$2; shift 2 ;;
        --keep-running) keep_running=1; shift ;;
        --interval) need "$@"; interval=$2; shift 2 ;;
        --skip-binary) skip_binary=1; shift ;;
        --skip-conf) skip_conf=1; shift ;;
        --gateway) need "$@"; gateway=$2; shift 2 ;;
        --cluster-cidr) need "$@"; cluster_cidr=$2; shift 2 ;;
        --socket) need "$@"; socket=$2; shift 2 ;;
        --cni-version) need "$@"; cni_version=$2; shift 2 ;;
        --mtu) need "$@"; mtu=$2; shift 2 ;;
        --portmap) portmap=1; shift ;;
        --bandwidth) bandwidth=1; shift ;;
        --priority) need "$@"; priority=$2; shift 2 ;;
        --state-dir) need "$@"; state_dir=$2; shift 2 ;;
        --ipam) need "$@"; ipam_type=$2; shift 2 ;;
        --ipam-data-dir) need "$@"; ipam_data_dir=$2; shift 2 ;;
        --log-file) need "$@"; log_file=$2; shift 2 ;;
        --log-level) need "$@"; log_level=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

case "$name" in *[!A-Za-z0-9_.-]*|"") die "--name $name: use letters, digits, _ . -" ;; esac
case "$mtu" in *[!0-9]*) die "--mtu $mtu is not a number" ;; esac
case "$interval" in ""|*[!0-9]*) die "--interval $interval is not a number" ;; esac
case "$log_level" in ""|error|warn|info|debug) ;; *) die "--log-level $log_level: error, warn, info or debug" ;; esac
case "$ipam_type" in host-local|tapway-ipam) ;; *) die "--ipam $ipam_type: host-local or tapway-ipam" ;; esac
for p in "$state_dir" "$ipam_data_dir" "$log_file"; do
    case "$p" in ""|/*) ;; *) die "$p: use an absolute path" ;; esac
    case "$p" in *[\\\"]*) die "$p: no quotes or backslashes" ;; esac
done
case "$cni_version" in 0.3.0|0.3.1|0.4.0|1.0.0|1.1.0) ;; *) die "--cni-version $cni_version is not supported" ;; esac
[ "$skip_binary" = 1 ] && [ "$skip_conf" = 1 ] && die "--skip-binary and --skip-conf leave nothing to do"
if [ "$skip_conf" = 0 ]; then
    if [ "$from_tapwayd" = 1 ]; then
        [ -z "$subnets" ] || die "--from-tapwayd and --subnet exclude each other"
    else
        [ -n "$subnets" ] || die "--subnet is required (the node's pod range, as given to tapwayd --pod-cidr), or --from-tapwayd"
        [ "$keep_running" = 0 ] || die "--keep-running needs --from-tapwayd"
    fi
fi

if [ "$skip_binary" = 0 ]; then
    if [ -z "$binary" ]; then
        for b in "$here/target/release/tapway" "$here/target/debug/tapway"; do
            if [ -x "$b" ]; then binary=$b; break; fi
        done
    fi
    [ -n "$binary" ] && [ -x "$binary" ] || die "no built plugin found; run cargo build --release -p tapway-cni or pass --binary"
fi

# The ranges tapwayd reports (`pod_cidrs` array or `pod_cidr` string of its JSON status), one
# per line; nothing while tapwayd is unreachable or has no range yet.
tapwayd_ranges() {
    "$tapwayctl" --socket "$socket" --json status 2>/dev/null | awk '
        /"pod_cidrs": *\[/ { inlist = 1 }
        inlist || /"pod_cidr": *"/ {
            line = $0; sub(/^ *"[a-z_]+": */, "", line)
            while (match(line, /"[^"]*\/[0-9]+"/)) { print substr(line, RSTART + 1, RLENGTH - 2); line = substr(line, RSTART + RLENGTH) }
        }
        inlist && /\]/ { inlist = 0 }' | awk '!seen[$0]++'
}

# IPv4 a.b.c.d/n -> network + 1, as tapwayd's gateway_of; empty for anything else. (No `^`:
# busybox awk may lack math support.)
v4_gateway() {
    echo "$1" | awk -F'[./]' 'NF==5 {
        n=$5; ip=(($1*256+$2)*256+$3)*256+$4; size=1; for (i = n; i < 32; i++) size *= 2; net=ip-(ip%size); g=net+1;
        printf "%d.%d.%d.%d", int(g/16777216)%256, int(g/65536)%256, int(g/256)%256, g%256 }'
}

# IPv4 CIDR -> "network broadcast" as 32-bit numbers; empty for anything else.
v4_bounds() {
    echo "$1" | awk -F'[./]' 'NF==5 && $5 <= 32 {
        n=$5; ip=(($1*256+$2)*256+$3)*256+$4; size=1; for (i = n; i < 32; i++) size *= 2;
        printf "%.0f %.0f", ip-(ip%size), ip-(ip%size)+size-1 }'
}

# A 32-bit number -> a.b.c.d.
v4_addr() {
    echo "$1" | awk '{ g=$1; printf "%d.%d.%d.%d", int(g/16777216)%256, int(g/65536)%256, int(g/256)%256, g%256 }'
}

# The host-local range of IPv4 node range $1 inside --cluster-cidr: the cluster's prefix,
# addresses from the node's range (its first host is tapwayd's gateway, the rest the pods').
cluster_range() {
    set -- "$1" $(v4_bounds "$1") $(v4_bounds "$cluster_cidr")
    [ $# = 5 ] || die "--cluster-cidr $cluster_cidr and $1 must be IPv4 CIDRs"
    [ "$2" -ge "$4" ] && [ "$3" -le "$5" ] || die "the node range $1 is not inside --cluster-cidr $cluster_cidr"
    [ $(($3 - $2)) -ge 3 ] || die "the node range $1 is too small"
    gw=$gateway
    [ -n "$gw" ] || gw=$(v4_addr $(($2 + 1)))
    echo "{\"subnet\": \"$cluster_cidr\", \"rangeStart\": \"$(v4_addr $(($2 + 2)))\", \"rangeEnd\": \"$(v4_addr $(($3 - 1)))\", \"gateway\": \"$gw\"}"
}

# Builds $conflist and $conf_file from $subnets.
make_conflist() {
    ranges=""
    routes=""
    for s in $subnets; do
        case "$s" in */*) ;; *) die "--subnet $s is not a CIDR" ;; esac
        case "$s" in *[!0-9a-fA-F.:/]*) die "--subnet $s is not a CIDR" ;; esac
        case "$s" in
            *:*)
                range="{\"subnet\": \"$s\"}"
                route="{\"dst\": \"::/0\"}" ;;
            *)
                if [ -n "$cluster_cidr" ]; then
                    range=$(cluster_range "$s")
                else
                    gw=$gateway
                    [ -n "$gw" ] || gw=$(v4_gateway "$s")
                    [ -n "$gw" ] || die "cannot derive the gateway of $s; pass --gateway"
                    range="{\"subnet\": \"$s\", \"gateway\": \"$gw\"}"
                fi
                route="{\"dst\": \"0.0.0.0/0\"}" ;;
        esac
        ranges="${ranges:+$ranges, }[$range]"
        routes="${routes:+$routes, }$route"
    done
    [ -n "$ranges" ] || die "no pod range"
    mtu_line=""
    [ -n "$mtu" ] && mtu_line="
      \"mtu\": $mtu,"
    [ -n "$state_dir" ] && mtu_line="$mtu_line
      \"stateDir\": \"$state_dir\","
    [ -n "$log_file" ] && mtu_line="$mtu_line
      \"logFile\": \"$log_file\","
    [ -n "$log_level" ] && mtu_line="$mtu_line
      \"logLevel\": \"$log_level\","
    data_dir_line=""
    [ -n "$ipam_data_dir" ] && [ "$ipam_type" = host-local ] && data_dir_line="
        \"dataDir\": \"$ipam_data_dir\","
    extra=""
    [ "$portmap" = 1 ] && extra="$extra,
    {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}"
    conflist="{
  \"cniVersion\": \"$cni_version\",
  \"name\": \"$name\",
  \"plugins\": [
    {
      \"type\": \"tapway\",
      \"socket\": \"$socket\",$mtu_line
      \"capabilities\": {\"ips\": true, \"mac\": true, \"bandwidth\": true},
      \"ipam\": {
        \"type\": \"$ipam_type\",$data_dir_line
        \"ranges\": [$ranges],
        \"routes\": [$routes]
      }
    }$extra
  ]
}"
}
conf_file="$conf_dir/$priority-$name.conflist"
[ "$bandwidth" = 1 ] && echo "note: --bandwidth is not needed: tapway applies pod rate limits itself" >&2

# Writes the conflist unless the file already says the same (a runtime reloads on every change).
write_conflist() {
    if [ -f "$conf_file" ] && [ "$(cat "$conf_file")" = "$conflist" ]; then
        echo "$conf_file is up to date ($(echo $subnets))"
        return 0
    fi
    printf '%s\n' "$conflist" > "$conf_file.tmp"
    mv -f "$conf_file.tmp" "$conf_file"
    echo "wrote $conf_file ($(echo $subnets))"
}

if [ "$from_tapwayd" = 1 ] && [ "$skip_conf" = 0 ]; then
    # As a container's PID 1 the shell ignores SIGTERM unless it traps it: a pod's stop would
    # wait out its grace period.
    trap 'exit 0' TERM INT
    if [ -z "$tapwayctl" ]; then
        tapwayctl=$(command -v tapwayctl 2>/dev/null || true)
        for b in "$here/target/release/tapwayctl" "$here/target/debug/tapwayctl"; do
            if [ -z "$tapwayctl" ] && [ -x "$b" ]; then tapwayctl=$b; fi
        done
    fi
    [ -n "$tapwayctl" ] && [ -x "$tapwayctl" ] || die "--from-tapwayd needs tapwayctl (pass --tapwayctl)"
    waited=0
    while :; do
        subnets=$(tapwayd_ranges | tr '\n' ' ')
        [ -n "$subnets" ] && break
        [ "$dry_run" = 1 ] && die "tapwayd at $socket reports no pod range"
        # Say so once a minute, not on every try.
        [ $((waited % 60)) = 0 ] && echo "install-cni: waiting for tapwayd at $socket to report the node's pod range" >&2
        sleep 2
        waited=$((waited + 2))
    done
fi
[ "$skip_conf" = 1 ] || make_conflist

if [ "$dry_run" = 1 ]; then
    [ "$skip_binary" = 1 ] || echo "would install $binary as $bin_dir/tapway (mode 0755)"
    [ "$skip_binary" = 1 ] || [ ! -x "$binary-ipam" ] || echo "would install $binary-ipam as $bin_dir/tapway-ipam (mode 0755)"
    [ "$skip_conf" = 1 ] || { echo "would write $conf_file:"; echo "$conflist"; }
    exit 0
fi
if [ "$skip_binary" = 0 ]; then
    mkdir -p "$bin_dir"
    # Copy then rename, so a runtime exec'ing the plugin meanwhile never sees a half-written file.
    # (cp and chmod, not install(1): the image's busybox has no install applet.)
    install_bin() {
        cp "$1" "$bin_dir/.$2.new"
        chmod 0755 "$bin_dir/.$2.new"
        mv -f "$bin_dir/.$2.new" "$bin_dir/$2"
        echo "installed $bin_dir/$2"
    }
    install_bin "$binary" tapway
    # The IPAM plugin for other plugins' netconfs (tapway itself never execs it).
    if [ -x "$binary-ipam" ]; then install_bin "$binary-ipam" tapway-ipam; fi
    [ "$ipam_type" = tapway-ipam ] || [ -x "$bin_dir/host-local" ] || echo "install-cni: warning: no host-local in $bin_dir: the conflist's IPAM plugin must be on the runtime's CNI path" >&2
fi
[ "$skip_conf" = 1 ] && exit 0
mkdir -p "$conf_dir"
write_conflist
while [ "$keep_running" = 1 ]; do
    # In the background and waited for, so SIGTERM ends the loop at once (the trap above).
    sleep "$interval" &
    wait $!
    now=$(tapwayd_ranges | tr '\n' ' ')
    # tapwayd unreachable (restarting) or without a range: keep the conflist as it is.
    if [ -n "$now" ] && [ "$now" != "$subnets" ]; then
        subnets=$now
        make_conflist
        write_conflist
    fi
done
