//! The per-batch pipeline: a burst of frames from one ingress port goes through the named
//! stages one stage at a time (parse → anti-spoof → learn → service → forward), VPP style, and
//! each frame ends with a [`Disposition`]. A bad frame never stops the batch.

use std::net::IpAddr;

use crate::datapath::service::{self, Services};
use crate::datapath::{antispoof, forward, Disposition};
use crate::pool::Frame;
use crate::stats::{bump, DropReason, SwitchCounters};
use crate::table::neigh::NeighLearn;
use crate::table::{Fdb, Learned, PortEntry};
use crate::wire::ndp::{parse_ndp, NdpRepr, NdpScan};
use crate::wire::{is_group, parse_frame, FrameMeta, L3Src, Mac, VnetHdr};

/// Shared state a batch is processed against.
pub struct Pipeline<'a> {
    /// The forwarding database.
    pub fdb: &'a Fdb,
    /// Switch-wide counters.
    pub counters: &'a SwitchCounters,
    /// Current time, seconds (for FDB aging).
    pub now: u32,
    /// Current time, ns of the switch clock (for rate limits).
    pub now_ns: u64,
    /// The tables shared with the service stage (the port table, neighbours, conntrack);
    /// `None` (unit tests of other stages) skips the service stage, neighbour learning and
    /// MAC pinning.
    pub services: Option<&'a Services<'a>>,
}

/// Per-worker scratch space, reused across batches so the pipeline never allocates.
#[derive(Default)]
pub struct Scratch {
    metas: Vec<Option<FrameMeta>>,
    /// Neighbour discovery found in each frame (parsed once, read by anti-spoofing and
    /// learning).
    ndp: Vec<NdpScan>,
}

