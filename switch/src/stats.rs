//! Counters. Each port has one [`PortCounters`]; its rx side is only written by the worker that
//! owns the port's receive side, and its tx side only by the worker that transmits on it (the
//! same owner: frames for a port owned elsewhere are handed over through a ring). Writes are
//! therefore uncontended relaxed atomics, readable at any time by the control thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame was dropped. The names are the stable keys of `tapwayctl stats --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// The vnet header or Ethernet/IP/ARP headers are malformed.
    Malformed,
    /// A pod sent a frame whose source MAC (or ARP sender MAC) is not its own.
    SpoofedMac,
    /// A pod sent IPv4/IPv6/ARP from an address that is not one of its own.
    SpoofedIp,
    /// A pod sent a VLAN-tagged frame or an EtherType other than IPv4, IPv6 and ARP.
    EthertypeDenied,
    /// The destination MAC was learned on the port the frame came from.
    SamePort,
    /// The kernel refused the write to the egress port (interface down, bad offload...).
    TxError,
    /// The ring to the worker that owns the egress port was full.
    RingFull,
    /// No free frame buffer to copy a flooded frame for another worker.
    PoolEmpty,
    /// The egress port was detached while the frame was in flight.
    PortGone,
    /// A non-first IPv4 fragment to a service VIP (no ports to match a flow with).
    VipFragment,
    /// A frame to a VIP that cannot start a flow (a stray RST, or no reply key left).
    ServiceNoFlow,
    /// The egress port's transmit queue was full (the uplink's tx ring or UMEM).
    TxFull,
    /// Over the port's rate limit (CNI `bandwidth`): counted on the pod's port, either way.
    RateLimited,
    /// A pod's neighbour solicitation or advertisement claims an address or link-layer address
    /// that is not its own (IPv6 neighbour discovery spoofing).
    NdpSpoofed,
    /// A router advertisement or redirect from a pod: only the gateway routes.
    NdpRouterOnly,
    /// A flooded frame (broadcast, multicast, unknown unicast) over the ingress port's storm
    /// control rate.
    StormControl,
    /// A new flow refused because its client holds its whole conntrack quota.
    ConntrackQuota,
    /// A translated frame whose backend is not behind any port (removed or not yet resolved):
    /// dropped, never flooded.
    BackendUnreachable,
    /// A vnet header whose GSO type, header length or segment size does not fit the frame, or
    /// that would be cut into more segments than the kernel allows.
    GsoInvalid,
    /// A frame whose source MAC is pinned to another port (an attached pod's MAC arriving on
    /// the host or uplink port).
    MacPinned,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 20] = [
        DropReason::Malformed,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::EthertypeDenied,
        DropReason::SamePort,
        DropReason::TxError,
        DropReason::RingFull,
        DropReason::PoolEmpty,
        DropReason::PortGone,
        DropReason::VipFragment,
        DropReason::ServiceNoFlow,
        DropReason::TxFull,
        DropReason::RateLimited,
        DropReason::NdpSpoofed,
        DropReason::NdpRouterOnly,
        DropReason::StormControl,
        DropReason::ConntrackQuota,
        DropReason::BackendUnreachable,
        DropReason::GsoInvalid,
        DropReason::MacPinned,
    ];

    /// The reason's stable name.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::EthertypeDenied => "ethertype_denied",
            DropReason::SamePort => "same_port",
            DropReason::TxError => "tx_error",
            DropReason::RingFull => "ring_full",
            DropReason::PoolEmpty => "pool_empty",
            DropReason::PortGone => "port_gone",
            DropReason::VipFragment => "vip_fragment",
            DropReason::ServiceNoFlow => "service_no_flow",
            DropReason::TxFull => "tx_full",
            DropReason::RateLimited => "rate_limited",
            DropReason::NdpSpoofed => "ndp_spoofed",
            DropReason::NdpRouterOnly => "ndp_router_only",
            DropReason::StormControl => "storm_control",
            DropReason::ConntrackQuota => "conntrack_quota",
            DropReason::BackendUnreachable => "backend_unreachable",
            DropReason::GsoInvalid => "gso_invalid",
            DropReason::MacPinned => "mac_pinned",
        }
    }
}

/// Counters of one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames read from the port.
    pub rx_packets: AtomicU64,
    /// Ethernet bytes read from the port.
    pub rx_bytes: AtomicU64,
    /// GSO super-frames among `rx_packets`.
    pub rx_gso_packets: AtomicU64,
    /// Frames written to the port.
    pub tx_packets: AtomicU64,
    /// Ethernet bytes written to the port.
    pub tx_bytes: AtomicU64,
    /// Frames dropped, indexed by [`DropReason`]. Rx-side reasons count on the ingress port,
    /// tx-side reasons on the egress port.
    pub drops: [AtomicU64; DropReason::ALL.len()],
}

/// Adds `n` to a counter that only one thread writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

impl PortCounters {
    /// Counts one dropped frame.
    #[inline]
    pub fn drop_frame(&self, reason: DropReason) {
        bump(&self.drops[reason as usize], 1);
    }

    /// How many frames were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    /// Non-zero drop counters by name.
    pub fn drop_map(&self) -> BTreeMap<String, u64> {
        DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), self.dropped(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Switch-wide counters (not tied to one port).
#[derive(Debug, Default)]
pub struct SwitchCounters {
    /// Source MACs that could not be learned because the FDB was full.
    pub fdb_full: AtomicU64,
    /// Rx bursts cut short because the frame pool was empty.
    pub pool_empty: AtomicU64,
    /// Frames handed from one worker to another.
    pub ring_handoffs: AtomicU64,
    /// Frames flooded (broadcast, multicast, unknown unicast).
    pub flooded: AtomicU64,
    /// New service flows answered with RST / ICMP unreachable (no usable backend).
    pub svc_rejected: AtomicU64,
    /// New service flows whose backend MAC was unknown (turned into an ARP request).
    pub svc_arp_requests: AtomicU64,
    /// Neighbours not learned because their port holds its `--neigh-per-port` quota.
    pub neigh_quota: AtomicU64,
    /// Neighbours not learned because the neighbour table is full.
    pub neigh_full: AtomicU64,
    /// Neighbours not learned because a pod port claimed an address or MAC not its own.
    pub neigh_foreign: AtomicU64,
}

impl SwitchCounters {
    /// All counters by name.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        [
            ("fdb_full", &self.fdb_full),
            ("pool_empty", &self.pool_empty),
            ("ring_handoffs", &self.ring_handoffs),
            ("flooded", &self.flooded),
            ("svc_rejected", &self.svc_rejected),
            ("svc_arp_requests", &self.svc_arp_requests),
            ("neigh_quota", &self.neigh_quota),
            ("neigh_full", &self.neigh_full),
            ("neigh_foreign", &self.neigh_foreign),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.load(Relaxed)))
        .collect()
    }
}
