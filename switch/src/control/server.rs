//! The control socket: a Unix stream socket (mode 0600) speaking newline-delimited JSON.
//!
//! Each connection gets its own thread and one of [`MAX_CONNECTIONS`] slots, so a slow attach
//! does not hold up `tapwayctl stats`. Peers are checked with `SO_PEERCRED`: root, the daemon's
//! own uid and the configured uids only. Every line is parsed defensively: oversized, non-JSON,
//! wrong-version and unknown-op requests get an error answer and change nothing.
//!
//! No client can hold a slot for long without working:
//! - a request line must arrive whole within [`READ_DEADLINE`] of the moment the connection
//!   starts waiting for it (idle time included), and an answer must leave within
//!   [`WRITE_DEADLINE`]: each `read`/`write` gets the time left, not a fresh timeout, so a
//!   client trickling a byte at a time is cut off;
//! - when every slot is taken, a new connection takes the slot of the connection that has
//!   waited longest for its request line, if it has waited [`EVICT_AFTER`] (idle and trickling
//!   clients lose their slot to one that talks); only when every slot is handling a request is
//!   the new one answered `resource_exhausted`;
//! - a slot is an RAII guard ([`Slot`]) owned by the connection's thread: it comes back when the
//!   thread ends, however it ends (a panic included), and when the thread cannot be spawned.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, shutdown, sockopt::PeerCredentials, Shutdown};
use tapway_api::{ApiError, ErrorCode, Request, Response, MAX_REQUEST_BYTES, PROTOCOL_VERSION};

use super::{api_err, Control};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may take to send one whole request line, counted from when it starts
/// waiting for it (after connecting, or after its previous answer).
pub const READ_DEADLINE: Duration = Duration::from_secs(10);

/// How long writing one whole answer may take.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// A connection waiting this long for its request line gives its slot up to a new one when
/// all are taken.
pub const EVICT_AFTER: Duration = Duration::from_secs(1);

/// The deadlines one connection is served with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// [`READ_DEADLINE`].
    pub read: Duration,
    /// [`WRITE_DEADLINE`].
    pub write: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { read: READ_DEADLINE, write: WRITE_DEADLINE }
    }
}

/// One connection in the slot table.
struct Conn {
    /// Since when it waits for a request line; `None` while a request is handled.
    waiting_since: Option<Instant>,
    /// A second fd of its socket, shut down to evict it.
    closer: Option<UnixStream>,
}

#[derive(Default)]
struct SlotTable {
    next: u64,
    conns: HashMap<u64, Conn>,
}

/// The connection slots: at most `max` connections are served at once.
pub struct Slots {
    max: usize,
    evict_after: Duration,
    table: Mutex<SlotTable>,
    /// Connections cut off at a deadline.
    timed_out: AtomicU64,
    /// Waiting connections closed to make room for a new one.
    evicted: AtomicU64,
    /// Connections answered `resource_exhausted`.
    refused: AtomicU64,
}

/// A taken slot; given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
}

impl Slots {
    /// Slots for `max` connections.
    pub fn new(max: usize) -> Arc<Slots> {
        Slots::with_eviction(max, EVICT_AFTER)
    }

