//! The control plane: the Unix-socket API ([`server`]), its operations ([`Control::handle`]),
//! pod port lifecycle ([`pods`]), the host port ([`host`]) and the state file ([`state`]).
//!
//! Operations that change ports are serialized by one mutex (they configure namespaces over
//! netlink and take milliseconds); the datapath never waits for it: it sees the result as a new
//! port-table snapshot.

pub mod host;
pub mod ipam;
pub mod pods;
pub mod server;
pub mod services;
pub mod state;
pub mod uplink;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tapway_api::{
    ApiError, ErrorCode, FdbEntry, Op, PortInfo, PortStats, StatsReport, StatusInfo, WorkerInfo,
};

use crate::port::tap::TapPort;
use crate::switch::Switch;
use crate::table::PortEntry;

/// Gives freed heap back to the kernel after megabytes were parsed and dropped (a service
/// sync, a watch list): glibc would otherwise keep those pages in the arena of the thread that
/// freed them for the life of the process.
pub(crate) fn release_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Shorthand for an API error.
pub fn api_err(code: ErrorCode, msg: impl Into<String>) -> ApiError {
    ApiError::new(code, msg)
}

/// The control plane.
pub struct Control {
    /// The switch.
    pub switch: Arc<Switch>,
    /// Default MTU for pods.
    pub mtu: u32,
    /// Pod ranges.
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Service ranges routed into the host port.
    pub service_cidrs: Vec<ipnet::IpNet>,
    /// Host port name.
    pub host_port: String,
    /// State file directory.
    pub state_dir: PathBuf,
    /// Serializes port changes; holds the pod TAPs by port number.
    pods: Mutex<HashMap<u16, Arc<TapPort>>>,
    /// Serializes service changes; holds the compiled services.
    services: Mutex<services::ServiceState>,
    /// Serializes writes of the state file.
    save_lock: Mutex<()>,
    /// The standalone IPAM plugin's allocations ([`ipam`]); changed under `pods`.
    ipam: Mutex<ipam::IpamBook>,
    /// The last write of the state file failed ([`Control::resave_if_dirty`]).
    state_dirty: std::sync::atomic::AtomicBool,
    /// Recorded pod ports that could not be re-opened ([`state`]).
    lost: Mutex<state::LostPorts>,
    /// The control connections' slots ([`server`]).
    pub conns: Arc<server::Slots>,
    /// The AF_XDP uplink and its port number, once set up ([`uplink`]).
    uplink: Mutex<Option<(u16, Arc<crate::port::xdp::XdpPort>)>>,
    /// Attach/detach counts and latency, the watcher's report ([`crate::metrics`]).
    pub metrics: crate::metrics::ControlMetrics,
    /// The Kubernetes watch, when tapwayd follows the API ([`watch`]).
    pub kube: std::sync::OnceLock<Arc<tapway_kube::watch::Watch>>,
    /// Updates from the watch applied to the service table.
    pub watch_syncs: std::sync::atomic::AtomicU64,
    /// The watch changed the services since the services file was last written.
    services_unsaved: std::sync::atomic::AtomicBool,
}

impl Control {
    /// A control plane for `switch`.
    pub fn new(switch: Arc<Switch>, cfg: &crate::config::DaemonConfig) -> Control {
        Control {
            switch,
            mtu: cfg.mtu,
            pod_cidrs: cfg.pod_cidrs.clone(),
            service_cidrs: cfg.service_cidrs.clone(),
            host_port: cfg.host_port.clone(),
            state_dir: cfg.state_dir.clone(),
            pods: Mutex::new(HashMap::new()),
            services: Mutex::new(services::ServiceState::default()),
            save_lock: Mutex::new(()),
            ipam: Default::default(),
            state_dirty: Default::default(),
            lost: Default::default(),
            conns: server::Slots::new(server::MAX_CONNECTIONS),
            uplink: Mutex::new(None),
            metrics: Default::default(),
            kube: std::sync::OnceLock::new(),
            watch_syncs: Default::default(),
            services_unsaved: Default::default(),
        }
    }

