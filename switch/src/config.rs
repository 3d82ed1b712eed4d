//! tapwayd's configuration: command-line flags over an optional TOML file over defaults.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::datapath::PollMode;
use crate::port::xdp::{XdpConfig, XdpMode};
use crate::switch::SwitchConfig;

/// tapwayd: the tapway userspace switch.
///
/// Forwards pod frames between TAP ports with MAC learning and anti-spoofing; pods are
/// attached over the control socket by the `tapway` CNI plugin or `tapwayctl attach`.
#[derive(Debug, Default, clap::Parser)]
#[command(name = "tapwayd", version)]
pub struct Args {
    /// TOML config file; flags given on the command line override its values.
    #[arg(long, env = "TAPWAYD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Control socket path [default: /run/tapway/tapway.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Directory for the state file [default: /var/lib/tapway].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Cores to pin one worker each to, e.g. `0,1`. [default: one unpinned worker]
    #[arg(long, value_delimiter = ',')]
    pub cores: Option<Vec<usize>>,
    /// `adaptive` (spin briefly, then sleep until a port is readable) or `busy` (always spin).
    #[arg(long, value_enum)]
    pub poll_mode: Option<PollMode>,
    /// The node's pod range, e.g. 10.244.1.0/24 (repeat for IPv6). Its first address is the
    /// gateway, configured on the host port.
    #[arg(long)]
    pub pod_cidr: Option<Vec<IpNet>>,
    /// The cluster's Service range, e.g. 10.96.0.0/12 (repeat for IPv6). tapwayd routes it
    /// into the host port and answers ARP/NDP for VIPs there, so the node itself and
    /// host-network pods reach ClusterIPs too. Without it only pods do.
    #[arg(long)]
    pub service_cidr: Option<Vec<IpNet>>,
    /// Default MTU of pod interfaces and of the host port [default: 1500].
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Most MAC addresses the FDB holds [default: 16384].
    #[arg(long)]
    pub fdb_max: Option<usize>,
    /// Seconds after which an unseen MAC is forgotten [default: 300].
    #[arg(long)]
    pub fdb_aging: Option<u32>,
    /// Most neighbours (ARP/NDP entries) one port may put into the neighbour table, trusted
    /// ports included; pod ports only ever teach their own addresses [default: 4096].
    #[arg(long)]
    pub neigh_per_port: Option<u32>,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Non-root uid allowed to use the control socket (repeatable).
    #[arg(long)]
    pub allow_uid: Option<Vec<u32>>,
    /// Name of the host port [default: tapway0].
    #[arg(long)]
    pub host_port: Option<String>,
    /// Frame buffers in the pool (each up to 64 KiB, touched lazily) [default: 2048].
    #[arg(long)]
    pub pool_frames: Option<usize>,
    /// Frames per receive burst [default: 32].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Most service flows tracked; the oldest go first when full [default: 262144].
    #[arg(long)]
    pub conntrack_max: Option<usize>,
    /// Most service flows one client address holds; a new flow over it is dropped
    /// (`conntrack_quota`); 0: no quota [default: 16384].
    #[arg(long)]
    pub conntrack_per_client: Option<u32>,
    /// The NIC dedicated to the pod network, bound with AF_XDP as the uplink to other nodes.
    /// Without it the node is standalone.
    #[arg(long)]
    pub uplink: Option<String>,
    /// AF_XDP mode of the uplink: `auto` (zero-copy, else native, else generic), `zero-copy`,
    /// `native` or `generic`.
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,
    /// Receive queues of the uplink to bind a socket to, e.g. `0,1` [default: 0].
    #[arg(long, value_delimiter = ',')]
    pub uplink_queues: Option<Vec<u32>>,
    /// 4 KiB UMEM frames the uplink keeps for transmit copies (segments of super-frames, flooded
    /// frames), a power of two [default: 4096]. The frame pool sits in the UMEM too.
    #[arg(long)]
    pub uplink_umem_frames: Option<u32>,
    /// Size of the uplink's rx and tx rings, a power of two [default: 1024].
    #[arg(long)]
    pub uplink_ring_size: Option<u32>,
    /// Size of the uplink's fill ring, a power of two, kept full with frame-pool buffers (the
    /// pool grows by this many per queue); at least the NIC's rx ring plus the socket's rx ring
    /// [default: 2048].
    #[arg(long)]
    pub uplink_fill_size: Option<u32>,
    /// Serve Prometheus metrics on `/metrics`, plus `/healthz` and `/readyz`, at this
    /// address, e.g. `0.0.0.0:9190`. Off by default.
    #[arg(long)]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Storm control: frames per second a pod port may flood (broadcast, multicast, unknown
    /// unicast); 0 = no packet budget [default: 1000].
    #[arg(long)]
    pub storm_pps: Option<u64>,
    /// Storm control: flooded frames a pod port may save up [default: 2000].
    #[arg(long)]
    pub storm_pps_burst: Option<u64>,
    /// Storm control: bytes per second a pod port may flood, super-frames counted whole; 0 = no
    /// byte budget [default: 12500000, 100 Mbit/s].
    #[arg(long)]
    pub storm_bytes: Option<u64>,
    /// Storm control: flooded bytes a pod port may save up, at least one 64 KiB super-frame
    /// [default: 1048576].
    #[arg(long)]
    pub storm_bytes_burst: Option<u64>,
}

