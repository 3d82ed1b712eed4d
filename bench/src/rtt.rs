//! Request/response latency at low load: UDP ping-pong with 64-byte frames (18 bytes of
//! payload), one request outstanding, a request every 200 µs at most. The echo server and the
//! client each run on a thread inside their pod's namespace.

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
    ping_pong_via(client_ns, server_ns, server_ip, server_ip, duration, max_samples, stop)
}

/// Like [`ping_pong`], but the client sends to `dst` (a Service VIP translated to
/// `server_ip`:[`PORT`] on the way; the answers must come back from `dst`:[`PORT`], which is
/// what reverse NAT does: the client's socket is connected).
pub fn ping_pong_via(
    client_ns: &str,
    server_ns: &str,
    server_ip: Ipv4Addr,
    dst: Ipv4Addr,
    duration: Duration,
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
                client(SocketAddr::from((dst, PORT)), duration, max_samples, &st)
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
        let next = t + Duration::from_micros(200);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    Ok(RttResult { answered, lost, rtt: lat.summary() })
}
