//! The watcher tapwayd runs: it lists and watches Services and EndpointSlices in all
//! namespaces, and its own Node, through kube-runtime's watcher, on a tokio runtime of its own
//! (one thread, `tapway-kube`, never a worker).
//!
//! kube-runtime does the protocol: paged lists, `resourceVersion` continuation, bookmarks, and
//! a fresh list after a 410 Gone (HTTP or in-stream ERROR). Each of its errors is a stream item
//! that this module records ([`KubeStatus::last_error`]) and then keeps polling through
//! `default_backoff()` (capped, jittered exponential backoff): a consumer that stopped on the
//! first error would never recover. Meanwhile nothing is removed from the datapath; the next
//! list is diffed against the [`Store`], so it converges when the API server is back.
//!
//! Changes are coalesced: the first change after a sync opens a window ([`WatchOptions::window`]),
//! every event in it joins the same [`Update`], and only the Services they touch are rebuilt.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config};
use tapway_api::KubeStatus;

use crate::convert::{key_of, parse_service, parse_slice, Report};
use crate::store::{Store, Update};

/// Kinds, as status and metrics name them.
pub const KIND_SERVICE: &str = "Service";
/// See [`KIND_SERVICE`].
pub const KIND_SLICE: &str = "EndpointSlice";
/// See [`KIND_SERVICE`].
pub const KIND_NODE: &str = "Node";

/// The default coalescing window.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(20);

/// Items per list page.
pub const PAGE_SIZE: u32 = 500;

/// Where the API server is and what to follow.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// A kubeconfig file; `None`: the in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    /// The node whose Node object gives the pod range.
    pub node_name: Option<String>,
    /// How long changes are collected after the first one before they are applied.
    pub window: Duration,
}

/// Why the watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Not in a pod: no `KUBERNETES_SERVICE_HOST`/`PORT`, or no service-account files.
    #[error("in-cluster configuration: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    /// The client could not be built (TLS setup).
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// The runtime thread.
    #[error("starting the watch thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The runtime thread ended before it said how it went.
    #[error("the watch thread ended while starting")]
    Gone,
}

/// Where a pod's service-account token and CA are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Whether the in-cluster configuration is there, as client-go reads it:
/// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` set, and the service account's
/// `token` and `ca.crt` mounted.
pub fn in_cluster() -> bool {
    let set = |v: &str| std::env::var_os(v).is_some_and(|h| !h.is_empty());
    let dir = std::path::Path::new(SERVICE_ACCOUNT_DIR);
    set("KUBERNETES_SERVICE_HOST")
        && set("KUBERNETES_SERVICE_PORT")
        && dir.join("token").is_file()
        && dir.join("ca.crt").is_file()
}

/// Where updates go: tapwayd's control plane.
pub trait ServiceSink: Send + Sync {
    /// Applies one coalesced update to the service table. An error is logged and recorded;
    /// the watch goes on.
    fn apply(&self, update: Update) -> Result<(), String>;
}

/// The watch state the control plane reads (status, metrics).
#[derive(Debug, Default)]
struct State {
    server: String,
    node: Option<String>,
    connected: bool,
    since: Option<SystemTime>,
    last_event: Option<Instant>,
    objects: BTreeMap<&'static str, u64>,
    events: BTreeMap<&'static str, u64>,
    /// Events by kind and type (`listed`, `applied`, `deleted`: kube-runtime's watcher folds
    /// ADDED and MODIFIED into one, and keeps BOOKMARKs to itself).
    event_types: BTreeMap<(&'static str, &'static str), u64>,
    /// Errors from the API so far (failed connections, lists, watches, 410s).
    errors: u64,
    lists: BTreeMap<&'static str, u64>,
    syncs: u64,
    service_ports: u64,
    last_error: Option<(String, Instant)>,
    waiting: Option<String>,
}

struct Shared {
    store: Mutex<Store>,
    state: Mutex<State>,
    /// Something changed in the store.
    changed: tokio::sync::Notify,
    sink: OnceLock<Arc<dyn ServiceSink>>,
    /// The Node's pod ranges, once seen.
    pod_cidrs: Mutex<Option<Vec<IpNet>>>,
    pod_cidrs_seen: Condvar,
    window: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// An event (or list item) arrived: the connection works.
    fn event(&self, kind: &'static str, ty: &'static str) {
        let mut st = self.state();
        *st.events.entry(kind).or_default() += 1;
        *st.event_types.entry((kind, ty)).or_default() += 1;
        st.last_event = Some(Instant::now());
        Self::set_connected(&mut st, true);
    }

