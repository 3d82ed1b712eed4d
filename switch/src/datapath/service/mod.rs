//! The service stage: Service VIPs translated inside the switch (kube-proxy's job).
//!
//! For each IPv4 TCP/UDP frame that passed anti-spoofing and learning:
//! - **to a VIP** (`dst:dport/proto` is in the [`ServiceTable`]): the flow's conntrack entry,
//!   or a new one with a backend chosen by Maglev (or by client-IP affinity), gives the backend;
//!   the frame is DNATed to it ([`nat`]), SNATed as well when the client is its own backend
//!   (hairpin), and sent to the backend's MAC from the gateway MAC. No usable backend: the
//!   frame is turned into a TCP RST or ICMP port unreachable back to the client
//!   ([`crate::wire::tcp::reset_in_place`], [`crate::wire::icmp::port_unreachable_in_place`]).
//!   Backend MAC unknown: the frame is turned into an ARP request (IPv6: a neighbour
//!   solicitation) for it; the client retransmits, and by then the answer has been learned.
//!   A new flow over its client's conntrack quota (or into a table full of confirmed flows)
//!   is dropped (`conntrack_quota`); a flow whose backend was removed is answered with a RST.
//! - **from a backend** (`src:sport/proto` may be a service backend): when conntrack knows the
//!   reply, its source goes back to VIP:port (and its destination back to the client after
//!   hairpin SNAT) before it reaches the client.
//! - anything else is left to the forward stage.
//!
//! IPv4 and IPv6 work the same way; a service's VIP and backends are of one family.
//!
//! The stage reads the frame's [`FrameMeta`] from the parse stage (addresses, ports, flags,
//! offsets, the vnet header's checksum state) and keeps it true: a rewrite updates it, and a
//! frame turned into an answer (ARP, NDP, RST, ICMP, all built by [`crate::wire`]) is parsed
//! again.
//!
//! Rewritten frames choose their egress port themselves: a hairpinned frame legitimately goes
//! back out of the port it came from, which the forward stage would refuse. They are never
//! flooded: the FDB, else the port table, names the port; a reply with neither, or an answer
//! of a removed backend, is dropped (`backend_unreachable`).

pub mod nat;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;

use nat::{rewrite, set_macs, Side};

use super::Disposition;
use crate::pool::Frame;
use crate::stats::{DropReason, SwitchCounters};
use crate::table::affinity::AffinityTable;
use crate::table::conntrack::{Conntrack, CtState, Dir, Flow, FlowKey, InsertError, SHARDS};
use crate::table::maglev::mix64;
use crate::table::neigh::Neighbours;
use crate::table::services::{Service, ServiceTable};
use crate::table::{Fdb, PortEntry, PortKind, PortTable};
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{ethertype, HEADER_LEN as ETH_LEN};
use crate::wire::frame::{parse, IpL4};
use crate::wire::ip::PROTO_TCP;
use crate::wire::ndp::{na_flags, NdpRepr};
use crate::wire::tcp::flags as tcp_flags;
use crate::wire::vnet::F_NEEDS_CSUM;
use crate::wire::{icmp, tcp, FrameMeta, L3Src, Mac, VnetHdr, VNET_HDR_LEN};

/// Attempts at finding a free reply key (SNAT port) for one new flow.
const SNAT_TRIES: u16 = 16;

/// Everything the service stage reads and writes.
pub struct Services<'a> {
    /// The service snapshot.
    pub table: &'a ServiceTable,
    /// Connection tracking.
    pub ct: &'a Conntrack,
    /// Client-IP affinity pins.
    pub affinity: &'a AffinityTable,
    /// ARP-learned neighbours (backends on other nodes).
    pub neigh: &'a Neighbours,
    /// The port table (local pods' MACs and addresses).
    pub ports: &'a PortTable,
}

/// Per-frame context shared with the pipeline.
pub struct Ctx<'a> {
    /// Service tables.
    pub svc: &'a Services<'a>,
    /// FDB, to pick the egress port of a rewritten frame.
    pub fdb: &'a Fdb,
    /// Switch-wide counters.
    pub counters: &'a SwitchCounters,
    /// Switch clock, seconds.
    pub now: u32,
}

/// A 64-bit digest of an address.
fn addr_hash(a: &IpAddr) -> u64 {
    match a {
        IpAddr::V4(v) => mix64(u64::from(u32::from(*v))),
        IpAddr::V6(v) => {
            let x = u128::from(*v);
            mix64(mix64(x as u64) ^ (x >> 64) as u64)
        }
    }
}

