//! The port table: every port the switch forwards between, with what the datapath needs to
//! know about it (its I/O, its MAC and addresses for anti-spoofing, which worker owns it).
//!
//! Workers never see the table change under them: the control plane builds a new
//! [`PortTable`] and swaps it in (see [`crate::switch::Switch::publish`]); each worker picks up
//! the new snapshot at the top of its loop. A detached port's I/O stays valid until the last
//! worker drops the old snapshot.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use tapway_api::Owner;

use crate::port::PortIo;
use crate::stats::PortCounters;
use crate::wire::Mac;

/// What kind of port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// The host port (`tapway0`): the node's gateway. Trusted, not anti-spoofed, but it may
    /// not send from a pod's MAC (MAC pinning).
    Host,
    /// A pod's interface. Anti-spoofed.
    Pod,
    /// The AF_XDP uplink to other nodes. Trusted (frames of remote pods), learns and floods
    /// like any port; like the host port, it may not send from a local pod's MAC.
    Uplink,
}

impl PortKind {
    /// `host`, `pod` or `uplink`.
    pub fn name(self) -> &'static str {
        match self {
            PortKind::Host => "host",
            PortKind::Pod => "pod",
            PortKind::Uplink => "uplink",
        }
    }
}

/// What a pod port may send as: its own MAC and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoofGuard {
    /// The pod interface's MAC.
    pub mac: Mac,
    /// Its IPv4 addresses.
    pub v4: Vec<Ipv4Addr>,
    /// Its IPv6 addresses (besides its link-local one).
    pub v6: Vec<Ipv6Addr>,
    /// Its link-local address: the EUI-64 one of `mac`, which the kernel derives since
    /// tapwayd sets the interface's `addr_gen_mode` (the only link-local source allowed).
    pub link_local: Ipv6Addr,
}

impl SpoofGuard {
    /// A guard allowing `mac`, its link-local address and the host addresses of `ips`.
    pub fn new(mac: Mac, ips: &[IpNet]) -> SpoofGuard {
        let mut g = SpoofGuard {
            mac,
            v4: Vec::new(),
            v6: Vec::new(),
            link_local: crate::wire::ndp::eui64_link_local(&mac),
        };
        for ip in ips {
            match ip {
                IpNet::V4(n) => g.v4.push(n.addr()),
                IpNet::V6(n) => g.v6.push(n.addr()),
            }
        }
        g
    }

    /// Whether `ip` is one of the pod's IPv6 addresses, its link-local one included.
    pub fn owns_v6(&self, ip: &Ipv6Addr) -> bool {
        *ip == self.link_local || self.v6.contains(ip)
    }

    /// Whether `ip` is one of the pod's addresses: what its port may teach the neighbour table.
    pub fn owns(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.contains(a),
            IpAddr::V6(a) => self.owns_v6(a),
        }
    }
}

/// Control-plane facts about a port, shown by `tapwayctl ports`.
#[derive(Debug, Clone, Default)]
pub struct PortMeta {
    /// TAP name at creation.
    pub name: String,
    /// Netns path (empty for the host port).
    pub netns: String,
    /// Interface name in its netns.
    pub ifname: String,
    /// Interface index in its netns.
    pub ifindex: u32,
    /// MTU.
    pub mtu: u32,
    /// Addresses.
    pub ips: Vec<IpNet>,
    /// Owner (CNI container, pod).
    pub owner: Owner,
    /// What tapwayd allocated for the port (in-daemon IPAM), if it did.
    pub ipam: Option<tapway_api::IpamAllocation>,
}