    fn set_connected(st: &mut State, up: bool) {
        if st.connected != up || st.since.is_none() {
            st.connected = up;
            st.since = Some(SystemTime::now());
        }
    }

    fn error(&self, kind: &'static str, e: &watcher::Error) {
        let msg = format!("{kind}: {e}");
        let mut st = self.state();
        let repeated = st.last_error.as_ref().is_some_and(|(m, _)| *m == msg);
        Self::set_connected(&mut st, false);
        st.errors += 1;
        st.last_error = Some((msg.clone(), Instant::now()));
        drop(st);
        if repeated {
            tracing::debug!("Kubernetes API: {msg}; retrying");
        } else {
            tracing::warn!("Kubernetes API: {msg}; retrying with backoff, the datapath keeps the last state");
        }
    }

    fn counts(&self) {
        let store = lock(&self.store);
        let (svcs, slices, ports) = (store.service_count(), store.slice_count(), store.port_count());
        drop(store);
        let mut st = self.state();
        st.objects.insert(KIND_SERVICE, svcs as u64);
        st.objects.insert(KIND_SLICE, slices as u64);
        st.service_ports = ports as u64;
    }
}

/// A running watch. Dropping it does not stop it; [`Watch::stop`] does.
pub struct Watch {
    shared: Arc<Shared>,
    shutdown: Arc<tokio::sync::Notify>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Watch {
    /// Reads the configuration, builds the client and starts watching on a thread of its own.
    /// Updates are held until [`Watch::set_sink`].
    pub fn start(opts: WatchOptions) -> Result<Arc<Watch>, WatchError> {
        let window = if opts.window.is_zero() { DEFAULT_WINDOW } else { opts.window };
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            state: Mutex::new(State { node: opts.node_name.clone(), ..State::default() }),
            changed: tokio::sync::Notify::new(),
            sink: OnceLock::new(),
            pod_cidrs: Mutex::new(None),
            pod_cidrs_seen: Condvar::new(),
            window,
        });
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), WatchError>>();
        let (sh, stop) = (shared.clone(), shutdown.clone());
        let thread = std::thread::Builder::new().name("tapway-kube".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(WatchError::Thread(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let client = match client(&opts).await {
                    Ok((c, url)) => {
                        sh.state().server = url;
                        c
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(()));
                tokio::select! {
                    _ = run(client, opts.node_name, sh) => {}
                    _ = stop.notified() => {}
                }
            });
        })?;
        rx.recv().map_err(|_| WatchError::Gone)??;
        Ok(Arc::new(Watch { shared, shutdown, thread: Mutex::new(Some(thread)) }))
    }

    /// From now on updates go to `sink` (the first one is the whole table, as soon as both
    /// lists are in). Only the first call counts.
    pub fn set_sink(&self, sink: Arc<dyn ServiceSink>) {
        if self.shared.sink.set(sink).is_ok() {
            self.shared.changed.notify_one();
        }
    }

    /// Whether the watch owns the service table (it has a sink).
    pub fn owns_services(&self) -> bool {
        self.shared.sink.get().is_some()
    }

    /// The Node's pod ranges, once its `spec.podCIDRs` (or `spec.podCIDR`) was seen.
    pub fn pod_cidrs(&self) -> Option<Vec<IpNet>> {
        lock(&self.shared.pod_cidrs).clone()
    }

    /// Waits until the Node's pod ranges are known, saying so in the log every 10 s and in
    /// the status; `None` when `stop` was raised first.
    pub fn wait_pod_cidrs(&self, stop: &AtomicBool) -> Option<Vec<IpNet>> {
        let node = self.shared.state().node.clone().unwrap_or_default();
        let why = format!("waiting for Node {node}'s spec.podCIDRs (the pod range)");
        self.shared.state().waiting = Some(why.clone());
        let mut last_log: Option<Instant> = None;
        let mut got = lock(&self.shared.pod_cidrs);
        let cidrs = loop {
            if let Some(c) = got.as_ref() {
                break Some(c.clone());
            }
            if stop.load(Ordering::SeqCst) {
                break None;
            }
            if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::info!("{why}");
                last_log = Some(Instant::now());
            }
            got = match self.shared.pod_cidrs_seen.wait_timeout(got, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        };
        drop(got);
        self.shared.state().waiting = None;
        cidrs
    }

    /// The watch state, for `status` and the metrics.
    pub fn status(&self) -> KubeStatus {
        let st = self.shared.state();
        let name = |m: &BTreeMap<&'static str, u64>| m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        KubeStatus {
            server: st.server.clone(),
            node: st.node.clone(),
            connected: st.connected,
            since_unix_secs: st
                .since
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
            last_event_age_secs: st.last_event.map(|t| t.elapsed().as_secs_f64()),
            objects: name(&st.objects),
            events: name(&st.events),
            event_types: st.event_types.iter().fold(BTreeMap::new(), |mut m, ((k, t), n)| {
                m.entry(k.to_string()).or_insert_with(BTreeMap::new).insert(t.to_string(), *n);
                m
            }),
            errors: st.errors,
            relists: st.lists.iter().map(|(k, v)| (k.to_string(), v.saturating_sub(1))).collect(),
            syncs: st.syncs,
            service_ports: st.service_ports,
            last_error: st.last_error.as_ref().map(|(m, _)| m.clone()),
            last_error_age_secs: st.last_error.as_ref().map(|(_, t)| t.elapsed().as_secs_f64()),
            waiting: st.waiting.clone(),
            owns_services: self.owns_services(),
        }
    }

    /// Stops the watch and waits for its thread.
    pub fn stop(&self) {
        self.shutdown.notify_one();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

async fn client(opts: &WatchOptions) -> Result<(Client, String), WatchError> {
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = |source| WatchError::Kubeconfig { path: path.clone(), source };
            let file = Kubeconfig::read_from(path).map_err(kc)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await.map_err(kc)?
        }
        None => Config::incluster()?,
    };
    let url = config.cluster_url.to_string();
    tracing::info!(server = %url, "following the Kubernetes API");
    Ok((Client::try_from(config)?, url))
}

