//! The control socket: a Unix stream socket (mode 0600) speaking newline-delimited JSON.
//!
//! Each connection gets its own thread (at most [`MAX_CONNECTIONS`] at once), so a slow attach
//! does not hold up `tapwayctl stats`. Peers are checked with `SO_PEERCRED`: root, the daemon's
//! own uid and the configured uids only. Every line is parsed defensively: oversized, non-JSON,
//! wrong-version and unknown-op requests get an error answer and change nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{getsockopt, shutdown, sockopt::PeerCredentials, Shutdown};
use tapway_api::{ApiError, ErrorCode, Request, Response, MAX_REQUEST_BYTES, PROTOCOL_VERSION};

use super::{api_err, Control};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may stay silent.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

const OPS: [&str; 14] = [
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

impl Server {
    /// Binds `path` and serves `ctl` on a thread of its own.
    pub fn start(ctl: Arc<Control>, path: &Path, allow_uids: Vec<u32>) -> Result<Server, ServerError> {
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
            .spawn(move || accept_loop(ctl, listener, stop2, Arc::new(allowed)))
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

fn accept_loop(ctl: Arc<Control>, listener: UnixListener, stop: Arc<AtomicBool>, allowed: Arc<Vec<u32>>) {
    let active = Arc::new(AtomicUsize::new(0));
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
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let mut s = stream;
            let _ = reply(&mut s, Err(api_err(ErrorCode::ResourceExhausted, "too many control connections")));
            continue;
        }
        let (ctl, allowed, active) = (ctl.clone(), allowed.clone(), active.clone());
        let spawned = std::thread::Builder::new().name("tapway-conn".into()).spawn(move || {
            serve_connection(&ctl, stream, &allowed);
            active.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot spawn a connection thread");
        }
    }
}

fn reply(stream: &mut UnixStream, result: Result<serde_json::Value, ApiError>) -> std::io::Result<()> {
    let resp = match result {
        Ok(v) => Response { v: PROTOCOL_VERSION, ok: true, result: Some(v), error: None },
        Err(e) => Response { v: PROTOCOL_VERSION, ok: false, result: None, error: Some(e) },
    };
    let mut line = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

fn serve_connection(ctl: &Control, stream: UnixStream, allowed: &[u32]) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else { return };
    let uid = getsockopt(&stream, PeerCredentials).map(|c| c.uid()).ok();
    if !uid.is_some_and(|u| allowed.contains(&u)) {
        tracing::warn!(?uid, "control connection refused");
        let _ = reply(
            &mut writer,
            Err(api_err(ErrorCode::PermissionDenied, "this uid may not use the tapway control socket")),
        );
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        // Read at most one byte past the limit, so an endless line cannot exhaust memory.
        let limit = (MAX_REQUEST_BYTES + 1) as u64;
        match reader.by_ref().take(limit).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => return, // timeout or reset
        }
        if line.last() != Some(&b'\n') && line.len() > MAX_REQUEST_BYTES {
            let msg = format!("request is longer than {MAX_REQUEST_BYTES} bytes");
            let _ = reply(&mut writer, Err(api_err(ErrorCode::TooLarge, msg)));
            return;
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let result = parse_request(&line).and_then(|req| ctl.handle_request(req));
        if let Err(e) = &result {
            tracing::debug!(error = %e, "request failed");
        }
        if reply(&mut writer, result).is_err() {
            return;
        }
        if line.capacity() > 1 << 20 {
            line = Vec::with_capacity(1024);
            release_heap();
        }
    }
}

/// Gives freed heap back to the kernel after a multi-megabyte request (a service sync):
/// glibc would otherwise keep the parse buffers' pages for the life of the process.
fn release_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
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
