//! The topologies a scenario measures, each built in fresh, uniquely named network namespaces
//! and torn down by a [`Teardown`] (RAII):
//!
//! - `veth`: two namespaces joined by a veth pair. No switch: the generator-only rate.
//! - `tapway`: a node namespace running tapwayd, two pod namespaces attached through the real
//!   CNI plugin binary (`tapway`) with Debian's host-local IPAM, exec'd the way libcni does.
//! - `bridge`: the reference: a node namespace where Debian's `bridge` plugin (with host-local)
//!   builds a Linux bridge and veths for two pod namespaces.
//! - `floor`: two pod namespaces with TAPs set up as tapwayd sets them up, and one pinned
//!   thread of tapway-bench moving frames between them without switching ([`crate::floor`]):
//!   the design's limit.
//!
//! tapway and the floor take a poll mode each; when a run has both modes, each is built
//! twice and named after its mode (`tapway-busy`, `floor-adaptive`).
//!
//! The same approach as bench/lib.sh: plugins exec'd with `CNI_*` in the environment and the
//! netconf on stdin; the bridge plugin runs inside the node namespace so that nothing is created
//! in the machine's root namespace. Every name carries the run's tag (`twr<pid>…`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use thiserror::Error;

use crate::floor::{self, Floor, FloorCtl, FloorError};
use crate::teardown::Teardown;

/// Debian's reference CNI plugins.
pub const CNI_DIR: &str = "/usr/lib/cni";

/// Why a topology could not be built.
#[derive(Debug, Error)]
pub enum TopoError {
    /// A command could not be started.
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    /// A command failed.
    #[error("`{cmd}` failed: {msg}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its stderr/stdout, shortened.
        msg: String,
    },
    /// tapwayd did not answer on its socket.
    #[error("tapwayd did not come up on {0}; its log: {1}")]
    Daemon(String, String),
    /// A CNI result made no sense.
    #[error("CNI {0}: {1}")]
    Cni(String, String),
    /// A file could not be written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The floor's TAPs or thread.
    #[error(transparent)]
    Floor(#[from] FloorError),
}

/// Which data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A plain veth pair: the generator's ceiling.
    Veth,
    /// tapwayd with the tapway CNI plugin.
    Tapway,
    /// The reference Linux bridge CNI.
    Bridge,
    /// TAPs as tapwayd makes them, joined by one forwarding thread: the design's limit.
    Floor,
}

impl Kind {
    /// Stable lowercase name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Veth => "veth",
            Kind::Tapway => "tapway",
            Kind::Bridge => "bridge",
            Kind::Floor => "floor",
        }
    }

    /// From its name (`veth`, `tapway`, `floor`, `bridge`).
    pub fn parse(name: &str) -> Option<Kind> {
        [Kind::Veth, Kind::Tapway, Kind::Floor, Kind::Bridge].into_iter().find(|k| k.name() == name)
    }

    /// Whether the kind has a poll mode (tapwayd's or the floor's).
    pub fn polls(self) -> bool {
        matches!(self, Kind::Tapway | Kind::Floor)
    }
}

/// The poll mode a tapway or floor topology is built with, and which of the run's modes it is.
#[derive(Debug, Clone)]
pub struct Mode {
    /// `busy` or `adaptive`.
    pub poll: String,
    /// Its place in the run's list of modes (0 or 1): picks the namespaces and the subnet.
    pub index: usize,
    /// The run has more than one mode: the topology is named after its mode.
    pub named: bool,
}

impl Mode {
    /// The only mode of a run.
    pub fn single(poll: &str) -> Mode {
        Mode { poll: poll.to_string(), index: 0, named: false }
    }

    /// A topology's report name: `tapway`, or `tapway-busy` when the run has both modes.
    pub fn name(&self, kind: Kind) -> String {
        if self.named && kind.polls() {
            format!("{}-{}", kind.name(), self.poll)
        } else {
            kind.name().to_string()
        }
    }
}

/// One end of the path.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Netns name (under /run/netns).
    pub netns: String,
    /// Interface inside it.
    pub ifname: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
}

/// A built topology: two pods and what must be undone.
#[derive(Debug)]
pub struct Topology {
    /// Which data path.
    pub kind: Kind,
    /// Its column in the report: the kind's name, with the poll mode when the run has two.
    pub name: String,
    /// The scenario it was built for: `pod-pod` (also used by `rfc2544`), `pod-vip`, `cross-node`.
    pub scenario: &'static str,
    /// Sender side.
    pub a: Pod,
    /// Receiver side.
    pub b: Pod,
    /// Where the sender sends to: `b.ip`, or the Service VIP whose backend is b (`pod-vip`).
    pub dst: Ipv4Addr,
    /// The pids of the tapwayd daemons (tapway only; two for `cross-node`), for their CPU time.
    pub daemon_pids: Vec<u32>,
    /// How the pods were attached (and, for `pod-vip`, how the VIP was programmed).
    pub attach: String,
    /// The floor's forwarder (floor only).
    pub floor: Option<Arc<FloorCtl>>,
    teardown: Teardown,
}

/// Where the binaries and the run's files are.
#[derive(Debug, Clone)]
pub struct Env {
    /// Directory with tapwayd, tapwayctl and tapway.
    pub bin_dir: PathBuf,
    /// Per-run work directory (sockets, IPAM data, logs).
    pub work: PathBuf,
    /// Prefix of every name (`twr<pid>`).
    pub tag: String,
    /// `--cores` for tapwayd (empty: one unpinned worker).
    pub tapwayd_cores: String,
    /// tapwayd poll mode.
    pub poll_mode: String,
    /// cross-node: tapwayd `--xdp-mode`.
    pub xdp_mode: String,
    /// cross-node: MTU of the uplinks and the fabric.
    pub uplink_mtu: u32,
}

