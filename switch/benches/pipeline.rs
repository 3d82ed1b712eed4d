//! In-memory pipeline benchmark: nanoseconds per frame through a running [`Switch`] (its real
//! workers, pipeline, FDB, service stage and rings), with [`MemPort`]s for ports, so it needs no
//! root and no kernel I/O. docs/performance.md ("In-memory pipeline") has the figures.
//!
//! ```sh
//! nice -n 5 cargo bench -p tapway-switch --bench pipeline -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Cases, each with 1 worker and with 2 (ingress on worker 0, egress on worker 1, so every
//! frame crosses a ring; flood: the egress ports alternate between the two workers):
//! - `l2_unicast`: pod → pod, destination MAC learned;
//! - `flood8`: a broadcast from one pod to 8 others;
//! - `vip_new_flow`: UDP to a Service VIP, every frame a new flow (conntrack insert, Maglev
//!   pick, DNAT); conntrack is emptied between chunks, outside the timing;
//! - `vip_established`: UDP to the VIP, one flow (conntrack hit, DNAT).
//!
//! One timed unit is a chunk of [`CHUNK`] frames, built before the clock starts, then queued
//! on the ingress port's rx queue (with 2 workers, at most [`WINDOW`] in flight, so the
//! inbound ring of 1024 never overflows) until every expected copy has been sent.
//!
//! The time reported is the CPU time the switch's worker threads (`tapway-w*`) spent on the
//! chunk (`/proc/self/task/*/schedstat`), summed over the workers, not the wall time: on a
//! shared, loaded machine the wall time is mostly the workers waiting for a CPU, which says
//! nothing about the pipeline. The workers busy-poll (`PollMode::Busy`), so no wake-up is
//! measured, but a worker that waits for frames spins, and that is counted too (little with
//! one worker, which is fed the whole chunk at once; more with two, where worker 1 waits for
//! worker 0's hand-offs). Where no worker thread is found, the wall time is used. What is
//! timed includes [`MemPort`]'s own costs (a `Vec` per sent frame, its tx lock); they are the
//! same before and after a change of the pipeline.
//!
//! Public API relied on, so that the bench follows the datapath's rewrites: `Switch::start`
//! with `SwitchConfig { cores, poll_mode, conntrack_per_client, .. }`, `Running::stop`,
//! `Switch::update` / `PortTable::with`, `PortEntry`'s pub fields (with `SpoofGuard::new`,
//! `PortCounters`, `PortPolice` and `PortMeta` defaults), `MemPort::{new, inject, take_sent}`,
//! `Service::compile`, `ServiceTable::new` stored in `Switch::services`, and
//! `Switch::conntrack.flush`.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tapway_api::{Affinity, BackendSpec, Protocol, ServiceKey, ServiceSpec};
use tapway_switch::datapath::PollMode;
use tapway_switch::port::mem::MemPort;
use tapway_switch::switch::{Running, Switch, SwitchConfig};
use tapway_switch::table::services::{Service, ServiceTable};
use tapway_switch::table::{PortEntry, PortKind, PortMeta, SpoofGuard};

/// The `virtio_net_hdr` every frame crosses [`tapway_switch::port::PortIo`] with (all zero:
/// no offload), as a TAP opened with `TUNSETVNETHDRSZ 12` gives it.
const VNET: usize = 12;
/// Frames per timed unit: enough to hide the start and the drain, few enough to build
/// untimed and to stay below the 64 Ki source ports of the new-flow case.
const CHUNK: usize = 4096;
/// Frames queued but not yet out with two workers, at most, divided by the copies each frame
/// hands to the other worker: below the workers' inbound ring (1024 by default).
const WINDOW: usize = 512;
/// A chunk that has not come out after this long means frames were dropped: a broken bench.
const DEADLINE: Duration = Duration::from_secs(20);

const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_PORT: u16 = 9009;

fn mac(i: u16) -> [u8; 6] {
    let [hi, lo] = i.to_be_bytes();
    [2, 0, 0, 0, hi, lo]
}

fn ip(i: u16) -> Ipv4Addr {
    let [hi, lo] = i.to_be_bytes();
    Ipv4Addr::new(10, 0, hi, lo)
}

