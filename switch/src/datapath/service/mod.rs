//! The service stage: Service VIPs translated inside the switch (kube-proxy's job).
//!
//! For each IPv4 TCP/UDP frame that passed anti-spoofing and learning:
//! - **to a VIP** (`dst:dport/proto` is in the [`ServiceTable`]): the flow's conntrack entry,
//!   or a new one with a backend chosen by Maglev (or by client-IP affinity), gives the backend;
//!   the frame is DNATed to it ([`nat`]), SNATed as well when the client is its own backend
//!   (hairpin), and sent to the backend's MAC from the gateway MAC. No usable backend: the
//!   frame is turned into a TCP RST or ICMP port unreachable back to the client ([`reject`]).
//!   Backend MAC unknown: the frame is turned into an ARP request (IPv6: a neighbour
//!   solicitation) for it; the client retransmits, and by then the answer has been learned.
//! - **from a backend** (`src:sport/proto` may be a service backend): when conntrack knows the
//!   reply, its source goes back to VIP:port (and its destination back to the client after
//!   hairpin SNAT) before it reaches the client.
//! - anything else is left to the forward stage.
//!
//! IPv4 and IPv6 work the same way; a service's VIP and backends are of one family.
//!
//! Rewritten frames choose their egress port themselves: a hairpinned frame legitimately goes
//! back out of the port it came from, which the forward stage would refuse.

pub mod nat;
pub mod reject;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;

use nat::{rewrite, set_macs, Side};

