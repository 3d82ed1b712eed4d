//! Request and response types. Field names are the stable JSON names (`tapwayctl --json`
//! prints these same structures); new fields are only ever added, with defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One request line: the protocol version and the operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    /// Protocol version; must be [`crate::PROTOCOL_VERSION`].
    pub v: u32,
    /// The operation and its arguments.
    #[serde(flatten)]
    pub op: Op,
    /// Do it even though another writer owns what it changes: `service_set`, `service_delete`
    /// and `service_sync` while tapwayd follows the Kubernetes API (the watch puts its own
    /// state back on its next change or relist). Absent: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Every operation of the control API, tagged by `"op"`.
// One is parsed per request line: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create a pod port (TAP) in a netns and plug it into the switch.
    Attach(AttachRequest),
    /// Remove a pod port. Succeeds when the port does not exist.
    Detach(PortSelector),
    /// Verify that a port exists and its interface matches what ADD set up.
    Check(CheckRequest),
    /// List every port.
    Ports,
    /// Per-port and switch-wide counters.
    Stats,
    /// Dump the forwarding database.
    Fdb,
    /// Daemon version, uptime, workers, poll mode.
    Status,
    /// Detach every pod port of `network` that is not listed in `valid`.
    Gc(GcRequest),
    /// Create or replace one service port (VIP, port, protocol) and its backends.
    ServiceSet(crate::ServiceSpec),
    /// Remove one service port. Its existing flows are kept until they end.
    ServiceDelete(crate::ServiceKey),
    /// Make the service table equal to the list given (idempotent).
    ServiceSync(crate::ServiceSync),
    /// List service ports with backends and counters.
    ServiceList,
    /// Dump connection-tracking entries.
    ConntrackList(ConntrackListRequest),
    /// Remove connection-tracking entries.
    ConntrackFlush(crate::ConntrackFilter),
    /// Allocate addresses for a CNI attachment without a port (the `tapway-ipam` plugin).
    IpamAllocate(crate::IpamAllocateRequest),
    /// Release what [`Op::IpamAllocate`] gave an owner. Succeeds when it holds nothing.
    IpamRelease(crate::IpamKey),
    /// Whether an owner holds an allocation (`not_found` when not).
    IpamCheck(crate::IpamKey),
    /// Release every allocation of `network` whose attachment is not listed in `valid`.
    IpamGc(GcRequest),
    /// The pod ranges with the addresses in use and their owners, and the allocations.
    IpamList,
}

/// Arguments of [`Op::ConntrackList`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ConntrackListRequest {
    /// Which flows.
    #[serde(flatten)]
    pub filter: crate::ConntrackFilter,
    /// At most this many flows in the answer (0: the daemon's default of 1000).
    pub limit: usize,
}

/// Arguments of [`Op::Attach`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AttachRequest {
    /// Path of the pod's network namespace (e.g. `/var/run/netns/cni-…`).
    pub netns: String,
    /// Interface name inside the pod (`CNI_IFNAME`).
    pub ifname: String,
    /// MAC to give the interface; a locally administered one is generated when absent.
    pub mac: Option<String>,
    /// MTU; the daemon's `--mtu` when absent.
    pub mtu: Option<u32>,
    /// Addresses to configure, each a CIDR with an optional gateway.
    pub ips: Vec<IpConfig>,
    /// Routes to install. For each family that has an address with a gateway and no default
    /// route listed here, a default route via that gateway is added.
    pub routes: Vec<RouteConfig>,
    /// Who owns the port: the CNI container ID, network name and Kubernetes pod.
    pub owner: Owner,
    /// Rate limits (the CNI `bandwidth` capability); none when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Allocate the addresses here, from tapwayd's pod ranges (`ips` must then be empty): the
    /// CNI plugin's `"ipam": {"type": "tapway-ipam"}`. The allocation is recorded with the
    /// port and answered in [`PortInfo::ipam`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipam: Option<crate::IpamRequest>,
}

/// Rate limits of a pod port, with the CNI `bandwidth` capability's meaning and units: rates in
/// bits per second, bursts in bits; *ingress* is traffic to the pod, *egress* traffic from it.
/// A rate of 0 means no limit that way.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Bandwidth {
    /// Most bits per second delivered to the pod.
    pub ingress_rate: u64,
    /// Bits the pod may receive at once above the rate.
    pub ingress_burst: u64,
    /// Most bits per second the pod may send.
    pub egress_rate: u64,
    /// Bits the pod may send at once above the rate.
    pub egress_burst: u64,
}

