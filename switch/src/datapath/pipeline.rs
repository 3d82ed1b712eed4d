//! The per-batch pipeline: a burst of frames from one ingress port goes through the named
//! stages one stage at a time (parse → anti-spoof → learn → service → forward), VPP style, and
//! each frame ends with a [`Disposition`]. A bad frame never stops the batch.

use std::net::IpAddr;

use crate::datapath::service::{self, Services};
use crate::datapath::{antispoof, forward, Disposition};
use crate::pool::Frame;
use crate::stats::{DropReason, SwitchCounters};
use crate::table::neigh::NeighLearn;
use crate::table::{Fdb, Learned, PortEntry};
use crate::wire::frame::{parse_in_place, ParseError};
use crate::wire::ndp::NdpRepr;
use crate::wire::vnet::VnetError;
use crate::wire::{is_group, FrameMeta, L3Src, Mac, VnetHdr};

/// Shared state a batch is processed against.
pub struct Pipeline<'a> {
    /// The forwarding database.
    pub fdb: &'a Fdb,
    /// The calling worker's slot of the switch-wide counters.
    pub counters: &'a SwitchCounters,
    /// The calling worker: the slot of the ingress port's counters it writes.
    pub worker: usize,
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
    /// Each frame's one parse (vnet header, offsets, L2/L3/L4 fields, neighbour discovery),
    /// read by every later stage; `None` once the frame is dropped.
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
        self.stage_parse(ingress, frames, scratch, out);
        self.stage_antispoof(ingress, scratch, out);
        if let Some(p) = &ingress.police.from_pod {
            for ((meta, disp), frame) in scratch.metas.iter_mut().zip(out.iter_mut()).zip(frames.iter()) {
                if meta.is_some() && !p.allow(frame.ethernet().len(), self.now_ns) {
                    *disp = Disposition::Drop(DropReason::RateLimited);
                    *meta = None;
                }
            }
        }
        self.stage_learn(ingress, &scratch.metas);
        let svc = self.services.filter(|s| !s.table.is_empty()).map(|s| service::Ctx {
            svc: s,
            fdb: self.fdb,
            counters: self.counters,
            now: self.now,
        });
        let ports = self.services.map(|s| s.ports);
        for ((meta, disp), frame) in scratch.metas.iter_mut().zip(out.iter_mut()).zip(frames.iter_mut()) {
            if let Some(m) = meta {
                let served = svc.as_ref().and_then(|c| c.process(ingress, frame, m));
                *disp =
                    served.unwrap_or_else(|| forward::decide(&m.dst, ingress.id, ports, self.fdb, self.now));
                // A super-frame keeps its transport header (as rewritten) for the port that
                // segments it: the uplink then does not parse it again.
                if m.vnet.is_gso() {
                    frame.set_l4(m.l4);
                }
            }
        }
        if let Some(storm) = &ingress.police.storm {
            forward::storm_control(storm, frames, out, self.now_ns);
        }
        for disp in out.iter() {
            match disp {
                Disposition::Drop(reason) => ingress.counters.at(self.worker).drop_frame(*reason),
                Disposition::Flood => self.counters.flooded.inc(),
                Disposition::Unicast(_) => {}
            }
        }
    }

    /// Parse: each frame once ([`parse_in_place`]), vnet header and all headers into its
    /// [`FrameMeta`]. The vnet header is validated against the frame before anything is
    /// forwarded or segmented: a header that does not describe its frame is `gso_invalid`, a
    /// frame too short for one `malformed`, and so is a frame whose headers do not parse or
    /// whose source MAC is not a unicast address. Counts rx packets/bytes on the ingress port.
    fn stage_parse(
        &self,
        ingress: &PortEntry,
        frames: &mut [Frame],
        scratch: &mut Scratch,
        out: &mut Vec<Disposition>,
    ) {
        let c = ingress.counters.at(self.worker);
        let (mut bytes, mut gso) = (0u64, 0u64);
        for f in frames.iter_mut() {
            bytes += f.ethernet().len() as u64;
            let parsed = match parse_in_place(f.bytes_mut()) {
                Err(ParseError::Vnet(VnetError::Truncated)) => Err(DropReason::Malformed),
                Err(ParseError::Vnet(_)) => Err(DropReason::GsoInvalid),
                Err(_) => {
                    // The vnet header was good; only the frame's own headers are not.
                    gso += u64::from(VnetHdr::parse(f.bytes()).is_ok_and(|h| h.is_gso()));
                    Err(DropReason::Malformed)
                }
                Ok(m) => {
                    gso += u64::from(m.vnet.is_gso());
                    // A source MAC must be a unicast address: group or zero sources are
                    // malformed.
                    if is_group(&m.src) || m.src == [0; 6] {
                        Err(DropReason::Malformed)
                    } else {
                        Ok(m)
                    }
                }
            };
            out.push(match parsed {
                Ok(_) => Disposition::Flood, // placeholder, decided by the forward stage
                Err(reason) => Disposition::Drop(reason),
            });
            scratch.metas.push(parsed.ok());
        }
        c.rx_packets.add(frames.len() as u64);
        c.rx_bytes.add(bytes);
        c.rx_gso_packets.add(gso);
    }

    /// Anti-spoof: a pod port's frames against its guard (NDP included); on a trusted port
    /// (host, uplink), MAC pinning: it may not send from a pod's MAC.
    fn stage_antispoof(&self, ingress: &PortEntry, scratch: &mut Scratch, out: &mut [Disposition]) {
        if let Some(guard) = &ingress.guard {
            for (meta, disp) in scratch.metas.iter_mut().zip(out.iter_mut()) {
                if let Some(m) = meta {
                    if let Err(reason) = antispoof::check(guard, m) {
                        *disp = Disposition::Drop(reason);
                        *meta = None;
                    }
                }
            }
        } else if let Some(t) = self.services.map(|s| s.ports) {
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
    }

    /// Learn: source MAC → ingress port, for frames that passed anti-spoofing (and MAC
    /// pinning); and ARP/NDP senders as neighbours behind the ingress port, for the service
    /// stage to find backends behind other ports. A pod port teaches only its own addresses.
    fn stage_learn(&self, ingress: &PortEntry, metas: &[Option<FrameMeta>]) {
        let mut last = None;
        for m in metas.iter().flatten() {
            if let Some(s) = self.services {
                let claim: Option<(IpAddr, Mac)> = match (m.l3, &m.ndp) {
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
                self.counters.fdb_full.inc();
            }
        }
    }

    fn learn_neighbour(&self, s: &Services<'_>, ingress: &PortEntry, ip: IpAddr, mac: Mac) {
        if ingress.guard.as_ref().is_some_and(|g| !g.owns(&ip) || g.mac != mac) {
            if !ip.is_unspecified() {
                self.counters.neigh_foreign.inc();
            }
            return;
        }
        match s.neigh.learn(ip, mac, ingress.id, self.now) {
            NeighLearn::Quota => self.counters.neigh_quota.inc(),
            NeighLearn::Full => self.counters.neigh_full.inc(),
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
    use crate::table::affinity::AffinityTable;
    use crate::table::conntrack::Conntrack;
    use crate::table::neigh::Neighbours;
    use crate::table::services::ServiceTable;
    use crate::table::PortTable;
    use crate::table::{PortKind, PortMeta, SpoofGuard};
    use crate::wire::frame::tests::{arp, udp4, A, B};
    use crate::wire::VNET_HDR_LEN;
    use std::net::Ipv6Addr;

    fn port(id: u16, guard: Option<SpoofGuard>) -> PortEntry {
        let kind = if guard.is_some() { PortKind::Pod } else { PortKind::Host };
        PortEntry {
            id,
            kind,
            io: Arc::new(MemPort::new(1)),
            mac: guard.as_ref().map_or([2, 0, 0, 0, 0, id as u8], |g| g.mac),
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
        let pipe = Pipeline { fdb: &fdb, counters: &counters, worker: 0, now: 5, services: None, now_ns: 0 };
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
        assert_eq!(c.totals().rx_packets, 6);
        assert_eq!(c.dropped(DropReason::SpoofedMac), 1);
        assert_eq!(c.dropped(DropReason::SpoofedIp), 1);
        assert_eq!(c.dropped(DropReason::Malformed), 1);
    }

    #[test]
    fn spoofed_frames_are_not_learned() {
        let fdb = Fdb::new(64, 300);
        let counters = SwitchCounters::default();
        let pipe = Pipeline { fdb: &fdb, counters: &counters, worker: 0, now: 1, services: None, now_ns: 0 };
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
        let pipe = Pipeline { fdb: &fdb, counters: &counters, worker: 0, now: 5, services: None, now_ns: 0 };
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
        assert_eq!(ingress.counters.totals().rx_gso_packets, 1);
        // The good super-frame carries its parsed transport header on, for the uplink's
        // segmentation.
        let l4 = batch[0].l4().copied().expect("a super-frame keeps its transport header");
        assert_eq!(Some(l4), crate::wire::IpL4::parse(batch[0].ethernet()));
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
            let pipe = Pipeline { fdb: &fdb, counters: &counters, worker: 0, now: 5, services: None, now_ns };
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
        assert_eq!(counters.flooded.get(), 25);
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn ndp_frame(src_mac: Mac, src: &str, repr: NdpRepr) -> Vec<u8> {
        let mut buf = [0u8; 128];
        let n = repr.emit_frame(src_mac, [0x33, 0x33, 0, 0, 0, 1], v6(src), v6("ff02::1"), &mut buf).unwrap();
        buf[..n].to_vec()
    }

    /// The shared tables of a worker, with ports 0 (host), 1 (pod A) and 2 (pod B).
    struct World {
        ports: PortTable,
        svc: ServiceTable,
        ct: Conntrack,
        affinity: AffinityTable,
        neigh: Neighbours,
    }

    impl World {
        fn new(per_port: u32) -> World {
            let a = SpoofGuard::new(A, &["10.0.0.2/24".parse().unwrap(), "fd00::2/64".parse().unwrap()]);
            let b = SpoofGuard::new(B, &["10.0.0.3/24".parse().unwrap(), "fd00::3/64".parse().unwrap()]);
            let ports = PortTable::default()
                .with(Arc::new(port(0, None)))
                .with(Arc::new(port(1, Some(a))))
                .with(Arc::new(port(2, Some(b))));
            World {
                ports,
                svc: ServiceTable::default(),
                ct: Conntrack::new(16, Default::default(), 0),
                affinity: AffinityTable::new(16),
                neigh: Neighbours::new(64, per_port, 8, 300),
            }
        }

        fn services(&self) -> Services<'_> {
            Services {
                table: &self.svc,
                ct: &self.ct,
                affinity: &self.affinity,
                neigh: &self.neigh,
                ports: &self.ports,
            }
        }
    }

    fn run_on(
        world: &World,
        fdb: &Fdb,
        counters: &SwitchCounters,
        id: u16,
        raw: &[Vec<u8>],
    ) -> Vec<Disposition> {
        let services = world.services();
        let pipe = Pipeline { fdb, counters, worker: 0, now: 1, now_ns: 0, services: Some(&services) };
        let mut local = LocalPool::new(FramePool::new(64, 2048), 32);
        let mut batch = frames(&mut local, raw);
        let mut out = Vec::new();
        let ingress = world.ports.get(id).unwrap().clone();
        pipe.run(&ingress, &mut batch, &mut Scratch::default(), &mut out);
        for f in batch {
            local.put(f);
        }
        out
    }

    #[test]
    fn pod_ndp_is_checked_and_teaches_only_its_own_addresses() {
        let (world, fdb, counters) = (World::new(16), Fdb::new(64, 300), SwitchCounters::default());
        let na = |target: &str, tll| NdpRepr::NeighborAdvert {
            flags: crate::wire::ndp::na_flags::OVERRIDE,
            target: v6(target),
            target_lladdr: Some(tll),
        };
        let mut ra = ndp_frame(A, "fe80::ff:fe00:a", na("fe80::1", A))[..70].to_vec();
        ra[18..20].copy_from_slice(&16u16.to_be_bytes());
        ra[54] = 134;
        let dad = NdpRepr::NeighborSolicit { target: v6("fd00::2"), source_lladdr: None };
        let ns = NdpRepr::NeighborSolicit { target: v6("fd00::3"), source_lladdr: Some(A) };
        let out = run_on(
            &world,
            &fdb,
            &counters,
            1,
            &[
                ndp_frame(A, "fd00::2", na("fd00::2", A)),         // its own: fine
                ndp_frame(A, "fd00::2", na("fd00::3", A)),         // B's address
                ndp_frame(A, "fe80::ff:fe00:a", na("fe80::1", A)), // the gateway's
                ndp_frame(A, "fe80::ff:fe00:b", na("fe80::ff:fe00:b", A)), // B's link-local as source
                ra,
                ndp_frame(A, "::", dad),
                ndp_frame(A, "fe80::ff:fe00:a", ns),
            ],
        );
        use DropReason::*;
        let d = Disposition::Drop;
        assert_eq!(
            out,
            vec![
                Disposition::Flood,
                d(NdpSpoofed),
                d(NdpSpoofed),
                d(SpoofedIp),
                d(NdpRouterOnly),
                Disposition::Flood,
                Disposition::Flood
            ]
        );
        let c = &world.ports.get(1).unwrap().counters;
        assert_eq!((c.dropped(NdpSpoofed), c.dropped(NdpRouterOnly), c.dropped(SpoofedIp)), (2, 1, 1));
        // Learned: its global address (the NA) and its link-local one (the NS's source).
        assert_eq!(world.neigh.lookup(v6("fd00::2").into(), 1), Some(A));
        assert_eq!(world.neigh.lookup(v6("fe80::ff:fe00:a").into(), 1), Some(A));
        assert_eq!(world.neigh.lookup(v6("fd00::3").into(), 1), None);
        assert_eq!((world.neigh.len(), world.neigh.port_len(1)), (2, 2));
        assert_eq!(counters.neigh_foreign.get(), 0);
    }

    #[test]
    fn trusted_ports_learn_anything_within_their_quota() {
        let (world, fdb, counters) = (World::new(3), Fdb::new(64, 300), SwitchCounters::default());
        let raw: Vec<Vec<u8>> = (1..=5u8)
            .map(|i| {
                let na = NdpRepr::NeighborAdvert {
                    flags: 0,
                    target: v6(&format!("fd00::1:{i}")),
                    target_lladdr: None,
                };
                ndp_frame([2, 9, 9, 9, 9, i], &format!("fd00::1:{i}"), na)
            })
            .chain([arp([2, 9, 9, 9, 9, 9], [10, 1, 0, 9])])
            .collect();
        let out = run_on(&world, &fdb, &counters, 0, &raw);
        assert!(out.iter().all(|d| *d == Disposition::Flood), "{out:?}");
        assert_eq!((world.neigh.len(), world.neigh.port_len(0)), (3, 3));
        assert_eq!(world.neigh.lookup(v6("fd00::1:1").into(), 1), Some([2, 9, 9, 9, 9, 1]));
        assert_eq!(counters.neigh_quota.get(), 3);
    }

    #[test]
    fn pod_macs_are_pinned_to_their_ports() {
        let (world, fdb, counters) = (World::new(16), Fdb::new(64, 300), SwitchCounters::default());
        fdb.learn(&B, 0, 1); // a stale belief that B is behind the host port
        let host_mac = [2, 0, 0, 0, 0, 0];
        let out = run_on(
            &world,
            &fdb,
            &counters,
            0,
            &[
                udp4(B, host_mac, [10, 0, 0, 3], [10, 0, 0, 1]), // the host port sends as pod B
                udp4(B, host_mac, [10, 0, 0, 3], [10, 0, 0, 1]),
                udp4(host_mac, B, [10, 0, 0, 1], [10, 0, 0, 3]), // to B: B's port, not the FDB's
                udp4(host_mac, A, [10, 0, 0, 1], [10, 0, 0, 2]),
            ],
        );
        let pinned = Disposition::Drop(DropReason::MacPinned);
        assert_eq!(out, vec![pinned, pinned, Disposition::Unicast(2), Disposition::Unicast(1)]);
        assert_eq!(world.ports.get(0).unwrap().counters.dropped(DropReason::MacPinned), 2);
        assert_eq!(fdb.lookup(&B, 1), Some(0), "not learned from the pinned frames either");
        assert_eq!(fdb.lookup(&host_mac, 1), Some(0));
        // The pod itself still sends from its MAC, and to its own MAC is the same port.
        let out = run_on(&world, &fdb, &counters, 2, &[udp4(B, B, [10, 0, 0, 3], [10, 0, 0, 3])]);
        assert_eq!(out, vec![Disposition::Drop(DropReason::SamePort)]);
        assert_eq!(fdb.lookup(&B, 1), Some(2));
        // Pins follow the published table.
        assert_eq!((world.ports.pinned(&B), world.ports.pinned(&host_mac)), (Some(2), None));
        assert_eq!(world.ports.without(2).pinned(&B), None);
    }
}
