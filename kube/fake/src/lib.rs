//! A fake Kubernetes API server for tapway's tests: just enough of the list/watch protocol, as
//! the API documents it, for kube-runtime's watcher to follow Services, EndpointSlices and
//! Nodes through it.
//!
//! * `GET /api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`, `/api/v1/nodes`
//!   (all namespaces), with `fieldSelector=metadata.name=…|metadata.namespace=…`.
//! * Lists are paged: `limit` and `continue` (a snapshot per list, so pages are consistent);
//!   the List carries `metadata.resourceVersion`.
//! * `watch=true&resourceVersion=RV` streams, chunked, one JSON event per line: ADDED, MODIFIED,
//!   DELETED after RV, BOOKMARK every [`BOOKMARK_EVERY`] when `allowWatchBookmarks=true`, and
//!   ends after `timeoutSeconds`. An RV older than the compacted history gets HTTP 410; after
//!   [`FakeApiServer::compact`], open watches get an in-stream ERROR event with code 410.
//! * Every change bumps one global resourceVersion, as etcd's revision does.
//!
//! It serves plain HTTP/1.1, one thread per connection, `Connection: close`. It listens on a
//! socket the test binds ([`FakeApiServer::serve`]), so the test can bind it inside a network
//! namespace; [`FakeApiServer::stop`] kills it (listener and connections) and
//! [`FakeApiServer::restart`] brings it back on a new socket with the same history.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How often an idle watch gets a BOOKMARK.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

/// The kinds served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// core/v1 Node.
    Node,
}

impl Kind {
    fn of(kind: &str) -> Option<Kind> {
        match kind {
            "Service" => Some(Kind::Service),
            "EndpointSlice" => Some(Kind::EndpointSlice),
            "Node" => Some(Kind::Node),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    fn of_path(path: &str) -> Option<Kind> {
        match path.trim_end_matches('/') {
            "/api/v1/services" => Some(Kind::Service),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(Kind::EndpointSlice),
            "/api/v1/nodes" => Some(Kind::Node),
            _ => None,
        }
    }
}

/// Why an object cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// No or unknown `kind`.
    #[error("not a Service, EndpointSlice or Node: kind {0:?}")]
    Kind(String),
    /// No `metadata.name`.
    #[error("no metadata.name")]
    NoName,
    /// Writing the kubeconfig.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

type ObjKey = (Kind, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Default)]
struct World {
    rv: u64,
    /// History before this RV is gone.
    compacted: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: Vec<(u64, EventType, Kind, Arc<Value>)>,
    /// List snapshots by continue token.
    pages: HashMap<String, (u64, Vec<Value>)>,
    next_token: u64,
    /// Bumped by compact(): open watches end with an ERROR 410.
    expire_gen: u64,
}

struct Inner {
    world: Mutex<World>,
    changed: Condvar,
    /// Bumped by stop(): every connection of the previous life ends.
    epoch: AtomicU64,
    running: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    addr: Mutex<Option<SocketAddr>>,
    /// TLS: the server config, the CA's PEM and the bearer token every request must carry.
    tls: Mutex<Option<Tls>>,
    /// Requests served, by kind and `list`/`watch`.
    pub requests: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ServerConfig>,
    ca_pem: String,
    token: String,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating the certificates.
    #[error("certificates: {0}")]
    Cert(#[from] rcgen::Error),
    /// Building the server config.
    #[error("TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Anything a connection can be served over: plain TCP or TLS over it.
trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// The fake API server. Cloning gives another handle to the same server.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Inner>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        FakeApiServer::new()
    }
}

impl FakeApiServer {
    /// An empty server, not yet listening.
    pub fn new() -> FakeApiServer {
        FakeApiServer {
            inner: Arc::new(Inner {
                world: Mutex::new(World { rv: 1, ..World::default() }),
                changed: Condvar::new(),
                epoch: AtomicU64::new(0),
                running: AtomicBool::new(false),
                conns: Mutex::new(Vec::new()),
                addr: Mutex::new(None),
                tls: Mutex::new(None),
                requests: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Serves on `listener` (bound by the caller, e.g. inside a netns) from a thread.
    pub fn serve(&self, listener: TcpListener) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        *lock(&self.inner.addr) = Some(addr);
        self.inner.running.store(true, Ordering::SeqCst);
        let epoch = self.inner.epoch.load(Ordering::SeqCst);
        let inner = self.inner.clone();
        std::thread::Builder::new().name("fake-apiserver".into()).spawn(move || {
            while inner.epoch.load(Ordering::SeqCst) == epoch {
                match listener.accept() {
                    Ok((s, _)) => {
                        if let Ok(c) = s.try_clone() {
                            lock(&inner.conns).push(c);
                        }
                        let inner = inner.clone();
                        let _ =
                            std::thread::Builder::new().name("fake-apiserver-conn".into()).spawn(move || {
                                let _ = s.set_nonblocking(false);
                                let _ = s.set_nodelay(true);
                                let tls = lock(&inner.tls).clone();
                                match tls {
                                    None => serve_conn(&inner, Box::new(s.try_clone().ok()), s, None, epoch),
                                    Some(t) => {
                                        let Ok(conn) = rustls::ServerConnection::new(t.config.clone()) else {
                                            return;
                                        };
                                        let raw = s.try_clone().ok();
                                        let stream = rustls::StreamOwned::new(conn, s);
                                        serve_conn(&inner, Box::new(raw), stream, Some(t.token), epoch)
                                    }
                                }
                            });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })?;
        Ok(addr)
    }

    /// The address it serves on (the last one).
    pub fn addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.addr)
    }

    /// Serves HTTPS on `listener`: a fresh CA signs a certificate for 127.0.0.1 and ::1, and
    /// every request must carry `Authorization: Bearer TOKEN` (401 otherwise).
    /// [`FakeApiServer::write_kubeconfig`] then writes the CA and the token.
    pub fn serve_tls(&self, listener: TcpListener, token: &str) -> Result<SocketAddr, TlsError> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "tapway fake CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])?;
        let cert = params.signed_by(&key, &issuer)?;
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), ca_cert.der().clone()], key_der)?;
        *lock(&self.inner.tls) =
            Some(Tls { config: Arc::new(config), ca_pem: ca_cert.pem(), token: token.to_string() });
        Ok(self.serve(listener).map_err(|e| rustls::Error::General(e.to_string()))?)
    }

