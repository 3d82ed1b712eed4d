//! The generator: one sender thread per requested core, each with its own TX ring, its own
//! flows (flow `i` belongs to thread `i % threads`, so each flow's sequence comes from one
//! thread and stays in order), paced to a rate or flat out.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use crate::clock::now_ns;
use crate::frame::{FlowSpec, FrameError, SizeMix, Template, FCS_LEN};
use crate::iface::{self, IfaceError};
use crate::netns::NetnsError;
use crate::ring::{Push, RingError, TxRing};

/// Why the generator could not run.
#[derive(Debug, Error)]
pub enum PktgenError {
    /// Namespace.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Interface addresses.
    #[error(transparent)]
    Iface(#[from] IfaceError),
    /// Socket or ring.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Frame size.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Bad parameters.
    #[error("{0}")]
    Config(String),
    /// A sender thread panicked.
    #[error("a sender thread panicked")]
    Panicked,
}

/// What to send.
#[derive(Debug, Clone)]
pub struct PktgenConfig {
    /// Sending interface (in the current thread's netns).
    pub ifname: String,
    /// Destination address.
    pub dst_ip: Ipv4Addr,
    /// Destination MAC; resolved by ARP when `None`.
    pub dst_mac: Option<[u8; 6]>,
    /// Source address; the interface's first IPv4 address when `None`.
    pub src_ip: Option<Ipv4Addr>,
    /// UDP destination port (the sink's).
    pub dst_port: u16,
    /// UDP source port of flow 0; flow `i` uses `src_port + i`.
    pub src_port: u16,
    /// Frame sizes.
    pub sizes: SizeMix,
    /// Number of flows.
    pub flows: u16,
    /// Total rate in frames per second; `None`: as fast as possible.
    pub rate_pps: Option<f64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many frames in total.
    pub count: Option<u64>,
    /// Cores to pin one sender thread each to; empty: `threads` unpinned threads.
    pub cores: Vec<usize>,
    /// Unpinned sender threads when `cores` is empty.
    pub threads: usize,
    /// PACKET_QDISC_BYPASS.
    pub qdisc_bypass: Bypass,
}

/// Whether frames skip the interface's qdisc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bypass {
    /// On, except on TAP devices (driver `tun`): there the slots of a bypassing TX ring came back
    /// only about once a second on kernel 6.18 (a few thousand frames/s), while through the
    /// qdisc the same TAP takes hundreds of thousands.
    Auto,
    /// Always bypass.
    On,
    /// Never bypass.
    Off,
}

impl PktgenConfig {
    /// A flat-out, 1-flow, 64 B, 1 s configuration towards `dst_ip` on `eth0`.
    pub fn new(dst_ip: Ipv4Addr) -> PktgenConfig {
        PktgenConfig {
            ifname: "eth0".into(),
            dst_ip,
            dst_mac: None,
            src_ip: None,
            dst_port: DEFAULT_PORT,
            src_port: 10000,
            sizes: SizeMix::Fixed(64),
            flows: 1,
            rate_pps: None,
            duration: Some(Duration::from_secs(1)),
            count: None,
            cores: Vec::new(),
            threads: 1,
            qdisc_bypass: Bypass::Auto,
        }
    }
}

/// The sink's default UDP port.
pub const DEFAULT_PORT: u16 = 9009;

/// What the generator did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PktgenResult {
    /// Frames handed to the kernel.
    pub sent: u64,
    /// Their nominal bytes (FCS included).
    pub bytes: u64,
    /// Frames the kernel refused plus failed sends.
    pub errors: u64,
    /// Times the TX ring stayed full for 100 ms (the path stopped taking frames).
    pub stalls: u64,
    /// Seconds from the first frame to the last.
    pub elapsed_s: f64,
    /// Frames sent per flow (index = flow number).
    pub per_flow: Vec<u64>,
    /// Sender threads.
    pub threads: usize,
    /// Whether the qdisc was bypassed.
    pub qdisc_bypass: bool,
}

impl PktgenResult {
    /// Frames per second.
    pub fn pps(&self) -> f64 {
        crate::clock::per_sec(self.sent as f64, self.elapsed_s)
    }

    /// Megabits per second of frames (nominal size, FCS included).
    pub fn mbps(&self) -> f64 {
        crate::clock::per_sec(self.bytes as f64 * 8.0, self.elapsed_s) / 1e6
    }

