//! The node the `pipeline` target runs frames through: a host port, three anti-spoofed pods and
//! an uplink on in-memory ports (rate limits and storm control on some pods); services over IPv4 and IPv6 with backends on local pods,
//! remote pods and the host network, some with ClientIP affinity, some without endpoints;
//! conntrack, FDB and neighbour entries already there. Every input gets a fresh node (only
//! the service table and the frame pool are shared, and both start each input the same), so
//! a finding replays alone.
//!
//! Frames go through [`Pipeline::run`] as a worker's burst does, then are delivered as the
//! worker delivers them; what goes out of the uplink is cut and checksummed by
//! `wire/segment.rs` as the AF_XDP port does ([`UplinkSim`]).
//!
//! Internals used (adapt here when they change): the [`Pipeline`], [`Services`] and
//! [`PortEntry`] literals, [`ServiceTable`]'s public fields, [`Conntrack::insert`].

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use tapway_api::{Affinity, BackendSpec, Bandwidth, Protocol, ServiceKey, ServiceSpec};
use tapway_switch::datapath::pipeline::Scratch;
use tapway_switch::datapath::police::{PortPolice, StormConfig};
use tapway_switch::datapath::service::Services;
use tapway_switch::datapath::{Disposition, Pipeline};
use tapway_switch::pool::{FramePool, LocalPool, FRAME_CAPACITY};
use tapway_switch::port::mem::MemPort;
use tapway_switch::port::{PortError, PortIo};
use tapway_switch::stats::{PortCounters, SwitchCounters};
use tapway_switch::table::affinity::AffinityTable;
use tapway_switch::table::conntrack::{Conntrack, CtState, Flow, Timeouts};
use tapway_switch::table::neigh::Neighbours;
use tapway_switch::table::services::{pack, Service, ServiceTable};
use tapway_switch::table::{Fdb, PortEntry, PortKind, PortMeta, PortTable, SpoofGuard};
use tapway_switch::wire::ip::{PROTO_TCP, PROTO_UDP};
use tapway_switch::wire::segment::{complete_csum, needs_segmentation, SegmentPlan};
use tapway_switch::wire::vnet::F_NEEDS_CSUM;
use tapway_switch::wire::{VnetHdr, VNET_HDR_LEN};

use crate::frames::book::{pod_mac, remote_mac, GATEWAY_MAC};

/// Port numbers: 0 host, 1-3 pods, 4 uplink.
pub const PORTS: u16 = 5;
/// The uplink's port number.
pub const UPLINK: u16 = 4;
/// Frames per burst at most (a worker's batch).
pub const BATCH: usize = 32;
/// Transmit chunks the simulated uplink has free: a super-frame cut into more segments is
/// refused as the AF_XDP port refuses it (`tx_full`).
const UPLINK_TX_CHUNKS: usize = 1024;
/// Largest frame (beyond the IP MTU) the uplink sends: Ethernet header and a VLAN tag.
const L2_OVERHEAD: usize = 18;

/// Frames and inputs run so far, for the report (printed every million frames and at exit).
pub static FRAMES: AtomicU64 = AtomicU64::new(0);
/// Inputs run so far.
pub static INPUTS: AtomicU64 = AtomicU64::new(0);
/// Segments the simulated uplink cut.
pub static SEGMENTS: AtomicU64 = AtomicU64::new(0);

/// The frame pool, shared by every input: `outstanding()` must be back to 0 after each.
pub fn pool() -> &'static Arc<FramePool> {
    static POOL: OnceLock<Arc<FramePool>> = OnceLock::new();
    POOL.get_or_init(|| FramePool::new(256, FRAME_CAPACITY))
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn v6(w: [u16; 8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]))
}

fn backend(ip: IpAddr, port: u16) -> BackendSpec {
    BackendSpec { ip, port, weight: 1, ready: true, serving: true, terminating: false }
}

fn spec(
    vip: IpAddr,
    port: u16,
    protocol: Protocol,
    affinity: Affinity,
    backends: Vec<BackendSpec>,
) -> ServiceSpec {
    ServiceSpec {
        name: format!("fuzz/{vip}:{port}"),
        key: ServiceKey { vip, port, protocol },
        affinity,
        backends,
    }
}