    /// Slots whose waiting connections may be evicted after `evict_after`.
    pub fn with_eviction(max: usize, evict_after: Duration) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            evict_after,
            table: Mutex::new(SlotTable::default()),
            timed_out: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a new connection (`closer`: a second fd of its socket), evicting the
    /// longest-waiting connection if all are taken; `None` when every slot is busy handling.
    pub fn acquire(self: &Arc<Self>, closer: Option<UnixStream>) -> Option<Slot> {
        let mut t = self.lock();
        if t.conns.len() >= self.max {
            let now = Instant::now();
            let victim = t
                .conns
                .iter()
                .filter_map(|(id, c)| c.waiting_since.map(|s| (s, *id)))
                .filter(|(s, _)| now.saturating_duration_since(*s) >= self.evict_after)
                .min()
                .map(|(_, id)| id);
            let Some(victim) = victim else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            if let Some(c) = t.conns.remove(&victim).and_then(|c| c.closer) {
                // Its thread's read returns at once and the thread ends.
                let _ = shutdown(c.as_raw_fd(), Shutdown::Both);
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let id = t.next;
        t.next += 1;
        t.conns.insert(id, Conn { waiting_since: Some(Instant::now()), closer });
        Some(Slot { slots: self.clone(), id })
    }

    /// Connections holding a slot now.
    pub fn in_use(&self) -> usize {
        self.lock().conns.len()
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The counters, for `stats`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        [("ctl_timed_out", &self.timed_out), ("ctl_evicted", &self.evicted), ("ctl_refused", &self.refused)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Slot {
    /// The connection waits for its next request line (it may be evicted from now on).
    fn waiting(&self) {
        if let Some(c) = self.slots.lock().conns.get_mut(&self.id) {
            c.waiting_since = Some(Instant::now());
        }
    }

    /// The connection has a request to handle; false when it was evicted meanwhile (its
    /// socket is shut down: the request is dropped, unanswered, so no more than the bound
    /// are ever handled at once).
    fn busy(&self) -> bool {
        match self.slots.lock().conns.get_mut(&self.id) {
            Some(c) => {
                c.waiting_since = None;
                true
            }
            None => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().conns.remove(&self.id);
    }
}

const OPS: [&str; 19] = [
    "attach",
    "detach",
    "check",
    "ports",
    "stats",
    "fdb",
    "status",
    "gc",
    "service_set",
    "service_delete",
    "service_sync",
    "service_list",
    "conntrack_list",
    "conntrack_flush",
    "ipam_allocate",
    "ipam_release",
    "ipam_check",
    "ipam_gc",
    "ipam_list",
];

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another tapwayd answers on the path.
    #[error("{0} is in use by a running tapwayd")]
    InUse(String),
    /// Binding or setting up the socket failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// The listening socket (a second fd of it), to wake the acceptor on stop.
    wake: UnixListener,
    thread: Option<JoinHandle<()>>,
}

/// Runs one parsed request; shared by the connection threads.
pub type Handler = Arc<dyn Fn(Request) -> Result<serde_json::Value, ApiError> + Send + Sync>;

impl Server {
    /// Binds `path` and serves `ctl` on a thread of its own.
    pub fn start(ctl: Arc<Control>, path: &Path, allow_uids: Vec<u32>) -> Result<Server, ServerError> {
        let slots = ctl.conns.clone();
        Server::serve(path, allow_uids, slots, Arc::new(move |req| ctl.handle_request(req)))
    }

    /// Binds `path` and answers each request with `handle`, with the same peer checks,
    /// slots and deadlines as [`Server::start`]: tapwayd serves a stand-in handler this way
    /// while it cannot build its [`Control`] yet (waiting for the Node's pod range).
    pub fn serve(
        path: &Path,
        allow_uids: Vec<u32>,
        slots: Arc<Slots>,
        handle: Handler,
    ) -> Result<Server, ServerError> {
        let shown = path.display().to_string();
        let io = |source| ServerError::Io { path: shown.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        ensure_free(path)?;
        if path.exists() {
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let wake = listener.try_clone().map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let mut allowed = allow_uids;
        allowed.push(0);
        allowed.push(nix::unistd::geteuid().as_raw());
        let thread = std::thread::Builder::new()
            .name("tapway-ctl".into())
            .spawn(move || accept_loop(&slots, &handle, listener, stop2, Arc::new(allowed)))
            .map_err(io)?;
        Ok(Server { path: path.to_path_buf(), stop, wake, thread: Some(thread) })
    }

    /// Stops accepting and removes the socket file.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The acceptor blocks in accept(): shutting the listening socket down makes accept()
        // fail (EINVAL), and the acceptor then sees the flag. (A connection to the path used to
        // wake it, which hung the shutdown for good when the socket file had been removed.)
        if shutdown(self.wake.as_raw_fd(), Shutdown::Both).is_err() {
            let _ = UnixStream::connect(&self.path);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Fails when a running tapwayd answers on `path`. The daemon checks this before touching any
/// interface, so a second daemon changes nothing.
pub fn ensure_free(path: &Path) -> Result<(), ServerError> {
    if path.exists() && UnixStream::connect(path).is_ok() {
        return Err(ServerError::InUse(path.display().to_string()));
    }
    Ok(())
}

fn accept_loop(
    slots: &Arc<Slots>,
    handle: &Handler,
    listener: UnixListener,
    stop: Arc<AtomicBool>,
    allowed: Arc<Vec<u32>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // EMFILE and friends: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Some(slot) = slots.acquire(stream.try_clone().ok()) else {
            // Non-blocking: the answer fits the socket buffer, and a peer that reads nothing
            // must not stall the acceptor.
            let mut s = stream;
            let _ = s.set_nonblocking(true);
            let _ = reply(&mut s, Err(api_err(ErrorCode::ResourceExhausted, "too many control connections")));
            continue;
        };
        let (handle, allowed) = (handle.clone(), allowed.clone());
        // The slot moves into the thread; if the spawn fails the closure is dropped unrun,
        // and the slot with it.
        let spawned = std::thread::Builder::new().name("tapway-conn".into()).spawn(move || {
            serve_connection(stream, &allowed, &slot, Limits::default(), |req| handle(req));
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot spawn a connection thread");
        }
    }
}

fn reply(stream: &mut UnixStream, result: Result<serde_json::Value, ApiError>) -> std::io::Result<()> {
    let line = answer_line(result)?;
    stream.write_all(&line)
}

fn answer_line(result: Result<serde_json::Value, ApiError>) -> std::io::Result<Vec<u8>> {
    let resp = match result {
        Ok(v) => Response { v: PROTOCOL_VERSION, ok: true, result: Some(v), error: None },
        Err(e) => Response { v: PROTOCOL_VERSION, ok: false, result: None, error: Some(e) },
    };
    let mut line = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// Reads from a socket until a deadline: each `read` waits at most for the time left.
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline passed")
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

/// Writes all of `bytes` within `within`, or fails.
fn write_within(stream: &UnixStream, mut bytes: &[u8], within: Duration) -> std::io::Result<()> {
    let until = Instant::now() + within;
    let mut s = stream;
    while !bytes.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        s.set_write_timeout(Some(left))?;
        match s.write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
}

/// Serves one connection until it closes, errs or misses a deadline; `handle` runs each
/// request. The socket is closed on return.
fn serve_connection(
    stream: UnixStream,
    allowed: &[u32],
    slot: &Slot,
    limits: Limits,
    handle: impl Fn(Request) -> Result<serde_json::Value, ApiError>,
) {
    let counted = |e: &std::io::Error| {
        if is_timeout(e) {
            slot.slots.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    };
    let uid = getsockopt(&stream, PeerCredentials).map(|c| c.uid()).ok();
    if !uid.is_some_and(|u| allowed.contains(&u)) {
        tracing::warn!(?uid, "control connection refused");
        let answer = answer_line(Err(api_err(
            ErrorCode::PermissionDenied,
            "this uid may not use the tapway control socket",
        )));
        if let Err(e) = answer.and_then(|l| write_within(&stream, &l, limits.write)) {
            counted(&e);
        }
        return;
    }
    let mut reader = BufReader::new(DeadlineReader { stream: &stream, until: Instant::now() + limits.read });
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        slot.waiting();
        reader.get_mut().until = Instant::now() + limits.read;
        // Read at most one byte past the limit, so an endless line cannot exhaust memory.
        let limit = (MAX_REQUEST_BYTES + 1) as u64;
        match reader.by_ref().take(limit).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                // A deadline, a reset, or an eviction.
                counted(&e);
                if is_timeout(&e) {
                    tracing::debug!(
                        bytes = line.len(),
                        "control connection cut off: no whole request in time"
                    );
                }
                return;
            }
        }
        if !slot.busy() {
            return;
        }
        let result = if line.last() != Some(&b'\n') && line.len() > MAX_REQUEST_BYTES {
            Err(api_err(ErrorCode::TooLarge, format!("request is longer than {MAX_REQUEST_BYTES} bytes")))
        } else if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        } else {
            parse_request(&line).and_then(&handle)
        };
        let too_large = matches!(&result, Err(e) if e.code == ErrorCode::TooLarge);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "request failed");
        }
        if let Err(e) = answer_line(result).and_then(|l| write_within(&stream, &l, limits.write)) {
            counted(&e);
            return;
        }
        if too_large {
            return;
        }
        if line.capacity() > 1 << 20 {
            line = Vec::with_capacity(1024);
            super::release_heap();
        }
    }
}

/// Decodes one request line, with a precise error for each way it can be wrong.
pub fn parse_request(line: &[u8]) -> Result<Request, ApiError> {
    // The common case decodes directly (a service sync is megabytes); the slower walk below
    // only runs to say what is wrong. The head is checked first: serde would also take a
    // variant index (`"op":7`) for a tag.
    #[derive(serde::Deserialize)]
    struct Head {
        v: u64,
        op: String,
    }
    if let Ok(head) = serde_json::from_slice::<Head>(line) {
        if head.v == u64::from(PROTOCOL_VERSION) && OPS.contains(&head.op.as_str()) {
            if let Ok(req) = serde_json::from_slice::<Request>(line) {
                return Ok(req);
            }
        }
    }
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| api_err(ErrorCode::BadRequest, format!("request is not JSON: {e}")))?;
    let obj =
        value.as_object().ok_or_else(|| api_err(ErrorCode::BadRequest, "request must be a JSON object"))?;
    match obj.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(api_err(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {v} is not supported (this daemon speaks {PROTOCOL_VERSION})"),
            ))
        }
        None => return Err(api_err(ErrorCode::BadRequest, "request lacks the protocol version \"v\"")),
    }
    let op = obj
        .get("op")
        .and_then(|o| o.as_str())
        .ok_or_else(|| api_err(ErrorCode::BadRequest, "request lacks \"op\""))?;
    if !OPS.contains(&op) {
        return Err(api_err(ErrorCode::BadRequest, format!("unknown op {op:?}; known: {}", OPS.join(", "))));
    }
    <Request as serde::Deserialize>::deserialize(&value)
        .map_err(|e| api_err(ErrorCode::BadRequest, format!("bad {op} request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_are_precise() {
        let code = |s: &str| parse_request(s.as_bytes()).unwrap_err().code;
        assert_eq!(code("{not json"), ErrorCode::BadRequest);
        assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"op":"status"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"v":2,"op":"status"}"#), ErrorCode::UnsupportedVersion);
        assert_eq!(code(r#"{"v":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"v":1,"op":"explode"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"v":1,"op":7}"#), ErrorCode::BadRequest, "no variant index for a tag");
        assert_eq!(code(r#"{"v":1,"op":"attach","ips":"nope"}"#), ErrorCode::BadRequest);
        let e = parse_request(br#"{"v":1,"op":"explode"}"#).unwrap_err();
        assert!(e.message.contains("unknown op"), "{}", e.message);
        assert!(parse_request(br#"{"v":1,"op":"status"}"#).is_ok());
        assert!(parse_request(b"{\"v\":1,\"op\":\"ports\"}\n").is_ok());
    }

    fn pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().expect("socketpair")
    }

    #[test]
    fn slots_always_come_back() {
        let slots = Slots::with_eviction(2, Duration::from_secs(3600));
        let a = slots.acquire(None).expect("a slot");
        let b = slots.acquire(None).expect("a slot");
        assert!(slots.acquire(None).is_none(), "full, and nobody has waited long enough");
        assert_eq!(slots.counters()["ctl_refused"], 1);
        drop(a);
        assert_eq!(slots.in_use(), 1);
        // A thread that panics gives its slot back.
        let c = slots.acquire(None).expect("a slot");
        let t = std::thread::spawn(move || {
            let _slot = c;
            panic!("handler panicked");
        });
        assert!(t.join().is_err());
        assert_eq!(slots.in_use(), 1);
        // A closure that never runs (a failed spawn drops it) gives its slot back too.
        let d = slots.acquire(None).expect("a slot");
        let never = move || drop(d);
        drop(never);
        assert_eq!(slots.in_use(), 1);
        drop(b);
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn a_new_connection_evicts_the_longest_waiting_one() {
        let slots = Slots::with_eviction(2, Duration::ZERO);
        let (a_srv, mut a_cli) = pair();
        let (b_srv, _b_cli) = pair();
        let a = slots.acquire(a_srv.try_clone().ok()).expect("a slot");
        let b = slots.acquire(b_srv.try_clone().ok()).expect("a slot");
        // b is handling a request: not evictable. a waits for its line: evicted.
        assert!(b.busy());
        let c = slots.acquire(None).expect("the waiting connection's slot");
        assert_eq!(slots.counters()["ctl_evicted"], 1);
        assert_eq!(slots.in_use(), 2);
        a_cli.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(a_cli.read(&mut buf).expect("EOF, not a timeout"), 0, "a was shut down");
        assert!(!a.busy(), "an evicted connection handles nothing");
        drop(a);
        assert_eq!(slots.in_use(), 2, "its slot went to c already");
        // All busy: refused.
        assert!(c.busy());
        assert!(slots.acquire(None).is_none());
        assert_eq!(slots.counters()["ctl_refused"], 1);
        drop((b, c));
        assert_eq!(slots.in_use(), 0);
    }

    fn serve(slots: &Arc<Slots>, limits: Limits, handled: Arc<AtomicU64>) -> (UnixStream, JoinHandle<()>) {
        let (srv, cli) = pair();
        let slot = slots.acquire(srv.try_clone().ok()).expect("a slot");
        let me = nix::unistd::geteuid().as_raw();
        let t = std::thread::spawn(move || {
            serve_connection(srv, &[me], &slot, limits, |_| {
                handled.fetch_add(1, Ordering::SeqCst);
                Ok(serde_json::json!({}))
            })
        });
        (cli, t)
    }

    #[test]
    fn a_trickling_client_is_cut_off_and_its_slot_comes_back() {
        let slots = Slots::new(4);
        let handled = Arc::new(AtomicU64::new(0));
        let limits = Limits { read: Duration::from_millis(300), write: Duration::from_secs(5) };
        let (mut cli, server) = serve(&slots, limits, handled.clone());
        // One byte every 20 ms never completes a line: a timeout per read() would never fire.
        let line = br#"{"v":1,"op":"status"}"#;
        let start = Instant::now();
        let mut cut = false;
        for b in line.iter().cycle() {
            if cli.write_all(&[*b]).is_err() {
                cut = true;
                break;
            }
            if server.is_finished() {
                cut = true;
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the trickling client was never cut off");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(cut);
        server.join().expect("the connection thread");
        assert_eq!(handled.load(Ordering::SeqCst), 0);
        assert_eq!(slots.in_use(), 0, "the slot is back");
        assert_eq!(slots.counters()["ctl_timed_out"], 1);
        cli.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut rest = Vec::new();
        let _ = cli.read_to_end(&mut rest); // EOF or a reset: either way closed
        assert!(rest.is_empty(), "no answer to a request that never came");
    }

    #[test]
    fn whole_requests_are_served_and_an_idle_connection_ends() {
        let slots = Slots::new(4);
        let handled = Arc::new(AtomicU64::new(0));
        let limits = Limits { read: Duration::from_millis(300), write: Duration::from_secs(5) };
        let (mut cli, server) = serve(&slots, limits, handled.clone());
        cli.write_all(b"{\"v\":1,\"op\":\"status\"}\n\n{\"v\":1,\"op\":\"ports\"}\n").unwrap();
        cli.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut reader = BufReader::new(cli.try_clone().unwrap());
        for _ in 0..2 {
            let mut l = String::new();
            reader.read_line(&mut l).expect("an answer");
            assert!(serde_json::from_str::<Response>(&l).expect("a response").ok, "{l}");
        }
        // Then it idles past the read deadline: closed.
        let mut l = String::new();
        assert_eq!(reader.read_line(&mut l).expect("EOF"), 0);
        server.join().expect("the connection thread");
        assert_eq!(handled.load(Ordering::SeqCst), 2);
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn a_client_that_reads_no_answer_is_cut_off() {
        let slots = Slots::new(4);
        let limits = Limits { read: Duration::from_secs(30), write: Duration::from_millis(300) };
        let (srv, mut cli) = pair();
        let slot = slots.acquire(None).expect("a slot");
        let me = nix::unistd::geteuid().as_raw();
        let server = std::thread::spawn(move || {
            // An answer far larger than the socket buffer.
            serve_connection(srv, &[me], &slot, limits, |_| Ok(serde_json::json!("x".repeat(8 << 20))))
        });
        cli.write_all(b"{\"v\":1,\"op\":\"status\"}\n").unwrap();
        server.join().expect("the connection thread ends without the client reading");
        assert_eq!(slots.in_use(), 0);
        assert_eq!(slots.counters()["ctl_timed_out"], 1);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_request(&bytes);
        }

        #[test]
        fn json_shaped_input_never_panics(op in "[a-z_]{0,10}", v in 0u64..3, extra in "[ -~]{0,40}") {
            let line = format!("{{\"v\":{v},\"op\":\"{op}\",\"x\":{extra:?}}}");
            let _ = parse_request(line.as_bytes());
        }
    }
}