/// The 5-tuple hash new flows are placed by (the same on every node and worker).
fn flow_hash(l: &IpL4) -> u64 {
    let b = (u64::from(l.sport) << 32) | (u64::from(l.dport) << 16) | u64::from(l.proto);
    mix64(addr_hash(&l.src) ^ addr_hash(&l.dst).rotate_left(17) ^ b)
}

impl Ctx<'_> {
    /// Runs the stage on one frame. `Some` when the stage decided the frame's fate; `meta` is
    /// then the frame's as it leaves.
    pub fn process(
        &self,
        ingress: &PortEntry,
        frame: &mut Frame,
        meta: &mut FrameMeta,
    ) -> Option<Disposition> {
        if ingress.kind == PortKind::Host {
            if let Some(mac) = self.svc.table.host_vip_mac {
                if let Some(d) = self.answer_host_neighbour(ingress, frame, meta, mac) {
                    return Some(d);
                }
            }
        }
        if meta.ethertype != ethertype::IPV4 && meta.ethertype != ethertype::IPV6 {
            return None;
        }
        let l = meta.l4?;
        let table = self.svc.table;
        if l.later_fragment {
            // Without ports a fragment cannot be matched to its flow.
            return table.is_vip(l.dst).then_some(Disposition::Drop(DropReason::VipFragment));
        }
        if let Some(svc) = table.lookup(l.dst, l.dport, l.proto) {
            return Some(self.to_service(ingress, frame, meta, l, svc));
        }
        if table.is_reply_source(l.src, l.sport, l.proto) {
            return self.reply_from_backend(ingress, frame, meta, l);
        }
        None
    }

    fn to_service(
        &self,
        ingress: &PortEntry,
        frame: &mut Frame,
        meta: &mut FrameMeta,
        mut l: IpL4,
        svc: &Service,
    ) -> Disposition {
        // Only frames the stage rewrites need to know whether their L4 checksum is partial.
        let partial = meta.vnet.flags & F_NEEDS_CSUM != 0;
        let key = FlowKey { proto: l.proto, src: l.src, sport: l.sport, dst: l.dst, dport: l.dport };
        let found = match self.svc.ct.lookup(&key, Dir::Orig, l.flags, self.now) {
            // A new connection on the port of an ended one starts afresh.
            Some(f)
                if f.state == CtState::Ended
                    && l.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN =>
            {
                self.svc.ct.remove(&key);
                None
            }
            // The switch ended the flow: end the connection now rather than let the client
            // retransmit into the void.
            Some(f) if f.state == CtState::Ended => return self.reset(ingress, frame, meta, &l),
            found => found,
        };
        let flow = match found {
            Some(f) => f,
            None => match self.new_flow(ingress, frame, meta, &l, svc) {
                Ok(f) => f,
                Err(d) => return d,
            },
        };
        let Some(port) = self.egress_port(&flow.backend_mac) else {
            // Never flooded: a backend on this node is found by its port above, so this one
            // is behind the uplink or the node and its MAC aged out; ask again, like a new flow.
            return self.resolve_request(frame, meta, flow.backend.0);
        };
        let Some(eth) = frame.bytes_mut().get_mut(VNET_HDR_LEN..) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        rewrite(eth, &mut l, Side::Dst, flow.backend.0, flow.backend.1, partial);
        if let Some((ip, port)) = flow.snat {
            rewrite(eth, &mut l, Side::Src, ip, port, partial);
        }
        set_macs(eth, meta, &flow.backend_mac, &self.svc.table.gateway_mac);
        meta.set_l4(l);
        Disposition::Unicast(port)
    }

    fn reply_from_backend(
        &self,
        ingress: &PortEntry,
        frame: &mut Frame,
        meta: &mut FrameMeta,
        mut l: IpL4,
    ) -> Option<Disposition> {
        let partial = meta.vnet.flags & F_NEEDS_CSUM != 0;
        let key = FlowKey { proto: l.proto, src: l.src, sport: l.sport, dst: l.dst, dport: l.dport };
        let flow = self.svc.ct.lookup(&key, Dir::Reply, l.flags, self.now)?;
        if flow.state == CtState::Ended {
            // The client was told the connection is over (or is gone): so is the backend.
            return Some(self.reset(ingress, frame, meta, &l));
        }
        // A reply is never flooded for want of the client's port.
        let Some(port) = self.egress_port(&flow.client_mac) else {
            return Some(Disposition::Drop(DropReason::BackendUnreachable));
        };
        let eth = frame.bytes_mut().get_mut(VNET_HDR_LEN..)?;
        rewrite(eth, &mut l, Side::Src, flow.vip.0, flow.vip.1, partial);
        if flow.snat.is_some() {
            rewrite(eth, &mut l, Side::Dst, flow.client.0, flow.client.1, partial);
        }
        set_macs(eth, meta, &flow.client_mac, &flow.vip_mac);
        meta.set_l4(l);
        Some(Disposition::Unicast(port))
    }

    /// The port a rewritten frame for `mac` goes to, even the ingress one, in the forward
    /// stage's order: the pod port it is pinned to (the port table's index), else where the
    /// FDB learned it, else the trusted port (host, uplink) whose MAC it is (an entry aged out
    /// while the flow lives).
    fn egress_port(&self, mac: &Mac) -> Option<u16> {
        let ports = self.svc.ports;
        ports
            .pinned(mac)
            .or_else(|| self.fdb.lookup(mac, self.now))
            .or_else(|| ports.iter().find(|p| p.kind != PortKind::Pod && p.mac == *mac).map(|p| p.id))
    }

    /// Turns the frame into an ARP request (IPv6: a neighbour solicitation) for `ip`.
    fn resolve_request(&self, frame: &mut Frame, meta: &mut FrameMeta, ip: IpAddr) -> Disposition {
        self.counters.svc_arp_requests.inc();
        let d = match ip {
            IpAddr::V4(ip) => self.arp_request(frame, ip),
            IpAddr::V6(ip) => self.neighbour_solicitation(frame, ip),
        };
        reparse(frame, meta);
        d
    }

    /// Places a new flow: affinity pin, else Maglev; tracks it. `Err` carries the fate of a
    /// frame that could not start a flow (rejected, or turned into an ARP request).
    fn new_flow(
        &self,
        ingress: &PortEntry,
        frame: &mut Frame,
        meta: &mut FrameMeta,
        l: &IpL4,
        svc: &Service,
    ) -> Result<Flow, Disposition> {
        if l.proto == PROTO_TCP && l.flags & tcp_flags::RST != 0 {
            return Err(Disposition::Drop(DropReason::ServiceNoFlow));
        }
        let svc_key = svc.packed();
        let affinity = svc.affinity_timeout();
        let pinned = affinity
            .and_then(|_| self.svc.affinity.get(svc_key, l.src, self.now))
            .filter(|b| svc.usable.iter().any(|u| (u.ip, u.port) == *b));
        let hash = match affinity {
            Some(_) => addr_hash(&l.src),
            None => flow_hash(l),
        };
        let backend = match pinned {
            Some(b) => svc.usable.iter().find(|u| (u.ip, u.port) == b),
            None => svc.pick(hash),
        };
        let Some(backend) = backend else {
            svc.counters.rejected.fetch_add(1, Relaxed);
            self.counters.svc_rejected.inc();
            return Err(self.reject(ingress, frame, meta, l));
        };
        let Some(backend_mac) = self.resolve(backend.ip) else {
            return Err(self.resolve_request(frame, meta, backend.ip));
        };
        let (vip_mac, client_mac) = (meta.dst, meta.src);
        let hairpin = backend.ip == l.src;
        let snat_ip = if hairpin { self.svc.table.gateway_for(l.src).unwrap_or(l.dst) } else { l.src };
        let mut flow = Flow {
            proto: l.proto,
            client: (l.src, l.sport),
            vip: (l.dst, l.dport),
            backend: (backend.ip, backend.port),
            snat: hairpin.then_some((snat_ip, l.sport)),
            client_mac,
            vip_mac,
            backend_mac,
            state: Flow::initial_state(l.proto, l.flags),
            replied: false,
            last_seen: self.now,
        };
        // The node's own connections (kubelet probes, host-network pods) all come from the
        // gateway address: no quota for them.
        let counted = ingress.kind != PortKind::Host;
        // A taken reply key (two flows of one client port to one backend through two VIPs,
        // or two hairpin clients on the same port) is resolved by moving the source port by
        // a multiple of SHARDS, which keeps the flow's two keys in one shard.
        for k in 1..=SNAT_TRIES {
            match self.svc.ct.insert(flow, counted) {
                Ok(f) => {
                    if f.backend == flow.backend {
                        backend.flows.fetch_add(1, Relaxed);
                        svc.counters.new_flows.fetch_add(1, Relaxed);
                    }
                    if let Some(timeout) = affinity {
                        self.svc.affinity.set(svc_key, l.src, f.backend, timeout, self.now);
                    }
                    return Ok(f);
                }
                Err(InsertError::ReplyKeyInUse) => {
                    let port = l.sport.wrapping_add(k.wrapping_mul(SHARDS as u16));
                    flow.snat = Some((snat_ip, port));
                }
                // Over the client's quota, or only confirmed flows left to evict: the new
                // flow waits rather than push out anyone's live flow.
                Err(InsertError::Quota | InsertError::Full) => {
                    return Err(Disposition::Drop(DropReason::ConntrackQuota));
                }
            }
        }
        Err(Disposition::Drop(DropReason::ServiceNoFlow))
    }

    /// The MAC of a backend: the gateway's for host-network backends (the node routes them),
    /// else a local pod's port, else what ARP taught us.
    fn resolve(&self, ip: IpAddr) -> Option<Mac> {
        let t = self.svc.table;
        // On-link: in the node's pod ranges, or in the subnet of an attached pod (a flat
        // cluster network spans several nodes' ranges).
        let pod_subnet = || {
            self.svc
                .ports
                .iter()
                .any(|p| p.kind == PortKind::Pod && p.meta.ips.iter().any(|n| n.trunc().contains(&ip)))
        };
        if t.gateways.contains(&ip) || (t.via_gateway(ip) && !pod_subnet()) {
            return Some(t.gateway_mac);
        }
        let local = |g: &crate::table::SpoofGuard| match ip {
            IpAddr::V4(a) => g.v4.contains(&a),
            IpAddr::V6(a) => g.v6.contains(&a),
        };
        self.svc
            .ports
            .iter()
            .find(|p| p.guard.as_ref().is_some_and(local))
            .map(|p| p.mac)
            .or_else(|| self.svc.neigh.lookup(ip, self.now))
    }

    /// Answers a segment of an ended TCP flow with a RST back to its sender; a RST itself is
    /// dropped.
    fn reset(&self, ingress: &PortEntry, frame: &mut Frame, meta: &mut FrameMeta, l: &IpL4) -> Disposition {
        if l.flags & tcp_flags::RST != 0 {
            return Disposition::Drop(DropReason::BackendUnreachable);
        }
        self.svc.ct.counters.resets.fetch_add(1, Relaxed);
        self.reject(ingress, frame, meta, l)
    }

    /// Turns the frame into the kube-proxy REJECT answer, back out of the ingress port.
    fn reject(&self, ingress: &PortEntry, frame: &mut Frame, meta: &mut FrameMeta, l: &IpL4) -> Disposition {
        let gw = self.svc.table.gateway_mac;
        let len = frame.ethernet().len();
        let buf = frame.buffer_mut();
        let (hdr, eth) = buf.split_at_mut(VNET_HDR_LEN);
        let n = if l.proto == PROTO_TCP {
            eth.get_mut(..len).and_then(|e| tcp::reset_in_place(e, l, &gw))
        } else {
            icmp::port_unreachable_in_place(eth, len, l, &gw)
        };
        match n {
            Some(n) => {
                VnetHdr::default().emit(hdr);
                frame.set_len(VNET_HDR_LEN + n);
                reparse(frame, meta);
                Disposition::Unicast(ingress.id)
            }
            None => Disposition::Drop(DropReason::ServiceNoFlow),
        }
    }

    /// Answers the node's ARP request or neighbour solicitation for a VIP with `mac`, in place,
    /// back to the host port: the node then sends VIP traffic into the switch.
    fn answer_host_neighbour(
        &self,
        ingress: &PortEntry,
        frame: &mut Frame,
        meta: &mut FrameMeta,
        mac: Mac,
    ) -> Option<Disposition> {
        let eth = frame.bytes_mut().get_mut(VNET_HDR_LEN..)?;
        match (meta.l3, meta.ndp) {
            (L3Src::Arp { .. }, _) => {
                // Request for a VIP: becomes the reply, sender and target swapped.
                let req = ArpPacket::new_checked(eth.get(ETH_LEN..)?)?;
                if req.operation() != arp::op::REQUEST || !self.svc.table.is_vip(req.target_ip().into()) {
                    return None;
                }
                arp::reply_in_place(eth, &mac)?;
            }
            (L3Src::Ipv6(src), Ok(Some(NdpRepr::NeighborSolicit { target, .. }))) => {
                // A neighbour solicitation for a VIP: becomes a solicited, override
                // advertisement with our link-layer address.
                if !self.svc.table.is_vip(target.into()) {
                    return None;
                }
                let dst = if src.is_unspecified() { Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1) } else { src };
                let na = NdpRepr::NeighborAdvert {
                    flags: na_flags::SOLICITED | na_flags::OVERRIDE,
                    target,
                    target_lladdr: Some(mac),
                };
                let n = na.emit_frame(mac, meta.src, target, dst, eth)?;
                let hdr = frame.buffer_mut().get_mut(..VNET_HDR_LEN)?;
                VnetHdr::default().emit(hdr);
                frame.set_len(VNET_HDR_LEN + n);
            }
            _ => return None,
        }
        reparse(frame, meta);
        Some(Disposition::Unicast(ingress.id))
    }

    /// Turns the frame into a broadcast ARP request for `ip` from the gateway.
    fn arp_request(&self, frame: &mut Frame, ip: std::net::Ipv4Addr) -> Disposition {
        let gw_mac = self.svc.table.gateway_mac;
        let gw_ip = match self.svc.table.gateway_for(IpAddr::V4(ip)) {
            Some(IpAddr::V4(g)) => g,
            _ => std::net::Ipv4Addr::UNSPECIFIED,
        };
        let (hdr, eth) = frame.buffer_mut().split_at_mut(VNET_HDR_LEN);
        let Some(n) = arp::emit_request(eth, &gw_mac, gw_ip, ip) else {
            return Disposition::Drop(DropReason::ServiceNoFlow);
        };
        VnetHdr::default().emit(hdr);
        frame.set_len(VNET_HDR_LEN + n);
        Disposition::Flood
    }

    /// Turns the frame into an IPv6 neighbour solicitation for `ip` from the gateway (RFC 4861
    /// §7.2.2: to the solicited-node multicast group, hop limit 255, with our link-layer
    /// address), which the switch floods.
    fn neighbour_solicitation(&self, frame: &mut Frame, ip: Ipv6Addr) -> Disposition {
        let gw_mac = self.svc.table.gateway_mac;
        let src = match self.svc.table.gateway_for(IpAddr::V6(ip)) {
            Some(IpAddr::V6(g)) => g,
            _ => return Disposition::Drop(DropReason::ServiceNoFlow),
        };
        let t = ip.octets();
        let group = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(t[13]),
            u16::from_be_bytes([t[14], t[15]]),
        );
        let ns = NdpRepr::NeighborSolicit { target: ip, source_lladdr: Some(gw_mac) };
        let (hdr, eth) = frame.buffer_mut().split_at_mut(VNET_HDR_LEN);
        let Some(n) = ns.emit_frame(gw_mac, [0x33, 0x33, 0xff, t[13], t[14], t[15]], src, group, eth) else {
            return Disposition::Drop(DropReason::ServiceNoFlow);
        };
        VnetHdr::default().emit(hdr);
        frame.set_len(VNET_HDR_LEN + n);
        Disposition::Flood
    }
}

