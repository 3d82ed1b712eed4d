//! connrate: a tiny TCP connection-rate tool for the services benchmark (`bench/services.sh`).
//!
//! ```text
//! connrate server --port 8080 [--bind IP] [--threads 2] [--id NAME]
//! connrate client --addr 10.216.0.10:80 [--threads 2] [--seconds 5] [--warmup-ms 500]
//! ```
//!
//! The server accepts on several threads; for each connection it writes its id and a newline,
//! then closes (it closes first). The client threads each loop: connect, read the reply up to
//! EOF, close with `SO_LINGER` 0 (an RST, so neither side keeps a TIME_WAIT socket and the
//! client never runs out of ephemeral ports), repeat. After the run the client prints one JSON
//! line: connections per second, errors, p50/p90/p99/max connect+reply latency in µs, and how
//! many replies came from each server id (which shows that a VIP really spread the connections
//! over its backends).
//!
//! Build: `cargo build --release -p tapway-switch --example connrate`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn};

#[derive(Parser)]
#[command(about = "TCP connection-rate server and client (tapway services benchmark)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept connections; write the id and a newline to each, then close.
    Server {
        /// TCP port to listen on.
        #[arg(long)]
        port: u16,
        /// IPv4 address to bind.
        #[arg(long, default_value = "0.0.0.0")]
        bind: Ipv4Addr,
        /// Accepting threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// What to answer (default: the bound address and port).
        #[arg(long)]
        id: Option<String>,
    },
    /// Open, read and close connections as fast as possible; print one JSON line.
    Client {
        /// The server (or VIP) address.
        #[arg(long)]
        addr: SocketAddr,
        /// Connecting threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Seconds measured (after the warm-up).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Milliseconds of warm-up left out of the figures.
        #[arg(long, default_value_t = 500)]
        warmup_ms: u64,
        /// Connect and read timeout per connection, milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Server { port, bind, threads, id } => server(bind, port, threads.max(1), id),
        Cmd::Client { addr, threads, seconds, warmup_ms, timeout_ms } => {
            client(addr, threads.max(1), seconds, warmup_ms, timeout_ms)
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A listening socket with SO_REUSEADDR and a deep backlog (std's is 128).
fn listen(bind: Ipv4Addr, port: u16) -> Result<TcpListener, String> {
    let fd: OwnedFd = socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("socket: {e}"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    let sa = SockaddrIn::from(std::net::SocketAddrV4::new(bind, port));
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &sa)
        .map_err(|e| format!("bind {bind}:{port}: {e}"))?;
    socket::listen(&fd, Backlog::new(4096).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| format!("listen: {e}"))?;
    Ok(TcpListener::from(fd))
}

fn server(bind: Ipv4Addr, port: u16, threads: usize, id: Option<String>) -> Result<(), String> {
    let listener = listen(bind, port)?;
    let reply: Arc<[u8]> =
        format!("{}\n", id.unwrap_or_else(|| format!("{bind}:{port}"))).into_bytes().into();
    let accepted = Arc::new(AtomicU64::new(0));
    eprintln!("connrate server on {bind}:{port}, {threads} threads");
    let mut handles = Vec::new();
    for _ in 0..threads {
        let l = listener.try_clone().map_err(|e| format!("dup listener: {e}"))?;
        let reply = reply.clone();
        let accepted = accepted.clone();
        handles.push(std::thread::spawn(move || loop {
            match l.accept() {
                Ok((mut s, _)) => {
                    accepted.fetch_add(1, Relaxed);
                    let _ = s.set_nodelay(true);
                    // The client may already be gone (RST): nothing to do about it.
                    let _ = s.write_all(&reply);
                    drop(s); // close first: FIN after the reply
                }
                Err(e) => {
                    // EMFILE, ECONNABORTED...: keep serving.
                    eprintln!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// What one client thread measured.
#[derive(Default)]
struct ThreadResult {
    /// Latency of each connection completed inside the measured window, µs.
    lat_us: Vec<u32>,
    /// Failed connections inside the window.
    errors: u64,
    /// Replies per server id inside the window.
    replies: BTreeMap<String, u64>,
    /// The first error seen (any time).
    first_error: Option<String>,
}

/// One connection: connect, read to EOF, close with an RST. Returns the reply.
fn one_conn(addr: &SocketAddr, timeout: Duration, buf: &mut [u8]) -> Result<usize, String> {
    let mut s = TcpStream::connect_timeout(addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let mut n = 0;
    loop {
        if n == buf.len() {
            return Err("reply too long".into());
        }
        match s.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    // SO_LINGER 0: close sends an RST and frees the 4-tuple at once (no TIME_WAIT).
    let lin = libc::linger { l_onoff: 1, l_linger: 0 };
    socket::setsockopt(&s, sockopt::Linger, &lin).map_err(|e| format!("SO_LINGER: {e}"))?;
    if n == 0 || buf[n - 1] != b'\n' {
        return Err(format!("bad reply ({n} bytes)"));
    }
    Ok(n - 1)
}

fn client(
    addr: SocketAddr,
    threads: usize,
    seconds: f64,
    warmup_ms: u64,
    timeout_ms: u64,
) -> Result<(), String> {
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err("--seconds must be positive".into());
    }
    let timeout = Duration::from_millis(timeout_ms.max(1));
    let start = Instant::now() + Duration::from_millis(20);
    let from = start + Duration::from_millis(warmup_ms);
    let until = from + Duration::from_secs_f64(seconds);
    let mut handles = Vec::new();
    for _ in 0..threads {
        handles.push(std::thread::spawn(move || {
            let mut r = ThreadResult { lat_us: Vec::with_capacity(1 << 16), ..Default::default() };
            let mut buf = [0u8; 256];
            while Instant::now() < start {
                std::hint::spin_loop();
            }
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let res = one_conn(&addr, timeout, &mut buf);
                let t1 = Instant::now();
                let counted = t0 >= from && t1 <= until;
                match res {
                    Ok(n) => {
                        if counted {
                            r.lat_us.push(u32::try_from((t1 - t0).as_micros()).unwrap_or(u32::MAX));
                            let id = String::from_utf8_lossy(&buf[..n]);
                            if let Some(c) = r.replies.get_mut(id.as_ref()) {
                                *c += 1;
                            } else {
                                r.replies.insert(id.into_owned(), 1);
                            }
                        }
                    }
                    Err(e) => {
                        if counted {
                            r.errors += 1;
                        }
                        if r.first_error.is_none() {
                            r.first_error = Some(e);
                        }
                        // Do not spin on an instant refusal.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            r
        }));
    }
    let mut lat: Vec<u32> = Vec::new();
    let mut errors = 0u64;
    let mut replies: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_error = None;
    for h in handles {
        let r = h.join().map_err(|_| "a client thread panicked".to_string())?;
        lat.extend_from_slice(&r.lat_us);
        errors += r.errors;
        for (k, v) in r.replies {
            *replies.entry(k).or_default() += v;
        }
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| -> u32 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((p / 100.0) * (lat.len() as f64 - 1.0)).round() as usize;
        lat[i.min(lat.len() - 1)]
    };
    let conns = lat.len() as u64;
    let out = serde_json::json!({
        "addr": addr.to_string(),
        "threads": threads,
        "seconds": seconds,
        "conns": conns,
        "conn_per_s": (conns as f64 / seconds * 10.0).round() / 10.0,
        "errors": errors,
        "p50_us": pct(50.0),
        "p90_us": pct(90.0),
        "p99_us": pct(99.0),
        "max_us": lat.last().copied().unwrap_or(0),
        "replies": replies,
        "first_error": first_error,
    });
    println!("{out}");
    if conns == 0 {
        return Err(format!("no connection completed to {addr}"));
    }
    Ok(())
}
