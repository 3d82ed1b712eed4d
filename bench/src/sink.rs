//! The sink: an RX ring on the receiving interface, counting probe frames per flow (loss,
//! reordering, duplicates) and their one-way latency.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use crate::clock::now_ns;
use crate::frame::{parse_kpktgen, parse_probe, FCS_LEN};
use crate::latency::{Latency, LatencySummary};
use crate::netns::NetnsError;
use crate::ring::{RingError, RxRing};
use crate::seq::{Flows, SeqTotals};

/// Why the sink could not run.
#[derive(Debug, Error)]
pub enum SinkError {
    /// Namespace.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Socket or ring.
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// When and where to listen.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Receiving interface.
    pub ifname: String,
    /// UDP destination port of the probes.
    pub port: u16,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many probes.
    pub count: Option<u64>,
    /// Stop when no probe came for this long, once one has.
    pub idle: Option<Duration>,
}

/// Live counters, shared with a progress printer.
#[derive(Debug, Default)]
pub struct Live {
    /// Probes received so far.
    pub frames: AtomicU64,
    /// Their nominal bytes.
    pub bytes: AtomicU64,
}

/// What the sink saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkResult {
    /// Probe frames received (duplicates included).
    pub frames: u64,
    /// Their nominal bytes (FCS included).
    pub bytes: u64,
    /// Seconds from the first probe to the last.
    pub elapsed_s: f64,
    /// Sequence accounting over every flow.
    pub seq: SeqCounts,
    /// Frames the socket's ring dropped (the sink was too slow: not the path's loss).
    pub ring_drops: u64,
    /// Other frames seen on the interface (ARP, other traffic).
    pub other_frames: u64,
    /// One-way latency.
    pub latency: Option<LatencySummary>,
    /// Distinct frames received per flow (index = flow number).
    pub per_flow: Vec<u64>,
}

/// [`SeqTotals`] in the report.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SeqCounts {
    /// Flows seen.
    pub flows: u64,
    /// Distinct frames.
    pub received: u64,
    /// Sequence gaps.
    pub lost: u64,
    /// Late frames.
    pub reordered: u64,
    /// Repeated frames.
    pub duplicates: u64,
}

impl From<SeqTotals> for SeqCounts {
    fn from(t: SeqTotals) -> Self {
        SeqCounts {
            flows: t.flows,
            received: t.received,
            lost: t.lost,
            reordered: t.reordered,
            duplicates: t.duplicates,
        }
    }
}

impl SinkResult {
    /// Frames per second, first to last probe.
    pub fn pps(&self) -> f64 {
        crate::clock::per_sec(self.frames as f64, self.elapsed_s)
    }

    /// Megabits per second of frames (nominal size).
    pub fn mbps(&self) -> f64 {
        crate::clock::per_sec(self.bytes as f64 * 8.0, self.elapsed_s) / 1e6
    }

    /// Loss in % from the sequence numbers alone (tail loss not seen).
    pub fn seq_loss_pct(&self) -> f64 {
        let exp = self.seq.received + self.seq.lost;
        if exp == 0 {
            0.0
        } else {
            100.0 * self.seq.lost as f64 / exp as f64
        }
    }

    /// Frames lost given how many were sent per flow.
    pub fn lost_vs_sent(&self, sent_per_flow: &[u64]) -> u64 {
        sent_per_flow
            .iter()
            .enumerate()
            .map(|(f, &s)| s.saturating_sub(self.per_flow.get(f).copied().unwrap_or(0)))
            .sum()
    }

    /// The lines kernel pktgen users expect.
    pub fn lines(&self) -> Vec<String> {
        let mut v = vec![format!(
            "sink: received {} frames in {:.3} s: {:.0} pps {:.1} Mb/s; lost {} ({:.4} %), reordered {}, duplicates {}, ring drops {}, flows {}",
            self.frames,
            self.elapsed_s,
            self.pps(),
            self.mbps(),
            self.seq.lost,
            self.seq_loss_pct(),
            self.seq.reordered,
            self.seq.duplicates,
            self.ring_drops,
            self.seq.flows
        )];
        if let Some(l) = &self.latency {
            v.push(format!(
                "sink: one-way latency µs: p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} ({} samples)",
                l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.samples
            ));
        }
        v
    }
}

/// An open sink: the ring is ready before the generator starts.
#[derive(Debug)]
pub struct Sink {
    ring: RxRing,
    /// Swallows the probes in the receiver's stack so that it does not answer each one with
    /// an ICMP port unreachable.
    _udp: Option<UdpSocket>,
    cfg: SinkConfig,
}

impl Sink {
    /// Opens the ring in the calling thread's netns.
    pub fn open(cfg: SinkConfig) -> Result<Sink, SinkError> {
        let ring = RxRing::open(&cfg.ifname, 4096)?;
        let udp = UdpSocket::bind(("0.0.0.0", cfg.port)).ok();
        Ok(Sink { ring, _udp: udp, cfg })
    }

    /// Receives until the duration, count or idle limit, or until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool, live: &Live) -> SinkResult {
        let start = Instant::now();
        let mut flows = Flows::default();
        let mut lat = Latency::default();
        let (mut frames, mut bytes, mut other) = (0u64, 0u64, 0u64);
        let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
        let port = self.cfg.port;
        loop {
            if stop.load(Ordering::Relaxed)
                || self.cfg.duration.is_some_and(|d| start.elapsed() >= d)
                || self.cfg.count.is_some_and(|c| frames >= c)
                || self.cfg.idle.zip(last).is_some_and(|(i, l)| l.elapsed() >= i)
            {
                break;
            }
            let (mut n, mut b) = (0u64, 0u64);
            self.ring.poll(256, 50, |f, wire_len| match parse_probe(f, port) {
                Some(p) => {
                    flows.record(p.flow, p.seq);
                    lat.record(now_ns().saturating_sub(p.ts_ns));
                    n += 1;
                    b += (wire_len + FCS_LEN) as u64;
                }
                // Kernel pktgen's frames (`pktgen --engine kpktgen`): counted, latency from
                // their realtime stamp; loss is the sender's count minus ours.
                None => match parse_kpktgen(f, port) {
                    Some(k) => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default();
                        if let Some(ns) = k.latency_ns(now) {
                            lat.record(ns);
                        }
                        n += 1;
                        b += (wire_len + FCS_LEN) as u64;
                    }
                    None => other += 1,
                },
            });
            if n > 0 {
                let t = Instant::now();
                first.get_or_insert(t);
                last = Some(t);
                frames += n;
                bytes += b;
                live.frames.fetch_add(n, Ordering::Relaxed);
                live.bytes.fetch_add(b, Ordering::Relaxed);
            }
        }
        let ks = self.ring.kernel_stats();
        let totals = flows.totals();
        let nflows = u16::try_from(flows.len()).unwrap_or(u16::MAX);
        SinkResult {
            frames,
            bytes,
            elapsed_s: first.zip(last).map_or(0.0, |(a, b)| (b - a).as_secs_f64()),
            seq: totals.into(),
            ring_drops: ks.drops,
            other_frames: other,
            latency: lat.summary(),
            per_flow: (0..nflows).map(|f| flows.get(f).map_or(0, |t| t.received)).collect(),
        }
    }
}