    /// The line kernel pktgen users expect.
    pub fn line(&self, sizes: &SizeMix) -> String {
        format!(
            "pktgen: sent {} frames ({} B) in {:.3} s: {:.0} pps {:.1} Mb/s, errors {}, ring stalls {}, {} thread(s), qdisc {}",
            self.sent,
            sizes.label(),
            self.elapsed_s,
            self.pps(),
            self.mbps(),
            self.errors,
            self.stalls,
            self.threads,
            if self.qdisc_bypass { "bypassed" } else { "used" }
        )
    }
}

/// Live counters, shared with a progress printer.
#[derive(Debug, Default)]
pub struct Live {
    /// Frames sent so far.
    pub sent: AtomicU64,
    /// Nominal bytes sent so far.
    pub bytes: AtomicU64,
}

struct Thread {
    flows: Vec<(u16, Vec<Template>)>,
    count: Option<u64>,
    rate: Option<f64>,
    core: Option<usize>,
}

/// Runs the generator in the calling thread's netns (see [`crate::netns::in_netns`]). Stops at
/// the duration, the count, or when `stop` becomes true.
pub fn run(cfg: &PktgenConfig, stop: &AtomicBool, live: &Live) -> Result<PktgenResult, PktgenError> {
    if cfg.flows == 0 {
        return Err(PktgenError::Config("--flows must be at least 1".into()));
    }
    if cfg.rate_pps.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(PktgenError::Config("--rate must be a positive number of frames per second".into()));
    }
    let (src_mac, if_ip) = iface::addresses(&cfg.ifname)?;
    let src_ip = cfg.src_ip.or(if_ip).ok_or_else(|| IfaceError::NoIpv4(cfg.ifname.clone()))?;
    let dst_mac = match cfg.dst_mac {
        Some(m) => m,
        None => iface::resolve_dst_mac(&cfg.ifname, cfg.dst_ip, Duration::from_secs(3))?,
    };
    let mtu = read_mtu(&cfg.ifname);
    if let Some(mtu) = mtu {
        // An L2 frame of nominal size S carries an IP packet of S - 18 bytes.
        let need = cfg.sizes.max_size() - FCS_LEN - 14;
        if need > mtu {
            return Err(PktgenError::Config(format!(
                "{} B frames need an MTU of {need} on {}, which has {mtu}",
                cfg.sizes.max_size(),
                cfg.ifname
            )));
        }
    }
    let nthreads = if cfg.cores.is_empty() { cfg.threads.max(1) } else { cfg.cores.len() };
    let nthreads = nthreads.min(usize::from(cfg.flows));
    let pattern = cfg.sizes.pattern();
    let mut threads: Vec<Thread> = (0..nthreads)
        .map(|t| Thread {
            flows: Vec::new(),
            count: cfg.count.map(|c| c / nthreads as u64 + u64::from((t as u64) < c % nthreads as u64)),
            rate: cfg.rate_pps.map(|r| r / nthreads as f64),
            core: cfg.cores.get(t).copied(),
        })
        .collect();
    for f in 0..cfg.flows {
        let spec = FlowSpec {
            src_mac,
            dst_mac,
            src_ip,
            dst_ip: cfg.dst_ip,
            src_port: cfg.src_port.wrapping_add(f),
            dst_port: cfg.dst_port,
            flow: f,
        };
        let t = pattern.iter().map(|&s| Template::new(&spec, s)).collect::<Result<Vec<_>, _>>()?;
        threads[usize::from(f) % nthreads].flows.push((f, t));
    }
    // Open every ring here, in this thread's netns, before timing starts.
    let max_frame = cfg.sizes.max_size() - FCS_LEN;
    let bypass = match cfg.qdisc_bypass {
        Bypass::On => true,
        Bypass::Off => false,
        Bypass::Auto => iface::driver(&cfg.ifname).as_deref() != Some("tun"),
    };
    let mut rings = Vec::new();
    for _ in 0..nthreads {
        rings.push(TxRing::open(&cfg.ifname, bypass, max_frame, 1024)?);
    }
    let start = Instant::now();
    let deadline = cfg.duration.map(|d| start + d);
    let results: Vec<Result<ThreadOut, PktgenError>> = std::thread::scope(|s| {
        let hs: Vec<_> = threads
            .into_iter()
            .zip(rings)
            .map(|(th, ring)| s.spawn(move || send_loop(th, ring, start, deadline, stop, live)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().map_err(|_| PktgenError::Panicked).and_then(std::convert::identity))
            .collect()
    });
    let results = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    // Sending time: up to the last frame handed to the kernel, not the drain after it.
    let elapsed_s = results.iter().map(|r| r.end).max().map_or(0.0, |e| (e - start).as_secs_f64());
    let mut out = PktgenResult {
        elapsed_s,
        threads: nthreads,
        qdisc_bypass: bypass,
        per_flow: vec![0; usize::from(cfg.flows)],
        ..Default::default()
    };
    for r in results {
        out.stalls += r.stalls;
        out.sent += r.sent;
        out.bytes += r.bytes;
        out.errors += r.errors;
        for (f, n) in r.per_flow {
            out.per_flow[usize::from(f)] = n;
        }
    }
    Ok(out)
}

