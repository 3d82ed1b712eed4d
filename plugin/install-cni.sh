#!/bin/sh
# Installs the tapway CNI plugin: copies the binary into the CNI bin dir and writes a
# conflist into the CNI config dir. `--dry-run` prints what it would do and changes nothing.
#
#   plugin/install-cni.sh --subnet 10.244.1.0/24 [--dry-run]
#
# Options (defaults in brackets):
#   --binary PATH       the built plugin [target/release/tapway, else target/debug/tapway]
#   --bin-dir DIR       CNI bin dir [/opt/cni/bin]
#   --conf-dir DIR      CNI config dir [/etc/cni/net.d]
#   --name NAME         network name [tapway]
#   --subnet CIDR       the node's pod range, as tapwayd's --pod-cidr (required)
#   --gateway IP        gateway [first address of the subnet, where tapwayd puts it]
#   --socket PATH       tapwayd's control socket [/run/tapway/tapway.sock]
#   --cni-version V     cniVersion of the conflist [1.0.0; 1.1.0 needs libcni >= 1.2 in the runtime]
#   --mtu N             pod MTU [tapwayd's default]
#   --portmap           append the reference portmap plugin (hostPort support)
#   --bandwidth         accepted for old command lines: tapway takes the bandwidth capability
#                       itself (tapwayd polices the pod's port), no extra plugin is needed
#   --priority N        file name prefix, lower sorts first [10]
#   --state-dir DIR     the plugin's state dir (`stateDir`) [the plugin's /var/lib/tapway/cni]
#   --ipam-data-dir DIR host-local's reservations (`ipam.dataDir`) [host-local's /var/lib/cni/networks]
#   --log-file FILE     also log to FILE (`logFile`), at --log-level (error|warn|info|debug) [warn]
#   --dry-run           print the actions and the conflist only
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
binary=""
bin_dir=/opt/cni/bin
conf_dir=/etc/cni/net.d
name=tapway
subnet=""
gateway=""
socket=/run/tapway/tapway.sock
cni_version=1.0.0
mtu=""
portmap=0
bandwidth=0
priority=10
state_dir=""
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
        --subnet) need "$@"; subnet=$2; shift 2 ;;
        --gateway) need "$@"; gateway=$2; shift 2 ;;
        --socket) need "$@"; socket=$2; shift 2 ;;
        --cni-version) need "$@"; cni_version=$2; shift 2 ;;
        --mtu) need "$@"; mtu=$2; shift 2 ;;
        --portmap) portmap=1; shift ;;
        --bandwidth) bandwidth=1; shift ;;
        --priority) need "$@"; priority=$2; shift 2 ;;
        --state-dir) need "$@"; state_dir=$2; shift 2 ;;
        --ipam-data-dir) need "$@"; ipam_data_dir=$2; shift 2 ;;
        --log-file) need "$@"; log_file=$2; shift 2 ;;
        --log-level) need "$@"; log_level=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ -n "$subnet" ] || die "--subnet is required (the node's pod range, as given to tapwayd --pod-cidr)"
case "$subnet" in */*) ;; *) die "--subnet $subnet is not a CIDR" ;; esac
case "$name" in *[!A-Za-z0-9_.-]*|"") die "--name $name: use letters, digits, _ . -" ;; esac
case "$mtu" in *[!0-9]*) die "--mtu $mtu is not a number" ;; esac
case "$log_level" in ""|error|warn|info|debug) ;; *) die "--log-level $log_level: error, warn, info or debug" ;; esac
for p in "$state_dir" "$ipam_data_dir" "$log_file"; do
    case "$p" in ""|/*) ;; *) die "$p: use an absolute path" ;; esac
    case "$p" in *[\\\"]*) die "$p: no quotes or backslashes" ;; esac
done
case "$cni_version" in 0.3.0|0.3.1|0.4.0|1.0.0|1.1.0) ;; *) die "--cni-version $cni_version is not supported" ;; esac

if [ -z "$binary" ]; then
    for b in "$here/target/release/tapway" "$here/target/debug/tapway"; do
        if [ -x "$b" ]; then binary=$b; break; fi
    done
fi
[ -n "$binary" ] && [ -x "$binary" ] || die "no built plugin found; run cargo build --release -p tapway-cni or pass --binary"

if [ -z "$gateway" ]; then
    # First address of the subnet: a.b.c.d/n -> network + 1 (IPv4 only; pass --gateway for IPv6).
    gateway=$(echo "$subnet" | awk -F'[./]' 'NF==5 {
        n=$5; ip=(($1*256+$2)*256+$3)*256+$4; size=2^(32-n); net=ip-(ip%size); g=net+1;
        printf "%d.%d.%d.%d", int(g/16777216)%256, int(g/65536)%256, int(g/256)%256, g%256 }')
    [ -n "$gateway" ] || die "cannot derive the gateway of $subnet; pass --gateway"
fi

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
[ -n "$ipam_data_dir" ] && data_dir_line="
        \"dataDir\": \"$ipam_data_dir\","
extra=""
[ "$portmap" = 1 ] && extra="$extra,
    {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}"
[ "$bandwidth" = 1 ] && echo "note: --bandwidth is not needed: tapway applies pod rate limits itself" >&2

conflist="{
  \"cniVersion\": \"$cni_version\",
  \"name\": \"$name\",
  \"plugins\": [
    {
      \"type\": \"tapway\",
      \"socket\": \"$socket\",$mtu_line
      \"capabilities\": {\"ips\": true, \"mac\": true, \"bandwidth\": true},
      \"ipam\": {
        \"type\": \"host-local\",$data_dir_line
        \"ranges\": [[{\"subnet\": \"$subnet\", \"gateway\": \"$gateway\"}]],
        \"routes\": [{\"dst\": \"0.0.0.0/0\"}]
      }
    }$extra
  ]
}"
conf_file="$conf_dir/$priority-$name.conflist"

if [ "$dry_run" = 1 ]; then
    echo "would install $binary as $bin_dir/tapway (mode 0755)"
    echo "would write $conf_file:"
    echo "$conflist"
    exit 0
fi
install -d -m 0755 "$bin_dir" "$conf_dir"
# Copy then rename, so a runtime exec'ing the plugin meanwhile never sees a half-written file.
install -m 0755 "$binary" "$bin_dir/.tapway.new"
mv -f "$bin_dir/.tapway.new" "$bin_dir/tapway"
printf '%s\n' "$conflist" > "$conf_file.tmp"
mv -f "$conf_file.tmp" "$conf_file"
echo "installed $bin_dir/tapway and $conf_file"
