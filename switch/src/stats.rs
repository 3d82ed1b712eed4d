//! Counters, kept per worker and summed when read.
//!
//! Every counter the datapath writes lives in a per-worker slot ([`PerWorker`]): worker `w`
//! writes only slot `w` (cache-line padded, so no two workers share a line), and a reader (the
//! control thread: `tapwayctl stats`, `/metrics`) adds the slots up. So each counter has one
//! writer and a write is an uncontended relaxed add, whichever workers a port's frames cross:
//! the uplink, whose queues several workers serve, a frame dropped on a port owned by another
//! worker, the switch-wide `flooded` and `ring_handoffs`. A [`PerWorker`] made with fewer slots
//! than there are workers (`Default`: one, for tests) stays correct, the workers then sharing a
//! slot.
//!
//! One idiom counts everything: a [`Counter`] and its methods (`add`, `inc`, `get`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

/// A monotonic counter with one writer (relaxed atomics: readable from any thread).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One `T` (a struct of [`Counter`]s) per worker, each on cache lines of its own.
#[derive(Debug)]
pub struct PerWorker<T> {
    /// Never empty.
    slots: Box<[CachePadded<T>]>,
}

impl<T: Default> PerWorker<T> {
    /// A slot for each of `workers` workers (at least one).
    pub fn new(workers: usize) -> PerWorker<T> {
        PerWorker { slots: (0..workers.max(1)).map(|_| CachePadded::new(T::default())).collect() }
    }
}

impl<T: Default> Default for PerWorker<T> {
    /// One slot, shared by every worker (tests and tools that run no workers).
    fn default() -> Self {
        PerWorker::new(1)
    }
}

impl<T> PerWorker<T> {
    /// Worker `worker`'s slot, the only one it writes (the first slot when there are fewer
    /// slots than workers).
    #[inline]
    pub fn at(&self, worker: usize) -> &T {
        match self.slots.get(worker) {
            Some(s) => s,
            None => &self.slots[0],
        }
    }

    /// Every slot.
    pub fn slots(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|s| &**s)
    }

    /// The sum over workers of the counter `field` picks.
    pub fn sum(&self, field: impl Fn(&T) -> &Counter) -> u64 {
        self.slots().map(|s| field(s).get()).fold(0, u64::wrapping_add)
    }
}

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

/// One worker's counters of one port.
#[derive(Debug, Default)]
pub struct PortCount {
    /// Frames read from the port.
    pub rx_packets: Counter,
    /// Ethernet bytes read from the port.
    pub rx_bytes: Counter,
    /// GSO super-frames among `rx_packets`.
    pub rx_gso_packets: Counter,
    /// Frames written to the port.
    pub tx_packets: Counter,
    /// Ethernet bytes written to the port.
    pub tx_bytes: Counter,
    /// Frames dropped, indexed by [`DropReason`]. Rx-side reasons count on the ingress port,
    /// tx-side reasons on the egress port.
    pub drops: [Counter; DropReason::ALL.len()],
}

impl PortCount {
    /// Counts one frame dropped for `reason`.
    #[inline]
    pub fn drop_frame(&self, reason: DropReason) {
        self.drop_frames(reason, 1);
    }

    /// Counts `n` frames dropped for `reason`.
    #[inline]
    pub fn drop_frames(&self, reason: DropReason, n: u64) {
        self.drops[reason as usize].add(n);
    }
}

/// Counters of one port, per worker: the owner counts rx and tx, another worker the frames it
/// could not hand over to the owner (`ring_full`, `pool_empty`), each worker serving uplink
/// queues its own rx and tx.
pub type PortCounters = PerWorker<PortCount>;

/// A port's counters summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortTotals {
    /// Frames read from the port.
    pub rx_packets: u64,
    /// Ethernet bytes read from the port.
    pub rx_bytes: u64,
    /// GSO super-frames among `rx_packets`.
    pub rx_gso_packets: u64,
    /// Frames written to the port.
    pub tx_packets: u64,
    /// Ethernet bytes written to the port.
    pub tx_bytes: u64,
}

impl PerWorker<PortCount> {
    /// The rx/tx counters summed over workers.
    pub fn totals(&self) -> PortTotals {
        PortTotals {
            rx_packets: self.sum(|c| &c.rx_packets),
            rx_bytes: self.sum(|c| &c.rx_bytes),
            rx_gso_packets: self.sum(|c| &c.rx_gso_packets),
            tx_packets: self.sum(|c| &c.tx_packets),
            tx_bytes: self.sum(|c| &c.tx_bytes),
        }
    }

