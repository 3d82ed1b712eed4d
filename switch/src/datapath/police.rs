//! Per-port rate limits (the CNI `bandwidth` capability): a token-bucket policer on each
//! direction of a pod port. Frames over the rate are dropped (`rate_limited`), as OVS's
//! ingress policing does; TCP senders back off from the drops. Policing rather than shaping
//! keeps the datapath free of queues and timers.
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

/// One token bucket: `rate` bytes per second, at most `burst` bytes saved up.
#[derive(Debug)]
pub struct Policer {
    rate: u64,
    burst: u64,
    /// Tokens, in bytes × 10⁹ (byte-nanoseconds per second), so refills need no division.
    tokens: AtomicU64,
    last_ns: AtomicU64,
}

impl Policer {
    /// A full bucket for `rate_bits` bits/s and `burst_bits` bits; `None` for rate 0 (no limit).
    pub fn new(rate_bits: u64, burst_bits: u64) -> Option<Policer> {
        if rate_bits == 0 {
            return None;
        }
        let rate = (rate_bits / 8).max(1);
        let burst = (burst_bits / 8).max(MIN_BURST_BYTES);
        Some(Policer {
            rate,
            burst,
            tokens: AtomicU64::new(burst.saturating_mul(1_000_000_000)),
            last_ns: AtomicU64::new(0),
        })
    }

    /// Whether a frame of `bytes` may pass at time `now_ns` (monotonic); takes its tokens if so.
    #[inline]
    pub fn allow(&self, bytes: usize, now_ns: u64) -> bool {
        let cap = self.burst.saturating_mul(1_000_000_000);
        let elapsed = now_ns.saturating_sub(self.last_ns.load(Relaxed)).min(MAX_ELAPSED_NS);
        let tokens = self.tokens.load(Relaxed).saturating_add(elapsed.saturating_mul(self.rate)).min(cap);
        self.last_ns.store(now_ns, Relaxed);
        let need = (bytes as u64).saturating_mul(1_000_000_000);
        if tokens >= need {
            self.tokens.store(tokens - need, Relaxed);
            true
        } else {
            self.tokens.store(tokens, Relaxed);
            false
        }
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
        }
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
    fn zero_means_no_limit() {
        assert!(Policer::new(0, 1000).is_none());
        let none = PortPolice::new(Some(Bandwidth::default()));
        assert!(none.config.is_none() && none.to_pod.is_none() && none.from_pod.is_none());
        let one = PortPolice::new(Some(Bandwidth { egress_rate: 1_000_000, ..Default::default() }));
        assert!(one.to_pod.is_none() && one.from_pod.is_some());
    }
}
