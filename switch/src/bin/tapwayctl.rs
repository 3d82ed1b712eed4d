//! tapwayctl: the admin CLI of tapwayd.
//!
//! Exit codes (stable, for scripts):
//! 0 success · 1 other error · 2 usage error · 3 tapwayd unreachable · 4 not found ·
//! 5 invalid argument · 6 already exists · 7 mismatch (check failed) · 8 permission denied.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use tapway_api::{
    AttachRequest, CheckRequest, Client, ClientError, DetachResult, ErrorCode, FdbEntry, IpConfig, Op, Owner,
    PortInfo, PortSelector, RouteConfig, StatsReport, StatusInfo,
};

/// tapwayctl: inspect and drive tapwayd over its control socket.
#[derive(Parser)]
#[command(
    name = "tapwayctl",
    version,
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 tapwayd unreachable, 4 not found, 5 invalid argument, 6 exists, 7 mismatch, 8 permission denied, 9 address conflict (an IP or MAC that another pod, the gateway, the host port or the uplink owns)."
)]
struct Cli {
    /// Control socket of tapwayd.
    #[arg(long, global = true, env = "TAPWAY_SOCKET", default_value = tapway_api::DEFAULT_SOCKET)]
    socket: String,
    /// Print the daemon's JSON answer instead of a table (field names are stable; see
    /// docs/operations.md).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Daemon version, uptime, workers and their ports, poll mode, FDB and pool usage.
    Status,
    /// Every port: number, kind, netns, interface, MAC, addresses, worker, owning pod.
    Ports,
    /// The forwarding database: learned MAC → port, with age.
    Fdb,
    /// Per-port rx/tx packets and bytes, super-frames, drops by reason; switch counters.
    Stats,
    /// Create a pod interface in a netns and plug it into the switch (for manual use; the CNI
    /// plugin does this for pods).
    Attach {
        /// Netns path, e.g. /run/netns/pod1.
        #[arg(long)]
        netns: String,
        /// Interface name inside the netns.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Address in CIDR form (repeatable), e.g. 10.244.0.5/24. With --ipam: an address to
        /// allocate (with or without a prefix).
        #[arg(long = "ip", required_unless_present = "ipam")]
        ips: Vec<String>,
        /// Let tapwayd allocate the addresses from its pod ranges (one per family), with their
        /// gateways and default routes.
        #[arg(long)]
        ipam: bool,
        /// Gateway for the addresses of its family (repeatable: one per family). Defaults to
        /// nothing: no default route unless given.
        #[arg(long)]
        gateway: Vec<String>,
        /// Extra route `DST[,via=GW]` (repeatable), e.g. 10.96.0.0/12 or 0.0.0.0/0,via=10.244.0.1.
        #[arg(long = "route")]
        routes: Vec<String>,
        /// MAC for the interface [default: a random locally administered one].
        #[arg(long)]
        mac: Option<String>,
        /// MTU [default: the daemon's --mtu].
        #[arg(long)]
        mtu: Option<u32>,
        /// Rate limit of traffic to the pod, bits per second (as the CNI `bandwidth` capability).
        #[arg(long, default_value_t = 0)]
        ingress_rate: u64,
        /// Rate limit of traffic from the pod, bits per second.
        #[arg(long, default_value_t = 0)]
        egress_rate: u64,
        /// Burst of each limit, bits [default: a tenth of a second at the rate].
        #[arg(long)]
        burst: Option<u64>,
    },
    /// Remove a pod interface. Succeeds (and says so) when there is none.
    Detach {
        /// Netns path the port was attached in.
        #[arg(long, required_unless_present = "container_id")]
        netns: Option<String>,
        /// CNI container ID the port was attached for (instead of --netns).
        #[arg(long)]
        container_id: Option<String>,
        /// Interface name inside the netns.
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
    /// Service VIPs: create/replace, delete, list (with backends and counters).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Tracked service flows: list or flush, optionally only those of a VIP or a backend.
    #[command(subcommand)]
    Conntrack(ConntrackCmd),
    /// Make tapwayd's service table equal to Kubernetes objects, as printed by
    /// `kubectl get services,endpointslices -A -o json` (a v1 List). Idempotent; services
    /// missing from the input are removed. Objects that cannot be served are reported, not fatal.
    Sync {
        /// The JSON file, or `-` for stdin.
        file: String,
        /// Show what would be programmed without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Write even though tapwayd follows the Kubernetes API, which owns the service table
        /// (the watch puts its state back at its next change or relist).
        #[arg(long)]
        force: bool,
    },
    /// Address allocation: each pod range with its size, the addresses in use and free, and
    /// who has each (a port, a tapway-ipam allocation, the gateway).
    Ipam,
    /// Verify that a port exists and its interface still has its MAC, addresses and routes.
    Check {
        /// Netns path.
        #[arg(long)]
        netns: String,
        /// Interface name.
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Create or replace one service port.
    Set {
        /// VIP and port, e.g. 10.96.0.10:80 or [fd00::10]:80.
        vip: std::net::SocketAddr,
        /// Protocol.
        #[arg(long, default_value = "tcp")]
        proto: tapway_api::Protocol,
        /// A label, e.g. default/web:http.
        #[arg(long, default_value = "")]
        name: String,
        /// Backend `IP:PORT[,weight=N][,terminating][,notready]` (repeatable; none: clients are
        /// rejected).
        #[arg(long = "backend")]
        backends: Vec<String>,
        /// ClientIP session affinity with this timeout in seconds (Kubernetes default 10800).
        #[arg(long)]
        affinity_timeout: Option<u32>,
        /// Write even though the Kubernetes watch owns the service table.
        #[arg(long)]
        force: bool,
    },
    /// Remove one service port (its flows go on until they end).
    Delete {
        /// VIP and port.
        vip: std::net::SocketAddr,
        /// Protocol.
        #[arg(long, default_value = "tcp")]
        proto: tapway_api::Protocol,
        /// Write even though the Kubernetes watch owns the service table.
        #[arg(long)]
        force: bool,
    },
    /// Every service port with its backends, their share of new flows and counters.
    List,
}

#[derive(Subcommand)]
enum ConntrackCmd {
    /// Tracked flows.
    List {
        /// Only flows to this VIP.
        #[arg(long)]
        vip: Option<std::net::IpAddr>,
        /// Only flows on this backend.
        #[arg(long)]
        backend: Option<std::net::IpAddr>,
        /// At most this many (default 1000).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Forget flows (their next packet is placed anew, on the current backends).
    Flush {
        /// Only flows to this VIP.
        #[arg(long)]
        vip: Option<std::net::IpAddr>,
        /// Only flows on this backend.
        #[arg(long)]
        backend: Option<std::net::IpAddr>,
    },
}

/// Parses `IP:PORT[,weight=N][,terminating][,notready]`.
fn parse_backend(s: &str) -> Result<tapway_api::BackendSpec, String> {
    let mut parts = s.split(',');
    let addr: std::net::SocketAddr =
        parts.next().unwrap_or_default().parse().map_err(|e| format!("backend {s:?}: {e}"))?;
    let mut b = tapway_api::BackendSpec::ready(addr.ip(), addr.port());
    for p in parts {
        match p.split_once('=') {
            Some(("weight", w)) => b.weight = w.parse().map_err(|e| format!("backend {s:?}: weight: {e}"))?,
            None if p == "terminating" => {
                b.terminating = true;
                b.ready = false;
            }
            None if p == "notready" => {
                b.ready = false;
                b.serving = false;
            }
            _ => return Err(format!("backend {s:?}: unknown option {p:?}")),
        }
    }
    Ok(b)
}

fn service_cmd(cli: &Cli, client: &Client, cmd: &ServiceCmd) -> Result<(), ClientError> {
    use tapway_api::{Affinity, ServiceInfo, ServiceKey, ServiceSpec, SyncResult};
    let key =
        |vip: &std::net::SocketAddr, proto| ServiceKey { vip: vip.ip(), port: vip.port(), protocol: proto };
    match cmd {
        ServiceCmd::Set { vip, proto, name, backends, affinity_timeout, force } => {
            let backends =
                backends.iter().map(|b| parse_backend(b)).collect::<Result<Vec<_>, _>>().map_err(|m| {
                    ClientError::Api(tapway_api::ApiError::new(ErrorCode::InvalidArgument, m))
                })?;
            let affinity = affinity_timeout.map(|timeout| Affinity::ClientIp { timeout }).unwrap_or_default();
            let spec = ServiceSpec { name: name.clone(), key: key(vip, *proto), affinity, backends };
            let r: SyncResult = client.call_with(Op::ServiceSet(spec), *force)?;
            if cli.json {
                return print_json(&r);
            }
            println!(
                "{}",
                if r.added > 0 {
                    "added"
                } else if r.updated > 0 {
                    "updated"
                } else {
                    "unchanged"
                }
            );
        }
        ServiceCmd::Delete { vip, proto, force } => {
            let r: SyncResult = client.call_with(Op::ServiceDelete(key(vip, *proto)), *force)?;
            if cli.json {
                return print_json(&r);
            }
            println!("{}", if r.removed > 0 { "deleted" } else { "no such service" });
        }
        ServiceCmd::List => {
            let list: Vec<ServiceInfo> = client.call(Op::ServiceList)?;
            if cli.json {
                return print_json(&list);
            }
            for s in list {
                let aff = match s.spec.affinity {
                    Affinity::None => String::new(),
                    Affinity::ClientIp { timeout } => format!("  affinity ClientIP {timeout}s"),
                };
                println!(
                    "{}  {}  flows {}  rejected {}  maglev {}{}",
                    s.spec.key, s.spec.name, s.new_flows, s.rejected, s.maglev_size, aff
                );
                for (b, st) in s.spec.backends.iter().zip(&s.backend_stats) {
                    let mut cond = Vec::new();
                    if b.ready {
                        cond.push("ready");
                    }
                    if b.serving && !b.ready {
                        cond.push("serving");
                    }
                    if b.terminating {
                        cond.push("terminating");
                    }
                    println!(
                        "    {:<24} w{:<3} {:<20} share {:>5.1}%  flows {}",
                        std::net::SocketAddr::new(b.ip, b.port).to_string(),
                        b.weight,
                        cond.join(","),
                        st.table_share * 100.0,
                        st.new_flows
                    );
                }
            }
        }
    }
    Ok(())
}

fn conntrack_cmd(cli: &Cli, client: &Client, cmd: &ConntrackCmd) -> Result<(), ClientError> {
    use tapway_api::{ConntrackFilter, ConntrackListRequest, FlushResult};
    match cmd {
        ConntrackCmd::List { vip, backend, limit } => {
            let req = ConntrackListRequest {
                filter: ConntrackFilter { vip: *vip, backend: *backend },
                limit: *limit,
            };
            let l: tapway_api::ConntrackList = client.call(Op::ConntrackList(req))?;
            if cli.json {
                return print_json(&l);
            }
            println!(
                "{:<5} {:<21} {:<21} {:<21} {:<21} {:<12} {:<9} {:>8}",
                "PROTO", "CLIENT", "VIP", "BACKEND", "SNAT", "STATE", "REPLIED", "EXPIRES"
            );
            for f in &l.flows {
                println!(
                    "{:<5} {:<21} {:<21} {:<21} {:<21} {:<12} {:<9} {:>7}s",
                    f.protocol.name(),
                    f.client,
                    f.vip,
                    f.backend,
                    f.snat.as_deref().unwrap_or("-"),
                    f.state,
                    if f.replied { "yes" } else { "no" },
                    f.expires_in
                );
            }
            println!("{} of {} flows", l.flows.len(), l.total);
        }
        ConntrackCmd::Flush { vip, backend } => {
            let r: FlushResult =
                client.call(Op::ConntrackFlush(ConntrackFilter { vip: *vip, backend: *backend }))?;
            if cli.json {
                return print_json(&r);
            }
            println!("flushed {} flows", r.flushed);
        }
    }
    Ok(())
}

fn sync_cmd(cli: &Cli, client: &Client, file: &str, dry_run: bool, force: bool) -> Result<(), ClientError> {
    use std::io::Read;
    let bad = |m: String| ClientError::Api(tapway_api::ApiError::new(ErrorCode::InvalidArgument, m));
    let mut text = String::new();
    let read = if file == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|t| text = t)
    };
    read.map_err(|e| bad(format!("reading {file}: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("{file}: not JSON: {e}")))?;
    let import = tapway_kube::import(&value).map_err(|e| bad(format!("{file}: {e}")))?;
    for s in &import.skipped {
        eprintln!("skipped: {s}");
    }
    for n in &import.notes {
        eprintln!("note: {n}");
    }
    if dry_run {
        if cli.json {
            return print_json(&import.services);
        }
        for s in &import.services {
            let b: Vec<String> =
                s.backends.iter().map(|b| std::net::SocketAddr::new(b.ip, b.port).to_string()).collect();
            println!(
                "{}  {}  -> {}",
                s.key,
                s.name,
                if b.is_empty() { "(no endpoints)".into() } else { b.join(" ") }
            );
        }
        return Ok(());
    }
    let r: tapway_api::SyncResult =
        client.call_with(Op::ServiceSync(tapway_api::ServiceSync { services: import.services }), force)?;
    if cli.json {
        return print_json(&r);
    }
    println!(
        "service ports: {} added, {} updated, {} removed, {} unchanged ({} skipped objects) in {} µs",
        r.added,
        r.updated,
        r.removed,
        r.unchanged,
        import.skipped.len(),
        r.elapsed_us
    );
    Ok(())
}

fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Connect { .. } => 3,
        ClientError::Api(a) => match a.code {
            ErrorCode::NotFound => 4,
            ErrorCode::InvalidArgument | ErrorCode::BadRequest => 5,
            ErrorCode::Exists => 6,
            ErrorCode::Mismatch => 7,
            ErrorCode::PermissionDenied => 8,
            ErrorCode::AddressConflict => 9,
            ErrorCode::FailedPrecondition => 10,
            ErrorCode::AddressExhausted => 11,
            _ => 1,
        },
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.socket);
    match run(&cli, &client) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapwayctl: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The Kubernetes watch part of `status`.
fn print_kube(k: &tapway_api::KubeStatus) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let since = now.saturating_sub(k.since_unix_secs);
    let age = |a: Option<f64>| a.map(|s| format!("{s:.1}s ago")).unwrap_or_else(|| "never".into());
    println!(
        "kubernetes {}  {} for {since}s  last event {}  node {}",
        k.server,
        if k.connected { "connected" } else { "DISCONNECTED" },
        age(k.last_event_age_secs),
        k.node.as_deref().unwrap_or("-"),
    );
    let per = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    };
    println!(
        "  objects: {}  events: {}  relists: {}  syncs {}  service ports {}{}",
        per(&k.objects),
        per(&k.events),
        per(&k.relists),
        k.syncs,
        k.service_ports,
        if k.owns_services { " (owned by the watch)" } else { "" }
    );
    if let Some(w) = &k.waiting {
        println!("  {w}");
    }
    if let Some(e) = &k.last_error {
        println!("  last error ({}): {e}", age(k.last_error_age_secs));
    }
}

/// `tapwayctl ipam`: a line per range, then a line per address in use.
fn print_ipam(r: &tapway_api::IpamReport) {
    if r.ranges.is_empty() {
        println!("no pod range (tapwayd has no --pod-cidr)");
    }
    for range in &r.ranges {
        println!(
            "{}  gateway {}  size {}  used {}  free {}",
            range.range, range.gateway, range.size, range.used, range.free
        );
        for a in &range.addresses {
            println!(
                "  {:<28} {}{}{}",
                a.address,
                a.owner,
                a.container_id.as_deref().map(|c| format!("  container {c}")).unwrap_or_default(),
                if a.allocated { "" } else { "  (not allocated by tapwayd)" }
            );
        }
    }
    if !r.allocations.is_empty() {
        println!("tapway-ipam allocations without a port: {}", r.allocations.len());
    }
}

fn print_json<T: Serialize>(v: &T) -> Result<(), ClientError> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: &Cli, client: &Client) -> Result<(), ClientError> {
    match &cli.cmd {
        Cmd::Status => {
            let s: StatusInfo = client.call(Op::Status)?;
            if cli.json {
                return print_json(&s);
            }
            println!("tapwayd {}  up {}s  poll mode {}", s.version, s.uptime_secs, s.poll_mode);
            println!(
                "pod range {}  gateway {} on {}",
                s.pod_cidr.as_deref().unwrap_or("-"),
                s.gateway.as_deref().unwrap_or("-"),
                s.host_port
            );
            println!(
                "ports {}  FDB {}/{} (aging {}s)  frame pool {}/{} free",
                s.ports, s.fdb_entries, s.fdb_max, s.fdb_aging_secs, s.pool_free, s.pool_total
            );
            if let Some(u) = &s.uplink {
                println!(
                    "uplink {} (port {})  AF_XDP {}  queues {:?} on workers {:?}  MTU {}  UMEM {} frames",
                    u.ifname, u.port, u.mode, u.queues, u.queue_workers, u.mtu, u.umem_frames
                );
            }
            for w in &s.workers {
                let core = w.core.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
                println!("worker {}  core {:>2}  ports {:?}", w.id, core, w.ports);
            }
            println!("control connections {}/{}", s.control_connections, s.control_max);
            for l in &s.lost {
                println!(
                    "LOST port {}: {} in {} since {} (unix), {} attempts, next in {}s: {}",
                    l.id,
                    l.ifname,
                    l.netns,
                    l.lost.since,
                    l.lost.attempts,
                    l.lost.next_retry_secs,
                    l.lost.reason
                );
            }
            if let Some(k) = &s.kube {
                print_kube(k);
            }
            if !s.not_ready.is_empty() {
                println!("NOT READY: {}", s.not_ready.join("; "));
            }
        }
        Cmd::Ports => {
            let ports: Vec<PortInfo> = client.call(Op::Ports)?;
            if cli.json {
                return print_json(&ports);
            }
            println!(
                "{:>4} {:<5} {:<8} {:<17} {:<18} {:>5} {:>2}  {:<28} POD",
                "PORT", "KIND", "IFNAME", "MAC", "IPS", "MTU", "W", "NETNS"
            );
            for p in ports {
                let pod = match (&p.owner.pod_namespace, &p.owner.pod_name) {
                    (Some(ns), Some(n)) => format!("{ns}/{n}"),
                    _ => p
                        .owner
                        .container_id
                        .as_deref()
                        .map(|c| c.chars().take(12).collect())
                        .unwrap_or_else(|| "-".into()),
                };
                let netns = if p.netns.is_empty() { "(host)".to_string() } else { p.netns.clone() };
                println!(
                    "{:>4} {:<5} {:<8} {:<17} {:<18} {:>5} {:>2}  {:<28} {}",
                    p.id,
                    if p.lost.is_some() { "lost" } else { p.kind.as_str() },
                    p.ifname,
                    p.mac,
                    p.ips.join(","),
                    p.mtu,
                    p.worker,
                    netns,
                    pod
                );
            }
        }
        Cmd::Fdb => {
            let fdb: Vec<FdbEntry> = client.call(Op::Fdb)?;
            if cli.json {
                return print_json(&fdb);
            }
            println!("{:<17} {:>4} {:<10} {:>6}", "MAC", "PORT", "IFNAME", "AGE(s)");
            for e in fdb {
                println!("{:<17} {:>4} {:<10} {:>6}", e.mac, e.port, e.ifname, e.age_secs);
            }
        }
        Cmd::Stats => {
            let s: StatsReport = client.call(Op::Stats)?;
            if cli.json {
                return print_json(&s);
            }
            println!(
                "{:>4} {:<8} {:>12} {:>14} {:>12} {:>14} {:>10}  DROPS",
                "PORT", "IFNAME", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "RX_GSO"
            );
            for p in &s.ports {
                let drops: Vec<String> = p.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let drops = if drops.is_empty() { "-".to_string() } else { drops.join(" ") };
                println!(
                    "{:>4} {:<8} {:>12} {:>14} {:>12} {:>14} {:>10}  {}",
                    p.id,
                    p.ifname,
                    p.rx_packets,
                    p.rx_bytes,
                    p.tx_packets,
                    p.tx_bytes,
                    p.rx_gso_packets,
                    drops
                );
            }
            let sw: Vec<String> = s.switch.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("switch: {}", sw.join(" "));
        }
        Cmd::Attach {
            netns,
            ifname,
            ips,
            ipam,
            gateway,
            routes,
            mac,
            mtu,
            ingress_rate,
            egress_rate,
            burst,
        } => {
            let requested = if *ipam { ips.clone() } else { Vec::new() };
            let ips = ips
                .iter()
                .filter(|_| !*ipam)
                .map(|a| {
                    let v4 = !a.contains(':');
                    let gw = gateway.iter().find(|g| g.contains(':') != v4).cloned();
                    IpConfig { address: a.clone(), gateway: gw }
                })
                .collect();
            let routes = routes
                .iter()
                .map(|r| match r.split_once(",via=") {
                    Some((dst, gw)) => RouteConfig { dst: dst.to_string(), gw: Some(gw.to_string()) },
                    None => RouteConfig { dst: r.clone(), gw: None },
                })
                .collect();
            let req = AttachRequest {
                netns: netns.clone(),
                ifname: ifname.clone(),
                mac: mac.clone(),
                mtu: *mtu,
                ips,
                routes,
                owner: Owner::default(),
                bandwidth: (*ingress_rate > 0 || *egress_rate > 0).then(|| tapway_api::Bandwidth {
                    ingress_rate: *ingress_rate,
                    ingress_burst: burst.unwrap_or(ingress_rate / 10),
                    egress_rate: *egress_rate,
                    egress_burst: burst.unwrap_or(egress_rate / 10),
                }),
                ipam: ipam.then(|| tapway_api::IpamRequest { requested, ..Default::default() }),
            };
            let p: PortInfo = client.call(Op::Attach(req))?;
            if cli.json {
                return print_json(&p);
            }
            println!(
                "attached port {}: {} in {} mac {} ips {}",
                p.id,
                p.ifname,
                p.netns,
                p.mac,
                p.ips.join(",")
            );
        }
        Cmd::Detach { netns, container_id, ifname } => {
            let sel = PortSelector {
                netns: netns.clone(),
                container_id: container_id.clone(),
                ifname: ifname.clone(),
            };
            let r: DetachResult = client.call(Op::Detach(sel))?;
            if cli.json {
                return print_json(&r);
            }
            println!("{}", if r.detached { "detached" } else { "nothing to detach" });
        }
        Cmd::Service(cmd) => service_cmd(cli, client, cmd)?,
        Cmd::Conntrack(cmd) => conntrack_cmd(cli, client, cmd)?,
        Cmd::Sync { file, dry_run, force } => sync_cmd(cli, client, file, *dry_run, *force)?,
        Cmd::Ipam => {
            let r: tapway_api::IpamReport = client.call(Op::IpamList)?;
            if cli.json {
                return print_json(&r);
            }
            print_ipam(&r);
        }
        Cmd::Check { netns, ifname } => {
            let req = CheckRequest {
                port: PortSelector { netns: Some(netns.clone()), container_id: None, ifname: ifname.clone() },
                ..Default::default()
            };
            let _: serde_json::Value = client.call(Op::Check(req))?;
            if !cli.json {
                println!("ok");
            } else {
                println!("{{\"ok\":true}}");
            }
        }
    }
    Ok(())
}