impl Pipeline<'_> {
    /// Runs `frames` (all from `ingress`) through the stages; `out[i]` is the fate of
    /// `frames[i]`. Rx counters of `ingress` are updated here.
    pub fn run(
        &self,
        ingress: &PortEntry,
        frames: &mut [Frame],
        scratch: &mut Scratch,
        out: &mut Vec<Disposition>,
    ) {
        out.clear();
        scratch.metas.clear();
        scratch.ndp.clear();
        self.stage_parse(ingress, frames, scratch, out);
        let ports = self.services.map(|s| s.ports);
        if let Some(guard) = &ingress.guard {
            for ((meta, disp), ndp) in scratch.metas.iter_mut().zip(out.iter_mut()).zip(&scratch.ndp) {
                if let Some(m) = meta {
                    if let Err(reason) = antispoof::check(guard, m, ndp) {
                        *disp = Disposition::Drop(reason);
                        *meta = None;
                    }
                }
            }
        } else if let Some(t) = ports {
            // MAC pinning: a trusted port (host, uplink) may not send from a pod's MAC.
            let mut last: Option<(Mac, bool)> = None;
            for (meta, disp) in scratch.metas.iter_mut().zip(out.iter_mut()) {
                let Some(m) = meta else { continue };
                let pinned = match last {
                    Some((mac, p)) if mac == m.src => p,
                    _ => t.pinned(&m.src).is_some_and(|p| p != ingress.id),
                };
                last = Some((m.src, pinned));
                if pinned {
                    *disp = Disposition::Drop(DropReason::MacPinned);
                    *meta = None;
                }
            }
        }
        if let Some(p) = &ingress.police.from_pod {
            for ((meta, disp), frame) in scratch.metas.iter_mut().zip(out.iter_mut()).zip(frames.iter()) {
                if meta.is_some() && !p.allow(frame.ethernet().len(), self.now_ns) {
                    *disp = Disposition::Drop(DropReason::RateLimited);
                    *meta = None;
                }
            }
        }
        self.stage_learn(ingress, &scratch.metas, &scratch.ndp);
        let svc = self.services.filter(|s| !s.table.is_empty()).map(|s| service::Ctx {
            svc: s,
            fdb: self.fdb,
            counters: self.counters,
            now: self.now,
        });
        for ((meta, disp), frame) in scratch.metas.iter().zip(out.iter_mut()).zip(frames.iter_mut()) {
            if let Some(m) = meta {
                if let Some(d) = svc.as_ref().and_then(|c| c.process(ingress, frame, m)) {
                    *disp = d;
                    continue;
                }
                *disp = forward::decide(&m.dst, ingress.id, ports, self.fdb, self.now);
            }
        }
        for disp in out.iter() {
            match disp {
                Disposition::Drop(reason) => ingress.counters.drop_frame(*reason),
                Disposition::Flood => bump(&self.counters.flooded, 1),
                Disposition::Unicast(_) => {}
            }
        }
    }

    /// Parse: vnet header and frame headers. Counts rx packets/bytes on the ingress port.
    fn stage_parse(&self, ingress: &PortEntry, frames: &[Frame], scratch: &mut Scratch, out: &mut Vec<Disposition>) {
        let c = &ingress.counters;
        let (mut bytes, mut gso) = (0u64, 0u64);
        for f in frames {
            bytes += f.ethernet().len() as u64;
            let parsed = VnetHdr::parse(f.bytes()).ok().and_then(|h| {
                gso += u64::from(h.is_gso());
                parse_frame(f.ethernet()).ok()
            });
            // A source MAC must be a unicast address: group or zero sources are malformed.
            let parsed = parsed.filter(|m| !is_group(&m.src) && m.src != [0; 6]);
            out.push(match parsed {
                Some(_) => Disposition::Flood, // placeholder, decided by the forward stage
                None => Disposition::Drop(DropReason::Malformed),
            });
            scratch.ndp.push(match parsed {
                Some(m) if m.ethertype == 0x86dd => parse_ndp(f.ethernet()),
                _ => Ok(None),
            });
            scratch.metas.push(parsed);
        }
        bump(&c.rx_packets, frames.len() as u64);
        bump(&c.rx_bytes, bytes);
        bump(&c.rx_gso_packets, gso);
    }

    /// Learn: source MAC → ingress port, for frames that passed anti-spoofing (and MAC
    /// pinning); and ARP/NDP senders as neighbours behind the ingress port, for the service
    /// stage to find backends behind other ports. A pod port teaches only its own addresses.
    fn stage_learn(&self, ingress: &PortEntry, metas: &[Option<FrameMeta>], ndp: &[NdpScan]) {
        let mut last = None;
        for (m, ndp) in metas.iter().zip(ndp).filter_map(|(m, n)| m.as_ref().map(|m| (m, n))) {
            if let Some(s) = self.services {
                let claim: Option<(IpAddr, Mac)> = match (m.l3, ndp) {
                    (L3Src::Arp { sender_mac, sender_ip }, _) => Some((sender_ip.into(), sender_mac)),
                    (L3Src::Ipv6(src), Ok(Some(NdpRepr::NeighborSolicit { source_lladdr, .. }))) => {
                        Some((src.into(), source_lladdr.unwrap_or(m.src)))
                    }
                    (_, Ok(Some(NdpRepr::NeighborAdvert { target, target_lladdr, .. }))) => {
                        Some(((*target).into(), target_lladdr.unwrap_or(m.src)))
                    }
                    _ => None,
                };
                if let Some((ip, mac)) = claim {
                    self.learn_neighbour(s, ingress, ip, mac);
                }
            }
            // A burst usually comes from one MAC: learn it once.
            if last == Some(m.src) {
                continue;
            }
            last = Some(m.src);
            if self.fdb.learn(&m.src, ingress.id, self.now) == Learned::Full {
                bump(&self.counters.fdb_full, 1);
            }
        }
    }

    fn learn_neighbour(&self, s: &Services<'_>, ingress: &PortEntry, ip: IpAddr, mac: Mac) {
        if ingress.guard.as_ref().is_some_and(|g| !g.owns(&ip) || g.mac != mac) {
            if !ip.is_unspecified() {
                bump(&self.counters.neigh_foreign, 1);
            }
            return;
        }
        match s.neigh.learn(ip, mac, ingress.id, self.now) {
            NeighLearn::Quota => bump(&self.counters.neigh_quota, 1),
            NeighLearn::Full => bump(&self.counters.neigh_full, 1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pool::{FramePool, LocalPool};
    use crate::port::mem::MemPort;
    use crate::stats::PortCounters;
    use crate::table::{PortKind, PortMeta, SpoofGuard};
    use crate::wire::frame::tests::{arp, udp4, A, B};
    use crate::wire::VNET_HDR_LEN;

    fn port(id: u16, guard: Option<SpoofGuard>) -> PortEntry {
        PortEntry {
            id,
            kind: PortKind::Pod,
            io: Arc::new(MemPort::new(1)),
            mac: [2, 0, 0, 0, 0, id as u8],
            guard,
            worker: 0,
            counters: PortCounters::default(),
            police: Default::default(),
            meta: PortMeta::default(),
        }
    }

    fn frames(local: &mut LocalPool, raw: &[Vec<u8>]) -> Vec<Frame> {
        raw.iter()
            .map(|r| {
                let mut f = local.get().unwrap();
                f.buffer_mut()[..VNET_HDR_LEN].fill(0);
                f.buffer_mut()[VNET_HDR_LEN..VNET_HDR_LEN + r.len()].copy_from_slice(r);
                f.set_len(VNET_HDR_LEN + r.len());
                f
            })
            .collect()
    }

    #[test]
    fn stages_decide_each_frame() {
        let fdb = Fdb::new(64, 300);
        let counters = SwitchCounters::default();
        let pipe = Pipeline { fdb: &fdb, counters: &counters, now: 5, services: None, now_ns: 0 };
        let pool = FramePool::new(16, 2048);
        let mut local = LocalPool::new(pool, 8);
        let guard = SpoofGuard::new(A, &["10.0.0.2/24".parse().unwrap()]);
        let ingress = port(1, Some(guard));
        fdb.learn(&B, 2, 5);
        let mut batch = frames(
            &mut local,
            &[
                udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]), // known unicast
                arp(A, [10, 0, 0, 2]),                    // broadcast
                udp4(B, A, [10, 0, 0, 2], [10, 0, 0, 3]), // wrong MAC
                udp4(A, B, [10, 0, 0, 9], [10, 0, 0, 3]), // wrong IP
                vec![1, 2, 3],                            // garbage
                udp4(A, [2, 9, 9, 9, 9, 9], [10, 0, 0, 2], [1, 1, 1, 1]), // unknown unicast
            ],
        );
        let mut out = Vec::new();
        pipe.run(&ingress, &mut batch, &mut Scratch::default(), &mut out);
        assert_eq!(
            out,
            vec![
                Disposition::Unicast(2),
                Disposition::Flood,
                Disposition::Drop(DropReason::SpoofedMac),
                Disposition::Drop(DropReason::SpoofedIp),
                Disposition::Drop(DropReason::Malformed),
                Disposition::Flood,
            ]
        );
        assert_eq!(fdb.lookup(&A, 5), Some(1), "source learned on the ingress port");
        let c = &ingress.counters;
        assert_eq!(c.rx_packets.load(std::sync::atomic::Ordering::Relaxed), 6);
        assert_eq!(c.dropped(DropReason::SpoofedMac), 1);
        assert_eq!(c.dropped(DropReason::SpoofedIp), 1);
        assert_eq!(c.dropped(DropReason::Malformed), 1);
    }

    #[test]
    fn spoofed_frames_are_not_learned() {
        let fdb = Fdb::new(64, 300);
        let counters = SwitchCounters::default();
        let pipe = Pipeline { fdb: &fdb, counters: &counters, now: 1, services: None, now_ns: 0 };
        let pool = FramePool::new(4, 2048);
        let mut local = LocalPool::new(pool, 4);
        let ingress = port(1, Some(SpoofGuard::new(A, &["10.0.0.2/24".parse().unwrap()])));
        let mut batch = frames(&mut local, &[udp4(B, A, [10, 0, 0, 2], [10, 0, 0, 3])]);
        let mut out = Vec::new();
        pipe.run(&ingress, &mut batch, &mut Scratch::default(), &mut out);
        assert_eq!(fdb.lookup(&B, 1), None);
    }
}
