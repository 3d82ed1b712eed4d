//! Request/response latency: UDP ping-pong with 64-byte frames (18 bytes of payload), one
//! request outstanding, a new request every `interval` at most (1/rate: `run --rtt-rates`).
//! When a round trip takes longer than the interval, the next request goes at once: the
//! achieved rate is reported beside the offered one. The echo server and the client each run
//! on a thread inside their pod's namespace.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use crate::latency::{Latency, LatencySummary};
use crate::netns::{self, NetnsError};

/// Payload that makes a 64-byte frame: 64 - 4 (FCS) - 14 - 20 - 8.
pub const PAYLOAD: usize = 18;
/// UDP port of the echo server.
pub const PORT: u16 = 9010;
/// The interval of the existing callers that do not ask for a rate: 5k requests/s at most.
pub const DEFAULT_INTERVAL: Duration = Duration::from_micros(200);

/// The interval between requests at `rate` requests/s (`None` when not a positive rate).
pub fn interval(rate: f64) -> Option<Duration> {
    (rate.is_finite() && rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate))
}

/// `1000` as `1k`, `100000` as `100k`, `2500` as `2500`: the rate's label in reports.
pub fn rate_label(rate: f64) -> String {
    if rate >= 1e6 && (rate / 1e6).fract() == 0.0 {
        format!("{}M", rate / 1e6)
    } else if rate >= 1e3 && (rate / 1e3).fract() == 0.0 {
        format!("{}k", rate / 1e3)
    } else {
        format!("{rate}")
    }
}

/// Why a ping-pong run failed.
#[derive(Debug, Error)]
pub enum RttError {
    /// Namespace.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Socket.
    #[error("udp ping-pong: {0}")]
    Io(#[from] std::io::Error),
    /// The server thread died.
    #[error("the echo server thread ended early")]
    ServerGone,
}

/// Round-trip times and lost requests.
#[derive(Debug, Clone, Serialize)]
pub struct RttResult {
    /// Requests answered.
    pub answered: u64,
    /// Requests without an answer within 1 s.
    pub lost: u64,
    /// Round-trip time.
    pub rtt: Option<LatencySummary>,
    /// Seconds the measured round trips took (for the achieved rate).
    pub elapsed_s: f64,
}

impl RttResult {
    /// Round trips per second achieved (answered or lost).
    pub fn rate(&self) -> f64 {
        (self.answered + self.lost) as f64 / self.elapsed_s.max(1e-9)
    }
}

/// Runs ping-pong from `client_ns` to `server_ip` in `server_ns` for `duration` or
/// `max_samples` round trips.
pub fn ping_pong(
    client_ns: &str,
    server_ns: &str,
    server_ip: Ipv4Addr,
    duration: Duration,
    max_samples: u64,
    stop: &Arc<AtomicBool>,
) -> Result<RttResult, RttError> {
    ping_pong_via(client_ns, server_ns, server_ip, server_ip, duration, DEFAULT_INTERVAL, max_samples, stop)
}

/// Like [`ping_pong`], but the client sends to `dst` (a Service VIP translated to
/// `server_ip`:[`PORT`] on the way; the answers must come back from `dst`:[`PORT`], which is
/// what reverse NAT does: the client's socket is connected), a request every `interval` at
/// most.
#[allow(clippy::too_many_arguments)]
pub fn ping_pong_via(
    client_ns: &str,
    server_ns: &str,
    server_ip: Ipv4Addr,
    dst: Ipv4Addr,
    duration: Duration,
    interval: Duration,
    max_samples: u64,
    stop: &Arc<AtomicBool>,
) -> Result<RttResult, RttError> {
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), std::io::Error>>();
    let (sns, d2) = (server_ns.to_string(), done.clone());
    let server = std::thread::spawn(move || -> Result<(), RttError> {
        netns::enter(&sns)?;
        let s = match UdpSocket::bind((server_ip, PORT))
            .and_then(|s| s.set_read_timeout(Some(Duration::from_millis(100))).map(|_| s))
        {
            Ok(s) => s,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return Ok(());
            }
        };
        let _ = ready_tx.send(Ok(()));
        let mut buf = [0u8; 64];
        while !d2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
        Ok(())
    });
    let ready = ready_rx.recv().map_err(|_| RttError::ServerGone);
    let result = match ready {
        Ok(Ok(())) => {
            let st = stop.clone();
            netns::in_netns(Some(client_ns), move || {
                client(SocketAddr::from((dst, PORT)), duration, interval, max_samples, &st)
            })
        }
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(e),
    };
    done.store(true, Ordering::Relaxed);
    let _ = server.join();
    result
}

fn client(
    to: SocketAddr,
    duration: Duration,
    interval: Duration,
    max_samples: u64,
    stop: &AtomicBool,
) -> Result<RttResult, RttError> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(to)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut lat = Latency::default();
    let (mut answered, mut lost) = (0u64, 0u64);
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let mut seq = 0u64;
    // A few unmeasured round trips first: ARP and the switch's learning are not latency.
    for _ in 0..10 {
        let _ = s.send(&[0u8; PAYLOAD]);
        let _ = s.recv(&mut buf);
    }
    while start.elapsed() < duration && answered + lost < max_samples && !stop.load(Ordering::Relaxed) {
        seq += 1;
        let mut req = [0u8; PAYLOAD];
        req[..8].copy_from_slice(&seq.to_be_bytes());
        let t = Instant::now();
        s.send(&req)?;
        loop {
            match s.recv(&mut buf) {
                Ok(n) if n >= 8 && buf[..8] == seq.to_be_bytes() => {
                    lat.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    answered += 1;
                    break;
                }
                Ok(_) => continue, // a late answer to an earlier request
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
        pace(t + interval);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    Ok(RttResult { answered, lost, rtt: lat.summary(), elapsed_s })
}

/// Waits until `next`: sleeps while more than [`SPIN_BELOW`] is left (a sleep overshoots by
/// tens of µs), then spins, so 100k requests/s (10 µs apart) are paced too.
fn pace(next: Instant) {
    const SPIN_BELOW: Duration = Duration::from_micros(100);
    loop {
        let now = Instant::now();
        if now >= next {
            return;
        }
        let left = next - now;
        if left > SPIN_BELOW {
            std::thread::sleep(left - SPIN_BELOW);
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_intervals_and_labels() {
        assert_eq!(interval(1000.0), Some(Duration::from_millis(1)));
        assert_eq!(interval(100_000.0), Some(Duration::from_micros(10)));
        assert_eq!(interval(0.0), None);
        assert_eq!(interval(f64::NAN), None);
        assert_eq!(rate_label(1000.0), "1k");
        assert_eq!(rate_label(10_000.0), "10k");
        assert_eq!(rate_label(100_000.0), "100k");
        assert_eq!(rate_label(2500.0), "2500");
        assert_eq!(rate_label(2_000_000.0), "2M");
    }

    #[test]
    fn the_achieved_rate_counts_every_round_trip() {
        let r = RttResult { answered: 900, lost: 100, rtt: None, elapsed_s: 0.5 };
        assert_eq!(r.rate(), 2000.0);
    }

    #[test]
    fn pacing_waits_until_the_deadline() {
        let t = Instant::now() + Duration::from_micros(300);
        pace(t);
        assert!(Instant::now() >= t);
    }
}