    /// How many frames were dropped for `reason`, over all workers.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.sum(|c| &c.drops[reason as usize])
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

/// One worker's switch-wide counters (not tied to one port); the switch keeps them per worker
/// ([`Switch::counters`](crate::switch::Switch::counters)).
#[derive(Debug, Default)]
pub struct SwitchCounters {
    /// Source MACs that could not be learned because the FDB was full.
    pub fdb_full: Counter,
    /// Rx bursts cut short because the frame pool was empty.
    pub pool_empty: Counter,
    /// Frames handed from one worker to another.
    pub ring_handoffs: Counter,
    /// Frames flooded (broadcast, multicast, unknown unicast).
    pub flooded: Counter,
    /// New service flows answered with RST / ICMP unreachable (no usable backend).
    pub svc_rejected: Counter,
    /// New service flows whose backend MAC was unknown (turned into an ARP request).
    pub svc_arp_requests: Counter,
    /// Neighbours not learned because their port holds its `--neigh-per-port` quota.
    pub neigh_quota: Counter,
    /// Neighbours not learned because the neighbour table is full.
    pub neigh_full: Counter,
    /// Neighbours not learned because a pod port claimed an address or MAC not its own.
    pub neigh_foreign: Counter,
}

impl SwitchCounters {
    /// Each counter with its stable name (the keys of `tapwayctl stats --json`).
    fn named(&self) -> [(&'static str, &Counter); 9] {
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
    }

    /// This slot's counters by name.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        self.named().into_iter().map(|(k, v)| (k.to_string(), v.get())).collect()
    }
}

impl PerWorker<SwitchCounters> {
    /// All counters by name, summed over workers.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for slot in self.slots() {
            for (k, v) in slot.named() {
                let sum = out.entry(k.to_string()).or_insert(0u64);
                *sum = sum.wrapping_add(v.get());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_workers_count_in_their_own_slots_and_reads_sum_them() {
        let port = PortCounters::new(2);
        let sw = PerWorker::<SwitchCounters>::new(2);
        std::thread::scope(|s| {
            for w in 0..2 {
                let (port, sw) = (&port, &sw);
                s.spawn(move || {
                    let (c, k) = (port.at(w), sw.at(w));
                    for _ in 0..1000 {
                        c.rx_packets.inc();
                        c.rx_bytes.add(60);
                        c.drop_frame(DropReason::RingFull);
                        k.flooded.inc();
                    }
                    k.ring_handoffs.add(w as u64 + 1);
                });
            }
        });
        assert_eq!(port.at(0).rx_packets.get(), 1000, "each worker wrote its own slot");
        assert_eq!(port.at(1).rx_packets.get(), 1000);
        let t = port.totals();
        assert_eq!((t.rx_packets, t.rx_bytes, t.tx_packets), (2000, 120_000, 0));
        assert_eq!(port.dropped(DropReason::RingFull), 2000);
        assert_eq!(port.drop_map().into_iter().collect::<Vec<_>>(), vec![("ring_full".to_string(), 2000)]);
        let m = sw.to_map();
        assert_eq!(m["flooded"], 2000);
        assert_eq!(m["ring_handoffs"], 3);
        assert_eq!(m["fdb_full"], 0);
    }

    #[test]
    fn the_summed_map_has_the_keys_of_one_slot() {
        let one = SwitchCounters::default();
        let many = PerWorker::<SwitchCounters>::new(3);
        assert_eq!(one.to_map(), many.to_map());
        // The stable keys of `tapwayctl stats --json` and of /metrics.
        let keys: Vec<String> = many.to_map().into_keys().collect();
        assert_eq!(
            keys,
            [
                "fdb_full",
                "flooded",
                "neigh_foreign",
                "neigh_full",
                "neigh_quota",
                "pool_empty",
                "ring_handoffs",
                "svc_arp_requests",
                "svc_rejected"
            ]
        );
    }

    #[test]
    fn fewer_slots_than_workers_share_the_first() {
        let c = PortCounters::default();
        c.at(0).tx_packets.inc();
        c.at(7).tx_packets.inc();
        assert_eq!(c.at(0).tx_packets.get(), 2);
        assert_eq!(c.totals().tx_packets, 2);
        assert_eq!(PerWorker::<PortCount>::new(0).slots().count(), 1, "never without a slot");
    }
}
