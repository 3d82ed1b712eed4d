//! The per-batch pipeline: a burst of frames from one ingress port goes through the named
//! stages one stage at a time (parse → anti-spoof → learn → service → forward), VPP style, and
//! each frame ends with a [`Disposition`]. A bad frame never stops the batch.

use crate::datapath::service::{self, Services};
use crate::datapath::{antispoof, forward, Disposition};
use crate::pool::Frame;
use crate::stats::{bump, DropReason, SwitchCounters};
use crate::table::{Fdb, Learned, PortEntry};
use crate::wire::{is_group, parse_frame, FrameMeta, L3Src, VnetHdr};

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
    /// The service stage's tables; `None` skips the stage (and ARP snooping).
    pub services: Option<&'a Services<'a>>,
}

/// Per-worker scratch space, reused across batches so the pipeline never allocates.
#[derive(Default)]
pub struct Scratch {
    metas: Vec<Option<FrameMeta>>,
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
        self.stage_parse(ingress, frames, &mut scratch.metas, out);
        if let Some(guard) = &ingress.guard {
            for (meta, disp) in scratch.metas.iter_mut().zip(out.iter_mut()) {
                if let Some(m) = meta {
                    if let Err(reason) = antispoof::check(guard, m) {
                        *disp = Disposition::Drop(reason);
                        *meta = None;
                    }
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
        self.stage_learn(ingress.id, frames, &scratch.metas);
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
                *disp = forward::decide(&m.dst, ingress.id, self.fdb, self.now);
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
    fn stage_parse(
        &self,
        ingress: &PortEntry,
        frames: &[Frame],
        metas: &mut Vec<Option<FrameMeta>>,
        out: &mut Vec<Disposition>,
    ) {
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
            metas.push(parsed);
        }
        bump(&c.rx_packets, frames.len() as u64);
        bump(&c.rx_bytes, bytes);
        bump(&c.rx_gso_packets, gso);
    }

    /// Learn: source MAC → ingress port, for frames that passed anti-spoofing; and ARP
    /// senders as neighbours, for the service stage to find backends behind other ports.
    fn stage_learn(&self, ingress: u16, frames: &[Frame], metas: &[Option<FrameMeta>]) {
        let mut last = None;
        for (m, f) in metas.iter().zip(frames).filter_map(|(m, f)| m.as_ref().map(|m| (m, f))) {
            if let Some(s) = self.services {
                match m.l3 {
                    L3Src::Arp { sender_mac, sender_ip } => {
                        s.neigh.learn(sender_ip.into(), sender_mac, self.now)
                    }
                    L3Src::Ipv6(_) => {
                        if let Some((ip, mac)) = service::ndp_sender(f.ethernet()) {
                            s.neigh.learn(ip, mac, self.now);
                        }
                    }
                    _ => {}
                }
            }
            // A burst usually comes from one MAC: learn it once.
            if last == Some(m.src) {
                continue;
            }
            last = Some(m.src);
            if self.fdb.learn(&m.src, ingress, self.now) == Learned::Full {
                bump(&self.counters.fdb_full, 1);
            }
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