async fn run(client: Client, node: Option<String>, sh: Arc<Shared>) {
    let cfg = watcher::Config::default().page_size(PAGE_SIZE);
    let services =
        || watcher::watcher(Api::<Service>::all(client.clone()), cfg.clone()).default_backoff().boxed();
    let slices =
        || watcher::watcher(Api::<EndpointSlice>::all(client.clone()), cfg.clone()).default_backoff().boxed();
    let node_watch = async {
        if let Some(name) = &node {
            let cfg = cfg.clone().fields(&format!("metadata.name={name}"));
            let make =
                || watcher::watcher(Api::<Node>::all(client.clone()), cfg.clone()).default_backoff().boxed();
            follow_node(make, &sh).await;
        }
    };
    tokio::join!(follow_services(services, &sh), follow_slices(slices, &sh), node_watch, apply_loop(&sh));
}

/// Whether the API server answered a watch request with HTTP 410 Gone: kube-runtime 5 retries
/// such a watch from the same resourceVersion forever (it relists only after an in-stream
/// ERROR 410), so the caller starts a fresh watcher, which lists.
fn is_gone(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
}

type Events<K> = futures_util::stream::BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// One kind's events into the store, with the bookkeeping shared by all kinds. `make` starts
/// a watcher (list, then watch); it is called again after an HTTP 410.
async fn follow<K, T>(
    make: impl Fn() -> Events<K>,
    sh: &Shared,
    kind: &'static str,
    reduce: impl Fn(&K) -> (crate::convert::ObjKey, Option<T>),
    upsert: impl Fn(&mut Store, crate::convert::ObjKey, Option<T>),
    delete: impl Fn(&mut Store, &crate::convert::ObjKey),
    replace: impl Fn(&mut Store, HashMap<crate::convert::ObjKey, Option<T>>) -> usize,
) {
    let mut buffer: Option<HashMap<crate::convert::ObjKey, Option<T>>> = None;
    let mut events = make();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Init) => {
                *sh.state().lists.entry(kind).or_default() += 1;
                buffer = Some(HashMap::new());
                Shared::set_connected(&mut sh.state(), true);
            }
            Ok(Event::InitApply(obj)) => {
                sh.event(kind, EVENT_LISTED);
                let (k, v) = reduce(&obj);
                buffer.get_or_insert_with(HashMap::new).insert(k, v);
            }
            Ok(Event::InitDone) => {
                let all = buffer.take().unwrap_or_default();
                let n = all.len();
                let gone = replace(&mut lock(&sh.store), all);
                tracing::info!(kind, objects = n, deleted_meanwhile = gone, "listed");
                Shared::set_connected(&mut sh.state(), true);
                sh.changed.notify_one();
            }
            Ok(Event::Apply(obj)) => {
                sh.event(kind, EVENT_APPLIED);
                let (k, v) = reduce(&obj);
                upsert(&mut lock(&sh.store), k, v);
                sh.changed.notify_one();
            }
            Ok(Event::Delete(obj)) => {
                sh.event(kind, EVENT_DELETED);
                let (k, _) = reduce(&obj);
                delete(&mut lock(&sh.store), &k);
                sh.changed.notify_one();
            }
            Err(e) => {
                sh.error(kind, &e);
                if is_gone(&e) {
                    tracing::info!(kind, "resourceVersion expired (410 Gone): listing again");
                    tokio::time::sleep(GONE_PAUSE).await;
                    buffer = None;
                    events = make();
                }
            }
        }
    }
}

