//! Service (VIP) types of the control API: what `tapwayctl service …`, `tapwayctl sync` and
//! `tapwayctl conntrack …` send, and what tapwayd answers.
//!
//! A *service port* is one (VIP, port, protocol) triple with its backends; a Kubernetes Service
//! with three ports is three service ports sharing a `name`. tapwayd keys everything by
//! [`ServiceKey`]; the name is a label for people.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The IP protocol number (6 or 17).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(format!("unsupported protocol {other:?} (tcp or udp)")),
        }
    }
}

/// Identifies one service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    /// The virtual IP (ClusterIP).
    pub vip: IpAddr,
    /// The service port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.vip {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, self.protocol.name()),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, self.protocol.name()),
        }
    }
}

/// One backend (endpoint) of a service port, with its Kubernetes conditions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackendSpec {
    /// Backend pod address.
    pub ip: IpAddr,
    /// Backend (target) port.
    pub port: u16,
    /// Relative weight for new flows (Maglev); 1 when absent. 0 takes no new flows.
    #[serde(default = "one")]
    pub weight: u16,
    /// Ready to take new flows (EndpointSlice `conditions.ready`).
    #[serde(default = "yes")]
    pub ready: bool,
    /// Still serving (EndpointSlice `conditions.serving`); a terminating backend that serves
    /// takes new flows only when no backend is ready, as kube-proxy does.
    #[serde(default = "yes")]
    pub serving: bool,
    /// Shutting down (EndpointSlice `conditions.terminating`): no new flows while any backend
    /// is ready; its existing flows go on.
    #[serde(default)]
    pub terminating: bool,
}

fn one() -> u16 {
    1
}
fn yes() -> bool {
    true
}

impl BackendSpec {
    /// A ready backend of weight 1.
    pub fn ready(ip: IpAddr, port: u16) -> BackendSpec {
        BackendSpec { ip, port, weight: 1, ready: true, serving: true, terminating: false }
    }
}

/// Session affinity of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Affinity {
    /// Every new flow is placed by its 5-tuple hash.
    #[default]
    None,
    /// New flows from one client IP go to the same backend while the client keeps using it
    /// within `timeout` seconds (Kubernetes `ClientIP`, default 10800).
    ClientIp {
        /// Idle seconds after which the pin is forgotten.
        timeout: u32,
    },
}

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// Everything tapwayd needs to serve one service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// A label, e.g. `default/web:http`.
    #[serde(default)]
    pub name: String,
    /// VIP, port, protocol.
    #[serde(flatten)]
    pub key: ServiceKey,
    /// Session affinity.
    #[serde(default)]
    pub affinity: Affinity,
    /// The backends (order does not matter).
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
}

/// Arguments of `service_delete`.
pub type ServiceDelete = ServiceKey;

/// Arguments of `service_sync`: the complete desired service table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSync {
    /// Every service port that should exist; all others are removed.
    pub services: Vec<ServiceSpec>,
}

/// What a sync (or upsert/delete) changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResult {
    /// Service ports created.
    pub added: usize,
    /// Service ports whose backends or affinity changed.
    pub updated: usize,
    /// Service ports removed.
    pub removed: usize,
    /// Service ports left as they were.
    pub unchanged: usize,
    /// Time the daemon spent building and publishing the new table, microseconds.
    pub elapsed_us: u64,
}

/// One service port as `service_list` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// The spec as programmed.
    #[serde(flatten)]
    pub spec: ServiceSpec,
    /// Size of its Maglev lookup table (a prime).
    pub maglev_size: usize,
    /// Per-backend counters, in the order of `spec.backends`.
    pub backend_stats: Vec<BackendStats>,
    /// Flows created for this service port.
    pub new_flows: u64,
    /// New flows refused because no backend was usable (TCP RST / ICMP unreachable sent).
    pub rejected: u64,
}

/// Counters of one backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Flows placed on this backend.
    pub new_flows: u64,
    /// Share of the Maglev table this backend holds (0.0 – 1.0): where new flows go.
    pub table_share: f64,
}

/// A filter for conntrack dump and flush. Empty matches every flow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConntrackFilter {
    /// Only flows to this VIP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip: Option<IpAddr>,
    /// Only flows placed on this backend address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<IpAddr>,
}

/// One connection-tracking entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowInfo {
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// Client address and port.
    pub client: String,
    /// VIP and port the client addressed.
    pub vip: String,
    /// Backend address and port the flow is pinned to.
    pub backend: String,
    /// Source address the backend sees when it differs from the client (hairpin SNAT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snat: Option<String>,
    /// Tracking state: `syn_sent`, `established`, `closing`, `closed`, `udp`, or `ended`
    /// (the backend was removed or a pod detached: segments either way get a RST).
    pub state: String,
    /// Whether the backend answered yet. Until it does the entry lives at most the
    /// `unreplied` timeout, and a full table may evict it.
    #[serde(default)]
    pub replied: bool,
    /// Confirmed (replied and established, or replied UDP): never evicted while live.
    #[serde(default)]
    pub confirmed: bool,
    /// Seconds until the entry expires unless traffic refreshes it.
    pub expires_in: u32,
}

/// Answer of `conntrack_list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackList {
    /// Matching flows (at most `limit`).
    pub flows: Vec<FlowInfo>,
    /// Flows matching in all, listed or not.
    pub total: usize,
}

/// Answer of `conntrack_flush`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushResult {
    /// Flows removed.
    pub flushed: usize,
}
