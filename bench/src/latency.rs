//! Latency histograms (hdrhistogram, ns, 3 significant digits) and their summary.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency tracked: 60 s. Larger values are clamped (a frame that old is lost anyway).
const MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    h: Option<Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        // Bounds are constants that hdrhistogram accepts; None only if that ever changed, and
        // then latency is simply not reported.
        Latency { h: Histogram::new_with_bounds(1, MAX_NS, 3).ok() }
    }
}

impl Latency {
    /// Records one sample (ns); 0 (a clock reading equal to the stamp) counts as 1 ns.
    pub fn record(&mut self, ns: u64) {
        if let Some(h) = &mut self.h {
            let _ = h.record(ns.clamp(1, MAX_NS));
        }
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latency) {
        if let (Some(a), Some(b)) = (&mut self.h, &other.h) {
            let _ = a.add(b);
        }
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.h.as_ref().map_or(0, Histogram::len)
    }

    /// True without samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The percentiles readers expect, in µs; `None` without samples.
    pub fn summary(&self) -> Option<LatencySummary> {
        let h = self.h.as_ref().filter(|h| !h.is_empty())?;
        let us = |v: u64| v as f64 / 1000.0;
        Some(LatencySummary {
            samples: h.len(),
            min_us: us(h.min()),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        })
    }
}

/// Percentiles of a latency histogram, µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub samples: u64,
    /// Smallest.
    pub min_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::default();
        assert!(l.summary().is_none());
        for v in 1..=1000u64 {
            l.record(v * 1000); // 1..1000 µs
        }
        let s = l.summary().unwrap();
        assert_eq!(s.samples, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
        let mut m = Latency::default();
        m.record(0);
        m.merge(&l);
        assert_eq!(m.len(), 1001);
        assert!(m.summary().unwrap().min_us > 0.0);
    }
}