/// The config file: the same keys as the long flags, in kebab-case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    cores: Option<Vec<usize>>,
    poll_mode: Option<PollMode>,
    pod_cidr: Option<Vec<IpNet>>,
    service_cidr: Option<Vec<IpNet>>,
    mtu: Option<u32>,
    fdb_max: Option<usize>,
    fdb_aging: Option<u32>,
    neigh_per_port: Option<u32>,
    log_level: Option<String>,
    allow_uid: Option<Vec<u32>>,
    host_port: Option<String>,
    pool_frames: Option<usize>,
    batch: Option<usize>,
    conntrack_max: Option<usize>,
    conntrack_per_client: Option<u32>,
    /// Conntrack idle timeouts, seconds (`[conntrack-timeouts]`: tcp-syn, tcp-established,
    /// tcp-closing, tcp-closed, udp, unreplied).
    conntrack_timeouts: Option<crate::table::conntrack::Timeouts>,
    uplink: Option<String>,
    xdp_mode: Option<XdpMode>,
    uplink_queues: Option<Vec<u32>>,
    uplink_umem_frames: Option<u32>,
    uplink_ring_size: Option<u32>,
    uplink_fill_size: Option<u32>,
    metrics_address: Option<std::net::SocketAddr>,
    storm_pps: Option<u64>,
    storm_pps_burst: Option<u64>,
    storm_bytes: Option<u64>,
    storm_bytes_burst: Option<u64>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for tapwayd.
    #[error("{path}: {source}")]
    Parse {
        /// Path.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Control socket.
    pub socket: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Pod ranges (gateway = first host address).
    pub pod_cidrs: Vec<IpNet>,
    /// Service ranges routed into the host port.
    pub service_cidrs: Vec<IpNet>,
    /// Default pod MTU.
    pub mtu: u32,
    /// Log filter.
    pub log_level: String,
    /// Extra uids allowed on the socket.
    pub allow_uids: Vec<u32>,
    /// Host port name.
    pub host_port: String,
    /// Datapath settings.
    pub switch: SwitchConfig,
    /// The AF_XDP uplink, if any.
    pub uplink: Option<XdpConfig>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub metrics_address: Option<std::net::SocketAddr>,
}