    /// Kills it: the listener closes and every connection is cut; the objects and history stay.
    pub fn stop(&self) {
        self.inner.running.store(false, Ordering::SeqCst);
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        for c in lock(&self.inner.conns).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.inner.changed.notify_all();
        // The accept loop polls every 5 ms; let it drop the listener before a restart binds.
        std::thread::sleep(Duration::from_millis(20));
    }

    /// Serves again, on `listener` (bind the same address to come back on the same port).
    pub fn restart(&self, listener: TcpListener) -> std::io::Result<SocketAddr> {
        self.serve(listener)
    }

    /// Writes a kubeconfig whose server is this one: plain http, or with TLS the CA (as
    /// `certificate-authority-data`) and the bearer token.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), FakeError> {
        use base64::Engine;
        let addr = self.addr().map(|a| a.to_string()).unwrap_or_default();
        let (server, ca, user) = match lock(&self.inner.tls).as_ref() {
            None => (format!("http://{addr}"), String::new(), "{}".to_string()),
            Some(t) => (
                format!("https://{addr}"),
                format!(
                    "    certificate-authority-data: {}\n",
                    base64::engine::general_purpose::STANDARD.encode(&t.ca_pem)
                ),
                format!("\n    token: {}", t.token),
            ),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n{ca}\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {user}\n"
        );
        std::fs::write(path, text)?;
        Ok(())
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.inner.world).rv
    }

    /// Requests served so far, by `Kind list|watch`.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        lock(&self.inner.requests).clone()
    }

    /// Creates or replaces an object (ADDED or MODIFIED), giving it the next resourceVersion.
    pub fn apply(&self, obj: Value) -> Result<u64, FakeError> {
        self.apply_all(vec![obj])
    }

    /// [`FakeApiServer::apply`] for many objects at once; returns the last resourceVersion.
    pub fn apply_all(&self, objs: Vec<Value>) -> Result<u64, FakeError> {
        let mut w = lock(&self.inner.world);
        for mut obj in objs {
            let kind_s = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
            let kind = Kind::of(&kind_s).ok_or(FakeError::Kind(kind_s))?;
            let name =
                obj.pointer("/metadata/name").and_then(Value::as_str).ok_or(FakeError::NoName)?.to_string();
            let ns = if kind == Kind::Node {
                String::new()
            } else {
                obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_string()
            };
            w.rv += 1;
            let rv = w.rv;
            if let Some(o) = obj.as_object_mut() {
                o.insert("apiVersion".into(), kind.api_version().into());
                let meta = o.entry("metadata").or_insert_with(|| json!({}));
                if let Some(m) = meta.as_object_mut() {
                    m.insert("resourceVersion".into(), rv.to_string().into());
                    if kind != Kind::Node {
                        m.insert("namespace".into(), ns.clone().into());
                    }
                }
            }
            let key = (kind, ns, name);
            let t = if w.objects.contains_key(&key) { EventType::Modified } else { EventType::Added };
            w.history.push((rv, t, kind, Arc::new(obj.clone())));
            w.objects.insert(key, obj);
        }
        let rv = w.rv;
        drop(w);
        self.inner.changed.notify_all();
        Ok(rv)
    }

    /// Deletes an object (DELETED, with its last state); `None` if it did not exist.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> Option<u64> {
        let kind = Kind::of(kind)?;
        let ns = if kind == Kind::Node { String::new() } else { namespace.to_string() };
        let mut w = lock(&self.inner.world);
        let mut obj = w.objects.remove(&(kind, ns, name.to_string()))?;
        w.rv += 1;
        let rv = w.rv;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), rv.to_string().into());
        }
        w.history.push((rv, EventType::Deleted, kind, Arc::new(obj)));
        drop(w);
        self.inner.changed.notify_all();
        Some(rv)
    }

    /// Drops the whole history, as etcd compaction does: a watch from an older
    /// resourceVersion gets HTTP 410, and the open watches end with an ERROR 410 event.
    pub fn compact(&self) {
        let mut w = lock(&self.inner.world);
        w.compacted = w.rv;
        w.history.clear();
        w.pages.clear();
        w.expire_gen += 1;
        drop(w);
        self.inner.changed.notify_all();
    }
}