/// An address on a pod interface.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpConfig {
    /// CIDR, e.g. `10.244.0.5/24` or `fd00::5/64`.
    pub address: String,
    /// Gateway for this address' subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A route inside the pod.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteConfig {
    /// Destination CIDR (`0.0.0.0/0` for the default route).
    pub dst: String,
    /// Next hop; absent means the gateway of the first address of the same family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// Who a port belongs to. All optional: a port made by hand with `tapwayctl attach` has none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Owner {
    /// `CNI_CONTAINERID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// CNI network name from the netconf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `K8S_POD_NAMESPACE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// `K8S_POD_UID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`: the pod's sandbox ("pause") container. Under CRI it is
    /// also `CNI_CONTAINERID`; it differs where a runtime attaches another container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_infra_container_id: Option<String>,
}

/// Names one port: by `container_id` + `ifname` (what CNI DEL has) or by `netns` + `ifname`.
/// When both `container_id` and `netns` are given, `container_id` decides and `netns` is
/// ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PortSelector {
    /// Netns path the port was attached in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// CNI container ID the port was attached for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Interface name inside the pod.
    pub ifname: String,
}

/// Arguments of [`Op::Check`]: the port and what its interface should look like.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CheckRequest {
    /// The port.
    #[serde(flatten)]
    pub port: PortSelector,
    /// Expected MAC, if any.
    pub mac: Option<String>,
    /// Addresses that must be present (CIDR).
    pub ips: Vec<String>,
    /// Routes that must be present.
    pub routes: Vec<RouteConfig>,
}

/// Arguments of [`Op::Gc`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct GcRequest {
    /// Only ports whose owner network is this one are candidates.
    pub network: String,
    /// Attachments to keep.
    pub valid: Vec<Attachment>,
}

/// A CNI attachment: container ID and interface name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID", alias = "container_id")]
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// One response line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// Protocol version of the answer.
    pub v: u32,
    /// Whether the operation succeeded; `result` is set when true, `error` when false.
    pub ok: bool,
    /// The operation's result (its type depends on the operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// An error answer: a machine-readable code and a sentence for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ApiError {
    /// What kind of error.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
}

/// Error codes. Scripts may rely on these names; `tapwayctl` maps them to exit codes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not valid JSON or not a known request shape.
    BadRequest,
    /// `v` is not a version the daemon speaks.
    UnsupportedVersion,
    /// The request line is longer than [`crate::MAX_REQUEST_BYTES`].
    TooLarge,
    /// An argument failed validation (name, CIDR, MAC, MTU, path).
    InvalidArgument,
    /// The named port does not exist.
    NotFound,
    /// The interface or port already exists.
    Exists,
    /// The port exists but does not match what was expected (CHECK).
    Mismatch,
    /// The switch is full (ports, FDB).
    ResourceExhausted,
    /// The kernel refused an operation (netlink, TAP ioctl, netns).
    System,
    /// The caller is not allowed to use the socket.
    PermissionDenied,
    /// An address asked for belongs to someone else: another pod's IP or MAC, the gateway's IP
    /// or the host port's MAC.
    AddressConflict,
    /// The request conflicts with the daemon's state: the service table is owned by the
    /// Kubernetes watch (retry with `force` to write anyway), or tapwayd cannot serve yet
    /// (it waits for the Node's pod range: retry later).
    FailedPrecondition,
    /// No free address is left in a range set the allocation needs.
    AddressExhausted,
}

impl ErrorCode {
    /// The code's JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Exists => "exists",
            ErrorCode::Mismatch => "mismatch",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::System => "system",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::AddressConflict => "address_conflict",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::AddressExhausted => "address_exhausted",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port as `ports` lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PortInfo {
    /// Switch port number (stable while the port exists).
    pub id: u16,
    /// `pod` or `host`.
    pub kind: String,
    /// Name of the TAP device (pod TAPs are created under their `ifname` in the pod netns).
    pub name: String,
    /// Netns path (empty for the host port).
    pub netns: String,
    /// Interface name in its netns.
    pub ifname: String,
    /// MAC of the interface.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// Addresses (CIDR).
    pub ips: Vec<String>,
    /// Worker that owns the port's receive side.
    pub worker: usize,
    /// Who the port belongs to.
    pub owner: Owner,
    /// Rate limits, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Set when the port is recorded but could not be re-opened after a restart (see
    /// [`LostInfo`]); absent for a working port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<LostInfo>,
    /// What tapwayd allocated for the port (its addresses with their gateways, and the
    /// routes), when the attach asked it to ([`AttachRequest::ipam`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipam: Option<crate::IpamAllocation>,
}

/// Why a recorded pod port is not working: after a restart its netns or interface could not
/// be re-opened. The port keeps its number, MAC and addresses and stays in the state file;
/// tapwayd retries it and publishes it again once it opens, until a DEL or GC removes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LostInfo {
    /// The last attempt's error.
    pub reason: String,
    /// When it was first found lost (Unix seconds).
    pub since: u64,
    /// Attempts to re-open it so far.
    pub attempts: u32,
    /// Seconds until the next attempt.
    pub next_retry_secs: u64,
}