/// A 64-byte (60 + FCS) Ethernet/IPv4/UDP frame behind a zero vnet header.
fn udp(src: u16, dst_mac: [u8; 6], dst_ip: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(mac(src), dst_mac)
        .ipv4(ip(src).octets(), dst_ip.octets(), 64)
        .udp(sport, dport);
    let mut f = vec![0u8; VNET];
    // 60 - 14 - 20 - 8 = 18 bytes of payload.
    if let Err(e) = b.write(&mut f, &[0u8; 18]) {
        panic!("building a test frame: {e}");
    }
    f
}

/// Port `id` over `io` on `worker`: the host port (0, the pods' gateway) or pod `id`,
/// anti-spoofed to its MAC and 10.0.0.<id>/16.
fn port_entry(id: u16, io: Arc<MemPort>, worker: usize) -> Arc<PortEntry> {
    let (kind, m, guard) = if id == 0 {
        (PortKind::Host, HOST_MAC, None)
    } else {
        let net = match ipnet::IpNet::new(IpAddr::V4(ip(id)), 16) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        (PortKind::Pod, mac(id), Some(SpoofGuard::new(mac(id), &[net])))
    };
    Arc::new(PortEntry {
        id,
        kind,
        io,
        mac: m,
        guard,
        worker,
        counters: Default::default(),
        police: Default::default(),
        meta: PortMeta::default(),
    })
}

/// A running switch with a host port (0, the pods' gateway) and `pods` pod ports 1..=pods,
/// anti-spoofed to their MAC and 10.0.0.<id>/16; pod 1 on worker 0, the others on worker 1
/// when there are two workers (alternating for the flood case).
struct Bed {
    running: Running,
    ports: Vec<Arc<MemPort>>,
    workers: usize,
}

/// CPU time of this process's switch workers (threads named `tapway-w*`) so far, in ns;
/// `None` when there is none.
fn workers_cpu_ns() -> Option<u64> {
    let mut total = None;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("tapway-w") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        if let Some(ns) = stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
            total = Some(total.unwrap_or(0) + ns);
        }
    }
    total
}

impl Bed {
    fn new(workers: usize, pods: u16, alternate: bool) -> Bed {
        let cfg = SwitchConfig {
            cores: vec![None; workers],
            poll_mode: PollMode::Busy,
            pool_frames: 8192,
            conntrack_per_client: 0,
            ..Default::default()
        };
        let running = match Switch::start(cfg) {
            Ok(r) => r,
            Err(e) => panic!("starting the switch: {e}"),
        };
        let sw = running.switch.clone();
        let mut ports = Vec::new();
        for id in 0..=pods {
            let io = Arc::new(MemPort::new(2 * CHUNK));
            let worker = match (workers, id) {
                (1, _) | (_, 0 | 1) => 0,
                _ if alternate => usize::from(id % 2),
                _ => 1,
            };
            let entry = port_entry(id, io.clone(), worker);
            sw.update(|t| (t.with(entry), ()));
            ports.push(io);
        }
        Bed { running, ports, workers }
    }

    /// The service table of a UDP service VIP:9009 whose one backend is pod 2.
    fn vip_table() -> ServiceTable {
        let spec = ServiceSpec {
            name: "bench/vip".into(),
            key: ServiceKey { vip: IpAddr::V4(VIP), port: VIP_PORT, protocol: Protocol::Udp },
            affinity: Affinity::None,
            backends: vec![BackendSpec::ready(IpAddr::V4(ip(2)), VIP_PORT)],
        };
        let mut all = BTreeMap::new();
        all.insert(spec.key, Arc::new(Service::compile(spec, None)));
        ServiceTable::new(all, &HashSet::new(), HOST_MAC)
    }

    /// The switch with [`Bed::vip_table`].
    fn with_vip(self) -> Bed {
        self.running.switch.services.store(Arc::new(Bed::vip_table()));
        self
    }