/// The request line's path and decoded query.
struct Req {
    path: String,
    query: HashMap<String, String>,
    /// The `Authorization` header.
    auth: Option<String>,
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_request(r: &mut BufReader<impl Read>) -> Option<Req> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_string();
    // Headers: read to the blank line; a GET has no body.
    let mut auth = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    Some(Req { path: path.to_string(), query, auth })
}

fn respond(s: &mut dyn Write, code: u16, reason: &str, body: &Value) {
    let body = body.to_string();
    let _ = write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// Whether `obj` passes a `fieldSelector` of `metadata.name=`/`metadata.namespace=` terms.
fn selected(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else { return true };
    sel.split(',').all(|term| {
        let (field, want) = term.split_once("==").or_else(|| term.split_once('=')).unwrap_or((term, ""));
        let have = match field {
            "metadata.name" => obj.pointer("/metadata/name"),
            "metadata.namespace" => obj.pointer("/metadata/namespace"),
            _ => return true,
        };
        have.and_then(Value::as_str).unwrap_or("") == want
    })
}

/// Serves one request on `s`; `raw` is the TCP socket under it, shut down at the end.
fn serve_conn(inner: &Inner, raw: Box<Option<TcpStream>>, s: impl Conn, token: Option<String>, epoch: u64) {
    let mut reader = BufReader::new(s);
    let Some(req) = read_request(&mut reader) else { return };
    let mut s = reader.into_inner();
    let s: &mut dyn Conn = &mut s;
    if let Some(t) = token {
        if req.auth.as_deref() != Some(format!("Bearer {t}").as_str()) {
            respond(s, 401, "Unauthorized", &status(401, "Unauthorized", "Unauthorized"));
            let _ = s.flush();
            return;
        }
    }
    let Some(kind) = Kind::of_path(&req.path) else {
        respond(
            s,
            404,
            "Not Found",
            &status(404, "NotFound", &format!("the server could not find {}", req.path)),
        );
        return;
    };
    let watch = matches!(req.query.get("watch").map(String::as_str), Some("true" | "1"));
    *lock(&inner.requests)
        .entry(format!("{} {}", kind.name(), if watch { "watch" } else { "list" }))
        .or_default() += 1;
    if watch {
        serve_watch(inner, s, kind, &req, epoch);
    } else {
        serve_list(inner, s, kind, &req);
    }
    let _ = s.flush();
    if let Some(r) = raw.as_ref() {
        let _ = r.shutdown(Shutdown::Both);
    }
}

fn serve_list(inner: &Inner, s: &mut dyn Conn, kind: Kind, req: &Req) {
    let limit = req.query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|&l| l > 0);
    let mut w = lock(&inner.world);
    let (rv, mut items) = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match w.pages.remove(token) {
            Some(p) => p,
            None => {
                drop(w);
                let st = status(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result.",
                );
                respond(s, 410, "Gone", &st);
                return;
            }
        },
        None => {
            let items: Vec<Value> = w
                .objects
                .iter()
                .filter(|(k, o)| k.0 == kind && selected(o, req.query.get("fieldSelector")))
                .map(|(_, o)| {
                    // As the API server does, list items carry no kind/apiVersion.
                    let mut o = o.clone();
                    if let Some(m) = o.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                    o
                })
                .collect();
            (w.rv, items)
        }
    };
    let mut cont = String::new();
    if let Some(l) = limit {
        if items.len() > l {
            let rest = items.split_off(l);
            w.next_token += 1;
            cont = format!("page-{}-{}", rv, w.next_token);
            w.pages.insert(cont.clone(), (rv, rest));
        }
    }
    drop(w);
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if !cont.is_empty() {
        meta["continue"] = cont.into();
    }
    let body = json!({"kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(),
                      "metadata": meta, "items": items});
    respond(s, 200, "OK", &body);
}