/// Event types in [`KubeStatus::event_types`].
const EVENT_LISTED: &str = "listed";
const EVENT_APPLIED: &str = "applied";
const EVENT_DELETED: &str = "deleted";

/// The pause before listing again after a 410, so a server that answers every watch with 410
/// is not hammered (the watcher's own backoff starts afresh with a new watcher).
const GONE_PAUSE: Duration = Duration::from_millis(200);

/// Logs what a conversion left out, once per object change.
fn log_report(rep: Report) {
    for s in rep.skipped {
        tracing::debug!("skipped: {s}");
    }
}

async fn follow_services(events: impl Fn() -> Events<Service>, sh: &Shared) {
    let reduce = |s: &Service| {
        let mut rep = Report::default();
        let v = parse_service(s, &mut rep);
        log_report(rep);
        (key_of(&s.metadata), v)
    };
    follow(
        events,
        sh,
        KIND_SERVICE,
        reduce,
        Store::upsert_service,
        Store::delete_service,
        Store::replace_services,
    )
    .await;
}

async fn follow_slices(events: impl Fn() -> Events<EndpointSlice>, sh: &Shared) {
    let reduce = |s: &EndpointSlice| {
        let mut rep = Report::default();
        let v = parse_slice(s, &mut rep);
        log_report(rep);
        (key_of(&s.metadata), v)
    };
    follow(events, sh, KIND_SLICE, reduce, Store::upsert_slice, Store::delete_slice, Store::replace_slices)
        .await;
}

/// The pod ranges of a Node: `spec.podCIDRs`, else `spec.podCIDR`.
pub fn node_pod_cidrs(node: &Node) -> Vec<IpNet> {
    let Some(spec) = &node.spec else { return Vec::new() };
    let raw: Vec<&String> = match &spec.pod_cidrs {
        Some(c) if !c.is_empty() => c.iter().collect(),
        _ => spec.pod_cidr.iter().collect(),
    };
    let mut out = Vec::new();
    for s in raw {
        match s.trim().parse::<IpNet>() {
            Ok(n) if !out.contains(&n) => out.push(n),
            Ok(_) => {}
            Err(_) => tracing::warn!("Node spec.podCIDRs: {s:?} is not a CIDR, ignored"),
        }
    }
    out
}

async fn follow_node(make: impl Fn() -> Events<Node>, sh: &Shared) {
    let mut count = 0u64;
    let mut events = make();
    while let Some(ev) = events.next().await {
        let node = match ev {
            Ok(Event::Init) => {
                *sh.state().lists.entry(KIND_NODE).or_default() += 1;
                count = 0;
                continue;
            }
            Ok(Event::InitDone) => {
                sh.state().objects.insert(KIND_NODE, count);
                if count == 0 {
                    let name = sh.state().node.clone().unwrap_or_default();
                    tracing::warn!("no Node named {name} in the API");
                }
                continue;
            }
            Ok(Event::InitApply(n)) => {
                count += 1;
                (n, EVENT_LISTED)
            }
            Ok(Event::Apply(n)) => (n, EVENT_APPLIED),
            Ok(Event::Delete(_)) => {
                sh.event(KIND_NODE, EVENT_DELETED);
                sh.state().objects.insert(KIND_NODE, 0);
                continue;
            }
            Err(e) => {
                sh.error(KIND_NODE, &e);
                if is_gone(&e) {
                    tokio::time::sleep(GONE_PAUSE).await;
                    events = make();
                }
                continue;
            }
        };
        let (node, ty) = node;
        sh.event(KIND_NODE, ty);
        sh.state().objects.insert(KIND_NODE, 1);
        let cidrs = node_pod_cidrs(&node);
        if cidrs.is_empty() {
            continue;
        }
        let mut held = lock(&sh.pod_cidrs);
        match held.as_ref() {
            None => {
                tracing::info!(?cidrs, "pod range from the Node object");
                *held = Some(cidrs);
                sh.pod_cidrs_seen.notify_all();
            }
            Some(old) if *old != cidrs => {
                tracing::warn!(?old, new = ?cidrs, "the Node's spec.podCIDRs changed; tapwayd keeps {old:?} until restarted");
            }
            Some(_) => {}
        }
    }
}