impl DaemonConfig {
    /// Merges flags, the config file they name, and defaults, and validates the result.
    pub fn resolve(args: Args) -> Result<DaemonConfig, ConfigError> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let mut sw = SwitchConfig::default();
        if let Some(cores) = args.cores.or(file.cores) {
            if cores.is_empty() {
                return Err(ConfigError::Invalid("--cores lists no core".into()));
            }
            sw.cores = cores.into_iter().map(Some).collect();
        }
        sw.poll_mode = args.poll_mode.or(file.poll_mode).unwrap_or(sw.poll_mode);
        sw.fdb_max = args.fdb_max.or(file.fdb_max).unwrap_or(sw.fdb_max);
        sw.fdb_aging_secs = args.fdb_aging.or(file.fdb_aging).unwrap_or(sw.fdb_aging_secs);
        sw.neigh_per_port = args.neigh_per_port.or(file.neigh_per_port).unwrap_or(sw.neigh_per_port);
        if sw.neigh_per_port == 0 {
            return Err(ConfigError::Invalid("neigh-per-port must be positive".into()));
        }
        sw.pool_frames = args.pool_frames.or(file.pool_frames).unwrap_or(sw.pool_frames);
        sw.batch = args.batch.or(file.batch).unwrap_or(sw.batch);
        sw.conntrack_max = args.conntrack_max.or(file.conntrack_max).unwrap_or(sw.conntrack_max);
        if sw.conntrack_max == 0 {
            return Err(ConfigError::Invalid("conntrack-max must be positive".into()));
        }
        sw.conntrack_per_client =
            args.conntrack_per_client.or(file.conntrack_per_client).unwrap_or(sw.conntrack_per_client);
        if let Some(t) = file.conntrack_timeouts {
            if t.all().contains(&0) {
                return Err(ConfigError::Invalid("conntrack timeouts must be positive".into()));
            }
            sw.conntrack_timeouts = t;
        }
        if !(1..=256).contains(&sw.batch) {
            return Err(ConfigError::Invalid(format!("batch {} is outside 1..=256", sw.batch)));
        }
        if sw.fdb_max == 0 || sw.fdb_aging_secs == 0 {
            return Err(ConfigError::Invalid("fdb-max and fdb-aging must be positive".into()));
        }
        let st = &mut sw.storm;
        st.pps = args.storm_pps.or(file.storm_pps).unwrap_or(st.pps);
        st.pps_burst = args.storm_pps_burst.or(file.storm_pps_burst).unwrap_or(st.pps_burst);
        st.bytes = args.storm_bytes.or(file.storm_bytes).unwrap_or(st.bytes);
        st.bytes_burst = args.storm_bytes_burst.or(file.storm_bytes_burst).unwrap_or(st.bytes_burst);
        if sw.pool_frames < 64 {
            return Err(ConfigError::Invalid("pool-frames must be at least 64".into()));
        }
        let mtu = args.mtu.or(file.mtu).unwrap_or(1500);
        tapway_api::validate::mtu(mtu).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let host_port = args.host_port.or(file.host_port).unwrap_or_else(|| "tapway0".into());
        tapway_api::validate::ifname(&host_port).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let pod_cidrs = args.pod_cidr.or(file.pod_cidr).unwrap_or_default();
        for c in &pod_cidrs {
            if c.prefix_len() >= c.max_prefix_len() - 1 {
                return Err(ConfigError::Invalid(format!("pod CIDR {c} is too small")));
            }
        }
        let service_cidrs: Vec<IpNet> =
            args.service_cidr.or(file.service_cidr).unwrap_or_default().iter().map(|c| c.trunc()).collect();
        for s in &service_cidrs {
            if let Some(p) = pod_cidrs.iter().find(|p| p.contains(&s.network()) || s.contains(&p.network())) {
                return Err(ConfigError::Invalid(format!("service CIDR {s} overlaps pod CIDR {p}")));
            }
        }
        let uplink = match args.uplink.or(file.uplink) {
            None => None,
            Some(ifname) => {
                tapway_api::validate::ifname(&ifname).map_err(|e| ConfigError::Invalid(e.to_string()))?;
                let d = XdpConfig::default();
                let up = XdpConfig {
                    ifname,
                    mode: args.xdp_mode.or(file.xdp_mode).unwrap_or(d.mode),
                    queues: args.uplink_queues.or(file.uplink_queues).unwrap_or(d.queues),
                    umem_frames: args.uplink_umem_frames.or(file.uplink_umem_frames).unwrap_or(d.umem_frames),
                    ring_size: args.uplink_ring_size.or(file.uplink_ring_size).unwrap_or(d.ring_size),
                    fill_size: args.uplink_fill_size.or(file.uplink_fill_size).unwrap_or(d.fill_size),
                    batch: d.batch.max(sw.batch),
                    pod_mtu: mtu,
                    ..d
                };
                crate::port::xdp::check_config(&up).map_err(|e| ConfigError::Invalid(e.to_string()))?;
                Some(up)
            }
        };
        Ok(DaemonConfig {
            socket: args.socket.or(file.socket).unwrap_or_else(|| tapway_api::DEFAULT_SOCKET.into()),
            state_dir: args.state_dir.or(file.state_dir).unwrap_or_else(|| "/var/lib/tapway".into()),
            pod_cidrs,
            service_cidrs,
            mtu,
            log_level: args.log_level.or(file.log_level).unwrap_or_else(|| "info".into()),
            allow_uids: args.allow_uid.or(file.allow_uid).unwrap_or_default(),
            host_port,
            switch: sw,
            uplink,
            metrics_address: args.metrics_address.or(file.metrics_address),
        })
    }
}