/// A lost pod port as `status` lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LostPort {
    /// Switch port number (kept for it).
    pub id: u16,
    /// Netns path.
    pub netns: String,
    /// Interface name in the netns.
    pub ifname: String,
    /// Why and since when.
    #[serde(flatten)]
    pub lost: LostInfo,
}

/// Counters of one port. Drop reasons are keys of `drops` (see docs/operations.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PortStats {
    /// Switch port number.
    pub id: u16,
    /// Interface name in its netns (`tapway0` for the host port).
    pub ifname: String,
    /// Frames read from the port.
    pub rx_packets: u64,
    /// Bytes read from the port (Ethernet frames, without the vnet header).
    pub rx_bytes: u64,
    /// Frames written to the port.
    pub tx_packets: u64,
    /// Bytes written to the port.
    pub tx_bytes: u64,
    /// Super-frames (vnet header with GSO) among `rx_packets`.
    pub rx_gso_packets: u64,
    /// Frames dropped, by reason (only non-zero reasons are listed).
    pub drops: BTreeMap<String, u64>,
}

/// Result of [`Op::Stats`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StatsReport {
    /// One entry per port.
    pub ports: Vec<PortStats>,
    /// Switch-wide counters (FDB full, ring full, pool empty...).
    pub switch: BTreeMap<String, u64>,
}

/// One FDB entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdbEntry {
    /// Learned MAC.
    pub mac: String,
    /// Port it was last seen on.
    pub port: u16,
    /// That port's interface name.
    pub ifname: String,
    /// Seconds since it was last seen.
    pub age_secs: u64,
}

/// A worker thread as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Worker index.
    pub id: usize,
    /// Core it is pinned to, if pinning succeeded.
    pub core: Option<usize>,
    /// Ports whose receive side it owns.
    pub ports: Vec<u16>,
}

/// Result of [`Op::Status`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StatusInfo {
    /// Daemon version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// `busy` or `adaptive`.
    pub poll_mode: String,
    /// Workers.
    pub workers: Vec<WorkerInfo>,
    /// Number of ports (host port included).
    pub ports: usize,
    /// Node pod range.
    pub pod_cidr: Option<String>,
    /// Gateway address (on the host port).
    pub gateway: Option<String>,
    /// Host port name.
    pub host_port: String,
    /// FDB entries / bound.
    pub fdb_entries: usize,
    /// FDB size bound.
    pub fdb_max: usize,
    /// FDB aging in seconds.
    pub fdb_aging_secs: u64,
    /// Frame buffers in the pool.
    pub pool_total: usize,
    /// Frame buffers free right now.
    pub pool_free: usize,
    /// Why an attach would fail now (shutting down, no free port number, waiting for the
    /// Node's pod range); empty when tapwayd
    /// is ready. The CNI plugin's STATUS fails with code 50 unless it is empty. Absent from
    /// older daemons, which then read as ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
    /// The AF_XDP uplink, when the node has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkStatus>,
    /// Pod ports recorded in the state file that could not be re-opened (they count in
    /// `ports`); absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<LostPort>,
    /// Control connections being served now (the one asking included).
    #[serde(default)]
    pub control_connections: usize,
    /// The bound on `control_connections`.
    #[serde(default)]
    pub control_max: usize,
    /// The Kubernetes API watch, when tapwayd follows the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeStatus>,
}