use super::Disposition;
use crate::pool::Frame;
use crate::stats::{DropReason, SwitchCounters};
use crate::table::affinity::AffinityTable;
use crate::table::conntrack::{Conntrack, Dir, Flow, FlowKey, InsertError, SHARDS};
use crate::table::maglev::mix64;
use crate::table::neigh::Neighbours;
use crate::table::services::{Service, ServiceTable};
use crate::table::{Fdb, PortEntry, PortKind, PortTable};
use crate::wire::checksum::{fold, pseudo_v6, sum};
use crate::wire::l4::{parse_ip_l4, tcp_flags, IpL4, PROTO_ICMPV6, PROTO_TCP};
use crate::wire::vnet::F_NEEDS_CSUM;
use crate::wire::{FrameMeta, L3Src, Mac, VnetHdr, VNET_HDR_LEN};

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
    /// Runs the stage on one frame. `Some` when the stage decided the frame's fate.
    pub fn process(&self, ingress: &PortEntry, frame: &mut Frame, meta: &FrameMeta) -> Option<Disposition> {
        if ingress.kind == PortKind::Host {
            if let Some(mac) = self.svc.table.host_vip_mac {
                if let Some(d) = self.answer_host_neighbour(ingress, frame, meta, mac) {
                    return Some(d);
                }
            }
        }
        if meta.ethertype != 0x0800 && meta.ethertype != 0x86dd {
            return None;
        }
        let l = parse_ip_l4(frame.ethernet())?;
        let table = self.svc.table;
        if l.later_fragment {
            // Without ports a fragment cannot be matched to its flow.
            return table.is_vip(l.dst).then_some(Disposition::Drop(DropReason::VipFragment));
        }
        // Only frames the stage rewrites need to know whether their L4 checksum is partial.
        let partial = |f: &Frame| VnetHdr::parse(f.bytes()).is_ok_and(|h| h.flags & F_NEEDS_CSUM != 0);
        if let Some(svc) = table.lookup(l.dst, l.dport, l.proto) {
            let p = partial(frame);
            return Some(self.to_service(ingress, frame, &l, svc, p));
        }
        if table.is_reply_source(l.src, l.sport, l.proto) {
            let p = partial(frame);
            return self.reply_from_backend(frame, &l, p);
        }
        None
    }

    fn to_service(
        &self,
        ingress: &PortEntry,
        frame: &mut Frame,
        l: &IpL4,
        svc: &Service,
        partial: bool,
    ) -> Disposition {
        let key = FlowKey { proto: l.proto, src: l.src, sport: l.sport, dst: l.dst, dport: l.dport };
        let flow = match self.svc.ct.lookup(&key, Dir::Orig, l.flags, self.now) {
            Some(f) => f,
            None => match self.new_flow(ingress, frame, l, svc) {
                Ok(f) => f,
                Err(d) => return d,
            },
        };
        let Some(eth) = frame.bytes_mut().get_mut(VNET_HDR_LEN..) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        rewrite(eth, l, Side::Dst, flow.backend.0, flow.backend.1, partial);
        if let Some((ip, port)) = flow.snat {
            rewrite(eth, l, Side::Src, ip, port, partial);
        }
        set_macs(eth, &flow.backend_mac, &self.svc.table.gateway_mac);
        self.egress(&flow.backend_mac)
    }

    fn reply_from_backend(&self, frame: &mut Frame, l: &IpL4, partial: bool) -> Option<Disposition> {
        let key = FlowKey { proto: l.proto, src: l.src, sport: l.sport, dst: l.dst, dport: l.dport };
        let flow = self.svc.ct.lookup(&key, Dir::Reply, l.flags, self.now)?;
        let eth = frame.bytes_mut().get_mut(VNET_HDR_LEN..)?;
        rewrite(eth, l, Side::Src, flow.vip.0, flow.vip.1, partial);
        if flow.snat.is_some() {
            rewrite(eth, l, Side::Dst, flow.client.0, flow.client.1, partial);
        }
        set_macs(eth, &flow.client_mac, &flow.vip_mac);
        Some(self.egress(&flow.client_mac))
    }

    /// Where a rewritten frame for `mac` goes: its learned port, even the ingress one.
    fn egress(&self, mac: &Mac) -> Disposition {
        match self.fdb.lookup(mac, self.now) {
            Some(p) => Disposition::Unicast(p),
            None => Disposition::Flood,
        }
    }

    /// Places a new flow: affinity pin, else Maglev; tracks it. `Err` carries the fate of a
    /// frame that could not start a flow (rejected, or turned into an ARP request).
    fn new_flow(
        &self,
        ingress: &PortEntry,
        frame: &mut Frame,
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
            self.counters.svc_rejected.fetch_add(1, Relaxed);
            return Err(self.reject(ingress, frame, l));
        };
        let Some(backend_mac) = self.resolve(backend.ip) else {
            self.counters.svc_arp_requests.fetch_add(1, Relaxed);
            return Err(match backend.ip {
                IpAddr::V4(ip) => self.arp_request(frame, ip),
                IpAddr::V6(ip) => self.neighbour_solicitation(frame, ip),
            });
        };
        let mac_at = |r: std::ops::Range<usize>| -> Mac {
            frame.ethernet().get(r).and_then(|m| m.try_into().ok()).unwrap_or_default()
        };
        let (vip_mac, client_mac) = (mac_at(0..6), mac_at(6..12));
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
            last_seen: self.now,
        };
        // A taken reply key (two flows of one client port to one backend through two VIPs,
        // or two hairpin clients on the same port) is resolved by moving the source port by
        // a multiple of SHARDS, which keeps the flow's two keys in one shard.
        for k in 1..=SNAT_TRIES {
            match self.svc.ct.insert(flow) {
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

    /// Turns the frame into the kube-proxy REJECT answer, back out of the ingress port.
    fn reject(&self, ingress: &PortEntry, frame: &mut Frame, l: &IpL4) -> Disposition {
        let gw = self.svc.table.gateway_mac;
        let len = frame.ethernet().len();
        let buf = frame.buffer_mut();
        let (hdr, eth) = buf.split_at_mut(VNET_HDR_LEN);
        let n = if l.proto == PROTO_TCP {
            eth.get_mut(..len).and_then(|e| reject::tcp_reset(e, l, &gw))
        } else {
            reject::icmp_port_unreachable(eth, len, l, &gw)
        };
        match n {
            Some(n) => {
                VnetHdr::default().emit(hdr);
                frame.set_len(VNET_HDR_LEN + n);
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
        meta: &FrameMeta,
        mac: Mac,
    ) -> Option<Disposition> {
        let eth = frame.bytes_mut().get_mut(VNET_HDR_LEN..)?;
        match meta.l3 {
            L3Src::Arp { sender_mac, sender_ip } => {
                // Request (op 1) for a VIP: becomes the reply, sender and target swapped.
                let target: [u8; 4] = eth.get(38..42)?.try_into().ok()?;
                if eth.get(20..22)? != [0, 1] || !self.svc.table.is_vip(IpAddr::from(target)) {
                    return None;
                }
                eth[0..6].copy_from_slice(&sender_mac);
                eth[6..12].copy_from_slice(&mac);
                eth[21] = 2;
                eth[22..28].copy_from_slice(&mac);
                eth[28..32].copy_from_slice(&target);
                eth[32..38].copy_from_slice(&sender_mac);
                eth[38..42].copy_from_slice(&sender_ip.octets());
            }
            L3Src::Ipv6(src) => {
                // Neighbour solicitation (type 135) for a VIP: becomes a solicited, override
                // advertisement (type 136) with our link-layer address.
                if *eth.get(20)? != PROTO_ICMPV6 || *eth.get(54)? != 135 || eth.len() < 78 {
                    return None;
                }
                let target: [u8; 16] = eth.get(62..78)?.try_into().ok()?;
                if !self.svc.table.is_vip(IpAddr::from(target)) {
                    return None;
                }
                let asker: Mac = eth.get(6..12)?.try_into().ok()?;
                let dst = if src.is_unspecified() { Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1) } else { src };
                let out = eth.get_mut(..14 + 40 + 32)?;
                out[0..6].copy_from_slice(&asker);
                out[6..12].copy_from_slice(&mac);
                out[14..22].copy_from_slice(&[0x60, 0, 0, 0, 0, 32, PROTO_ICMPV6, 255]);
                out[22..38].copy_from_slice(&target);
                out[38..54].copy_from_slice(&dst.octets());
                let icmp = &mut out[54..86];
                icmp.fill(0);
                icmp[0] = 136;
                icmp[4] = 0x60; // solicited, override
                icmp[8..24].copy_from_slice(&target);
                icmp[24] = 2; // target link-layer address option
                icmp[25] = 1;
                icmp[26..32].copy_from_slice(&mac);
                let c = !fold(sum(icmp, pseudo_v6(target, dst.octets(), PROTO_ICMPV6, 32)));
                icmp[2..4].copy_from_slice(&c.to_be_bytes());
                let hdr = frame.buffer_mut().get_mut(..VNET_HDR_LEN)?;
                VnetHdr::default().emit(hdr);
                frame.set_len(VNET_HDR_LEN + 86);
            }
            _ => return None,
        }
        Some(Disposition::Unicast(ingress.id))
    }

    /// Turns the frame into a broadcast ARP request for `ip` from the gateway.
    fn arp_request(&self, frame: &mut Frame, ip: std::net::Ipv4Addr) -> Disposition {
        let gw_mac = self.svc.table.gateway_mac;
        let gw_ip = match self.svc.table.gateway_for(IpAddr::V4(ip)) {
            Some(IpAddr::V4(g)) => g,
            _ => std::net::Ipv4Addr::UNSPECIFIED,
        };
        let buf = frame.buffer_mut();
        let Some(out) = buf.get_mut(..VNET_HDR_LEN + 42) else {
            return Disposition::Drop(DropReason::ServiceNoFlow);
        };
        let (hdr, eth) = out.split_at_mut(VNET_HDR_LEN);
        VnetHdr::default().emit(hdr);
        eth[0..6].fill(0xff);
        eth[6..12].copy_from_slice(&gw_mac);
        eth[12..22].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        eth[22..28].copy_from_slice(&gw_mac);
        eth[28..32].copy_from_slice(&gw_ip.octets());
        eth[32..38].fill(0);
        eth[38..42].copy_from_slice(&ip.octets());
        frame.set_len(VNET_HDR_LEN + 42);
        Disposition::Flood
    }

    /// Turns the frame into an IPv6 neighbour solicitation for `ip` from the gateway (RFC 4861
    /// §7.2.2: to the solicited-node multicast group, hop limit 255, with our link-layer
    /// address), which the switch floods.
    fn neighbour_solicitation(&self, frame: &mut Frame, ip: Ipv6Addr) -> Disposition {
        const LEN: usize = 14 + 40 + 32;
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
        let Some(out) = frame.buffer_mut().get_mut(..VNET_HDR_LEN + LEN) else {
            return Disposition::Drop(DropReason::ServiceNoFlow);
        };
        let (hdr, eth) = out.split_at_mut(VNET_HDR_LEN);
        VnetHdr::default().emit(hdr);
        eth[0..6].copy_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]);
        eth[6..12].copy_from_slice(&gw_mac);
        eth[12..14].copy_from_slice(&[0x86, 0xdd]);
        eth[14..22].copy_from_slice(&[0x60, 0, 0, 0, 0, 32, PROTO_ICMPV6, 255]);
        eth[22..38].copy_from_slice(&src.octets());
        eth[38..54].copy_from_slice(&group.octets());
        let icmp = &mut eth[54..LEN];
        icmp.fill(0);
        icmp[0] = 135; // neighbour solicitation
        icmp[8..24].copy_from_slice(&t);
        icmp[24] = 1; // source link-layer address option, 8 bytes
        icmp[25] = 1;
        icmp[26..32].copy_from_slice(&gw_mac);
        let c = !fold(sum(icmp, pseudo_v6(src.octets(), group.octets(), PROTO_ICMPV6, 32)));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        frame.set_len(VNET_HDR_LEN + LEN);
        Disposition::Flood
    }
}
