#!/usr/bin/env bash
# CNI ADD and DEL latency: the tapway plugin (against a tapwayd running in a "node" netns) with
# tapwayd's own IPAM (tapway-ipam) and with host-local, and Debian's reference bridge plugin with
# host-local (in its own node netns), in the same run, interleaved pod by pod; host-local alone
# too. Reports p50/p90/p99/max in milliseconds, the ratios, and where tapwayd's part of ADD and
# DEL goes (its phase timings, from /metrics).
#
#   sudo bench/cni-latency.sh [--pods N] [--markdown FILE] [--attach auto|plugin] [--poll-mode MODE]
#                             [--no-build] [--keep-work]
#
# What is timed: the wall time of one plugin exec as a runtime does it (fork, exec, the plugin's
# own work including its host-local IPAM exec, exit), measured by one small python3 driver that
# execs both plugins the same way (posix_spawn/vfork, nothing run between fork and exec). The
# driver itself runs in the bridge's node netns, so the bridge and its host-side veths are
# created there, as on a node; the tapway plugin does not care where it runs (it reaches
# tapwayd, in its own node netns, over the Unix socket path). ADD pods 1..N (alternating which
# plugin goes first), then DEL them in the same order; one warm-up pod per plugin is not counted.
# Everything is in namespaces named twb<pid>*, removed on exit, also on failure and Ctrl-C.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  script_header
  cat <<'EOF'

Options:
  --pods N          pods per plugin (each gets its own netns) [100]
  --markdown FILE   write the markdown table to FILE instead of stdout
  --attach MODE     auto or plugin: the tapway CNI plugin is required here [auto]
  --poll-mode MODE  tapwayd poll mode [adaptive]
  --no-build        use target/release as it is
  --keep-work       keep the work directory for inspection
EOF
}

PODS=100
MARKDOWN=
ATTACH=auto
POLL=adaptive
while [ $# -gt 0 ]; do
  case $1 in
    --pods) PODS=${2:?}; shift 2 ;;
    --markdown) MARKDOWN=${2:?}; shift 2 ;;
    --attach) ATTACH=${2:?}; shift 2 ;;
    --poll-mode) POLL=${2:?}; shift 2 ;;
    --no-build) NO_BUILD=1; shift ;;
    --keep-work) KEEP_WORK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $PODS =~ ^[1-9][0-9]*$ ]] || die "--pods takes a number >= 1"
[ "$PODS" -le 4000 ] || die "--pods is limited to 4000"
[ "$ATTACH" != tapwayctl ] || die "cni-latency measures the CNI plugin: --attach tapwayctl makes no sense here"

need_root
ensure_tools
build_release
pick_attach_mode "$ATTACH"
[ "$ATTACH_MODE" = plugin ] || die "the tapway CNI plugin ($BIN/tapway) does not answer CNI VERSION yet: nothing to measure"
install_traps
make_workdir

# One tapwayd serves both tapway rows: tapway-ipam allocates from the lower half of its range,
# host-local from the upper half, so neither hands out the other's addresses.
T_SUBNET=10.214.0.0/16 T_GW=10.214.0.1
B_SUBNET=10.215.0.0/16 B_GW=10.215.0.1
T_NODE=${TAG}ln B_NODE=${TAG}lb
BRIDGE=${TAG}br
SOCK=/run/tapway-bench-$$/tapway.sock
mkdir -p "/run/tapway-bench-$$"
on_cleanup "rm -rf /run/tapway-bench-$$"

new_netns "$T_NODE"
METRICS=127.0.0.1:9178
TAPWAYD_EXTRA="--metrics-address $METRICS" start_tapwayd "$T_NODE" "$SOCK" "$WORK/state" "$T_SUBNET" "" "$POLL"
new_netns "$B_NODE"

log "creating $((3 * (PODS + 1))) pod namespaces (not timed)"
for i in $(seq 0 "$PODS"); do
  new_netns "${TAG}t$i"
  new_netns "${TAG}i$i"
  new_netns "${TAG}b$i"