/// Waits for a change, lets the window fill, and applies what the store says changed.
async fn apply_loop(sh: &Shared) {
    loop {
        sh.changed.notified().await;
        tokio::time::sleep(sh.window).await;
        let Some(sink) = sh.sink.get() else { continue };
        let update = lock(&sh.store).take_update();
        sh.counts();
        let Some(update) = update else { continue };
        let (ups, rms, full) = (update.upserts.len(), update.removes.len(), update.full);
        let rebuilt = update.rebuilt;
        match sink.apply(update) {
            Ok(()) => {
                sh.state().syncs += 1;
                tracing::debug!(full, upserts = ups, removes = rms, rebuilt, "service table synced");
            }
            Err(e) => {
                tracing::warn!("applying the watch's update: {e}");
                sh.state().last_error = Some((format!("applying update: {e}"), Instant::now()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{Slice, Svc, SvcPort};
    use std::sync::atomic::AtomicUsize;
    use tapway_api::{Affinity, Protocol};

    struct Counting(AtomicUsize, Mutex<Vec<Update>>);

    impl ServiceSink for Counting {
        fn apply(&self, update: Update) -> Result<(), String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            lock(&self.1).push(update);
            Ok(())
        }
    }

    fn shared(window: Duration) -> Arc<Shared> {
        Arc::new(Shared {
            store: Mutex::new(Store::new()),
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
            sink: OnceLock::new(),
            pod_cidrs: Mutex::new(None),
            pod_cidrs_seen: Condvar::new(),
            window,
        })
    }

    fn slice(n: u8) -> Slice {
        Slice {
            ns: "d".into(),
            label: "d/a-1".into(),
            service: "a".into(),
            ports: vec![(String::new(), Protocol::Tcp, 8080)],
            endpoints: (0..n).map(|i| (IpAddr::from([10, 0, 0, i]), true, true, false)).collect(),
        }
    }

    use std::net::IpAddr;

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_of_100_changes_is_coalesced_into_few_syncs() {
        let sh = shared(Duration::from_millis(20));
        let sink = Arc::new(Counting(AtomicUsize::new(0), Mutex::new(Vec::new())));
        let _ = sh.sink.set(sink.clone());
        let svc = Svc {
            ns: "d".into(),
            name: "a".into(),
            vips: vec!["10.96.0.1".parse().unwrap()],
            ports: vec![SvcPort { name: String::new(), port: 80, protocol: Protocol::Tcp }],
            affinity: Affinity::None,
        };
        {
            let mut st = lock(&sh.store);
            st.replace_services([(("d".to_string(), "a".to_string()), Some(svc))].into());
            st.replace_slices(HashMap::new());
        }
        sh.changed.notify_one();
        let applier = tokio::spawn({
            let sh = sh.clone();
            async move { apply_loop(&sh).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sink.0.load(Ordering::SeqCst), 1, "the initial full sync");
        // 100 changes, as a rolling update delivers them: all inside one window.
        for n in 1..=100u8 {
            lock(&sh.store).upsert_slice(("d".into(), "a-1".into()), Some(slice(n)));
            sh.changed.notify_one();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        applier.abort();
        let updates = lock(&sink.1);
        assert_eq!(updates.len(), 2, "one sync for the 100 changes: {updates:?}");
        assert!(updates[0].full && !updates[1].full);
        assert_eq!(updates[1].rebuilt, 1);
        assert_eq!(updates[1].upserts[0].backends.len(), 100);
        assert_eq!(sh.state().syncs, 2);
    }

    #[test]
    fn node_pod_cidrs_both_families_and_fallback() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:244:1::/64", "junk"]}
        }))
        .unwrap();
        let want: Vec<IpNet> = vec!["10.244.1.0/24".parse().unwrap(), "fd00:244:1::/64".parse().unwrap()];
        assert_eq!(node_pod_cidrs(&node), want);
        let old: Node = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.2.0/24"}}),
        )
        .unwrap();
        assert_eq!(node_pod_cidrs(&old), vec!["10.244.2.0/24".parse::<IpNet>().unwrap()]);
        let none: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}})).unwrap();
        assert!(node_pod_cidrs(&none).is_empty());
    }

    #[test]
    fn watcher_access_is_read_only() {
        for a in crate::WATCHER_ACCESS {
            assert!(a.verbs.iter().all(|v| ["get", "list", "watch"].contains(v)), "{a:?}");
        }
    }
}
