//! Per-port rate limits (the CNI `bandwidth` capability): a token-bucket policer on each
//! direction of a pod port. Frames over the rate are dropped (`rate_limited`), as OVS's
//! ingress policing does; TCP senders back off from the drops. Policing rather than shaping
//! keeps the datapath free of queues and timers.
//!
//! Storm control uses the same buckets: what a pod port floods (broadcast, multicast, unknown
//! unicast) is bounded in packets and in bytes per second, each with a burst, like a hardware
//! switch's storm control or an OVS meter on flooded traffic. Over either budget a flooded
//! frame is dropped (`storm_control`) before it is copied to any port.
//!
//! Each bucket has one writer, the worker that owns the port (it reads the port and is the
//! only one that transmits on it), so plain relaxed atomics suffice; the control thread only
//! reads the configuration.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tapway_api::Bandwidth;

/// The smallest burst, in bytes: one 64 KiB GSO super-frame must always fit, or it could never
/// pass.
pub const MIN_BURST_BYTES: u64 = 65_536 + 64;

/// Longest refill interval taken into account, ns (a bucket idle longer is simply full).
const MAX_ELAPSED_NS: u64 = 10_000_000_000;

/// One token bucket: `rate` units (bytes, or packets) per second, at most `burst` units saved
/// up.
#[derive(Debug)]
pub struct Policer {
    rate: u64,
    burst: u64,
    /// Tokens, in units × 10⁹ (unit-nanoseconds per second), so refills need no division.
    tokens: AtomicU64,
    last_ns: AtomicU64,
}

impl Policer {
    /// A full bucket for `rate_bits` bits/s and `burst_bits` bits; `None` for rate 0 (no limit).
    pub fn new(rate_bits: u64, burst_bits: u64) -> Option<Policer> {
        Policer::units((rate_bits / 8).max(u64::from(rate_bits > 0)), burst_bits / 8, MIN_BURST_BYTES)
    }

    /// A full bucket of `rate` units/s and `burst` units (at least `min_burst`); `None` for
    /// rate 0 (no limit).
    pub fn units(rate: u64, burst: u64, min_burst: u64) -> Option<Policer> {
        if rate == 0 {
            return None;
        }
        let burst = burst.max(min_burst).max(1);
        Some(Policer {
            rate,
            burst,
            tokens: AtomicU64::new(burst.saturating_mul(1_000_000_000)),
            last_ns: AtomicU64::new(0),
        })
    }

    /// Whether a frame of `units` may pass at time `now_ns` (monotonic); takes its tokens if so.
    #[inline]
    pub fn allow(&self, units: usize, now_ns: u64) -> bool {
        let tokens = self.refill(now_ns);
        match tokens.checked_sub(need(units)) {
            Some(left) => {
                self.tokens.store(left, Relaxed);
                true
            }
            None => false,
        }
    }

    /// Adds the tokens earned since the last call, up to the burst; returns the tokens now held.
    #[inline]
    fn refill(&self, now_ns: u64) -> u64 {
        let cap = self.burst.saturating_mul(1_000_000_000);
        let elapsed = now_ns.saturating_sub(self.last_ns.load(Relaxed)).min(MAX_ELAPSED_NS);
        let tokens = self.tokens.load(Relaxed).saturating_add(elapsed.saturating_mul(self.rate)).min(cap);
        self.last_ns.store(now_ns, Relaxed);
        self.tokens.store(tokens, Relaxed);
        tokens
    }
}

/// Tokens that `units` cost.
#[inline]
fn need(units: usize) -> u64 {
    (units as u64).saturating_mul(1_000_000_000)
}

/// Storm-control budgets of a port (`--storm-*`): rates per second and bursts; a rate of 0
/// turns that budget off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormConfig {
    /// Flooded frames per second.
    pub pps: u64,
    /// Flooded frames saved up.
    pub pps_burst: u64,
    /// Flooded bytes (Ethernet, a super-frame counted whole) per second.
    pub bytes: u64,
    /// Flooded bytes saved up (at least one 64 KiB super-frame).
    pub bytes_burst: u64,
}

impl Default for StormConfig {
    /// 1000 frames/s (burst 2000) and 100 Mbit/s (burst 1 MiB): far above what ARP, NDP, DHCP
    /// and mDNS need, far below what a pod can flood.
    fn default() -> Self {
        StormConfig { pps: 1000, pps_burst: 2000, bytes: 12_500_000, bytes_burst: 1 << 20 }
    }
}

/// Storm control of one port: what it floods passes both budgets or is dropped.
#[derive(Debug)]
pub struct Storm {
    packets: Option<Policer>,
    bytes: Option<Policer>,
}

impl Storm {
    /// Full buckets for `cfg`; `None` when both budgets are off.
    pub fn new(cfg: &StormConfig) -> Option<Storm> {
        let storm = Storm {
            packets: Policer::units(cfg.pps, cfg.pps_burst, 1),
            bytes: Policer::units(cfg.bytes, cfg.bytes_burst, MIN_BURST_BYTES),
        };
        (storm.packets.is_some() || storm.bytes.is_some()).then_some(storm)
    }

    /// Whether a flooded frame of `bytes` may pass at `now_ns`; takes its tokens from both
    /// buckets only if it fits both, so dropped frames cost nothing.
    #[inline]
    pub fn allow(&self, bytes: usize, now_ns: u64) -> bool {
        let p = self.packets.as_ref().map(|b| (b, b.refill(now_ns), need(1)));
        let b = self.bytes.as_ref().map(|b| (b, b.refill(now_ns), need(bytes)));
        if p.iter().chain(b.iter()).any(|(_, have, want)| have < want) {
            return false;
        }
        for (bucket, have, want) in p.iter().chain(b.iter()) {
            bucket.tokens.store(have - want, Relaxed);
        }
        true
    }
}

