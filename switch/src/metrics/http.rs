//! The HTTP endpoint of `--metrics-address`: `/metrics`, `/healthz` and `/readyz`, served by
//! tiny_http on threads of their own (never a worker's).
//!
//! - `/metrics`: every metric, in the Prometheus text format 0.0.4, or OpenMetrics when the
//!   `Accept` header asks for it (Prometheus does).
//! - `/healthz`: the process runs and so do its threads: every worker and tapwayd's main loop
//!   went round their loop within [`STALE_SECS`]. A failure means tapwayd is wedged (a liveness
//!   probe should restart it).
//! - `/readyz`: what the CNI plugin's STATUS checks, asked the same way: the control socket
//!   answers `status` and its `not_ready` list is empty (plus `/healthz`). A failure means an
//!   ADD would fail now.
//!
//! While tapwayd waits for the Node's pod range it has no switch yet, and the endpoint serves
//! that wait ([`MetricsServer::start_waiting`]): `/healthz` answers 200 (the process is alive
//! and waiting, which a liveness probe must not restart), `/readyz` 503 with the reason, and
//! `/metrics` only `tapway_waiting 1`. Once the switch runs,
//! [`MetricsServer::serve_control`] switches to the full endpoints, on the same socket.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus_client::registry::Registry;
use tapway_api::{Client, Op, StatusInfo};

use super::{encode, registry, Format};
use crate::control::Control;

/// A worker or the main loop that has not gone round its loop for longer than this is wedged:
/// an idle worker wakes at least every 250 ms, the main loop every 100 ms.
pub const STALE_SECS: u32 = 10;

/// How long `/readyz` waits for the control socket (the plugin's STATUS waits 5 s).
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Threads answering requests: a scraper that stops reading holds one, not the probes.
const THREADS: usize = 2;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("serving metrics on {addr}: {why}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        why: String,
    },
    /// A thread could not be spawned.
    #[error("spawning the metrics thread: {0}")]
    Spawn(std::io::Error),
}

/// An HTTP response: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

/// What the endpoints read.
pub struct Endpoints {
    ctl: Arc<Control>,
    registry: Registry,
    socket: PathBuf,
}

impl Endpoints {
    /// Endpoints over `ctl`, whose control socket is at `socket`.
    pub fn new(ctl: Arc<Control>, socket: PathBuf) -> Endpoints {
        Endpoints { registry: registry(&ctl), ctl, socket }
    }

    /// Answers a GET of `path` (query string ignored) with `accept` as the `Accept` header.
    pub fn get(&self, path: &str, accept: &str) -> Reply {
        match path.split('?').next().unwrap_or("") {
            "/metrics" => {
                let format = Format::from_accept(accept);
                match encode(&self.registry, format) {
                    Ok(body) => Reply { status: 200, content_type: format.content_type(), body },
                    Err(_) => Reply::text(500, "encoding the metrics failed\n"),
                }
            }
            "/healthz" => match self.unhealthy() {
                why if why.is_empty() => Reply::text(200, "ok\n"),
                why => Reply::text(503, why.join("\n") + "\n"),
            },
            "/readyz" => {
                let mut why = self.unhealthy();
                why.extend(self.not_ready());
                if why.is_empty() {
                    Reply::text(200, "ready\n")
                } else {
                    Reply::text(503, why.join("\n") + "\n")
                }
            }
            "/" => Reply::text(200, "tapwayd: /metrics /healthz /readyz\n"),
            _ => Reply::text(404, "not found\n"),
        }
    }

    /// The threads that stopped going round their loop.
    fn unhealthy(&self) -> Vec<String> {
        let sw = &self.ctl.switch;
        let beats =
            sw.lanes.iter().enumerate().map(|(i, l)| {
                (format!("worker {i}"), l.heartbeat.load(std::sync::atomic::Ordering::Relaxed))
            });
        let main = self.ctl.metrics.last_main_beat();
        let main = (main != u32::MAX).then(|| ("the main loop".to_string(), main));
        stale(sw.now(), beats.chain(main), STALE_SECS)
    }

    /// Why the control socket says (or shows by not answering) that an ADD would fail.
    fn not_ready(&self) -> Vec<String> {
        match Client::new(&self.socket).with_timeout(READY_TIMEOUT).call::<StatusInfo>(Op::Status) {
            Ok(s) => s.not_ready,
            Err(e) => vec![format!("the control socket does not answer: {e}")],
        }
    }
}