    /// Queues `frames` on pod 1 and waits until each of `outs` has sent `frames.len()`
    /// frames; the time from the first queued frame to the last one out.
    fn chunk(&self, frames: Vec<Vec<u8>>, outs: &[usize]) -> Duration {
        let n = frames.len();
        let mut got = vec![0usize; outs.len()];
        let mut frames = frames.into_iter();
        let mut queued = 0;
        // One worker has no ring to overflow: it gets the whole chunk at once.
        let window = if self.workers == 1 { n } else { (WINDOW / outs.len()).max(16) };
        let cpu0 = workers_cpu_ns();
        let start = Instant::now();
        loop {
            let done = got.iter().copied().min().unwrap_or(n);
            if done >= n {
                break;
            }
            // At most WINDOW frames in flight: a worker's inbound ring (1024) must not overflow
            // when the other worker receives faster than it transmits.
            while queued < n && queued - done < window {
                let Some(f) = frames.next() else { break };
                if !self.ports[1].inject(f) {
                    panic!("the ingress queue holds {} frames", 2 * CHUNK);
                }
                queued += 1;
            }
            for (g, &o) in got.iter_mut().zip(outs) {
                *g += self.ports[o].take_sent().len();
            }
            if start.elapsed() > DEADLINE {
                panic!("only {got:?} of {n} frames came out: the switch dropped some");
            }
            // Not spinning: the bench thread must not take the workers' CPU.
            std::thread::sleep(Duration::from_micros(20));
        }
        let wall = start.elapsed();
        match (cpu0, workers_cpu_ns()) {
            (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
            _ => wall,
        }
    }

    /// Times `iters` frames made by `make(i)` in chunks, with `between` run untimed before
    /// each chunk.
    fn run(
        &self,
        iters: u64,
        outs: &[usize],
        make: impl Fn(usize) -> Vec<u8>,
        between: impl Fn(),
    ) -> Duration {
        let mut left = usize::try_from(iters).unwrap_or(usize::MAX);
        let mut total = Duration::ZERO;
        while left > 0 {
            let n = left.min(CHUNK);
            between();
            let frames: Vec<Vec<u8>> = (0..n).map(&make).collect();
            total += self.chunk(frames, outs);
            left -= n;
        }
        total
    }

    /// Teaches the FDB pod `id`'s MAC (a broadcast from it, flooded everywhere).
    fn learn(&self, id: u16) {
        let f = udp(id, [0xff; 6], Ipv4Addr::BROADCAST, 1000, 1000);
        if !self.ports[usize::from(id)].inject(f) {
            panic!("cannot queue on port {id}");
        }
        std::thread::sleep(Duration::from_millis(50));
        for p in &self.ports {
            p.take_sent();
        }
    }
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    for workers in [1usize, 2] {
        let w = format!("{workers}w");
        {
            let bed = Bed::new(workers, 2, false);
            bed.learn(2);
            let f = udp(1, mac(2), ip(2), 1000, 2000);
            g.bench_function(BenchmarkId::new("l2_unicast", &w), |b| {
                b.iter_custom(|iters| bed.run(iters, &[2], |_| f.clone(), || ()))
            });
            bed.running.stop();
        }
        {
            let bed = Bed::new(workers, 9, true);
            let f = udp(1, [0xff; 6], Ipv4Addr::BROADCAST, 1000, 2000);
            let outs: Vec<usize> = (2..=9).collect();
            g.bench_function(BenchmarkId::new("flood8", &w), |b| {
                // The host port gets a copy too; collected and dropped, not waited for.
                b.iter_custom(|iters| bed.run(iters, &outs, |_| f.clone(), || drop(bed.ports[0].take_sent())))
            });
            bed.running.stop();
        }
        {
            let bed = Bed::new(workers, 2, false).with_vip();
            bed.learn(2);
            let sw = bed.running.switch.clone();
            g.bench_function(BenchmarkId::new("vip_new_flow", &w), |b| {
                b.iter_custom(|iters| {
                    bed.run(
                        iters,
                        &[2],
                        // A new source port per frame: a new flow per frame within a chunk.
                        |i| udp(1, HOST_MAC, VIP, 1024 + (i % CHUNK) as u16, VIP_PORT),
                        || {
                            sw.conntrack.flush(|_| true);
                        },
                    )
                })
            });
            bed.running.stop();
        }
        {
            let bed = Bed::new(workers, 2, false).with_vip();
            bed.learn(2);
            let f = udp(1, HOST_MAC, VIP, 40000, VIP_PORT);
            g.bench_function(BenchmarkId::new("vip_established", &w), |b| {
                b.iter_custom(|iters| bed.run(iters, &[2], |_| f.clone(), || ()))
            });
            bed.running.stop();
        }
    }
    g.finish();
}

/// The stages alone, on this thread: one [`Pipeline::run`] over a burst of [`BURST`] frames
/// already in pool buffers, no worker, no port I/O, no ring. What a frame costs in
/// tapway's own code (parse, anti-spoof, learn, service, forward decision); the `pipeline`
/// group adds the worker's loop, the ports and the hand-off.
fn stages(c: &mut Criterion) {
    use tapway_switch::datapath::pipeline::Scratch;
    use tapway_switch::datapath::service::Services;
    use tapway_switch::datapath::Pipeline;
    use tapway_switch::pool::{FramePool, LocalPool};
    use tapway_switch::stats::SwitchCounters;
    use tapway_switch::table::affinity::AffinityTable;
    use tapway_switch::table::conntrack::Conntrack;
    use tapway_switch::table::neigh::Neighbours;
    use tapway_switch::table::{Fdb, PortTable};

    const BURST: usize = 32;
    let ports =
        (0..=9).fold(PortTable::default(), |t, id| t.with(port_entry(id, Arc::new(MemPort::new(1)), 0)));
    let ingress = ports.get(1).cloned().unwrap_or_else(|| panic!("no port 1"));
    let fdb = Fdb::new(4096, 300);
    fdb.learn(&mac(2), 2, 1);
    let counters = SwitchCounters::default();
    let ct = Conntrack::new(1 << 16, Default::default(), 0);
    let affinity = AffinityTable::new(1024);
    let neigh = Neighbours::new(1024, 0, 16, 300);
    let vip = Bed::vip_table();
    let empty = ServiceTable::default();
    let mut pool = LocalPool::new(FramePool::new(4 * BURST, 2048), BURST);
    let mut g = c.benchmark_group("stages");
    g.throughput(criterion::Throughput::Elements(BURST as u64));
    /// A case: its name, whether the VIP is programmed, and the frame it sends as frame `i`.
    type Case = (&'static str, bool, Box<dyn Fn(usize) -> Vec<u8>>);
    let cases: [Case; 4] = [
        ("l2_unicast", false, Box::new(|_| udp(1, mac(2), ip(2), 1000, 2000))),
        ("flood_decision", false, Box::new(|_| udp(1, [0xff; 6], Ipv4Addr::BROADCAST, 1000, 2000))),
        ("vip_new_flow", true, Box::new(|i| udp(1, HOST_MAC, VIP, 1024 + i as u16, VIP_PORT))),
        ("vip_established", true, Box::new(|_| udp(1, HOST_MAC, VIP, 40000, VIP_PORT))),
    ];
    for (name, with_vip, make) in cases {
        let services = Services {
            table: if with_vip { &vip } else { &empty },
            ct: &ct,
            affinity: &affinity,
            neigh: &neigh,
            ports: &ports,
        };
        let pipe = Pipeline {
            fdb: &fdb,
            counters: &counters,
            worker: 0,
            now: 1,
            now_ns: 0,
            services: Some(&services),
        };
        let raw: Vec<Vec<u8>> = (0..BURST).map(&make).collect();
        let mut frames = Vec::with_capacity(BURST);
        let (mut scratch, mut out) = (Scratch::default(), Vec::with_capacity(BURST));
        let mut round = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|bursts| {
                // Only `run` is timed: filling the buffers, giving them back and emptying
                // conntrack before the new-flow case's source ports wrap around are not.
                let mut timed = Duration::ZERO;
                for _ in 0..bursts {
                    for (i, r) in raw.iter().enumerate() {
                        let Some(mut f) = pool.get() else { panic!("pool empty") };
                        f.buffer_mut()[..r.len()].copy_from_slice(r);
                        if name == "vip_new_flow" {
                            // A new flow per frame: the source port moves on every frame.
                            let sport = (1024 + (round as usize * BURST + i) % 60000) as u16;
                            f.buffer_mut()[VNET + 34..VNET + 36].copy_from_slice(&sport.to_be_bytes());
                        }
                        f.set_len(r.len());
                        frames.push(f);
                    }
                    round += 1;
                    let start = Instant::now();
                    pipe.run(&ingress, &mut frames, &mut scratch, &mut out);
                    timed += start.elapsed();
                    for f in frames.drain(..) {
                        pool.put(f);
                    }
                    if name == "vip_new_flow" && (round as usize * BURST) % 60000 < BURST {
                        ct.flush(|_| true);
                    }
                }
                timed
            })
        });
        if name == "vip_new_flow" {
            ct.flush(|_| true);
        }
    }
    g.finish();
}

criterion_group!(benches, pipeline, stages);
criterion_main!(benches);