/// After the stage turned `frame` into another one (an answer or a resolution request), its
/// meta is that frame's (these are rare: parsing again costs less than tracking each field).
fn reparse(frame: &Frame, meta: &mut FrameMeta) {
    if let Ok(m) = parse(frame.bytes()) {
        *meta = m;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::sync::Arc;

    use tapway_api::{Affinity, BackendSpec, Protocol, ServiceKey, ServiceSpec};

    use super::*;
    use crate::pool::{FramePool, LocalPool};
    use crate::port::mem::MemPort;
    use crate::stats::PortCounters;
    use crate::table::conntrack::Timeouts;
    use crate::table::{PortMeta, SpoofGuard};
    use crate::wire::frame::parse_frame;

    const GW: Mac = [2, 0, 0, 0, 0, 0xee];
    const VIP: [u8; 4] = [10, 96, 0, 10];
    const CLIENT: [u8; 4] = [10, 0, 0, 2];
    const BACKEND: [u8; 4] = [10, 0, 0, 3];
    const VIP6: &str = "fd00:96::10";

    fn port(id: u16, kind: PortKind, ip: [u8; 4]) -> Arc<PortEntry> {
        let mac = [2, 0, 0, 0, 0, id as u8];
        let net = ipnet::IpNet::new(IpAddr::from(ip), 24).unwrap();
        Arc::new(PortEntry {
            id,
            kind,
            io: Arc::new(MemPort::new(1)),
            mac,
            guard: (kind == PortKind::Pod).then(|| SpoofGuard::new(mac, &[net])),
            worker: 0,
            counters: PortCounters::default(),
            police: Default::default(),
            meta: PortMeta { ips: vec![net], ..Default::default() },
        })
    }

    fn tcp(src: (Mac, [u8; 4], u16), dst: (Mac, [u8; 4], u16), flags: u8) -> Vec<u8> {
        let mut b = etherparse::PacketBuilder::ethernet2(src.0, dst.0)
            .ipv4(src.1, dst.1, 64)
            .tcp(src.2, dst.2, 1000, 65535);
        if flags & tcp_flags::ACK != 0 {
            b = b.ack(2000);
        }
        if flags & tcp_flags::SYN != 0 {
            b = b.syn();
        }
        if flags & tcp_flags::RST != 0 {
            b = b.rst();
        }
        let mut f = Vec::new();
        b.write(&mut f, &[]).unwrap();
        f
    }

    /// The switch around one service stage: a client (port 1), a backend (port 2), the host
    /// (port 0), a TCP service VIP:80 → backend:8080.
    struct Bed {
        table: ServiceTable,
        ct: Conntrack,
        affinity: AffinityTable,
        neigh: Neighbours,
        ports: PortTable,
        /// Ports by id, also once unpublished.
        entries: Vec<Arc<PortEntry>>,
        fdb: Fdb,
        counters: SwitchCounters,
        local: LocalPool,
    }

    impl Bed {
        fn new(per_client: u32) -> Bed {
            let spec = ServiceSpec {
                name: "t".into(),
                key: ServiceKey { vip: IpAddr::from(VIP), port: 80, protocol: Protocol::Tcp },
                affinity: Affinity::None,
                backends: vec![BackendSpec::ready(IpAddr::from(BACKEND), 8080)],
            };
            // An IPv6 service whose backend is on another node (no port, no neighbour).
            let spec6 = ServiceSpec {
                name: "t6".into(),
                key: ServiceKey { vip: VIP6.parse().unwrap(), port: 53, protocol: Protocol::Udp },
                affinity: Affinity::None,
                backends: vec![BackendSpec::ready("fd00::1:9".parse().unwrap(), 5353)],
            };
            let mut all = BTreeMap::new();
            all.insert(spec.key, Arc::new(Service::compile(spec, None)));
            all.insert(spec6.key, Arc::new(Service::compile(spec6, None)));
            let entries = vec![
                port(0, PortKind::Host, [10, 0, 0, 1]),
                port(1, PortKind::Pod, CLIENT),
                port(2, PortKind::Pod, BACKEND),
            ];
            let ports = entries.iter().fold(PortTable::default(), |t, p| t.with(p.clone()));
            Bed {
                table: ServiceTable::new(all, &HashSet::new(), GW),
                ct: Conntrack::new(1024, Timeouts::default(), per_client),
                affinity: AffinityTable::new(64),
                neigh: Neighbours::new(64, 64, 8, 300),
                ports,
                entries,
                fdb: Fdb::new(64, 300),
                counters: SwitchCounters::default(),
                local: LocalPool::new(FramePool::new(16, 2048), 8),
            }
        }

        /// Runs the stage on `raw` arriving on port `ingress`; the fate and the frame after.
        fn run(&mut self, ingress: u16, raw: &[u8]) -> (Option<Disposition>, Vec<u8>) {
            let svc = Services {
                table: &self.table,
                ct: &self.ct,
                affinity: &self.affinity,
                neigh: &self.neigh,
                ports: &self.ports,
            };
            let ctx = Ctx { svc: &svc, fdb: &self.fdb, counters: &self.counters, now: 1 };
            let mut f = self.local.get().unwrap();
            f.buffer_mut()[..VNET_HDR_LEN].fill(0);
            f.buffer_mut()[VNET_HDR_LEN..VNET_HDR_LEN + raw.len()].copy_from_slice(raw);
            f.set_len(VNET_HDR_LEN + raw.len());
            let mut meta = parse_frame(raw).unwrap();
            let entry = self.entries[usize::from(ingress)].clone();
            let d = ctx.process(&entry, &mut f, &mut meta);
            if d.is_some() {
                assert_eq!(Ok(meta), parse(f.bytes()), "the meta follows the frame");
            }
            let out = f.ethernet().to_vec();
            self.local.put(f);
            (d, out)
        }
    }

    fn client_mac() -> Mac {
        [2, 0, 0, 0, 0, 1]
    }

    #[test]
    fn quota_and_unconfirmed_mid_stream_pickup() {
        let mut bed = Bed::new(2);
        // ACK-only first packets: picked up mid-stream, to the backend's port (found in the
        // port table though the FDB never saw it), unreplied.
        for sport in [40000, 40001] {
            let (d, out) = bed.run(1, &tcp((client_mac(), CLIENT, sport), (GW, VIP, 80), tcp_flags::ACK));
            assert_eq!(d, Some(Disposition::Unicast(2)));
            assert_eq!(out[30..34], BACKEND, "DNATed");
        }
        assert!(bed.ct.dump(1, |_| true).iter().all(|(f, left)| !f.replied && *left == 30));
        // The third is over the client's quota; the node (host port) has none.
        let (d, _) = bed.run(1, &tcp((client_mac(), CLIENT, 40002), (GW, VIP, 80), tcp_flags::ACK));
        assert_eq!(d, Some(Disposition::Drop(DropReason::ConntrackQuota)));
        let (d, _) =
            bed.run(0, &tcp(([2, 0, 0, 0, 0, 0], [10, 0, 0, 1], 40003), (GW, VIP, 80), tcp_flags::SYN));
        assert_eq!(d, Some(Disposition::Unicast(2)));
        assert_eq!(bed.ct.counters.quota.load(Relaxed), 1);
        // The backend's answer confirms the flow and goes back to the client's port.
        let (d, out) =
            bed.run(2, &tcp(([2, 0, 0, 0, 0, 2], BACKEND, 8080), (GW, CLIENT, 40000), tcp_flags::ACK));
        assert_eq!(d, Some(Disposition::Unicast(1)));
        assert_eq!(out[26..30], VIP, "source back to the VIP");
        let confirmed = bed.ct.dump(1, |f| f.confirmed());
        assert_eq!((confirmed.len(), confirmed[0].0.client.1), (1, 40000));
    }

    #[test]
    fn removed_backends_reset_and_nothing_is_flooded() {
        let mut bed = Bed::new(0);
        let syn = |sport| tcp((client_mac(), CLIENT, sport), (GW, VIP, 80), tcp_flags::SYN);
        assert_eq!(bed.run(1, &syn(40000)).0, Some(Disposition::Unicast(2)));
        bed.ct.end_flows(1, |_| true);
        // The client's next segment is answered with a RST from the VIP, back out of its port.
        let (d, out) = bed.run(1, &tcp((client_mac(), CLIENT, 40000), (GW, VIP, 80), tcp_flags::ACK));
        assert_eq!(d, Some(Disposition::Unicast(1)));
        assert_eq!((&out[26..30], &out[30..34]), (&VIP[..], &CLIENT[..]));
        assert_ne!(out[47] & tcp_flags::RST, 0, "a RST");
        // Its RST is not answered; the removed backend's next segment gets a RST too, as if
        // from the client.
        let rst = tcp((client_mac(), CLIENT, 40000), (GW, VIP, 80), tcp_flags::RST);
        assert_eq!(bed.run(1, &rst).0, Some(Disposition::Drop(DropReason::BackendUnreachable)));
        let reply = tcp(([2, 0, 0, 0, 0, 2], BACKEND, 8080), (GW, CLIENT, 40000), tcp_flags::ACK);
        let (d, out) = bed.run(2, &reply);
        assert_eq!(d, Some(Disposition::Unicast(2)));
        assert_eq!((&out[26..30], &out[30..34]), (&CLIENT[..], &BACKEND[..]));
        assert_ne!(out[47] & tcp_flags::RST, 0, "a RST");
        assert_eq!(bed.ct.counters.resets.load(Relaxed), 2);
        // A new connection from the same port replaces the ended flow.
        assert_eq!(bed.run(1, &syn(40000)).0, Some(Disposition::Unicast(2)));
        assert_eq!(bed.ct.dump(1, |f| f.state == CtState::SynSent).len(), 1);

        // A live flow whose backend MAC no port owns and the FDB forgot: an ARP request for
        // the backend goes out instead of the frame.
        assert_eq!(bed.run(1, &syn(40001)).0, Some(Disposition::Unicast(2)));
        bed.ports = bed.ports.without(2);
        let (d, out) = bed.run(1, &tcp((client_mac(), CLIENT, 40001), (GW, VIP, 80), tcp_flags::ACK));
        assert_eq!(d, Some(Disposition::Flood));
        assert_eq!((&out[12..14], &out[38..42]), (&[8u8, 6][..], &BACKEND[..]), "ARP for the backend");
        // A reply to a client no port owns is dropped, not flooded.
        bed.ports = bed.ports.without(1);
        let reply = tcp(([2, 0, 0, 0, 0, 2], BACKEND, 8080), (GW, CLIENT, 40001), tcp_flags::ACK);
        assert_eq!(bed.run(2, &reply).0, Some(Disposition::Drop(DropReason::BackendUnreachable)));
    }

    /// The node asks for a VIP: the ARP request and the neighbour solicitation become, in
    /// place, the reply and the advertisement built by `wire`, back out of the host port.
    #[test]
    fn host_port_neighbour_answers_for_vips() {
        use crate::wire::arp::{emit_request, op, ArpPacket};
        let mut bed = Bed::new(0);
        let vip_mac = [2, 0x5a, 0, 0, 0, 1];
        bed.table.host_vip_mac = Some(vip_mac);
        let host = [2, 0, 0, 0, 0, 0];
        let mut req = [0u8; 60];
        emit_request(&mut req, &host, [10, 0, 0, 1].into(), VIP.into()).unwrap();
        let (d, out) = bed.run(0, &req);
        assert_eq!(d, Some(Disposition::Unicast(0)));
        let a = ArpPacket::new_checked(&out[14..]).unwrap();
        assert_eq!((a.operation(), a.sender_mac(), a.sender_ip()), (op::REPLY, vip_mac, VIP.into()));
        assert_eq!((&out[0..6], out.len()), (&host[..], 60), "to the asker, padding kept");
        // Not a VIP: left to the forward stage.
        emit_request(&mut req, &host, [10, 0, 0, 1].into(), BACKEND.into()).unwrap();
        assert_eq!(bed.run(0, &req).0, None);
        // IPv6: a solicitation for the VIP gets a solicited, override advertisement.
        let vip6: Ipv6Addr = VIP6.parse().unwrap();
        let ns = NdpRepr::NeighborSolicit { target: vip6, source_lladdr: Some(host) };
        let mut buf = [0u8; 128];
        let n = ns
            .emit_frame(host, [0x33, 0x33, 0xff, 0, 0, 0x10], "fe80::1".parse().unwrap(), vip6, &mut buf)
            .unwrap();
        let (d, out) = bed.run(0, &buf[..n]);
        assert_eq!(d, Some(Disposition::Unicast(0)));
        let want = NdpRepr::NeighborAdvert {
            flags: na_flags::SOLICITED | na_flags::OVERRIDE,
            target: vip6,
            target_lladdr: Some(vip_mac),
        };
        assert_eq!(crate::wire::ndp::parse_ndp(&out), Ok(Some(want)));
        assert_eq!(&out[0..6], &host[..]);
    }

    /// A new IPv6 flow to a backend whose MAC nobody knows becomes a neighbour solicitation
    /// from the gateway for it, flooded.
    #[test]
    fn unknown_v6_backend_is_solicited() {
        let mut bed = Bed::new(0);
        bed.table.gateways.push("fd00:1::1".parse().unwrap());
        let mut q = Vec::new();
        etherparse::PacketBuilder::ethernet2(client_mac(), GW)
            .ipv6(
                "fd00:1::2".parse::<Ipv6Addr>().unwrap().octets(),
                VIP6.parse::<Ipv6Addr>().unwrap().octets(),
                64,
            )
            .udp(4000, 53)
            .write(&mut q, b"q")
            .unwrap();
        let (d, out) = bed.run(1, &q);
        let backend: Ipv6Addr = "fd00::1:9".parse().unwrap();
        assert_eq!(d, Some(Disposition::Flood));
        let want = NdpRepr::NeighborSolicit { target: backend, source_lladdr: Some(GW) };
        assert_eq!(crate::wire::ndp::parse_ndp(&out), Ok(Some(want)));
        // To the backend's solicited-node group (ff02::1:ff01:9), from the gateway.
        assert_eq!(&out[0..12], &[0x33, 0x33, 0xff, 1, 0, 9, 2, 0, 0, 0, 0, 0xee]);
        assert_eq!(&out[22..38], &"fd00:1::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(bed.counters.svc_arp_requests.get(), 1);
    }
}
