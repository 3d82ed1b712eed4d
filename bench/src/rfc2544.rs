//! RFC 2544 §26.1-style throughput search: the highest offered rate whose trial loses no frame
//! (NDR, "no drop rate") and the highest that loses at most a small share (PDR, "partial drop
//! rate", 0.5 % by default), found by binary search between 0 and the generator's flat-out rate.
//!
//! The search is pure: it calls a trial function, so it is tested on a simulated lossy channel
//! and driven for real by [`crate::trial`].

use serde::Serialize;

use crate::latency::LatencySummary;

/// The frame sizes RFC 2544 readers expect for Ethernet.
pub const SIZES: [usize; 7] = [64, 128, 256, 512, 1024, 1280, 1518];

/// What one trial at a given rate gave.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outcome {
    /// Offered rate, frames/s.
    pub offered_pps: f64,
    /// Received rate, frames/s.
    pub rx_pps: f64,
    /// Frames lost, % of sent.
    pub loss_pct: f64,
    /// One-way latency during the trial.
    pub latency: Option<LatencySummary>,
}

/// Search bounds and stopping rule.
#[derive(Debug, Clone, Copy)]
pub struct SearchConfig {
    /// Highest rate to try (the generator's flat-out rate), frames/s.
    pub max_pps: f64,
    /// Stop when the interval is narrower than this share of `max_pps`.
    pub resolution: f64,
    /// Stop after this many trials anyway.
    pub max_trials: usize,
    /// Highest loss (%) that still passes: 0 for NDR.
    pub loss_threshold_pct: f64,
}

/// The search's answer.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// Highest passing rate found (0 when even the lowest rate tried failed).
    pub rate_pps: f64,
    /// The trial at that rate.
    pub at_rate: Option<Outcome>,
    /// True when `max_pps` itself passed: the path is faster than the generator.
    pub generator_limited: bool,
    /// Every trial, in order.
    pub trials: Vec<Outcome>,
}

/// Binary search for the highest rate whose loss is within the threshold. `trial(rate)` runs
/// one trial; its error aborts the search.
pub fn search<E>(
    cfg: &SearchConfig,
    trial: impl FnMut(f64) -> Result<Outcome, E>,
) -> Result<SearchResult, E> {
    search_above(cfg, None, trial)
}

/// [`search`], knowing that `known` (a trial from an earlier search) already passed: the search
/// starts above its rate, so that a noisy machine cannot report a lower NDR than a rate it
/// already saw pass without loss.
pub fn search_above<E>(
    cfg: &SearchConfig,
    known: Option<Outcome>,
    mut trial: impl FnMut(f64) -> Result<Outcome, E>,
) -> Result<SearchResult, E> {
    let pass = |o: &Outcome| o.loss_pct <= cfg.loss_threshold_pct;
    let known = known.filter(|o| pass(o) && o.offered_pps < cfg.max_pps);
    let mut res = SearchResult {
        rate_pps: known.map_or(0.0, |o| o.offered_pps),
        at_rate: known,
        generator_limited: false,
        trials: Vec::new(),
    };
    if cfg.max_pps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Ok(res);
    }
    let top = trial(cfg.max_pps)?;
    res.trials.push(top);
    if pass(&top) {
        res.rate_pps = cfg.max_pps;
        res.at_rate = Some(top);
        res.generator_limited = true;
        return Ok(res);
    }
    let (mut lo, mut hi) = (res.rate_pps, cfg.max_pps);
    while hi - lo > cfg.resolution * cfg.max_pps && res.trials.len() < cfg.max_trials {
        let mid = (lo + hi) / 2.0;
        let o = trial(mid)?;
        res.trials.push(o);
        if pass(&o) {
            lo = mid;
            res.rate_pps = mid;
            res.at_rate = Some(o);
        } else {
            hi = mid;
        }
    }
    Ok(res)
}

/// NDR and PDR of one frame size.
#[derive(Debug, Clone, Serialize)]
pub struct NdrPdr {
    /// No-drop rate.
    pub ndr: SearchResult,
    /// Partial-drop rate.
    pub pdr: SearchResult,
}