/// MTU of `ifname` in the calling thread's netns (SIOCGIFMTU on a socket of that netns;
/// /sys/class/net would show the netns sysfs was mounted in instead).
fn read_mtu(ifname: &str) -> Option<usize> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFMTU reads the NUL-terminated name and writes ifru_mtu inside `req`.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if r < 0 {
        return None;
    }
    // SAFETY: after a successful SIOCGIFMTU the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    usize::try_from(mtu).ok()
}

fn pin(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// One sender thread's counters.
struct ThreadOut {
    sent: u64,
    bytes: u64,
    errors: u64,
    stalls: u64,
    per_flow: Vec<(u16, u64)>,
    /// When it handed its last frame to the kernel (before waiting for the ring to drain).
    end: Instant,
}

fn send_loop(
    th: Thread,
    mut ring: TxRing,
    start: Instant,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    live: &Live,
) -> Result<ThreadOut, PktgenError> {
    if let Some(c) = th.core {
        pin(c);
    }
    let nflows = th.flows.len();
    let plen = th.flows.first().map_or(1, |f| f.1.len()).max(1);
    let mut seqs = vec![0u32; nflows];
    let mut sent_per = vec![0u64; nflows];
    // Batches of ~0.5 ms at the requested rate, at most 64 frames.
    let batch = th.rate.map_or(64, |r| ((r / 2000.0) as usize).clamp(1, 64));
    let (mut sent, mut bytes, mut stalls) = (0u64, 0u64, 0u64);
    let (mut fi, mut k) = (0usize, 0usize);
    'outer: loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Some(r) = th.rate {
            let due = start + Duration::from_secs_f64(sent as f64 / r);
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                let wait = due - now;
                if wait > Duration::from_micros(300) {
                    std::thread::sleep(wait - Duration::from_micros(200));
                } else {
                    std::hint::spin_loop();
                }
                if stop.load(Ordering::Relaxed) {
                    break 'outer;
                }
            }
        }
        let ts = now_ns();
        let (mut n, mut b) = (0u64, 0u64);
        for _ in 0..batch {
            if th.count.is_some_and(|c| sent + n >= c) {
                break;
            }
            let (_, tmpls) = &th.flows[fi];
            let t = &tmpls[k % tmpls.len()];
            let seq = seqs[fi];
            match ring.push(Duration::from_millis(100), |d| t.write(d, seq, ts)) {
                Push::Queued => {
                    seqs[fi] = seq.wrapping_add(1);
                    sent_per[fi] += 1;
                    n += 1;
                    b += t.size() as u64;
                }
                // The path holds every slot: look at the clock and the stop flag again.
                Push::Full => {
                    stalls += 1;
                    break;
                }
                Push::Refused => {
                    return Err(PktgenError::Config(format!(
                        "a {} B frame does not fit the TX ring",
                        t.size()
                    )))
                }
            }
            fi += 1;
            if fi == nflows {
                fi = 0;
                k = (k + 1) % plen;
            }
        }
        ring.flush();
        sent += n;
        bytes += b;
        live.sent.fetch_add(n, Ordering::Relaxed);
        live.bytes.fetch_add(b, Ordering::Relaxed);
        if th.count.is_some_and(|c| sent >= c) {
            break;
        }
    }
    let end = Instant::now();
    ring.drain();
    let errors = ring.counters.wrong_format + ring.counters.send_errors;
    let per_flow = th.flows.iter().map(|f| f.0).zip(sent_per).collect();
    Ok(ThreadOut { sent, bytes, errors, stalls, per_flow, end })
}
