//! CLOCK_MONOTONIC in nanoseconds: the clock of the probe timestamps. Generator and sink run on
//! the same host, so one-way latency is a difference of two readings of this clock.

/// Now, CLOCK_MONOTONIC, in ns.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Lossless: both are non-negative for CLOCK_MONOTONIC.
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// `n` per second over `secs` (0 when no time elapsed): the rate of a counter.
pub fn per_sec(n: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        n / secs
    } else {
        0.0
    }
}
