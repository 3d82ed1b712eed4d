//! The per-batch pipeline: a burst of frames from one ingress port goes through the named
//! stages one stage at a time (parse → anti-spoof → learn → service → forward), VPP style, and
//! each frame ends with a [`Disposition`]. A bad frame never stops the batch.

use crate::datapath::service::{self, Services};
use crate::datapath::{antispoof, forward, Disposition};
use crate::pool::Frame;
use crate::stats::{bump, DropReason, SwitchCounters};
use crate::table::{Fdb, Learned, PortEntry};
use crate::wire::vnet::VnetError;
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
        if let Some(storm) = &ingress.police.storm {
            forward::storm_control(storm, frames, out, self.now_ns);
        }
        for disp in out.iter() {
            match disp {
                Disposition::Drop(reason) => ingress.counters.drop_frame(*reason),
                Disposition::Flood => bump(&self.counters.flooded, 1),
                Disposition::Unicast(_) => {}
            }
        }
    }

    /// Parse: vnet header and frame headers. The vnet header is validated against the frame
    /// ([`VnetHdr::validate`]) before anything is forwarded or segmented: a header that does not
    /// describe its frame is `gso_invalid`, a frame too short for one `malformed`. Counts rx
    /// packets/bytes on the ingress port.
    fn stage_parse(
        &self,
        ingress: &PortEntry,
        frames: &mut [Frame],
        metas: &mut Vec<Option<FrameMeta>>,
        out: &mut Vec<Disposition>,
    ) {
        let c = &ingress.counters;
        let (mut bytes, mut gso) = (0u64, 0u64);
        for f in frames.iter_mut() {
            bytes += f.ethernet().len() as u64;
            let checked = VnetHdr::parse(f.bytes()).and_then(|mut h| {
                let hint = h.hdr_len;
                h.validate(f.ethernet())?;
                if h.hdr_len != hint {
                    h.emit(f.bytes_mut());
                }
                Ok(h)
            });
            let parsed = match checked {
                Err(VnetError::Truncated) => Err(DropReason::Malformed),
                Err(_) => Err(DropReason::GsoInvalid),
                Ok(h) => {
                    gso += u64::from(h.is_gso());
                    parse_frame(f.ethernet())
                        .ok()
                        // A source MAC must be a unicast address: group or zero sources are
                        // malformed.
                        .filter(|m| !is_group(&m.src) && m.src != [0; 6])
                        .ok_or(DropReason::Malformed)
                }
            };
            out.push(match parsed {
                Ok(_) => Disposition::Flood, // placeholder, decided by the forward stage
                Err(reason) => Disposition::Drop(reason),
            });
            metas.push(parsed.ok());
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

    /// `raw` behind the vnet header `hdr`.
    fn with_hdr(local: &mut LocalPool, hdr: VnetHdr, raw: &[u8]) -> Frame {
        let mut f = local.get().unwrap();
        assert!(hdr.emit(f.buffer_mut()));
        f.buffer_mut()[VNET_HDR_LEN..VNET_HDR_LEN + raw.len()].copy_from_slice(raw);
        f.set_len(VNET_HDR_LEN + raw.len());
        f
    }

    /// A UDP super-frame from A of `payload` bytes, and its valid USO header for `gso_size`.
    fn uso(payload: usize, gso_size: u16) -> (Vec<u8>, VnetHdr) {
        let b = etherparse::PacketBuilder::ethernet2(A, B).ipv4([10, 0, 0, 2], [10, 0, 0, 3], 64).udp(1, 2);
        let mut f = Vec::new();
        b.write(&mut f, &vec![7u8; payload]).unwrap();
        let h = VnetHdr {
            flags: crate::wire::vnet::F_NEEDS_CSUM,
            gso_type: crate::wire::vnet::GSO_UDP_L4,
            hdr_len: 42,
            gso_size,
            csum_start: 34,
            csum_offset: 6,
        };
        (f, h)
    }

    /// Bad vnet headers from a pod (which the pod's kernel does not let through a TAP, see
    /// switch/tests/hostile_flood.rs) are dropped as `gso_invalid` at parse, never forwarded nor
    /// segmented; good ones pass.
    #[test]
    fn invalid_vnet_headers_are_dropped_at_parse() {
        use crate::wire::vnet::{GSO_ECN, GSO_TCPV4, GSO_UDP};
        let fdb = Fdb::new(64, 300);
        let counters = SwitchCounters::default();
        let pipe = Pipeline { fdb: &fdb, counters: &counters, now: 5, services: None, now_ns: 0 };
        let mut local = LocalPool::new(FramePool::new(16, 70_000), 8);
        let ingress = port(1, Some(SpoofGuard::new(A, &["10.0.0.2/24".parse().unwrap()])));
        fdb.learn(&B, 2, 5);
        let (f, good) = uso(6400, 100);
        let (tiny, one) = uso(1000, 1);
        let mut batch = vec![
            with_hdr(&mut local, good, &f),   // 64 segments: fine
            with_hdr(&mut local, one, &tiny), // 1000 segments
            with_hdr(&mut local, VnetHdr { gso_type: GSO_TCPV4, ..good }, &f), // TCP on UDP
            with_hdr(&mut local, VnetHdr { gso_type: GSO_UDP, ..good }, &f), // UFO
            with_hdr(&mut local, VnetHdr { gso_type: good.gso_type | GSO_ECN, ..good }, &f),
            with_hdr(&mut local, VnetHdr { hdr_len: 9000, ..good }, &f), // beyond the frame
            with_hdr(&mut local, VnetHdr { csum_offset: 16, ..good }, &f), // not the UDP csum
            with_hdr(&mut local, VnetHdr { gso_size: 0, ..good }, &f),
            with_hdr(&mut local, VnetHdr { gso_type: 9, ..good }, &f), // unknown type
        ];
        let mut out = Vec::new();
        pipe.run(&ingress, &mut batch, &mut Scratch::default(), &mut out);
        let bad = Disposition::Drop(DropReason::GsoInvalid);
        assert_eq!(out[0], Disposition::Unicast(2));
        assert!(out[1..].iter().all(|d| *d == bad), "{out:?}");
        assert_eq!(ingress.counters.dropped(DropReason::GsoInvalid), 8);
        assert_eq!(ingress.counters.rx_gso_packets.load(std::sync::atomic::Ordering::Relaxed), 1);
        // A short hdr_len is raised to the end of the headers in the frame itself.
        let mut short = vec![with_hdr(&mut local, VnetHdr { hdr_len: 30, ..good }, &f)];
        pipe.run(&ingress, &mut short, &mut Scratch::default(), &mut out);
        assert_eq!(out, vec![Disposition::Unicast(2)]);
        assert_eq!(VnetHdr::parse(short[0].bytes()).unwrap(), good);
        batch.extend(short);
        for f in batch {
            local.put(f);
        }
    }

    /// A pod floods beyond its budget: the burst passes, the rest is `storm_control` on its
    /// port; unicast is never touched; the budget refills with the (fake) clock.
    #[test]
    fn storm_control_bounds_floods() {
        use crate::datapath::police::{PortPolice, StormConfig};
        let fdb = Fdb::new(64, 300);
        let counters = SwitchCounters::default();
        let mut pool = LocalPool::new(FramePool::new(64, 2048), 8);
        let mut ingress = port(1, Some(SpoofGuard::new(A, &["10.0.0.2/24".parse().unwrap()])));
        let cfg = StormConfig { pps: 10, pps_burst: 20, bytes: 0, bytes_burst: 0 };
        ingress.police = PortPolice::new(None).with_storm(&cfg);
        fdb.learn(&B, 2, 5);
        let unknown = [2, 9, 9, 9, 9, 9];
        let mut run = |now_ns: u64, raw: &[Vec<u8>]| {
            let pipe = Pipeline { fdb: &fdb, counters: &counters, now: 5, services: None, now_ns };
            let mut batch = frames(&mut pool, raw);
            let mut out = Vec::new();
            pipe.run(&ingress, &mut batch, &mut Scratch::default(), &mut out);
            for f in batch {
                pool.put(f);
            }
            out
        };
        let storm: Vec<Vec<u8>> = (0..16)
            .map(|i| {
                if i % 2 == 0 {
                    arp(A, [10, 0, 0, 2])
                } else {
                    udp4(A, unknown, [10, 0, 0, 2], [10, 0, 0, 9])
                }
            })
            .collect();
        let flood = |out: &[Disposition]| out.iter().filter(|d| **d == Disposition::Flood).count();
        assert_eq!(flood(&run(0, &storm)), 16);
        let out = run(0, &storm);
        assert_eq!(flood(&out), 4, "the burst of 20 is spent");
        assert_eq!(ingress.counters.dropped(DropReason::StormControl), 12);
        // Known unicast is not storm-controlled.
        let uni = vec![udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]); 8];
        assert!(run(0, &uni).iter().all(|d| *d == Disposition::Unicast(2)));
        // Half a second later, 5 more floods pass.
        assert_eq!(flood(&run(500_000_000, &storm)), 5);
        assert_eq!(ingress.counters.dropped(DropReason::StormControl), 23);
        assert_eq!(counters.flooded.load(std::sync::atomic::Ordering::Relaxed), 25);
    }
}