fn cmdline(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

fn short(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    if s.len() > 600 {
        let mut end = 600;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

/// Runs a command to completion; its stdout on success.
pub fn run(program: &str, args: &[&str]) -> Result<String, TopoError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TopoError::Spawn(program.into(), e))?;
    if !out.status.success() {
        let mut msg = short(&out.stderr);
        if msg.is_empty() {
            msg = short(&out.stdout);
        }
        return Err(TopoError::Failed {
            cmd: cmdline(program, args),
            msg: format!("{} ({msg})", out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Creates netns `name` (lo up) and registers its deletion.
fn add_netns(t: &mut Teardown, name: &str) -> Result<(), TopoError> {
    run("ip", &["netns", "add", name])?;
    let n = name.to_string();
    t.push(format!("netns {name}"), move || quiet("ip", &["netns", "del", &n]));
    run("ip", &["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Stops a child: SIGTERM, up to 5 s, then SIGKILL; always reaped.
pub fn stop_child(mut c: Child) {
    if let Ok(pid) = i32::try_from(c.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Execs a CNI plugin the way libcni does. `runner`: netns to run the plugin in (the node).
fn cni(
    runner: Option<&str>,
    plugin: &Path,
    command: &str,
    cid: &str,
    pod_netns: &str,
    conf: &str,
    cni_path: &str,
) -> Result<String, TopoError> {
    let mut cmd = match runner {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(plugin);
            c
        }
        None => Command::new(plugin),
    };
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", format!("/run/netns/{pod_netns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let name = plugin.display().to_string();
    let mut child = cmd.spawn().map_err(|e| TopoError::Spawn(name.clone(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(conf.as_bytes()).map_err(|e| TopoError::Io(format!("{name} stdin"), e))?;
    }
    let out = child.wait_with_output().map_err(|e| TopoError::Spawn(name.clone(), e))?;
    if !out.status.success() {
        return Err(TopoError::Cni(
            format!("{command} {pod_netns} via {name}"),
            format!("{} {}", short(&out.stdout), short(&out.stderr)),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// First IPv4 address of a CNI result.
pub fn result_ipv4(result: &str) -> Option<Ipv4Addr> {
    let v: Value = serde_json::from_str(result).ok()?;
    v.get("ips")?.as_array()?.iter().find_map(|ip| {
        let a = ip.get("address")?.as_str()?;
        a.split('/').next()?.parse::<Ipv4Addr>().ok()
    })
}

/// The netconf of the tapway network (as bench/lib.sh's `tapway_netconf`).
pub fn tapway_netconf(sock: &Path, state: &Path, ipam: &Path, subnet: &str, gw: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "benchnet", "type": "tapway",
        "socket": sock, "stateDir": state,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet, "gateway": gw}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ipam}
    })
    .to_string()
}

/// The netconf of the reference bridge network (as bench/lib.sh's `bridge_netconf`).
pub fn bridge_netconf(bridge: &str, ipam: &Path, subnet: &str, gw: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "benchbr", "type": "bridge", "bridge": bridge,
        "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet, "gateway": gw}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ipam}
    })
    .to_string()
}

/// The same netconf with the host-local range limited to `start..=end` (a node's share of a
/// cluster-wide subnet, as in docs/uplink.md).
pub fn with_range(conf: &str, start: &str, end: &str) -> String {
    let mut v: Value = serde_json::from_str(conf).unwrap_or(Value::Null);
    if let Some(r) = v.pointer_mut("/ipam/ranges/0/0").and_then(Value::as_object_mut) {
        r.insert("rangeStart".into(), start.into());
        r.insert("rangeEnd".into(), end.into());
    }
    v.to_string()
}

/// The Service VIP of `pod-vip` (both topologies, each in its own namespaces).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The service range the VIP is in (kube-proxy's `cluster-ips-check` drops the rest of it).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The cluster's pod range as kube-proxy's rules see it (`--cluster-cidr`).
pub const CLUSTER_CIDR: &str = "10.213.0.0/16";
/// The VIP's ports, each forwarded to the same port of the backend pod: (port name, protocol,
/// port). The probe frames, the UDP ping-pong and iperf3.
pub const VIP_PORTS: [(&str, &str, u16); 3] =
    [("probe", "UDP", crate::pktgen::DEFAULT_PORT), ("rtt", "UDP", crate::rtt::PORT), ("iperf", "TCP", 5201)];

/// A kubectl-style List (`kubectl get services,endpointslices -o json`): Service `bench/target`
/// on `vip` with [`VIP_PORTS`], and its EndpointSlice with `backend` as the one ready endpoint.
pub fn kube_services_list(vip: Ipv4Addr, backend: Ipv4Addr) -> Value {
    let ports: Vec<Value> = VIP_PORTS
        .iter()
        .map(|(n, p, port)| serde_json::json!({"name": n, "port": port, "protocol": p, "targetPort": port}))
        .collect();
    let eports: Vec<Value> = VIP_PORTS
        .iter()
        .map(|(n, p, port)| serde_json::json!({"name": n, "port": port, "protocol": p}))
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
        "items": [
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "target", "namespace": "bench"},
             "spec": {"type": "ClusterIP", "clusterIP": vip.to_string(), "clusterIPs": [vip.to_string()],
                      "ipFamilies": ["IPv4"], "sessionAffinity": "None", "ports": ports}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
             "metadata": {"name": "target-abcde", "namespace": "bench",
                          "labels": {"kubernetes.io/service-name": "target"}},
             "ports": eports,
             "endpoints": [{"addresses": [backend.to_string()],
                            "conditions": {"ready": true, "serving": true, "terminating": false}}]}
        ]
    })
}

/// An 8-character tag of a name for chain names, in the spirit of kube-proxy's
/// `base32(sha256(name))[:8]` (FNV-1a here: only uniqueness matters).
fn chain_hash(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..8).map(|i| char::from(A[((h >> (5 * i)) & 31) as usize])).collect()
}

/// nftables rules shaped like kube-proxy's nftables mode (pkg/proxy/nftables), as
/// bench/services.sh loads them: the `service-ips` verdict map (daddr . l4proto . dport → a
/// per-service chain), `numgen random mod N` to per-endpoint chains that mark hairpin traffic
/// and `dnat`, the masquerade chain, and the filter-side checks. One service: [`VIP_PORTS`] on
/// `vip`, one endpoint `backend`.
pub fn kube_proxy_nft(vip: Ipv4Addr, backend: Ipv4Addr) -> String {
    let mut l: Vec<String> = Vec::new();
    l.push("table ip kube-proxy {".into());
    l.push("  comment \"rules for kube-proxy\"".into());
    l.push(format!(
        "  set cluster-ips {{ type ipv4_addr; comment \"Active ClusterIPs\"; elements = {{ {vip} }} }}"
    ));
    l.push("  set nodeport-ips { type ipv4_addr; comment \"IPs that accept NodePort traffic\"; }".into());
    l.push("  map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; comment \"vmap to drop or reject packets to services with no endpoints\"; }".into());
    l.push("  map no-endpoint-nodeports { type inet_proto . inet_service : verdict; }".into());
    l.push("  map firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict; }".into());
    l.push("  map service-nodeports { type inet_proto . inet_service : verdict; }".into());
    let svc: Vec<(String, &str, u16)> = VIP_PORTS
        .iter()
        .map(|(n, p, port)| (format!("bench/target/{}/{n}", p.to_lowercase()), *p, *port))
        .collect();
    let elems: Vec<String> = svc
        .iter()
        .map(|(name, p, port)| {
            format!("{vip} . {} . {port} : goto service-{}-{name}", p.to_lowercase(), chain_hash(name))
        })
        .collect();
    l.push(format!(
        "  map service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"; elements = {{ {} }} }}",
        elems.join(", ")
    ));
    l.push("  chain filter-prerouting { type filter hook prerouting priority -110; policy accept; ct state new jump firewall-check; }".into());
    l.push("  chain filter-input { type filter hook input priority -110; policy accept; ct state new jump nodeport-endpoints-check; ct state new jump service-endpoints-check; }".into());
    l.push("  chain filter-forward { type filter hook forward priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump cluster-ips-check; }".into());
    l.push("  chain filter-output { type filter hook output priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump firewall-check; }".into());
    l.push("  chain filter-output-post-dnat { type filter hook output priority -90; policy accept; ct state new jump cluster-ips-check; }".into());
    l.push(
        "  chain nat-prerouting { type nat hook prerouting priority -100; policy accept; jump services; }"
            .into(),
    );
    l.push("  chain nat-output { type nat hook output priority -100; policy accept; jump services; }".into());
    l.push("  chain nat-postrouting { type nat hook postrouting priority 100; policy accept; jump masquerading; }".into());
    l.push("  chain firewall-check { ip daddr . meta l4proto . th dport vmap @firewall-ips; }".into());
    l.push("  chain reject-chain { reject; }".into());
    l.push(
        "  chain service-endpoints-check { ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }"
            .into(),
    );
    l.push("  chain nodeport-endpoints-check { ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports; }".into());
    l.push(format!(
        "  chain cluster-ips-check {{ ip daddr @cluster-ips reject; ip daddr {SERVICE_CIDR} drop; }}"
    ));
    l.push("  chain mark-for-masquerade { meta mark set meta mark | 0x4000; }".into());
    l.push("  chain masquerading { meta mark & 0x4000 == 0 return; meta mark set meta mark ^ 0x4000; masquerade fully-random; }".into());
    l.push("  chain services { ip daddr . meta l4proto . th dport vmap @service-ips; ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports; }".into());
    for (name, p, port) in &svc {
        let proto = p.to_lowercase();
        let ename = format!("{name}__{backend}/{port}");
        let ec = format!("endpoint-{}-{ename}", chain_hash(&ename));
        l.push(format!(
            "  chain {ec} {{ ip saddr {backend} jump mark-for-masquerade; meta l4proto {proto} dnat to {backend}:{port}; }}"
        ));
        l.push(format!(
            "  chain service-{}-{name} {{ ip daddr {vip} {proto} dport {port} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade; numgen random mod 1 vmap {{ 0 : goto {ec} }}; }}",
            chain_hash(name)
        ));
    }
    l.push("}".into());
    l.join("\n") + "\n"
}

/// Starts tapwayd in netns `node` with its socket, state and log under `dir`, `--pod-cidr
/// pod_cidr` and `extra` flags (`--poll-mode` of `env` unless `extra` has one), registers its
/// stop, and waits until it answers. Returns the socket and the daemon's pid.
fn start_tapwayd(
    t: &mut Teardown,
    env: &Env,
    node: &str,
    dir: &Path,
    pod_cidr: &str,
    extra: &[&str],
) -> Result<(PathBuf, u32), TopoError> {
    std::fs::create_dir_all(dir).map_err(|e| TopoError::Io(dir.display().to_string(), e))?;
    let sock = dir.join("tapway.sock");
    let log = dir.join("tapwayd.log");
    let logf = std::fs::File::create(&log).map_err(|e| TopoError::Io(log.display().to_string(), e))?;
    let logf2 = logf.try_clone().map_err(|e| TopoError::Io(log.display().to_string(), e))?;
    let tapwayd = env.bin_dir.join("tapwayd");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", node])
        .arg(&tapwayd)
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--pod-cidr", pod_cidr, "--log-level", "warn"])
        .args(extra);
    if !extra.contains(&"--poll-mode") {
        cmd.args(["--poll-mode", &env.poll_mode]);
    }
    if !env.tapwayd_cores.is_empty() {
        cmd.args(["--cores", &env.tapwayd_cores]);
    }
    // Own process group: a terminal's Ctrl-C reaches tapway-bench only, which then tears
    // down in order (CNI DEL before the daemon stops).
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(logf)
        .stderr(logf2)
        .spawn()
        .map_err(|e| TopoError::Spawn(tapwayd.display().to_string(), e))?;
    // `ip netns exec` execs tapwayd, so the child's pid is the daemon's.
    let pid = child.id();
    let holder = std::sync::Arc::new(std::sync::Mutex::new(Some(child)));
    let h2 = holder.clone();
    t.push(format!("tapwayd in {node}"), move || {
        if let Some(c) = h2.lock().unwrap_or_else(|e| e.into_inner()).take() {
            stop_child(c);
        }
    });
    let ctl = env.bin_dir.join("tapwayctl");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = Command::new(&ctl)
            .arg("--socket")
            .arg(&sock)
            .arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok((sock, pid));
        }
        let exited = holder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
        if exited || Instant::now() >= deadline {
            let l = std::fs::read(&log).unwrap_or_default();
            return Err(TopoError::Daemon(sock.display().to_string(), short(&l)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates pod netns `ns` and CNI ADDs it (DEL registered first, so a half-done ADD is undone
/// too). `runner`: the netns to exec the plugin in (the bridge plugin's node).
fn cni_pod(
    t: &mut Teardown,
    runner: Option<&str>,
    plugin: &Path,
    ns: &str,
    cid: &str,
    conf: &str,
    cni_path: &str,
) -> Result<Pod, TopoError> {
    add_netns(t, ns)?;
    let (p, c, n, cp, c2) =
        (plugin.to_path_buf(), conf.to_string(), ns.to_string(), cni_path.to_string(), cid.to_string());
    let r = runner.map(str::to_string);
    t.push(format!("CNI DEL {ns}"), move || {
        let _ = cni(r.as_deref(), &p, "DEL", &c2, &n, &c, &cp);
    });
    let res = cni(runner, plugin, "ADD", cid, ns, conf, cni_path)?;
    let ip = result_ipv4(&res)
        .ok_or_else(|| TopoError::Cni(format!("ADD {ns}"), format!("no IPv4 address in {res}")))?;
    Ok(Pod { netns: ns.to_string(), ifname: "eth0".into(), ip })
}

/// A fabric netns `fab` with a bridge `br0`: the L2 network between two nodes. It stands in
/// for a physical switch, so it runs no netfilter even where br_netfilter is loaded (the
/// sysctls are absent without it, hence not checked).
fn add_fabric(t: &mut Teardown, fab: &str) -> Result<(), TopoError> {
    add_netns(t, fab)?;
    run("ip", &["-n", fab, "link", "add", "br0", "type", "bridge"])?;
    run("ip", &["-n", fab, "link", "set", "br0", "up"])?;
    for table in ["iptables", "ip6tables", "arptables"] {
        let key = format!("net.bridge.bridge-nf-call-{table}=0");
        let _ = run("ip", &["netns", "exec", fab, "sysctl", "-qw", &key]);
    }
    Ok(())
}

/// Plugs `node` into the fabric as bench/uplink.sh does: a single-queue veth `fa<i>` (in `fab`,
/// on `br0`) ↔ `up0` (in `node`, IPv6 off so the node's kernel stays quiet on it), both ends of
/// MTU `mtu`. Both ends go with their namespaces.
fn plug(fab: &str, i: u32, node: &str, mtu: u32) -> Result<(), TopoError> {
    let fa = format!("fa{i}");
    let mtu = mtu.to_string();
    run(
        "ip",
        &[
            "-n",
            fab,
            "link",
            "add",
            &fa,
            "mtu",
            &mtu,
            "numrxqueues",
            "1",
            "numtxqueues",
            "1",
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            node,
            "numrxqueues",
            "1",
            "numtxqueues",
            "1",
        ],
    )?;
    run("ip", &["-n", fab, "link", "set", &fa, "master", "br0", "up"])?;
    run("ip", &["netns", "exec", node, "sysctl", "-qw", "net.ipv6.conf.up0.disable_ipv6=1"])?;
    run("ip", &["-n", node, "link", "set", "up0", "mtu", &mtu, "up"])?;
    Ok(())
}

fn two(mut pods: Vec<Pod>) -> Result<(Pod, Pod), TopoError> {
    let b = pods.pop().ok_or_else(|| TopoError::Cni("ADD".into(), "no pod".into()))?;
    let a = pods.pop().ok_or_else(|| TopoError::Cni("ADD".into(), "no pod".into()))?;
    Ok((a, b))
}

impl Topology {
    /// Builds `kind` for `pod-pod` (and `rfc2544`) with names from `env.tag`; tapway and the
    /// floor in poll mode `mode`.
    pub fn build(kind: Kind, env: &Env, mode: &Mode) -> Result<Topology, TopoError> {
        match kind {
            Kind::Veth => Self::veth(env),
            Kind::Tapway => Self::tapway(env, mode),
            Kind::Floor => Self::floor(env, mode),
            Kind::Bridge => Self::bridge(env),
        }
    }

    /// Builds `kind` (tapway or bridge) for `pod-vip`: pod a's traffic to [`VIP`] goes to the
    /// backend pod b, translated by tapwayd (programmed with `tapwayctl sync`) or by
    /// kube-proxy-shaped nftables rules in the bridge's node netns.
    pub fn build_vip(kind: Kind, env: &Env) -> Result<Topology, TopoError> {
        match kind {
            Kind::Tapway => Self::tapway_vip(env),
            Kind::Bridge => Self::bridge_vip(env),
            Kind::Veth | Kind::Floor => {
                Err(TopoError::Cni("pod-vip".into(), format!("no {} topology", kind.name())))
            }
        }
    }

    /// Builds `kind` (tapway or bridge) for `cross-node`: two node netns joined by a fabric
    /// bridge, one pod on each, as bench/uplink.sh.
    pub fn build_cross(kind: Kind, env: &Env) -> Result<Topology, TopoError> {
        match kind {
            Kind::Tapway => Self::tapway_cross(env),
            Kind::Bridge => Self::bridge_cross(env),
            Kind::Veth | Kind::Floor => {
                Err(TopoError::Cni("cross-node".into(), format!("no {} topology", kind.name())))
            }
        }
    }

    fn veth(env: &Env) -> Result<Topology, TopoError> {
        let mut t = Teardown::default();
        let (na, nb) = (format!("{}v1", env.tag), format!("{}v2", env.tag));
        add_netns(&mut t, &na)?;
        add_netns(&mut t, &nb)?;
        run("ip", &["-n", &na, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &nb])?;
        for (ns, ip) in [(&na, "10.213.3.1/24"), (&nb, "10.213.3.2/24")] {
            run("ip", &["-n", ns, "addr", "add", ip, "dev", "eth0"])?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        }
        let b_ip = Ipv4Addr::new(10, 213, 3, 2);
        Ok(Topology {
            kind: Kind::Veth,
            name: Kind::Veth.name().into(),
            floor: None,
            scenario: "pod-pod",
            a: Pod { netns: na, ifname: "eth0".into(), ip: Ipv4Addr::new(10, 213, 3, 1) },
            b: Pod { netns: nb, ifname: "eth0".into(), ip: b_ip },
            dst: b_ip,
            daemon_pids: Vec::new(),
            attach: "veth pair".into(),
            teardown: t,
        })
    }

    /// A node netns `<tag><p>n` running tapwayd with `pod_cidr`, and two pods `<tag><p>1`,
    /// `<tag><p>2` attached through the tapway CNI plugin.
    fn tapway_pair(
        env: &Env,
        p: &str,
        subnet: &str,
        gw: &str,
        poll: &str,
    ) -> Result<(Teardown, Pod, Pod, u32), TopoError> {
        let mut t = Teardown::default();
        let node = format!("{}{p}n", env.tag);
        add_netns(&mut t, &node)?;
        let dir = env.work.join(format!("tapway-{p}"));
        let (sock, pid) = start_tapwayd(&mut t, env, &node, &dir, subnet, &["--poll-mode", poll])?;
        let plugin = env.bin_dir.join("tapway");
        let conf = tapway_netconf(&sock, &dir.join("cni-state"), &dir.join("ipam"), subnet, gw);
        let cni_path = format!("{CNI_DIR}:{}", env.bin_dir.display());
        let mut pods = Vec::new();
        for i in 1..=2 {
            let ns = format!("{}{p}{i}", env.tag);
            let cid = format!("{}-{p}{i}", env.tag);
            pods.push(cni_pod(&mut t, None, &plugin, &ns, &cid, &conf, &cni_path)?);
        }
        let (a, b) = two(pods)?;
        Ok((t, a, b, pid))
    }

    /// tapway for pod-pod: 10.213.1.0/24 for the run's first poll mode, 10.213.7.0/24 for
    /// its second.
    fn tapway(env: &Env, mode: &Mode) -> Result<Topology, TopoError> {
        let (p, net) = if mode.index == 0 { ("t", 1) } else { ("u", 7) };
        let (t, a, b, pid) =
            Self::tapway_pair(env, p, &format!("10.213.{net}.0/24"), &format!("10.213.{net}.1"), &mode.poll)?;
        Ok(Topology {
            kind: Kind::Tapway,
            name: mode.name(Kind::Tapway),
            scenario: "pod-pod",
            dst: b.ip,
            a,
            b,
            daemon_pids: vec![pid],
            attach: format!(
                "CNI plugin {} + host-local; tapwayd --poll-mode {}{}",
                env.bin_dir.join("tapway").display(),
                mode.poll,
                cores_note(env)
            ),
            floor: None,
            teardown: t,
        })
    }

    /// The floor: pods `<tag>f1`, `<tag>f2` (second poll mode: `g1`, `g2`) with 10.213.6.2
    /// and .3/24 (10.213.8.x), a TAP each as tapwayd makes it, and the forwarding thread on
    /// the first of tapwayd's cores.
    fn floor(env: &Env, mode: &Mode) -> Result<Topology, TopoError> {
        let (p, net) = if mode.index == 0 { ("f", 6) } else { ("g", 8) };
        let poll = floor::Poll::parse(&mode.poll)
            .ok_or_else(|| TopoError::Cni("floor".into(), format!("unknown poll mode {}", mode.poll)))?;
        let mut t = Teardown::default();
        let (na, nb) = (format!("{}{p}1", env.tag), format!("{}{p}2", env.tag));
        add_netns(&mut t, &na)?;
        add_netns(&mut t, &nb)?;
        let (a_ip, b_ip) = (Ipv4Addr::new(10, 213, net, 2), Ipv4Addr::new(10, 213, net, 3));
        let ta = floor::pod_tap(&na, "eth0", a_ip, 24)?;
        let tb = floor::pod_tap(&nb, "eth0", b_ip, 24)?;
        let core = crate::cpus::parse_list(&env.tapwayd_cores).ok().and_then(|c| c.first().copied());
        let f = Floor::start(ta, tb, core, poll)?;
        let ctl = f.ctl.clone();
        // Stopped first (it holds the TAPs), before the namespaces go.
        t.push(format!("floor thread {p}"), move || f.stop());
        Ok(Topology {
            kind: Kind::Floor,
            name: mode.name(Kind::Floor),
            scenario: "pod-pod",
            dst: b_ip,
            a: Pod { netns: na, ifname: "eth0".into(), ip: a_ip },
            b: Pod { netns: nb, ifname: "eth0".into(), ip: b_ip },
            daemon_pids: Vec::new(),
            attach: format!(
                "TAPs as tapwayd makes them (vnet header, offloads, MTU {}, txqueuelen {}), one tapway-bench thread copying between them, no switching; --poll-mode {}{}",
                floor::MTU,
                tapway_switch::control::pods::POD_TXQLEN,
                mode.poll,
                match core {
                    Some(c) => format!(", pinned to CPU {c}"),
                    None => ", unpinned".into(),
                }
            ),
            floor: Some(ctl),
            teardown: t,
        })
    }

    fn tapway_vip(env: &Env) -> Result<Topology, TopoError> {
        let (t, a, b, pid) = Self::tapway_pair(env, "s", "10.213.4.0/24", "10.213.4.1", &env.poll_mode)?;
        let dir = env.work.join("tapway-s");
        let list = dir.join("services.json");
        std::fs::write(&list, kube_services_list(VIP, b.ip).to_string())
            .map_err(|e| TopoError::Io(list.display().to_string(), e))?;
        let ctl = env.bin_dir.join("tapwayctl").display().to_string();
        let sock = dir.join("tapway.sock").display().to_string();
        run(&ctl, &["--socket", &sock, "sync", &list.display().to_string()])?;
        Ok(Topology {
            kind: Kind::Tapway,
            name: Kind::Tapway.name().into(),
            floor: None,
            scenario: "pod-vip",
            dst: VIP,
            a,
            b,
            daemon_pids: vec![pid],
            attach: format!(
                "CNI plugin {} + host-local; VIP {VIP} programmed with `tapwayctl sync` of a kubectl-style List (Service + EndpointSlice)",
                env.bin_dir.join("tapway").display()
            ),
            teardown: t,
        })
    }

    /// A node netns `<tag><p>n` where the bridge plugin builds bridge `<tag><p>b` for two pods.
    fn bridge_pair(
        env: &Env,
        p: &str,
        subnet: &str,
        gw: &str,
    ) -> Result<(Teardown, String, Pod, Pod), TopoError> {
        let mut t = Teardown::default();
        let node = format!("{}{p}n", env.tag);
        add_netns(&mut t, &node)?;
        let dir = env.work.join(format!("bridge-{p}"));
        std::fs::create_dir_all(&dir).map_err(|e| TopoError::Io(dir.display().to_string(), e))?;
        let plugin = PathBuf::from(CNI_DIR).join("bridge");
        let conf = bridge_netconf(&format!("{}{p}br", env.tag), &dir.join("ipam"), subnet, gw);
        let mut pods = Vec::new();
        for i in 1..=2 {
            let ns = format!("{}{p}{i}", env.tag);
            let cid = format!("{}-{p}{i}", env.tag);
            pods.push(cni_pod(&mut t, Some(&node), &plugin, &ns, &cid, &conf, CNI_DIR)?);
        }
        let (a, b) = two(pods)?;
        Ok((t, node, a, b))
    }

    fn bridge(env: &Env) -> Result<Topology, TopoError> {
        let (t, _, a, b) = Self::bridge_pair(env, "b", "10.213.2.0/24", "10.213.2.1")?;
        Ok(Topology {
            kind: Kind::Bridge,
            name: Kind::Bridge.name().into(),
            floor: None,
            scenario: "pod-pod",
            dst: b.ip,
            a,
            b,
            daemon_pids: Vec::new(),
            attach: format!("CNI plugin {}/bridge + host-local, run in the node netns", CNI_DIR),
            teardown: t,
        })
    }

    fn bridge_vip(env: &Env) -> Result<Topology, TopoError> {
        let (t, node, a, b) = Self::bridge_pair(env, "k", "10.213.5.0/24", "10.213.5.1")?;
        // Backend replies go straight to the client over the bridge (same subnet): they must
        // pass the IPv4 hooks for conntrack to undo the DNAT, as on a kube-proxy node with a
        // bridge CNI. Per-netns sysctls: only this node netns changes.
        run("ip", &["netns", "exec", &node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])
            .map_err(|e| {
                TopoError::Cni(
                    "pod-vip".into(),
                    format!("{e} (net.bridge.bridge-nf-call-iptables needs br_netfilter)"),
                )
            })?;
        run("ip", &["netns", "exec", &node, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let file = env.work.join("bridge-k").join("kube-proxy.nft");
        std::fs::write(&file, kube_proxy_nft(VIP, b.ip))
            .map_err(|e| TopoError::Io(file.display().to_string(), e))?;
        run("ip", &["netns", "exec", &node, "nft", "-f", &file.display().to_string()])?;
        Ok(Topology {
            kind: Kind::Bridge,
            name: Kind::Bridge.name().into(),
            floor: None,
            scenario: "pod-vip",
            dst: VIP,
            a,
            b,
            daemon_pids: Vec::new(),
            attach: format!(
                "CNI plugin {CNI_DIR}/bridge + host-local, run in the node netns; VIP {VIP} DNATed by kube-proxy-shaped nftables rules (table ip kube-proxy) in the node netns, bridge-nf-call-iptables=1 there"
            ),
            teardown: t,
        })
    }

    fn tapway_cross(env: &Env) -> Result<Topology, TopoError> {
        let mut t = Teardown::default();
        let fab = format!("{}xf", env.tag);
        add_fabric(&mut t, &fab)?;
        let plugin = env.bin_dir.join("tapway");
        let cni_path = format!("{CNI_DIR}:{}", env.bin_dir.display());
        let (mut pods, mut pids) = (Vec::new(), Vec::new());
        for i in 1..=2u32 {
            let node = format!("{}xn{i}", env.tag);
            add_netns(&mut t, &node)?;
            plug(&fab, i, &node, env.uplink_mtu)?;
            let dir = env.work.join(format!("tapway-x{i}"));
            let (sock, pid) = start_tapwayd(
                &mut t,
                env,
                &node,
                &dir,
                &format!("10.216.{i}.0/24"),
                &["--uplink", "up0", "--xdp-mode", &env.xdp_mode],
            )?;
            pids.push(pid);
            let conf = with_range(
                &tapway_netconf(
                    &sock,
                    &dir.join("cni-state"),
                    &dir.join("ipam"),
                    "10.216.0.0/16",
                    &format!("10.216.{i}.1"),
                ),
                &format!("10.216.{i}.2"),
                &format!("10.216.{i}.254"),
            );
            let ns = format!("{}x{i}", env.tag);
            let cid = format!("{}-x{i}", env.tag);
            pods.push(cni_pod(&mut t, None, &plugin, &ns, &cid, &conf, &cni_path)?);
        }
        let (a, b) = two(pods)?;
        Ok(Topology {
            kind: Kind::Tapway,
            name: Kind::Tapway.name().into(),
            floor: None,
            scenario: "cross-node",
            dst: b.ip,
            a,
            b,
            daemon_pids: pids,
            attach: format!(
                "two nodes, each tapwayd --uplink up0 --xdp-mode {} (a veth of MTU {} into a fabric bridge); one pod per node through CNI plugin {} + host-local, flat 10.216.0.0/16",
                env.xdp_mode,
                env.uplink_mtu,
                plugin.display()
            ),
            teardown: t,
        })
    }

    fn bridge_cross(env: &Env) -> Result<Topology, TopoError> {
        let mut t = Teardown::default();
        let fab = format!("{}yf", env.tag);
        add_fabric(&mut t, &fab)?;
        let plugin = PathBuf::from(CNI_DIR).join("bridge");
        let mut pods = Vec::new();
        for i in 1..=2u32 {
            let node = format!("{}yn{i}", env.tag);
            add_netns(&mut t, &node)?;
            let dir = env.work.join(format!("bridge-y{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| TopoError::Io(dir.display().to_string(), e))?;
            let conf = with_range(
                &bridge_netconf("brn", &dir.join("ipam"), "10.217.0.0/16", &format!("10.217.{i}.1")),
                &format!("10.217.{i}.2"),
                &format!("10.217.{i}.254"),
            );
            let ns = format!("{}y{i}", env.tag);
            let cid = format!("{}-y{i}", env.tag);
            pods.push(cni_pod(&mut t, Some(&node), &plugin, &ns, &cid, &conf, CNI_DIR)?);
            plug(&fab, i, &node, env.uplink_mtu)?;
            run("ip", &["-n", &node, "link", "set", "up0", "master", "brn"])?;
        }
        let (a, b) = two(pods)?;
        Ok(Topology {
            kind: Kind::Bridge,
            name: Kind::Bridge.name().into(),
            floor: None,
            scenario: "cross-node",
            dst: b.ip,
            a,
            b,
            daemon_pids: Vec::new(),
            attach: format!(
                "two nodes, each the CNI plugin {CNI_DIR}/bridge + host-local (flat 10.217.0.0/16) with the uplink veth up0 (MTU {}) enslaved to the node's bridge; the uplinks meet in a fabric bridge",
                env.uplink_mtu
            ),
            teardown: t,
        })
    }

    /// Pings b from a until it answers (at most ~5 s): the path works before it is measured.
    pub fn check(&self) -> Result<(), TopoError> {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.a.netns,
                "ping",
                "-n",
                "-q",
                "-c",
                "2",
                "-i",
                "0.2",
                "-w",
                "5",
                &self.b.ip.to_string(),
            ],
        )
        .map(|_| ())
    }

    /// Stops the datapath of this topology (tapwayd: SIGSTOP; the floor: its thread idles),
    /// so that a busy-polling one does not take the CPU from the topology being measured.
    /// Frames sent to it meanwhile wait in (or overflow) the TAP queues.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        if let Some(f) = &self.floor {
            f.pause();
        }
    }

    /// Undoes [`Topology::pause`] (harmless when not paused).
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        if let Some(f) = &self.floor {
            f.resume();
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        for &pid in &self.daemon_pids {
            if let Ok(p) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
            }
        }
    }

    /// The `/proc` stat files whose CPU time is this topology's datapath: the tapwayd
    /// daemons, or the floor's thread. Empty for the kernel's paths.
    pub fn cpu_stats(&self) -> Vec<String> {
        let mut v: Vec<String> = self.daemon_pids.iter().map(|p| format!("/proc/{p}/stat")).collect();
        v.extend(self.floor.iter().map(|f| f.stat_path()));
        v
    }

    /// Tears down now (also done on drop).
    pub fn teardown(mut self) {
        self.resume();
        self.teardown.run();
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // A stopped tapwayd would neither answer the CNI DELs nor see its SIGTERM.
        self.resume();
        self.teardown.run();
    }
}

/// `, pinned to CPU 1` or nothing, for the attach line.
fn cores_note(env: &Env) -> String {
    if env.tapwayd_cores.is_empty() {
        String::new()
    } else {
        format!(" --cores {}", env.tapwayd_cores)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn first_ipv4_of_a_cni_result() {
        let r = r#"{"cniVersion":"1.0.0","ips":[{"address":"fd00::5/64"},{"address":"10.213.1.7/24","gateway":"10.213.1.1"}]}"#;
        assert_eq!(result_ipv4(r), Some(Ipv4Addr::new(10, 213, 1, 7)));
        assert_eq!(result_ipv4(r#"{"ips":[{"address":"fd00::5/64"}]}"#), None);
        assert_eq!(result_ipv4("not json"), None);
    }

    #[test]
    fn a_range_limits_host_local_to_the_nodes_share() {
        let c = with_range(
            &bridge_netconf("brn", Path::new("/ipam"), "10.217.0.0/16", "10.217.2.1"),
            "10.217.2.2",
            "10.217.2.254",
        );
        let v: Value = serde_json::from_str(&c).unwrap();
        let r = &v["ipam"]["ranges"][0][0];
        assert_eq!(r["subnet"], "10.217.0.0/16");
        assert_eq!(r["rangeStart"], "10.217.2.2");
        assert_eq!(r["rangeEnd"], "10.217.2.254");
        assert_eq!(r["gateway"], "10.217.2.1");
    }

    #[test]
    fn the_service_list_pairs_each_vip_port_with_an_endpoint_port() {
        let b = Ipv4Addr::new(10, 213, 4, 3);
        let v = kube_services_list(VIP, b);
        assert_eq!(v["kind"], "List");
        let (svc, slice) = (&v["items"][0], &v["items"][1]);
        assert_eq!(svc["kind"], "Service");
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(slice["kind"], "EndpointSlice");
        assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], svc["metadata"]["name"]);
        assert_eq!(slice["endpoints"][0]["addresses"][0], "10.213.4.3");
        let sp = svc["spec"]["ports"].as_array().unwrap();
        let ep = slice["ports"].as_array().unwrap();
        assert_eq!(sp.len(), VIP_PORTS.len());
        for (s, e) in sp.iter().zip(ep) {
            assert_eq!(s["name"], e["name"]);
            assert_eq!(s["protocol"], e["protocol"]);
            assert_eq!(s["targetPort"], e["port"]);
        }
        assert!(sp.iter().any(|p| p["protocol"] == "UDP" && p["port"] == crate::pktgen::DEFAULT_PORT));
        assert!(sp.iter().any(|p| p["protocol"] == "TCP" && p["port"] == 5201));
    }

    #[test]
    fn kube_proxy_rules_dnat_every_vip_port_to_the_backend() {
        let b = Ipv4Addr::new(10, 213, 5, 3);
        let r = kube_proxy_nft(VIP, b);
        assert!(r.starts_with("table ip kube-proxy {"), "{r}");
        assert_eq!(r.matches('{').count(), r.matches('}').count(), "{r}");
        for (_, proto, port) in VIP_PORTS {
            let p = proto.to_lowercase();
            assert!(r.contains(&format!("10.96.0.10 . {p} . {port} : goto service-")), "{p} {port}: {r}");
            assert!(r.contains(&format!("meta l4proto {p} dnat to 10.213.5.3:{port};")), "{p} {port}: {r}");
        }
        assert!(r.contains("type nat hook prerouting priority -100"));
        assert!(r.contains("masquerade fully-random"));
        // Chain names are unique.
        let chains: Vec<&str> = r.lines().filter_map(|l| l.trim().strip_prefix("chain ")).collect();
        let mut names: Vec<&str> = chains.iter().map(|c| c.split(' ').next().unwrap()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn netconfs_name_the_plugin_and_host_local() {
        let t: Value = serde_json::from_str(&tapway_netconf(
            Path::new("/s.sock"),
            Path::new("/st"),
            Path::new("/ipam"),
            "10.0.0.0/24",
            "10.0.0.1",
        ))
        .unwrap();
        assert_eq!(t["type"], "tapway");
        assert_eq!(t["socket"], "/s.sock");
        assert_eq!(t["ipam"]["type"], "host-local");
        assert_eq!(t["ipam"]["ranges"][0][0]["subnet"], "10.0.0.0/24");
        assert_eq!(t["ipam"]["dataDir"], "/ipam");
        let b: Value =
            serde_json::from_str(&bridge_netconf("br0", Path::new("/ipam2"), "10.0.1.0/24", "10.0.1.1"))
                .unwrap();
        assert_eq!(b["type"], "bridge");
        assert_eq!(b["bridge"], "br0");
        assert_eq!(b["isGateway"], true);
        assert_eq!(b["ipam"]["ranges"][0][0]["gateway"], "10.0.1.1");
    }
}