/// The services, compiled once (their counters change, their decisions do not).
pub fn services() -> &'static ServiceTable {
    static TABLE: OnceLock<ServiceTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let pin = |timeout| Affinity::ClientIp { timeout };
        let (tcp, udp) = (Protocol::Tcp, Protocol::Udp);
        let terminating =
            BackendSpec { ready: false, serving: true, terminating: true, ..backend(v4([10, 0, 0, 2]), 80) };
        let not_serving =
            BackendSpec { ready: false, serving: false, terminating: true, ..backend(v4([10, 0, 1, 7]), 80) };
        let unready6 = BackendSpec { ready: false, ..backend(v6([0xfd00, 0, 0, 1, 0, 0, 0, 7]), 53) };
        let specs = vec![
            spec(
                v4([10, 96, 0, 10]),
                80,
                tcp,
                Affinity::None,
                vec![
                    backend(v4([10, 0, 0, 2]), 8080),
                    backend(v4([10, 0, 0, 3]), 8080),
                    backend(v4([10, 0, 1, 5]), 8080),
                ],
            ),
            spec(
                v4([10, 96, 0, 53]),
                53,
                udp,
                pin(10_800),
                vec![backend(v4([10, 0, 0, 4]), 53), backend(v4([10, 0, 1, 6]), 53)],
            ),
            spec(
                v6([0xfd00, 0, 0x96, 0, 0, 0, 0, 0x10]),
                443,
                tcp,
                pin(60),
                vec![
                    backend(v6([0xfd00, 0, 0, 0, 0, 0, 0, 2]), 8443),
                    backend(v6([0xfd00, 0, 0, 1, 0, 0, 0, 5]), 8443),
                ],
            ),
            spec(
                v6([0xfd00, 0, 0x96, 0, 0, 0, 0, 0x53]),
                53,
                udp,
                Affinity::None,
                vec![
                    backend(v6([0xfd00, 0, 0, 0, 0, 0, 0, 3]), 53),
                    backend(v6([0xfd00, 0, 0, 1, 0, 0, 0, 6]), 53),
                    unready6,
                ],
            ),
            spec(v4([10, 96, 0, 99]), 80, tcp, Affinity::None, vec![]),
            spec(v4([10, 96, 0, 99]), 81, udp, Affinity::None, vec![]),
            spec(v6([0xfd00, 0, 0x96, 0, 0, 0, 0, 0x99]), 53, udp, Affinity::None, vec![]),
            spec(v6([0xfd00, 0, 0x96, 0, 0, 0, 0, 0x99]), 443, tcp, pin(5), vec![]),
            spec(v4([10, 96, 0, 1]), 443, tcp, Affinity::None, vec![backend(v4([192, 168, 1, 10]), 6443)]),
            spec(v4([10, 96, 0, 11]), 80, tcp, pin(30), vec![terminating, not_serving]),
        ];
        let all: BTreeMap<ServiceKey, Arc<Service>> =
            specs.into_iter().map(|s| (s.key, Arc::new(Service::compile(s, None)))).collect();
        // A backend removed from every service whose flows still live.
        let retired: HashSet<_> = [pack(v4([10, 0, 1, 8]), 8080, PROTO_TCP)].into_iter().collect();
        let mut t = ServiceTable::new(all, &retired, GATEWAY_MAC);
        t.gateways = vec![v4([10, 0, 0, 1]), v6([0xfd00, 0, 0, 0, 0, 0, 0, 1])];
        t.onlink = vec!["10.0.0.0/16".parse().unwrap(), "fd00::/48".parse().unwrap()];
        let mut m = GATEWAY_MAC;
        m[1] ^= 0x5a;
        t.host_vip_mac = Some(m);
        t
    })
}

/// The uplink as the datapath sees it, without AF_XDP: what it would put on the wire is cut
/// into segments for its MTU and checksummed, as `port/xdp`'s `stage_tx` does, into a scratch
/// buffer.
pub struct UplinkSim {
    /// IP MTU of the fabric.
    pub mtu: AtomicUsize,
    scratch: Mutex<Vec<u8>>,
}