    /// Runs one operation.
    pub fn handle(&self, op: Op) -> Result<serde_json::Value, ApiError> {
        let value = match op {
            Op::Attach(req) => to_json(self.metrics.attach(|| self.attach(req))?),
            Op::Detach(sel) => {
                let res = self.detach(&sel);
                self.metrics.detach(&res);
                to_json(res?)
            }
            Op::Check(req) => {
                self.check(&req)?;
                serde_json::json!({})
            }
            Op::Ports => to_json(self.port_list()),
            Op::Stats => to_json(self.stats()),
            Op::Fdb => to_json(self.fdb()),
            Op::Status => to_json(self.status()),
            Op::Gc(req) => to_json(self.gc(&req)?),
            Op::ServiceSet(spec) => to_json(self.service_set(spec)?),
            Op::ServiceDelete(key) => to_json(self.service_delete(&key)?),
            Op::ServiceSync(sync) => to_json(self.service_sync(sync.services)?),
            Op::ServiceList => to_json(self.service_list()),
            Op::ConntrackList(req) => to_json(self.conntrack_list(&req.filter, req.limit)),
            Op::ConntrackFlush(filter) => to_json(self.conntrack_flush(&filter)),
            Op::IpamAllocate(req) => to_json(self.ipam_allocate(req)?),
            Op::IpamRelease(key) => to_json(self.ipam_release(&key)?),
            Op::IpamCheck(key) => to_json(self.ipam_check(&key)?),
            Op::IpamGc(req) => to_json(self.ipam_gc(&req)?),
            Op::IpamList => to_json(self.ipam_list()),
        };
        Ok(value)
    }

    fn stats(&self) -> StatsReport {
        let ports = self
            .switch
            .ports()
            .iter()
            .map(|p| {
                let t = p.counters.totals();
                PortStats {
                    id: p.id,
                    ifname: p.meta.ifname.clone(),
                    rx_packets: t.rx_packets,
                    rx_bytes: t.rx_bytes,
                    tx_packets: t.tx_packets,
                    tx_bytes: t.tx_bytes,
                    rx_gso_packets: t.rx_gso_packets,
                    drops: p.counters.drop_map(),
                }
            })
            .collect();
        let mut switch = self.switch.counters.to_map();
        switch.extend(self.service_counters());
        switch.extend(self.uplink_stats());
        switch.extend(self.conns.counters());
        // A gauge beside the counters: entries in the neighbour table now.
        switch.insert("neigh_entries".into(), self.switch.neigh.len() as u64);
        StatsReport { ports, switch }
    }

    fn fdb(&self) -> Vec<FdbEntry> {
        let table = self.switch.ports();
        self.switch
            .fdb
            .dump(self.switch.now())
            .into_iter()
            .map(|(mac, port, age)| FdbEntry {
                mac: tapway_api::validate::format_mac(&mac),
                port,
                ifname: table.get(port).map(|p| p.meta.ifname.clone()).unwrap_or_default(),
                age_secs: u64::from(age),
            })
            .collect()
    }

    fn status(&self) -> StatusInfo {
        let sw = &self.switch;
        let table = sw.ports();
        let workers = (0..sw.lanes.len())
            .map(|id| WorkerInfo {
                id,
                core: sw.config.cores.get(id).copied().flatten(),
                ports: table.iter().filter(|p| p.worker == id).map(|p| p.id).collect(),
            })
            .collect();
        StatusInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: sw.uptime_secs(),
            poll_mode: sw.config.poll_mode.name().to_string(),
            workers,
            ports: table.len(),
            pod_cidr: self.pod_cidrs.first().map(|c| c.to_string()),
            gateway: self.pod_cidrs.first().and_then(crate::config::gateway_of).map(|g| g.addr().to_string()),
            host_port: self.host_port.clone(),
            fdb_entries: sw.fdb.len(),
            fdb_max: sw.fdb.max_entries(),
            fdb_aging_secs: u64::from(sw.fdb.aging_secs()),
            pool_total: sw.pool.total(),
            pool_free: sw.pool.total() - sw.pool.outstanding(),
            not_ready: self.not_ready(&table),
            uplink: self.uplink_status(),
            lost: self.lost_ports(),
            control_connections: self.conns.in_use(),
            control_max: self.conns.max(),
            kube: self.kube.get().map(|w| w.status()),
        }
    }

    /// Why an attach would fail now; empty when ready (`status`'s `not_ready`).
    fn not_ready(&self, table: &crate::table::PortTable) -> Vec<String> {
        let mut why = Vec::new();
        if self.switch.stopping() {
            why.push("tapwayd is shutting down".to_string());
        }
        if table.free_id(self.switch.config.max_ports).is_none() {
            why.push(format!("no free port: all {} are in use", self.switch.config.max_ports));
        }
        why
    }
}

fn to_json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// A port as the API shows it.
pub fn port_info(p: &PortEntry) -> PortInfo {
    PortInfo {
        id: p.id,
        kind: p.kind.name().to_string(),
        name: p.meta.name.clone(),
        netns: p.meta.netns.clone(),
        ifname: p.meta.ifname.clone(),
        mac: tapway_api::validate::format_mac(&p.mac),
        mtu: p.meta.mtu,
        ips: p.meta.ips.iter().map(|i| i.to_string()).collect(),
        worker: p.worker,
        owner: p.meta.owner.clone(),
        bandwidth: p.police.config,
        lost: None,
        ipam: p.meta.ipam.clone(),
    }
}