/// The first host address of a range, with the range's prefix length.
pub fn gateway_of(cidr: &IpNet) -> Option<IpNet> {
    let first = match cidr.trunc() {
        IpNet::V4(n) => std::net::IpAddr::V4(n.hosts().next()?),
        // IPv6 has no broadcast, so ipnet's hosts() starts at the network (subnet-router
        // anycast) address; the first usable one, which host-local also picks, is network + 1.
        IpNet::V6(n) => std::net::IpAddr::V6(u128::from(n.network()).checked_add(1)?.into()),
    };
    IpNet::new(first, cidr.prefix_len()).ok()
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: shown, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("tapway-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tapwayd.toml");
        std::fs::write(
            &f,
            "mtu = 9000\ncores = [0, 1]\npod-cidr = [\"10.1.0.0/24\"]\npoll-mode = \"busy\"\n",
        )
        .unwrap();
        let args = Args::parse_from(["tapwayd", "--config", f.to_str().unwrap(), "--mtu", "1400"]);
        let c = DaemonConfig::resolve(args).unwrap();
        assert_eq!(c.mtu, 1400);
        assert_eq!(c.switch.cores, vec![Some(0), Some(1)]);
        assert_eq!(c.switch.poll_mode, PollMode::Busy);
        assert_eq!(gateway_of(&c.pod_cidrs[0]), Some("10.1.0.1/24".parse::<IpNet>().unwrap()));
        std::fs::write(
            &f,
            "conntrack-max = 1000\nconntrack-per-client = 50\n[conntrack-timeouts]\ntcp-established = 3600\nudp = 30\nunreplied = 5\n",
        )
        .unwrap();
        let c =
            DaemonConfig::resolve(Args::parse_from(["tapwayd", "--config", f.to_str().unwrap()])).unwrap();
        assert_eq!(c.switch.conntrack_max, 1000);
        assert_eq!((c.switch.conntrack_per_client, c.switch.conntrack_timeouts.unreplied), (50, 5));
        assert_eq!(c.switch.conntrack_timeouts.tcp_established, 3600);
        assert_eq!(c.switch.conntrack_timeouts.udp, 30);
        assert_eq!(c.switch.conntrack_timeouts.tcp_syn, 120, "unset timeouts keep their default");
        std::fs::write(&f, "[conntrack-timeouts]\nudp = 0\n").unwrap();
        assert!(
            DaemonConfig::resolve(Args::parse_from(["tapwayd", "--config", f.to_str().unwrap()])).is_err()
        );
        std::fs::write(&f, "mtux = 1\n").unwrap();
        let args = Args::parse_from(["tapwayd", "--config", f.to_str().unwrap()]);
        assert!(matches!(DaemonConfig::resolve(args), Err(ConfigError::Parse { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &["--mtu", "100"][..],
            &["--batch", "0"],
            &["--pod-cidr", "10.0.0.1/32"],
            &["--host-port", "a/b"],
            &["--pod-cidr", "10.96.1.0/24", "--service-cidr", "10.96.0.0/12"],
            &["--uplink", "eth1", "--uplink-ring-size", "1000"],
            &["--uplink", "eth1", "--uplink-umem-frames", "64"],
            &["--neigh-per-port", "0"],
        ] {
            let mut argv = vec!["tapwayd"];
            argv.extend_from_slice(bad);
            assert!(DaemonConfig::resolve(Args::parse_from(argv)).is_err(), "{bad:?}");
        }
        let c = DaemonConfig::resolve(Args::parse_from(["tapwayd"])).unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/tapway/tapway.sock"));
        assert_eq!(c.mtu, 1500);
        assert!(c.uplink.is_none());
        assert!(c.metrics_address.is_none(), "metrics are off by default");
        assert_eq!(c.switch.neigh_per_port, crate::table::neigh::DEFAULT_PER_PORT);
        let c = DaemonConfig::resolve(Args::parse_from(["tapwayd", "--neigh-per-port", "64"])).unwrap();
        assert_eq!(c.switch.neigh_per_port, 64);
    }

    #[test]
    fn uplink_flags_and_file() {
        let dir = std::env::temp_dir().join(format!("tapway-cfg-up-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tapwayd.toml");
        std::fs::write(&f, "uplink = \"eth1\"\nxdp-mode = \"native\"\nuplink-queues = [0, 1]\n").unwrap();
        let args = Args::parse_from(["tapwayd", "--config", f.to_str().unwrap(), "--xdp-mode", "generic"]);
        let up = DaemonConfig::resolve(args).unwrap().uplink.unwrap();
        assert_eq!(up.ifname, "eth1");
        assert_eq!(up.mode, XdpMode::Generic);
        assert_eq!(up.queues, vec![0, 1]);
        std::fs::write(&f, "metrics-address = \"127.0.0.1:9190\"\n").unwrap();
        let args = Args::parse_from(["tapwayd", "--config", f.to_str().unwrap()]);
        assert_eq!(
            DaemonConfig::resolve(args).unwrap().metrics_address,
            Some("127.0.0.1:9190".parse().unwrap())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn storm_flags_and_file() {
        use crate::datapath::police::StormConfig;
        let c = DaemonConfig::resolve(Args::parse_from(["tapwayd"])).unwrap();
        assert_eq!(c.switch.storm, StormConfig::default());
        let dir = std::env::temp_dir().join(format!("tapway-cfg-storm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tapwayd.toml");
        std::fs::write(&f, "storm-pps = 50\nstorm-pps-burst = 60\nstorm-bytes = 0\n").unwrap();
        let args =
            Args::parse_from(["tapwayd", "--config", f.to_str().unwrap(), "--storm-bytes-burst", "70000"]);
        let s = DaemonConfig::resolve(args).unwrap().switch.storm;
        assert_eq!(s, StormConfig { pps: 50, pps_burst: 60, bytes: 0, bytes_burst: 70_000 });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gateways_are_first_hosts() {
        let gw = |s: &str| gateway_of(&s.parse().unwrap()).map(|g| g.to_string());
        assert_eq!(gw("10.244.1.0/24").as_deref(), Some("10.244.1.1/24"));
        assert_eq!(gw("10.244.1.77/24").as_deref(), Some("10.244.1.1/24"));
        assert_eq!(gw("fd00:10:244:1::/64").as_deref(), Some("fd00:10:244:1::1/64"));
    }
}