fn chunk(s: &mut dyn Conn, line: &str) -> bool {
    write!(s, "{:x}\r\n{line}\n\r\n", line.len() + 1).and_then(|_| s.flush()).is_ok()
}

fn serve_watch(inner: &Inner, s: &mut dyn Conn, kind: Kind, req: &Req, epoch: u64) {
    let from: u64 = req.query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let bookmarks = req.query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = req.query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let selector = req.query.get("fieldSelector").cloned();
    let w = lock(&inner.world);
    let mut last = if from == 0 { w.rv } else { from };
    if last < w.compacted {
        let msg = format!("too old resource version: {last} ({})", w.compacted);
        drop(w);
        respond(s, 410, "Gone", &status(410, "Expired", &msg));
        return;
    }
    let gen = w.expire_gen;
    drop(w);
    if write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return;
    }
    let mut last_bookmark = Instant::now();
    loop {
        let w = lock(&inner.world);
        if inner.epoch.load(Ordering::SeqCst) != epoch {
            return; // killed: no clean end
        }
        if w.expire_gen != gen {
            drop(w);
            let ev = json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
            chunk(s, &ev.to_string());
            let _ = s.write_all(b"0\r\n\r\n");
            return;
        }
        let events: Vec<String> = w
            .history
            .iter()
            .filter(|(rv, _, k, o)| *rv > last && *k == kind && selected(o, selector.as_ref()))
            .map(|(_, t, _, o)| format!("{{\"type\":\"{}\",\"object\":{}}}", t.name(), o))
            .collect();
        let now_rv = w.rv;
        last = now_rv.max(last);
        if events.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                drop(w);
                let _ = s.write_all(b"0\r\n\r\n");
                return;
            }
            let wait = BOOKMARK_EVERY.saturating_sub(last_bookmark.elapsed()).min(deadline - now);
            let (g, _) = inner.changed.wait_timeout(w, wait).unwrap_or_else(|p| p.into_inner());
            drop(g);
            if bookmarks && last_bookmark.elapsed() >= BOOKMARK_EVERY {
                last_bookmark = Instant::now();
                let bm = json!({"type": "BOOKMARK", "object": {"kind": kind.name(), "apiVersion": kind.api_version(),
                                "metadata": {"resourceVersion": last.to_string()}}});
                if !chunk(s, &bm.to_string()) {
                    return;
                }
            }
            continue;
        }
        drop(w);
        for e in events {
            if !chunk(s, &e) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(addr: SocketAddr, target: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (code, body)
    }

    fn svc(name: &str) -> Value {
        json!({"kind": "Service", "metadata": {"namespace": "d", "name": name}, "spec": {}})
    }

    fn served() -> (FakeApiServer, SocketAddr) {
        let fake = FakeApiServer::new();
        let addr = fake.serve(TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
        (fake, addr)
    }

    #[test]
    fn paged_list_follows_continue_on_one_snapshot() {
        let (fake, addr) = served();
        fake.apply_all((0..5).map(|i| svc(&format!("s{i}"))).collect()).unwrap();
        let (code, body) = get(addr, "/api/v1/services?limit=2");
        assert_eq!(code, 200);
        let page: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert!(page["items"][0].get("kind").is_none(), "list items carry no kind");
        let rv = page["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        let mut token = page["metadata"]["continue"].as_str().unwrap().to_string();
        // A change between pages does not show in the snapshot.
        fake.apply(svc("late")).unwrap();
        let mut names = vec![];
        while !token.is_empty() {
            let (_, body) = get(addr, &format!("/api/v1/services?limit=2&continue={token}"));
            let page: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(page["metadata"]["resourceVersion"].as_str().unwrap(), rv);
            names.extend(page["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].to_string()));
            token = page["metadata"]["continue"].as_str().unwrap_or("").to_string();
        }
        assert_eq!(names.len(), 3, "{names:?}");
        fake.stop();
    }

    #[test]
    fn watch_streams_events_then_410_after_compaction() {
        let (fake, addr) = served();
        let rv0 = fake.apply(svc("a")).unwrap();
        fake.apply(svc("a")).unwrap();
        fake.delete("Service", "d", "a").unwrap();
        let (code, body) =
            get(addr, &format!("/api/v1/services?watch=true&resourceVersion={rv0}&timeoutSeconds=1"));
        assert_eq!(code, 200);
        assert!(body.contains("\"type\":\"MODIFIED\"") && body.contains("\"type\":\"DELETED\""), "{body}");
        assert!(!body.contains("\"type\":\"ADDED\""), "events at or before the RV are not sent: {body}");
        fake.compact();
        let (code, body) = get(addr, &format!("/api/v1/services?watch=true&resourceVersion={rv0}"));
        assert_eq!(code, 410, "{body}");
        assert!(body.contains("\"Expired\""));
        // An open watch gets an in-stream ERROR 410 on compaction.
        let now = fake.resource_version();
        let f2 = fake.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            f2.compact();
        });
        let (code, body) = get(addr, &format!("/api/v1/services?watch=true&resourceVersion={now}"));
        t.join().unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("\"type\":\"ERROR\"") && body.contains("410"), "{body}");
        fake.stop();
    }

    #[test]
    fn bookmarks_and_field_selectors() {
        let (fake, addr) = served();
        fake.apply(json!({"kind": "Node", "metadata": {"name": "n1"}})).unwrap();
        fake.apply(json!({"kind": "Node", "metadata": {"name": "n2"}})).unwrap();
        let (_, body) = get(addr, "/api/v1/nodes?fieldSelector=metadata.name%3Dn2");
        let list: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["metadata"]["name"], "n2");
        let (_, body) = get(addr, "/api/v1/nodes?watch=true&resourceVersion=1&allowWatchBookmarks=true&timeoutSeconds=2&fieldSelector=metadata.name%3Dn2");
        assert!(body.contains("\"BOOKMARK\""), "{body}");
        assert!(!body.contains("\"n1\""), "{body}");
        let (code, _) = get(addr, "/api/v1/pods");
        assert_eq!(code, 404);
        fake.stop();
        assert!(TcpStream::connect(addr).is_err(), "stopped means refused");
    }
}