/// One port.
pub struct PortEntry {
    /// Port number (index in the table).
    pub id: u16,
    /// Host or pod.
    pub kind: PortKind,
    /// Frame I/O.
    pub io: Arc<dyn PortIo>,
    /// MAC of the interface behind the port.
    pub mac: Mac,
    /// Anti-spoofing rules (`None`: trusted port).
    pub guard: Option<SpoofGuard>,
    /// Worker that owns the receive side and transmits on it.
    pub worker: usize,
    /// Counters.
    pub counters: PortCounters,
    /// Rate limits (pod ports with the CNI `bandwidth` capability).
    pub police: crate::datapath::police::PortPolice,
    /// Control-plane facts.
    pub meta: PortMeta,
}

#[cfg(test)]
impl PortEntry {
    /// A test port: `kind` on `io`, MAC `02:00:00:00:00:<id>`, trusted (no guard), on worker 0,
    /// with default counters, police and meta; tests change fields with `..PortEntry::test(..)`.
    pub(crate) fn test(id: u16, kind: PortKind, io: Arc<dyn PortIo>) -> PortEntry {
        PortEntry {
            id,
            kind,
            io,
            mac: [2, 0, 0, 0, 0, id as u8],
            guard: None,
            worker: 0,
            counters: PortCounters::default(),
            police: Default::default(),
            meta: PortMeta::default(),
        }
    }
}

/// An immutable snapshot of all ports.
#[derive(Clone, Default)]
pub struct PortTable {
    slots: Vec<Option<Arc<PortEntry>>>,
    ids: Vec<u16>,
    /// Pod MACs → their port, sorted by MAC: MAC pinning (OVS port security). Rebuilt with
    /// every new snapshot, so workers read it without a lock.
    pins: Vec<(Mac, u16)>,
}

impl PortTable {
    /// The port numbered `id`.
    #[inline]
    pub fn get(&self, id: u16) -> Option<&Arc<PortEntry>> {
        self.slots.get(usize::from(id)).and_then(|s| s.as_ref())
    }

    /// Port numbers in use, ascending.
    pub fn ids(&self) -> &[u16] {
        &self.ids
    }

    /// All ports, by number.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PortEntry>> {
        self.ids.iter().filter_map(|id| self.get(*id))
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no ports.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The port `mac` is pinned to: the pod port whose MAC it is. No other port may send
    /// from it, and frames to it go there whatever the FDB says.
    #[inline]
    pub fn pinned(&self, mac: &Mac) -> Option<u16> {
        self.pins.binary_search_by(|(m, _)| m.cmp(mac)).ok().and_then(|i| self.pins.get(i)).map(|(_, p)| *p)
    }

    fn rebuild_pins(&mut self) {
        let pins: Vec<(Mac, u16)> =
            self.iter().filter(|p| p.kind == PortKind::Pod).map(|p| (p.mac, p.id)).collect();
        self.pins = pins;
        // Sorted by MAC; of two pods with one MAC (which attach refuses) the lower port wins.
        self.pins.sort_unstable();
        self.pins.dedup_by_key(|(m, _)| *m);
    }

    /// The lowest free pod port number below `max` (port 0 is the host port's).
    pub fn free_id(&self, max: usize) -> Option<u16> {
        let limit = max.min(usize::from(u16::MAX));
        (1..limit)
            .find(|i| self.slots.get(*i).is_none_or(|s| s.is_none()))
            .and_then(|i| u16::try_from(i).ok())
    }

    /// A copy with `entry` added (replacing a port of the same number).
    pub fn with(&self, entry: Arc<PortEntry>) -> PortTable {
        let mut t = self.clone();
        let i = usize::from(entry.id);
        if t.slots.len() <= i {
            t.slots.resize(i + 1, None);
        }
        if t.slots[i].is_none() {
            t.ids.push(entry.id);
            t.ids.sort_unstable();
        }
        t.slots[i] = Some(entry);
        t.rebuild_pins();
        t
    }

    /// A copy without port `id`.
    pub fn without(&self, id: u16) -> PortTable {
        let mut t = self.clone();
        if let Some(s) = t.slots.get_mut(usize::from(id)) {
            *s = None;
        }
        t.ids.retain(|i| *i != id);
        t.rebuild_pins();
        t
    }
}