impl UplinkSim {
    fn new() -> UplinkSim {
        UplinkSim { mtu: AtomicUsize::new(1500), scratch: Mutex::new(vec![0; FRAME_CAPACITY]) }
    }
}

impl PortIo for UplinkSim {
    fn recv_frame(
        &self,
        _: usize,
        _: &mut LocalPool,
    ) -> Result<Option<tapway_switch::pool::Frame>, PortError> {
        Ok(None)
    }

    fn send(&self, _: usize, frame: &[u8]) -> Result<(), PortError> {
        let bad = || PortError::Io(std::io::Error::from(std::io::ErrorKind::InvalidData));
        let hdr = VnetHdr::parse(frame).map_err(|_| bad())?;
        let eth = &frame[VNET_HDR_LEN..];
        let mtu = self.mtu.load(Relaxed);
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if needs_segmentation(&hdr) {
            let plan = SegmentPlan::new(&hdr, eth, mtu).map_err(|_| bad())?.pack_to_mtu(mtu);
            let n = plan.count();
            if n > UPLINK_TX_CHUNKS {
                return Err(PortError::Full);
            }
            for i in 0..n {
                let len = plan.segment_len(i);
                let out = scratch.get_mut(..len).ok_or_else(bad)?;
                plan.write(eth, i, out).map_err(|_| bad())?;
            }
            SEGMENTS.fetch_add(n as u64, Relaxed);
            return Ok(());
        }
        if eth.len() > mtu + L2_OVERHEAD {
            return Err(bad());
        }
        let out = &mut scratch[..eth.len()];
        out.copy_from_slice(eth);
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_csum(out, hdr.csum_start, hdr.csum_offset).map_err(|_| bad())?;
        }
        Ok(())
    }

    fn readiness_fd(&self, _: usize) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// One node: fresh tables, ports and clock.
pub struct Node {
    fdb: Fdb,
    counters: SwitchCounters,
    ct: Conntrack,
    affinity: AffinityTable,
    neigh: Neighbours,
    ports: PortTable,
    /// The uplink.
    pub uplink: Arc<UplinkSim>,
    mem: Vec<Arc<MemPort>>,
    /// Switch clock, seconds.
    pub now: u32,
    /// Switch clock, ns.
    pub now_ns: u64,
    scratch: Scratch,
    disp: Vec<Disposition>,
}

fn ips(i: u8) -> Vec<ipnet::IpNet> {
    vec![
        format!("10.0.0.{}/24", i + 1).parse().unwrap(),
        format!("fd00::{}/64", i + 1).parse().unwrap(),
        format!("fe80::100:{i}/64").parse().unwrap(),
    ]
}