done

T_CONF=$(tapway_netconf "$SOCK" "$T_SUBNET" "$T_GW" | python3 -c '
import json, sys
c = json.load(sys.stdin)
c["ipam"]["ranges"][0][0].update(rangeStart="10.214.128.1", rangeEnd="10.214.255.254")
print(json.dumps(c))')
I_CONF=$(tapway_netconf "$SOCK" "$T_SUBNET" "$T_GW" | python3 -c '
import json, sys
c = json.load(sys.stdin)
c["name"] = "benchipam"
c["ipam"] = {"type": "tapway-ipam", "ranges": [[{"subnet": c["ipam"]["ranges"][0][0]["subnet"], "rangeEnd": "10.214.127.254"}]],
             "routes": [{"dst": "0.0.0.0/0"}]}
print(json.dumps(c))')
B_CONF=$(bridge_netconf "$BRIDGE" "$B_SUBNET" "$B_GW")

check_quiet
MACHINE=$(machine_summary)
log "timing CNI ADD/DEL of $PODS pods per plugin (+1 warm-up each)"
ip netns exec "$B_NODE" python3 - "$PODS" "$TAG" "$BIN/tapway" "$CNI_BIN/bridge" "$T_CONF" "$B_CONF" \
  "$CNI_BIN:$BIN" "$MARKDOWN" "$MACHINE" "bench/cni-latency.sh --pods $PODS" "$POLL" "$WORK/ipam-hl" \
  "$I_CONF" "$T_NODE" "$METRICS" <<'PY'
import datetime, json, os, subprocess, sys, time

# This driver runs inside the bridge's node netns (ip netns exec): every plugin it execs starts
# there, like a runtime's execs on a node.
(pods, tag, tapway, bridge, tconf, bconf, cni_path, md_file, machine, cmdline, poll, hl_dir, iconf, tnode,
 metrics) = sys.argv[1:]
pods = int(pods)

# host-local alone: the IPAM step both plugins exec, timed by itself as the floor of either.
hlconf = json.dumps({"cniVersion": "1.0.0", "name": "benchhl", "type": "host-local",
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.216.0.0/16"}]],
                              "dataDir": hl_dir}})
# Row name -> (plugin binary, netconf, the letter of its pods' netns).
PLUGINS = {
    "tapway+tapway-ipam": (tapway, iconf, "i"),
    "tapway+host-local": (tapway, tconf, "t"),
    "bridge+host-local": (bridge, bconf, "b"),
    "host-local": (os.path.join(os.path.dirname(bridge), "host-local"), hlconf, "t"),
}
times = {(p, op): [] for p in PLUGINS for op in ("ADD", "DEL")}
added = []

def cni(plugin, op, i, record=True):
    path, conf, letter = PLUGINS[plugin]
    ns = "%s%s%d" % (tag, letter, i)
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": op, "CNI_CONTAINERID": ns, "CNI_NETNS": "/run/netns/" + ns,
        "CNI_IFNAME": "eth0", "CNI_PATH": cni_path,
    }
    # Every plugin is started the same way (no preexec_fn: Python then uses vfork/posix_spawn,
    # about 2 ms cheaper than a full fork, the same for all rows).
    t0 = time.perf_counter()
    r = subprocess.run([path], input=conf.encode(), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    dt = (time.perf_counter() - t0) * 1000.0
    if r.returncode != 0:
        raise SystemExit("CNI %s of %s through %s failed (exit %d): %s %s" % (
            op, ns, plugin, r.returncode, r.stdout.decode(errors="replace")[:500],
            r.stderr.decode(errors="replace")[:500]))
    if op == "ADD":
        added.append((plugin, i))
        res = json.loads(r.stdout)
        if not res.get("ips") or (plugin != "host-local" and not res.get("interfaces")):
            raise SystemExit("CNI ADD of %s through %s returned no IP: %s" % (ns, plugin, r.stdout[:300]))
    else:
        added.remove((plugin, i))
    if record:
        times[(plugin, op)].append(dt)

ROWS = list(PLUGINS)

def order(i):
    # Rotate which row goes first, pod by pod.
    k = i % len(ROWS)
    return ROWS[k:] + ROWS[:k]

try:
    for p in PLUGINS:                       # warm-up: page cache, first bridge creation
        cni(p, "ADD", 0, record=False)
    for i in range(1, pods + 1):
        for p in order(i):
            cni(p, "ADD", i)
    for i in range(1, pods + 1):
        for p in order(i):
            cni(p, "DEL", i)
    for p in PLUGINS:
        cni(p, "DEL", 0, record=False)
finally:
    for p, i in list(added):                # best effort, after a failure
        try:
            cni(p, "DEL", i, record=False)
        except BaseException:
            pass

def pct(v, q):
    # Nearest-rank percentile.
    s = sorted(v)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]