/// Searches PDR first, then NDR below it (a rate that fails PDR fails NDR too), sharing the
/// flat-out bound.
pub fn ndr_pdr<E>(
    max_pps: f64,
    resolution: f64,
    max_trials: usize,
    pdr_loss_pct: f64,
    mut trial: impl FnMut(f64) -> Result<Outcome, E>,
) -> Result<NdrPdr, E> {
    let pdr = search(
        &SearchConfig { max_pps, resolution, max_trials, loss_threshold_pct: pdr_loss_pct },
        &mut trial,
    )?;
    // The NDR lies at or below the PDR; if the PDR search found nothing, search the whole range.
    let ndr_max = if pdr.rate_pps > 0.0 {
        // Just above the PDR found, within the PDR search's resolution.
        (pdr.rate_pps + resolution * max_pps).min(max_pps)
    } else {
        max_pps
    };
    let ndr = if pdr.generator_limited && pdr.at_rate.is_some_and(|o| o.loss_pct == 0.0) {
        pdr.clone()
    } else {
        // Keep the same absolute resolution on the narrower range.
        let res = resolution * max_pps / ndr_max;
        let known = pdr
            .trials
            .iter()
            .filter(|o| o.loss_pct == 0.0)
            .max_by(|a, b| a.offered_pps.total_cmp(&b.offered_pps))
            .copied();
        search_above(
            &SearchConfig { max_pps: ndr_max, resolution: res, max_trials, loss_threshold_pct: 0.0 },
            known,
            &mut trial,
        )?
    };
    let mut ndr = ndr;
    let mut pdr = pdr;
    // "Generator-limited" means the generator's own flat-out rate passed, not the narrower
    // NDR bound.
    if ndr.generator_limited && ndr_max < max_pps {
        ndr.generator_limited = false;
    }
    // A lossless trial passes the PDR criterion too: on a noisy machine the NDR search can find
    // a lossless rate above the PDR that an unlucky trial of the PDR search failed.
    if ndr.rate_pps > pdr.rate_pps {
        pdr.rate_pps = ndr.rate_pps;
        pdr.at_rate = ndr.at_rate;
    }
    Ok(NdrPdr { ndr, pdr })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::convert::Infallible;

    /// A channel that forwards up to `cap` frames/s and drops the excess, plus a fixed loss of
    /// `floor` % above `knee` (to make PDR and NDR differ the way real paths do).
    fn channel(cap: f64, knee: f64, floor: f64) -> impl FnMut(f64) -> Result<Outcome, Infallible> {
        move |rate| {
            let mut loss = if rate > cap { 100.0 * (rate - cap) / rate } else { 0.0 };
            if rate > knee {
                loss += floor;
            }
            Ok(Outcome {
                offered_pps: rate,
                rx_pps: rate * (1.0 - loss / 100.0),
                loss_pct: loss,
                latency: None,
            })
        }
    }

    #[test]
    fn finds_ndr_and_pdr_within_resolution() {
        let (max, cap) = (1_000_000.0, 600_000.0);
        // Below 400 kpps: lossless; 400..600 kpps: 0.1 % loss; above 600 kpps: overload.
        let r = ndr_pdr(max, 0.005, 30, 0.5, channel(cap, 400_000.0, 0.1)).unwrap();
        assert!(!r.pdr.generator_limited);
        // PDR: loss <= 0.5 % up to cap / (1 - 0.004) ≈ 602.4 kpps (0.1 % floor + overload).
        let pdr_true = cap / (1.0 - 0.004);
        assert!(
            r.pdr.rate_pps <= pdr_true && r.pdr.rate_pps >= pdr_true - 0.005 * max,
            "pdr {}",
            r.pdr.rate_pps
        );
        assert!(
            r.ndr.rate_pps <= 400_000.0 && r.ndr.rate_pps >= 400_000.0 - 0.005 * max,
            "ndr {}",
            r.ndr.rate_pps
        );
        assert_eq!(r.ndr.at_rate.unwrap().loss_pct, 0.0);
        assert!(r.pdr.at_rate.unwrap().loss_pct <= 0.5);
        // Every passing trial the search kept is at or below what it reports.
        for t in &r.ndr.trials {
            if t.loss_pct == 0.0 {
                assert!(t.offered_pps <= r.ndr.rate_pps);
            }
        }
    }

    #[test]
    fn generator_limited_when_flat_out_passes() {
        let r = ndr_pdr(500_000.0, 0.01, 20, 0.5, channel(1e9, 1e9, 0.0)).unwrap();
        assert!(r.ndr.generator_limited && r.pdr.generator_limited);
        assert_eq!(r.ndr.rate_pps, 500_000.0);
        assert_eq!(r.ndr.trials.len(), 1);
    }

    #[test]
    fn trial_budget_is_respected() {
        let mut n = 0;
        let r = search(
            &SearchConfig { max_pps: 1e6, resolution: 1e-9, max_trials: 7, loss_threshold_pct: 0.0 },
            |rate| {
                n += 1;
                channel(123_456.0, 1e9, 0.0)(rate)
            },
        )
        .unwrap();
        assert_eq!(n, 7);
        assert_eq!(r.trials.len(), 7);
        assert!(r.rate_pps <= 123_456.0);
    }

    #[test]
    fn a_known_lossless_rate_is_never_undercut() {
        // A flaky channel: lossless below 500k, except that the 250k trial happens to drop a
        // frame (noise). Knowing 400k passed, the search must not fall below it.
        let flaky = |rate: f64| {
            let loss = if rate > 500_000.0 || (rate - 250_000.0).abs() < 1.0 { 1.0 } else { 0.0 };
            Ok::<_, Infallible>(Outcome { offered_pps: rate, rx_pps: rate, loss_pct: loss, latency: None })
        };
        let known = Outcome { offered_pps: 400_000.0, rx_pps: 400_000.0, loss_pct: 0.0, latency: None };
        let cfg = SearchConfig { max_pps: 1e6, resolution: 0.01, max_trials: 20, loss_threshold_pct: 0.0 };
        let r = search_above(&cfg, Some(known), flaky).unwrap();
        assert!(r.rate_pps >= 400_000.0 && r.rate_pps <= 500_000.0, "{}", r.rate_pps);
        assert!(r.trials.iter().all(|t| t.offered_pps >= 400_000.0), "nothing tried below the known rate");
        let plain = search(&cfg, flaky).unwrap();
        assert!(plain.rate_pps <= 500_000.0);
    }

    #[test]
    fn noisy_pdr_search_never_reports_pdr_below_ndr() {
        // Lossless up to 600k, but the first trial in 500k..600k loses 1 % (noise).
        let mut noisy_once = true;
        let r = ndr_pdr(1e6, 0.01, 30, 0.5, |rate| {
            let mut loss = if rate > 600_000.0 { 100.0 * (rate - 600_000.0) / rate } else { 0.0 };
            if (500_000.0..=600_000.0).contains(&rate) && noisy_once {
                noisy_once = false;
                loss = 1.0;
            }
            Ok::<_, Infallible>(Outcome { offered_pps: rate, rx_pps: rate, loss_pct: loss, latency: None })
        })
        .unwrap();
        assert!(r.pdr.rate_pps >= r.ndr.rate_pps, "pdr {} ndr {}", r.pdr.rate_pps, r.ndr.rate_pps);
        assert!(!r.ndr.generator_limited, "the NDR bound was below the generator's rate");
    }

    #[test]
    fn dead_channel_gives_zero() {
        let r = search(
            &SearchConfig { max_pps: 1e6, resolution: 0.01, max_trials: 50, loss_threshold_pct: 0.0 },
            |rate| {
                Ok::<_, Infallible>(Outcome {
                    offered_pps: rate,
                    rx_pps: 0.0,
                    loss_pct: 100.0,
                    latency: None,
                })
            },
        )
        .unwrap();
        assert_eq!(r.rate_pps, 0.0);
        assert!(r.at_rate.is_none());
        assert!(r.trials.len() <= 50);
    }
}