impl Node {
    /// A node in its initial state.
    pub fn new() -> Node {
        let now = 1_000;
        let uplink = Arc::new(UplinkSim::new());
        let mut mem = Vec::new();
        let mut ports = PortTable::default();
        let storm = StormConfig { pps: 100, pps_burst: 20, bytes: 1_000_000, bytes_burst: 1 << 16 };
        for id in 0..PORTS {
            let (kind, mac, guard, meta_ips, io): (_, _, _, _, Arc<dyn PortIo>) = match id {
                0 => {
                    let m = Arc::new(MemPort::new(1));
                    mem.push(m.clone());
                    (PortKind::Host, GATEWAY_MAC, None, vec![], m)
                }
                UPLINK => (PortKind::Uplink, [2, 0, 0, 0, 9, 9], None, vec![], uplink.clone()),
                _ => {
                    let m = Arc::new(MemPort::new(1));
                    mem.push(m.clone());
                    let i = id as u8;
                    let ips = ips(i);
                    (PortKind::Pod, pod_mac(i), Some(SpoofGuard::new(pod_mac(i), &ips[..2])), ips, m)
                }
            };
            // Pod 2 has an egress limit, pod 3 an ingress one (CNI bandwidth).
            let bw = match id {
                2 => Some(Bandwidth { egress_rate: 1_000_000, egress_burst: 200_000, ..Default::default() }),
                3 => {
                    Some(Bandwidth { ingress_rate: 1_000_000, ingress_burst: 200_000, ..Default::default() })
                }
                _ => None,
            };
            ports = ports.with(Arc::new(PortEntry {
                id,
                kind,
                io,
                mac,
                guard,
                worker: 0,
                counters: PortCounters::default(),
                police: match id {
                    // Pods 1 and 3 with a small storm-control budget, so it runs out.
                    1 | 3 => PortPolice::new(bw).with_storm(&storm),
                    _ => PortPolice::new(bw),
                },
                meta: PortMeta { ips: meta_ips, ..Default::default() },
            }));
        }
        let fdb = Fdb::new(256, 300);
        fdb.learn(&GATEWAY_MAC, 0, now);
        for i in 1..=3u8 {
            fdb.learn(&pod_mac(i), u16::from(i), now);
            fdb.learn(&remote_mac(i), UPLINK, now);
        }
        // At most 16 neighbours behind one port: the quota is reachable.
        let neigh = Neighbours::new(64, 16, usize::from(PORTS), 300);
        neigh.learn(v4([10, 0, 1, 5]), remote_mac(1), UPLINK, now);
        neigh.learn(v6([0xfd00, 0, 0, 1, 0, 0, 0, 5]), remote_mac(1), UPLINK, now);
        neigh.learn(v4([10, 0, 1, 8]), remote_mac(2), UPLINK, now);
        // At most 8 flows per client: the quota is reachable.
        let ct = Conntrack::new(512, Timeouts::default(), 8);
        let flow = |proto, client, vip, backend, snat, client_mac, backend_mac, state| Flow {
            proto,
            client,
            vip,
            backend,
            snat,
            client_mac,
            vip_mac: GATEWAY_MAC,
            backend_mac,
            replied: state != CtState::SynSent,
            state,
            last_seen: now,
        };
        let flows = [
            // Pod 2 → TCP VIP → pod 1.
            flow(
                PROTO_TCP,
                (v4([10, 0, 0, 3]), 40000),
                (v4([10, 96, 0, 10]), 80),
                (v4([10, 0, 0, 2]), 8080),
                None,
                pod_mac(2),
                pod_mac(1),
                CtState::Established,
            ),
            // Pod 1 → UDP VIP → a remote pod.
            flow(
                PROTO_UDP,
                (v4([10, 0, 0, 2]), 5353),
                (v4([10, 96, 0, 53]), 53),
                (v4([10, 0, 1, 6]), 53),
                None,
                pod_mac(1),
                remote_mac(2),
                CtState::Udp,
            ),
            // A remote client → TCP IPv6 VIP → pod 1.
            flow(
                PROTO_TCP,
                (v6([0xfd00, 0, 0, 1, 0, 0, 0, 6]), 50000),
                (v6([0xfd00, 0, 0x96, 0, 0, 0, 0, 0x10]), 443),
                (v6([0xfd00, 0, 0, 0, 0, 0, 0, 2]), 8443),
                None,
                remote_mac(2),
                pod_mac(1),
                CtState::SynSent,
            ),
            // Pod 3 to itself through the UDP VIP (hairpin, SNAT to the gateway).
            flow(
                PROTO_UDP,
                (v4([10, 0, 0, 4]), 41000),
                (v4([10, 96, 0, 53]), 53),
                (v4([10, 0, 0, 4]), 53),
                Some((v4([10, 0, 0, 1]), 41000)),
                pod_mac(3),
                pod_mac(3),
                CtState::Udp,
            ),
            // Pod 1 → a retired backend.
            flow(
                PROTO_TCP,
                (v4([10, 0, 0, 2]), 40000),
                (v4([10, 96, 0, 10]), 80),
                (v4([10, 0, 1, 8]), 8080),
                None,
                pod_mac(1),
                remote_mac(2),
                CtState::Closing,
            ),
        ];
        for f in flows {
            let _ = ct.insert(f, true);
        }
        Node {
            fdb,
            counters: SwitchCounters::default(),
            ct,
            affinity: AffinityTable::new(64),
            neigh,
            ports,
            uplink,
            mem,
            now,
            now_ns: u64::from(now) * 1_000_000_000,
            scratch: Scratch::default(),
            disp: Vec::with_capacity(BATCH),
        }
    }