hdr = ("op", "plugin", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms", "n")
rows = []
for op in ("ADD", "DEL"):
    for p in PLUGINS:
        v = times[(p, op)]
        rows.append((op, p, "%.2f" % pct(v, 50), "%.2f" % pct(v, 90), "%.2f" % pct(v, 99),
                     "%.2f" % max(v), "%.2f" % (sum(v) / len(v)), str(len(v))))
ratios = []
for op in ("ADD", "DEL"):
    for t in ("tapway+tapway-ipam", "tapway+host-local"):
        r = pct(times[(t, op)], 50) / pct(times[("bridge+host-local", op)], 50)
        ratios.append("%s / bridge+host-local %s p50: %.2f×" % (t, op, r))

# Where tapwayd's part goes: the mean of each phase histogram (sum / count) from /metrics,
# scraped inside tapwayd's netns.
def scrape():
    r = subprocess.run(["ip", "netns", "exec", tnode, "python3", "-c",
                        "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://%s/metrics').read().decode())" % metrics],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sums, counts = {}, {}
    for line in r.stdout.decode(errors="replace").splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            head = "tapway_cni_phase_duration_seconds" + suffix + "{phase=\""
            if line.startswith(head):
                name = line[len(head):].split('"', 1)[0]
                into[name] = float(line.rsplit(" ", 1)[1])
    return {k: (1000.0 * sums[k] / counts[k], int(counts[k])) for k in sums if counts.get(k)}
phases = scrape()
phase_text = ", ".join("%s %.2f ms" % (k, v[0]) for k, v in sorted(phases.items()))

w = [max(len(r[i]) for r in rows + [hdr]) for i in range(len(hdr))]
print()
print("  ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
for r in rows:
    print("  ".join(x.ljust(w[i]) for i, x in enumerate(r)))
print()
print("; ".join(ratios))
print("host-local rows: the IPAM plugin alone, which the host-local rows exec (the floor under them)")
print("tapwayd's phases (mean per call, both tapway rows): " + phase_text)

md = ["Measured %s UTC on %s." % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"), machine),
      "Command: `%s`; tapwayd poll mode `%s`; %d pods per plugin, ADD all then DEL all, interleaved per pod." % (cmdline, poll, pods),
      "", "| " + " | ".join(hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
md += ["| " + " | ".join(r) + " |" for r in rows]
md += ["", "; ".join(ratios) + ". The host-local rows time the IPAM plugin alone (the +host-local rows exec it), the floor under those ADDs.",
       "", "tapwayd's phases (mean per call over both tapway rows, from `tapway_cni_phase_duration_seconds`): " + phase_text + "."]
text = "\n".join(md) + "\n"
if md_file:
    with open(md_file, "w") as f:
        f.write(text)
    print("\nmarkdown written to %s" % md_file)
else:
    print()
    print(text, end="")
PY