/// The policers of one port, and the limits they came from.
#[derive(Debug, Default)]
pub struct PortPolice {
    /// The limits as configured (for `ports` and the state file).
    pub config: Option<Bandwidth>,
    /// Traffic the switch delivers to the pod (CNI *ingress*).
    pub to_pod: Option<Policer>,
    /// Traffic the pod sends (CNI *egress*).
    pub from_pod: Option<Policer>,
    /// What the port floods ([`Storm`]); `None`: not bounded.
    pub storm: Option<Storm>,
}

impl PortPolice {
    /// Policers for `bw` (none for `None` or zero rates).
    pub fn new(bw: Option<Bandwidth>) -> PortPolice {
        let Some(b) = bw.filter(|b| b.ingress_rate > 0 || b.egress_rate > 0) else {
            return PortPolice::default();
        };
        PortPolice {
            config: Some(b),
            to_pod: Policer::new(b.ingress_rate, b.ingress_burst),
            from_pod: Policer::new(b.egress_rate, b.egress_burst),
            storm: None,
        }
    }

    /// The same, with storm control of what the port floods (pod ports).
    pub fn with_storm(self, cfg: &StormConfig) -> PortPolice {
        PortPolice { storm: Storm::new(cfg), ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn rate_and_burst() {
        // 8 Mbit/s = 1 MB/s, burst 100 KB (above the minimum).
        let p = Policer::new(8_000_000, 800_000).unwrap();
        // The full bucket lets 100 KB through at once, then nothing.
        let mut sent = 0;
        while p.allow(1000, 0) {
            sent += 1000;
        }
        assert_eq!(sent, 100_000);
        // 10 ms later: 10 KB more.
        let mut more = 0;
        while p.allow(1000, 10 * MS) {
            more += 1000;
        }
        assert_eq!(more, 10_000);
        // Over one second of steady offers, about the rate passes.
        let mut passed = 0u64;
        for t in 0..1000u64 {
            for _ in 0..5 {
                if p.allow(1000, 10 * MS + t * MS) {
                    passed += 1000;
                }
            }
        }
        assert!((990_000..=1_010_000).contains(&passed), "{passed}");
    }

    #[test]
    fn a_super_frame_always_fits_and_idle_buckets_stay_bounded() {
        let p = Policer::new(1_000_000, 8).unwrap(); // a tiny burst is raised to the minimum
        assert!(p.allow(65_536, 0));
        assert!(!p.allow(65_536, 0));
        // After an hour idle the bucket holds one burst, not an hour of tokens.
        assert!(p.allow(65_536, 3_600_000 * MS));
        assert!(!p.allow(65_536, 3_600_000 * MS));
    }

    #[test]
    fn storm_budget_in_packets_refills_with_the_clock() {
        let s = Storm::new(&StormConfig { pps: 1000, pps_burst: 2000, bytes: 0, bytes_burst: 0 }).unwrap();
        // The burst passes at once, then nothing.
        let passed = (0..5000).filter(|_| s.allow(60, 0)).count();
        assert_eq!(passed, 2000);
        assert!(!s.allow(60, 0));
        // 100 ms later: 100 more frames.
        assert_eq!((0..500).filter(|_| s.allow(60, 100 * MS)).count(), 100);
        // A steady offer of 5000 frames/s for a second: the rate passes.
        let passed = (0..5000u64).filter(|i| s.allow(60, 100 * MS + i * 200_000)).count();
        assert!((995..=1005).contains(&passed), "{passed}");
    }

    #[test]
    fn storm_budget_in_bytes_bounds_super_frames() {
        let cfg = StormConfig { pps: 1000, pps_burst: 2000, bytes: 1_000_000, bytes_burst: 200_000 };
        let s = Storm::new(&cfg).unwrap();
        // Three 64 KiB super-frames fit a 200 KB burst, the fourth does not, although the
        // packet budget has room for 1997 more.
        let passed = (0..10).filter(|_| s.allow(65_536, 0)).count();
        assert_eq!(passed, 3);
        // A dropped frame costs no packet tokens: small frames still pass.
        assert!(s.allow(60, 0));
        // A tiny byte burst is raised so that one super-frame always fits.
        let tiny = Storm::new(&StormConfig { bytes_burst: 1, ..cfg }).unwrap();
        assert!(tiny.allow(65_536, 0));
        assert!(!tiny.allow(65_536, 0));
    }

    #[test]
    fn storm_control_off_and_on() {
        let off = StormConfig { pps: 0, pps_burst: 10, bytes: 0, bytes_burst: 10 };
        assert!(Storm::new(&off).is_none());
        assert!(PortPolice::new(None).with_storm(&off).storm.is_none());
        let only_bytes = Storm::new(&StormConfig { bytes: 1000, ..off }).unwrap();
        assert!(only_bytes.packets.is_none());
        let p = PortPolice::new(Some(Bandwidth { egress_rate: 1_000_000, ..Default::default() }))
            .with_storm(&StormConfig::default());
        assert!(p.storm.is_some() && p.from_pod.is_some() && p.config.is_some());
    }

    #[test]
    fn zero_means_no_limit() {
        assert!(Policer::new(0, 1000).is_none());
        let none = PortPolice::new(Some(Bandwidth::default()));
        assert!(none.config.is_none() && none.to_pod.is_none() && none.from_pod.is_none());
        let one = PortPolice::new(Some(Bandwidth { egress_rate: 1_000_000, ..Default::default() }));
        assert!(one.to_pod.is_none() && one.from_pod.is_some());
    }
}