    /// Advances the clock by `step` (255: a day and more, past every timeout).
    pub fn advance(&mut self, step: u8) {
        let secs = if step == 255 { 100_000 } else { u32::from(step) / 16 };
        self.now = self.now.saturating_add(secs);
        self.now_ns = u64::from(self.now) * 1_000_000_000 + u64::from(step) * 3_000_000;
    }

    /// Runs one burst of frames (vnet header + Ethernet each) received on `ingress`, and
    /// delivers the result.
    pub fn burst(&mut self, ingress: u16, raw: &[Vec<u8>], local: &mut LocalPool) {
        let Some(entry) = self.ports.get(ingress % PORTS).cloned() else { return };
        let mut frames = Vec::with_capacity(raw.len());
        for r in raw.iter().take(BATCH) {
            let Some(mut f) = local.get() else { break };
            let n = r.len().min(f.buffer_mut().len());
            f.buffer_mut()[..n].copy_from_slice(&r[..n]);
            f.set_len(n);
            frames.push(f);
        }
        FRAMES.fetch_add(frames.len() as u64, Relaxed);
        let services = Services {
            table: services(),
            ct: &self.ct,
            affinity: &self.affinity,
            neigh: &self.neigh,
            ports: &self.ports,
        };
        let pipe = Pipeline {
            fdb: &self.fdb,
            counters: &self.counters,
            worker: 0,
            now: self.now,
            now_ns: self.now_ns,
            services: Some(&services),
        };
        pipe.run(&entry, &mut frames, &mut self.scratch, &mut self.disp);
        assert_eq!(self.disp.len(), frames.len(), "one disposition per frame");
        let disps = std::mem::take(&mut self.disp);
        for (frame, d) in frames.drain(..).zip(disps.iter()) {
            self.deliver(&entry, frame, *d, local);
        }
        self.disp = disps;
        for m in &self.mem {
            drop(m.take_sent());
        }
    }

    /// What the worker does with a frame's disposition (`worker.rs`'s `deliver`, one worker).
    fn deliver(
        &self,
        ingress: &PortEntry,
        frame: tapway_switch::pool::Frame,
        d: Disposition,
        local: &mut LocalPool,
    ) {
        match d {
            Disposition::Drop(_) => local.put(frame),
            Disposition::Unicast(p) => match self.ports.get(p) {
                Some(egress) if self.admit(egress, &frame) => {
                    let _ = egress.io.send_frame(0, frame, local);
                }
                _ => local.put(frame),
            },
            Disposition::Flood => {
                for egress in self.ports.iter().filter(|p| p.id != ingress.id) {
                    if self.admit(egress, &frame) {
                        let _ = egress.io.send(0, frame.bytes());
                    }
                }
                local.put(frame);
            }
        }
    }

    fn admit(&self, egress: &PortEntry, frame: &tapway_switch::pool::Frame) -> bool {
        egress.police.to_pod.as_ref().is_none_or(|p| p.allow(frame.ethernet().len(), self.now_ns))
    }
}

impl Node {
    /// The dispositions of the last burst's frames.
    pub fn dispositions(&self) -> &[Disposition] {
        &self.disp
    }