/// Which of `beats` (name, time of the last loop) are older than `max_age` at `now`.
pub fn stale(now: u32, beats: impl Iterator<Item = (String, u32)>, max_age: u32) -> Vec<String> {
    beats
        .filter(|(_, at)| now.saturating_sub(*at) > max_age)
        .map(|(name, at)| format!("{name} has not run for {} s", now.saturating_sub(at)))
        .collect()
}

/// Why tapwayd cannot serve yet (while it waits for its pod range).
pub type Waiting = Arc<dyn Fn() -> String + Send + Sync>;

/// What the endpoint serves: the switch's endpoints once they exist, the wait before.
struct Served {
    endpoints: ArcSwapOption<Endpoints>,
    waiting: Waiting,
}

impl Served {
    fn get(&self, path: &str, accept: &str) -> Reply {
        if let Some(e) = self.endpoints.load().as_ref() {
            return e.get(path, accept);
        }
        let why = (self.waiting)();
        match path.split('?').next().unwrap_or("") {
            "/healthz" => Reply::text(200, format!("ok ({why})\n")),
            "/readyz" => Reply::text(503, why + "\n"),
            "/metrics" => {
                let format = Format::from_accept(accept);
                let mut body = String::from(
                    "# HELP tapway_waiting 1 while tapwayd waits to serve (for its pod range); /readyz says why\n\
                     # TYPE tapway_waiting gauge\ntapway_waiting 1\n",
                );
                if format == Format::OpenMetrics {
                    body.push_str("# EOF\n");
                }
                Reply { status: 200, content_type: format.content_type(), body }
            }
            "/" => Reply::text(200, "tapwayd: /metrics /healthz /readyz\n"),
            _ => Reply::text(404, "not found\n"),
        }
    }
}

/// The running HTTP endpoint.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    addr: std::net::SocketAddr,
    threads: Vec<JoinHandle<()>>,
    served: Arc<Served>,
}

impl MetricsServer {
    /// Binds `addr` and serves the endpoints of `ctl` (control socket `socket`).
    pub fn start(
        addr: std::net::SocketAddr,
        ctl: Arc<Control>,
        socket: PathBuf,
    ) -> Result<MetricsServer, MetricsError> {
        let m = MetricsServer::start_waiting(addr, Arc::new(|| "starting".to_string()))?;
        m.serve_control(ctl, socket);
        Ok(m)
    }

    /// Binds `addr` and serves the wait for the switch (module doc), `waiting` saying why.
    pub fn start_waiting(
        addr: std::net::SocketAddr,
        waiting: Waiting,
    ) -> Result<MetricsServer, MetricsError> {
        let server =
            tiny_http::Server::http(addr).map_err(|e| MetricsError::Bind { addr, why: e.to_string() })?;
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let served = Arc::new(Served { endpoints: ArcSwapOption::empty(), waiting });
        let mut running = MetricsServer { server, addr: bound, threads: Vec::new(), served };
        for i in 0..THREADS {
            let (server, served) = (running.server.clone(), running.served.clone());
            let t = std::thread::Builder::new()
                .name(format!("tapway-metrics{i}"))
                .spawn(move || serve(&server, &served));
            match t {
                Ok(t) => running.threads.push(t),
                Err(e) => {
                    running.stop();
                    return Err(MetricsError::Spawn(e));
                }
            }
        }
        Ok(running)
    }

    /// From now on serves the endpoints of `ctl` (control socket `socket`).
    pub fn serve_control(&self, ctl: Arc<Control>, socket: PathBuf) {
        self.served.endpoints.store(Some(Arc::new(Endpoints::new(ctl, socket))));
    }

    /// The address bound (the port chosen when `:0` was asked for).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the threads.
    pub fn stop(self) {
        for _ in &self.threads {
            self.server.unblock();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, endpoints: &Served) {
    // `recv` fails once the server is unblocked (stopping).
    while let Ok(req) = server.recv() {
        let reply = match req.method() {
            tiny_http::Method::Get | tiny_http::Method::Head => {
                let accept = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Accept"))
                    .map(|h| h.value.as_str().to_string())
                    .unwrap_or_default();
                endpoints.get(req.url(), &accept)
            }
            _ => Reply::text(405, "only GET\n"),
        };
        let mut resp = tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
        if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", reply.content_type) {
            resp.add_header(h);
        }
        if let Err(e) = req.respond(resp) {
            tracing::debug!(error = %e, "metrics client went away");
        }
    }
}