/// The Kubernetes API watch as `status` shows it (and the metrics export).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct KubeStatus {
    /// The API server's URL.
    pub server: String,
    /// The node whose Node object is followed, if any.
    pub node: Option<String>,
    /// Whether the last request to the API server succeeded (the watches are up).
    pub connected: bool,
    /// When `connected` last changed, in seconds since the Unix epoch.
    pub since_unix_secs: u64,
    /// Seconds since the last event (object added, changed, deleted or listed); absent before
    /// the first.
    pub last_event_age_secs: Option<f64>,
    /// Objects held, by kind (`Service`, `EndpointSlice`, `Node`).
    pub objects: BTreeMap<String, u64>,
    /// Events received, by kind (list items included).
    pub events: BTreeMap<String, u64>,
    /// The same by kind and type: `listed` (an item of a list), `applied` (added or
    /// modified), `deleted`.
    pub event_types: BTreeMap<String, BTreeMap<String, u64>>,
    /// Errors from the API server so far (failed connections, lists and watches, 410 Gone).
    pub errors: u64,
    /// Lists after the first, by kind: after a 410 Gone, or a reconnection.
    pub relists: BTreeMap<String, u64>,
    /// Syncs applied to the service table (each a coalesced batch of events).
    pub syncs: u64,
    /// Service ports programmed by the watch.
    pub service_ports: u64,
    /// The last error from the API server (absent once nothing failed since start).
    pub last_error: Option<String>,
    /// Seconds since the last error.
    pub last_error_age_secs: Option<f64>,
    /// What tapwayd waits for before it can serve (e.g. the Node's `spec.podCIDRs`).
    pub waiting: Option<String>,
    /// Whether the watch owns the service table (then `sync` and `service set/delete` need
    /// `--force`).
    pub owns_services: bool,
}

/// The uplink as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct UplinkStatus {
    /// Interface.
    pub ifname: String,
    /// AF_XDP mode obtained: `zero-copy`, `native` or `generic`.
    pub mode: String,
    /// Receive queues bound.
    pub queues: Vec<u32>,
    /// The worker serving each queue (same order as `queues`).
    #[serde(default)]
    pub queue_workers: Vec<usize>,
    /// MTU of the interface.
    pub mtu: u32,
    /// UMEM frames in all (the frame pool's included).
    pub umem_frames: usize,
    /// Port number.
    pub port: u16,
}

/// Result of [`Op::Detach`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DetachResult {
    /// False when there was nothing to detach.
    pub detached: bool,
}

/// Result of [`Op::Gc`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GcResult {
    /// Ports removed.
    pub removed: Vec<PortInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_all_ops() {
        let ops = vec![
            Op::Attach(AttachRequest {
                netns: "/run/netns/a".into(),
                ifname: "eth0".into(),
                ips: vec![IpConfig { address: "10.0.0.2/24".into(), gateway: Some("10.0.0.1".into()) }],
                ..Default::default()
            }),
            Op::Detach(PortSelector {
                netns: Some("/run/netns/a".into()),
                container_id: None,
                ifname: "eth0".into(),
            }),
            Op::Check(CheckRequest::default()),
            Op::Ports,
            Op::Stats,
            Op::Fdb,
            Op::Status,
            Op::Gc(GcRequest {
                network: "n".into(),
                valid: vec![Attachment { container_id: "c".into(), ifname: "eth0".into() }],
            }),
        ];
        for op in ops {
            let req = Request { v: 1, op, force: false };
            let line = serde_json::to_string(&req).unwrap();
            let back: Request = serde_json::from_str(&line).unwrap();
            assert_eq!(back, req, "{line}");
        }
    }

    #[test]
    fn wire_shape_is_stable() {
        let line = serde_json::to_string(&Request { v: 1, op: Op::Status, force: false }).unwrap();
        assert_eq!(line, r#"{"v":1,"op":"status"}"#);
        let forced: Request =
            serde_json::from_str(r#"{"v":1,"op":"service_sync","services":[],"force":true}"#).unwrap();
        assert!(forced.force);
        assert!(matches!(forced.op, Op::ServiceSync(ref s) if s.services.is_empty()));
        let line = serde_json::to_string(&forced).unwrap();
        assert!(line.contains(r#""force":true"#), "{line}");
        let req: Request =
            serde_json::from_str(r#"{"v":1,"op":"detach","container_id":"abc","ifname":"eth0"}"#).unwrap();
        assert_eq!(
            req.op,
            Op::Detach(PortSelector { netns: None, container_id: Some("abc".into()), ifname: "eth0".into() })
        );
        let gc: Request = serde_json::from_str(
            r#"{"v":1,"op":"gc","network":"n","valid":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert!(matches!(gc.op, Op::Gc(ref g) if g.valid.len() == 1));
        let err = Response {
            v: 1,
            ok: false,
            result: None,
            error: Some(ApiError::new(ErrorCode::InvalidArgument, "bad")),
        };
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"v":1,"ok":false,"error":{"code":"invalid_argument","message":"bad"}}"#
        );
    }

    #[test]
    fn unknown_op_is_an_error() {
        assert!(serde_json::from_str::<Request>(r#"{"v":1,"op":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"v":1}"#).is_err());
    }
}