    /// Port `id`.
    pub fn port(&self, id: u16) -> Option<&Arc<PortEntry>> {
        self.ports.get(id)
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

/// Prints how many frames the target ran (at exit and every million frames).
pub fn report() {
    eprintln!(
        "pipeline: {} frames in {} inputs, {} uplink segments",
        FRAMES.load(Relaxed),
        INPUTS.load(Relaxed),
        SEGMENTS.load(Relaxed)
    );
}

#[cfg(test)]
mod tests {
    //! The node is what the target claims: frames built by `frames` reach the service stage,
    //! tracked flows, rejects, anti-spoofing and the uplink's segmentation.
    use tapway_switch::stats::DropReason;

    use super::*;
    use crate::frames::{FrameSpec, Ip4Sel, MacSel, Payload, PayloadLen, PortSel, Vnet, L3, L4};

    fn tcp4(
        vnet: Vnet,
        src: (u8, u8),
        dst: (u8, u8),
        sport: PortSel,
        dport: PortSel,
        len: PayloadLen,
    ) -> Vec<u8> {
        let spec = FrameSpec::Built {
            vnet,
            dst: MacSel::Book(dst.0),
            src: MacSel::Book(src.0),
            vlan: None,
            l3: L3::V4 {
                src: Ip4Sel::Book(src.1),
                dst: Ip4Sel::Book(dst.1),
                ttl: 64,
                frag: 0,
                options: vec![],
                l4: L4::Tcp {
                    sport,
                    dport,
                    seq: 1,
                    flags: 0x02,
                    options: vec![],
                    payload: Payload { pattern: vec![7], len },
                },
            },
            mangle: vec![],
        };
        let mut out = Vec::new();
        spec.build(&mut out);
        out
    }

    #[test]
    fn frames_reach_every_stage_and_the_pool_balances() {
        let mut local = LocalPool::new(pool().clone(), 8);
        let mut node = Node::new();
        let small = PayloadLen::Small(10);
        // MAC book: 0 gateway, 2-4 pods 1-3, 5 remote 1. IPv4 book: 1-3 pods, 4 remote 1,
        // 8 the TCP VIP, 10 the VIP without endpoints.
        let batch = [
            // Pod 2 → TCP VIP: DNAT to a backend, unicast.
            tcp4(Vnet::Plain, (3, 2), (0, 8), PortSel::Any(40001), PortSel::Book(0), small),
            // Pod 1's reply of the tracked flow pod 2 → VIP → pod 1: back to pod 2.
            tcp4(Vnet::Plain, (2, 1), (0, 2), PortSel::Book(1), PortSel::Book(7), small),
            // To a VIP without endpoints: a RST back out of the ingress port.
            tcp4(Vnet::Plain, (2, 1), (0, 10), PortSel::Any(1234), PortSel::Book(0), small),
            // Pod 1 with pod 2's address.
            tcp4(Vnet::Plain, (2, 2), (3, 2), PortSel::Any(1), PortSel::Any(2), small),
        ];
        let vip = services().lookup(v4([10, 96, 0, 10]), 80, PROTO_TCP).map(|s| s.counters.clone());
        let new_flows = || vip.as_ref().map(|c| c.new_flows.load(Relaxed));
        let flows = new_flows();
        node.burst(2, &batch[..1], &mut local);
        // Any of the three backends (pod 2 itself: hairpin).
        assert!(
            matches!(node.dispositions(), [Disposition::Unicast(1..=UPLINK)]),
            "{:?}",
            node.dispositions()
        );
        assert_eq!(new_flows(), flows.map(|n| n + 1), "a new service flow");
        node.burst(1, &batch[1..], &mut local);
        assert_eq!(
            node.dispositions(),
            [Disposition::Unicast(2), Disposition::Unicast(1), Disposition::Drop(DropReason::SpoofedIp)]
        );
        assert_eq!(node.port(1).map(|p| p.counters.dropped(DropReason::SpoofedIp)), Some(1));
        // A 20 kB GSO super-frame from pod 1 to a remote pod: out of the uplink, in segments.
        let before = SEGMENTS.load(Relaxed);
        let gso = Vnet::Partial { gso: crate::frames::Gso::Fit, ecn: false, gso_size: 1448, hdr_len: None };
        let big = tcp4(gso, (2, 1), (5, 4), PortSel::Any(40000), PortSel::Book(1), PayloadLen::Super(20_000));
        node.burst(1, &[big], &mut local);
        assert_eq!(node.dispositions(), [Disposition::Unicast(UPLINK)]);
        assert_eq!(SEGMENTS.load(Relaxed) - before, 14, "20000 bytes in 1448-byte segments");
        drop(local);
        assert_eq!(pool().outstanding(), 0);
    }
}
