//! Prometheus metrics (`--metrics-address`): what `/metrics` serves, and the few figures the
//! control plane keeps only for it.
//!
//! Nearly everything is read at scrape time from what the switch and the control plane hold
//! anyway (port counters, switch counters, FDB, pool, conntrack, the service and port tables,
//! the uplink's counters), by a [`Collector`], so the datapath pays nothing for it. The
//! exceptions are kept here: attach/detach counts and attach latency ([`ControlMetrics`],
//! counted around the control operations), the busy time and heartbeat of each worker
//! ([`crate::switch::Lane`], one clock read per loop iteration) and the API watcher's figures
//! (a [`WatchReport`] callback the watcher registers with [`ControlMetrics::set_watch`]).
//!
//! Names follow the Prometheus conventions: `tapway_` prefix, `_total` on counters, units in
//! the names; docs/metrics.md lists every metric.

pub mod http;

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tapway_api::ApiError;

use crate::control::Control;
use crate::stats::DropReason;
use crate::table::PortEntry;

/// A label set as prometheus-client encodes it.
type Labels = Vec<(&'static str, Cow<'static, str>)>;

/// The label set of the attach/detach metrics: `result`.
type ResultLabel = [(&'static str, &'static str); 1];

/// The label set of the phase timings: `phase`.
type PhaseLabel = [(&'static str, &'static str); 1];

/// Upper bounds of the attach latency histogram, seconds: an attach takes about 2 ms, a slow
/// one on a loaded node tens of milliseconds.
const ATTACH_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

fn attach_histogram() -> Histogram {
    Histogram::new(ATTACH_BUCKETS)
}

/// What the Kubernetes API watcher reports at each scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchReport {
    /// Whether the watch streams are open (the API server answers).
    pub connected: bool,
    /// Seconds since `connected` last changed.
    pub state_age_seconds: f64,
    /// Seconds since the last event of any kind, if one came.
    pub last_event_age_seconds: Option<f64>,
    /// Errors so far (failed connections, lists or watches, 410 Gone answers).
    pub errors: u64,
    /// One entry per watched kind.
    pub kinds: Vec<WatchKind>,
}

/// One watched kind (`Service`, `EndpointSlice`, `Node`) in a [`WatchReport`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchKind {
    /// The kind, e.g. `EndpointSlice`.
    pub kind: String,
    /// Objects of this kind held now.
    pub objects: u64,
    /// Full lists done (the initial one and every relist, e.g. after a 410).
    pub lists: u64,
    /// Objects received so far by type (`listed`, `applied`, `deleted`; see `KubeStatus::event_types`).
    pub events: Vec<(String, u64)>,
}

/// The callback [`ControlMetrics::set_watch`] takes.
pub type WatchSource = dyn Fn() -> WatchReport + Send + Sync;

/// Figures only the metrics need: counted by the control plane around its operations.
pub struct ControlMetrics {
    attaches: Family<ResultLabel, Counter>,
    detaches: Family<ResultLabel, Counter>,
    attach_seconds: Family<ResultLabel, Histogram, fn() -> Histogram>,
    phase_seconds: Family<PhaseLabel, Histogram, fn() -> Histogram>,
    watch: ArcSwapOption<Box<WatchSource>>,
    /// [`crate::switch::Switch::now`] at tapwayd's latest main-loop tick (`/healthz`);
    /// `u32::MAX` until the first (a control plane without tapwayd's loop, in tests).
    main_beat: AtomicU32,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        let m = ControlMetrics {
            attaches: Family::default(),
            detaches: Family::default(),
            attach_seconds: Family::new_with_constructor(attach_histogram as fn() -> Histogram),
            phase_seconds: Family::new_with_constructor(attach_histogram as fn() -> Histogram),
            watch: ArcSwapOption::empty(),
            main_beat: AtomicU32::new(u32::MAX),
        };
        // The `ok` series exist from the start, so the first attach shows as an increase.
        let ok = [("result", "ok")];
        drop(m.attaches.get_or_create(&ok));
        drop(m.detaches.get_or_create(&ok));
        drop(m.attach_seconds.get_or_create(&ok));
        m
    }
}

/// `ok`, or the error's code (`address_conflict`, `exists`, ...): a small, fixed set.
fn result_label<T>(res: &Result<T, ApiError>) -> &'static str {
    match res {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    }
}

impl ControlMetrics {
    /// Runs an attach, counting it by result and timing it.
    pub fn attach<T>(&self, f: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
        let start = Instant::now();
        let res = f();
        let label = [("result", result_label(&res))];
        self.attach_seconds.get_or_create(&label).observe(start.elapsed().as_secs_f64());
        self.attaches.get_or_create(&label).inc();
        res
    }

    /// Times one phase of an attach or detach (where a CNI ADD or DEL spends its time inside
    /// tapwayd): `attach_allocate`, `attach_interface` (the TAP made and configured in the pod's
    /// netns), `attach_record` (the state file written, the port published), `detach_unplug`
    /// (out of the port table, FDB, neighbours and service flows), `detach_interface` (the
    /// kernel deleting the pod's interface), `detach_record`.
    pub fn phase(&self, phase: &'static str, since: Instant) {
        self.phase_seconds.get_or_create(&[("phase", phase)]).observe(since.elapsed().as_secs_f64());
    }

    /// Counts a detach by result: `ok`, `absent` (nothing was attached: an idempotent DEL) or
    /// the error's code.
    pub fn detach(&self, res: &Result<tapway_api::DetachResult, ApiError>) {
        let label = match res {
            Ok(r) if !r.detached => "absent",
            r => result_label(r),
        };
        self.detaches.get_or_create(&[("result", label)]).inc();
    }

    /// Registers the API watcher's report, called at every scrape (replaces an earlier one).
    /// The watcher calls this once it starts: `ctl.metrics.set_watch(move || state.report())`.
    pub fn set_watch(&self, f: impl Fn() -> WatchReport + Send + Sync + 'static) {
        self.watch.store(Some(Arc::new(Box::new(f))));
    }

    /// Records that tapwayd's main loop (signals, the once-a-second sweeps) still runs.
    pub fn main_beat(&self, now: u32) {
        self.main_beat.store(now, Relaxed);
    }

    /// The latest main-loop beat.
    pub fn last_main_beat(&self) -> u32 {
        self.main_beat.load(Relaxed)
    }
}

/// The registry `/metrics` encodes: the control plane's own metrics plus the collector that
/// reads everything else at scrape time.
pub fn registry(ctl: &Arc<Control>) -> Registry {
    let m = &ctl.metrics;
    let mut r = Registry::with_prefix("tapway");
    r.register(
        "cni_attaches",
        "Attach requests (CNI ADD), by result: ok or the error code",
        m.attaches.clone(),
    );
    r.register(
        "cni_detaches",
        "Detach requests (CNI DEL), by result: ok, absent (nothing attached) or the error code",
        m.detaches.clone(),
    );
    r.register_with_unit(
        "cni_attach_duration",
        "Time an attach request took in tapwayd, by result",
        Unit::Seconds,
        m.attach_seconds.clone(),
    );
    r.register_with_unit(
        "cni_phase_duration",
        "Time a phase of attach or detach took in tapwayd (allocate, interface, record; unplug, interface, record)",
        Unit::Seconds,
        m.phase_seconds.clone(),
    );
    r.register_collector(Box::new(SwitchCollector { ctl: ctl.clone() }));
    r
}

/// Which text format to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text (what Prometheus asks for first).
    OpenMetrics,
}

impl Format {
    /// The format an HTTP `Accept` header asks for: OpenMetrics if it is named, else 0.0.4.
    pub fn from_accept(accept: &str) -> Format {
        if accept.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Encodes `registry` in `format`.
pub fn encode(registry: &Registry, format: Format) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(64 * 1024);
    match format {
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?,
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry)?,
    }
    Ok(out)
}

/// Reads the switch and the control plane at scrape time.
struct SwitchCollector {
    ctl: Arc<Control>,
}

impl fmt::Debug for SwitchCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SwitchCollector")
    }
}

/// Writes one metric family: a descriptor and its samples.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), kind)?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one counter without labels.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<Unit>, v: u64) -> fmt::Result {
    family(enc, name, help, unit, MetricType::Counter, [(Labels::new(), ConstCounter::new(v))])
}

/// Writes one gauge without labels.
fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<Unit>, v: f64) -> fmt::Result {
    family(enc, name, help, unit, MetricType::Gauge, [(Labels::new(), ConstGauge::new(v))])
}

/// The labels naming a port: its number, kind and interface, and for a pod its Kubernetes
/// namespace and name when the runtime passed them (the attach owner).
fn port_labels(p: &PortEntry) -> Labels {
    let mut l: Labels = vec![
        ("port", p.id.to_string().into()),
        ("kind", p.kind.name().into()),
        ("ifname", p.meta.ifname.clone().into()),
    ];
    if let Some(ns) = &p.meta.owner.pod_namespace {
        l.push(("namespace", ns.clone().into()));
    }
    if let Some(pod) = &p.meta.owner.pod_name {
        l.push(("pod", pod.clone().into()));
    }
    l
}

fn with(mut l: Labels, k: &'static str, v: impl Into<Cow<'static, str>>) -> Labels {
    l.push((k, v.into()));
    l
}

/// Names and help of the switch-wide counters; a counter missing here (added later) is still
/// served, as `tapway_switch_<key>_total`.
const SWITCH_COUNTERS: [(&str, &str, &str); 9] = [
    ("fdb_full", "fdb_full", "Source MACs not learned because the FDB was full"),
    ("pool_empty", "pool_empty", "Receive bursts cut short because the frame pool was empty"),
    ("ring_handoffs", "ring_handoff_frames", "Frames handed from one worker to another"),
    ("flooded", "flooded_frames", "Frames flooded (broadcast, multicast, unknown unicast)"),
    ("svc_rejected", "service_rejected_flows", "New service flows answered with RST / ICMP unreachable"),
    (
        "svc_arp_requests",
        "service_arp_requests",
        "New service flows whose backend MAC was unknown (ARP sent)",
    ),
    ("neigh_quota", "neigh_quota", "Neighbours not learned: their port held its --neigh-per-port quota"),
    ("neigh_full", "neigh_full", "Neighbours not learned: the neighbour table was full"),
    ("neigh_foreign", "neigh_foreign", "Neighbours not learned: a pod claimed an address or MAC not its own"),
];

/// Uplink figures that are levels, not counts; every other uplink figure is a counter.
const UPLINK_GAUGES: [&str; 8] = [
    "umem_frames",
    "pool_rx_lent",
    "pool_tx_lent",
    "pool_held",
    "pool_lost",
    "chunks_total",
    "chunks_free",
    "chunks_in_flight",
];

impl Collector for SwitchCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let ctl = &self.ctl;
        let sw = &ctl.switch;
        let table = sw.ports();
        let e = &mut enc;

        family(
            e,
            "info",
            "tapwayd's version (always 1)",
            None,
            MetricType::Gauge,
            [(vec![("version", Cow::Borrowed(env!("CARGO_PKG_VERSION")))], ConstGauge::new(1))],
        )?;
        gauge(e, "uptime", "Seconds since tapwayd started", Some(Unit::Seconds), sw.uptime_secs() as f64)?;

        // Ports.
        let ports: Vec<(&Arc<PortEntry>, Labels)> = table.iter().map(|p| (p, port_labels(p))).collect();
        let per_port = |e: &mut DescriptorEncoder, name: &str, help: &str, unit, f: fn(&PortEntry) -> u64| {
            family(
                e,
                name,
                help,
                unit,
                MetricType::Counter,
                ports.iter().map(|(p, l)| (l.clone(), ConstCounter::new(f(p)))),
            )
        };
        per_port(e, "port_rx_frames", "Frames received from the port", None, |p| {
            p.counters.totals().rx_packets
        })?;
        per_port(e, "port_rx", "Ethernet bytes received from the port", Some(Unit::Bytes), |p| {
            p.counters.totals().rx_bytes
        })?;
        per_port(e, "port_rx_gso_frames", "GSO super-frames among the frames received", None, |p| {
            p.counters.totals().rx_gso_packets
        })?;
        per_port(e, "port_tx_frames", "Frames transmitted on the port (forwarded to it)", None, |p| {
            p.counters.totals().tx_packets
        })?;
        per_port(e, "port_tx", "Ethernet bytes transmitted on the port", Some(Unit::Bytes), |p| {
            p.counters.totals().tx_bytes
        })?;
        family(
            e,
            "port_drops",
            "Frames dropped, by port and reason (rx reasons on the ingress port, tx on the egress)",
            None,
            MetricType::Counter,
            ports.iter().flat_map(|(p, l)| {
                DropReason::ALL.iter().map(move |r| {
                    (with(l.clone(), "reason", r.name()), ConstCounter::new(p.counters.dropped(*r)))
                })
            }),
        )?;
        let kinds = ["host", "pod", "uplink"];
        family(
            e,
            "ports",
            "Ports attached to the switch, by kind",
            None,
            MetricType::Gauge,
            kinds.iter().map(|k| {
                let n = table.iter().filter(|p| p.kind.name() == *k).count();
                (vec![("kind", Cow::Borrowed(*k))], ConstGauge::new(n as i64))
            }),
        )?;

        // Switch-wide counters.
        for (key, v) in sw.counters.to_map() {
            match SWITCH_COUNTERS.iter().find(|(k, _, _)| *k == key) {
                Some((_, name, help)) => counter(e, name, help, None, v)?,
                None => counter(e, &format!("switch_{key}"), &format!("Switch counter {key}"), None, v)?,
            }
        }

        // Workers.
        let workers = || 0..sw.lanes.len();
        family(
            e,
            "worker_busy",
            "Seconds each worker spent in loop iterations that had work; its rate() is the busy fraction",
            Some(Unit::Seconds),
            MetricType::Counter,
            workers().map(|w| {
                let ns = sw.lanes[w].busy_ns.get();
                (vec![("worker", Cow::Owned(w.to_string()))], ConstCounter::new(ns as f64 / 1e9))
            }),
        )?;
        family(
            e,
            "worker_ports",
            "Ports whose receive side each worker owns",
            None,
            MetricType::Gauge,
            workers().map(|w| {
                let n = table.iter().filter(|p| p.worker == w).count();
                (vec![("worker", Cow::Owned(w.to_string()))], ConstGauge::new(n as i64))
            }),
        )?;

        // Tables, pool, services, conntrack, the control socket.
        let services = sw.services.load();
        let (mut backends, mut usable, mut without) = (0usize, 0usize, 0usize);
        for s in services.all.values() {
            backends += s.spec.backends.len();
            usable += s.usable.len();
            without += usize::from(s.usable.is_empty());
        }
        let (pool, ct, conns) = (&sw.pool, &sw.conntrack, &ctl.conns);
        let n = |v: usize| v as f64;
        let gauges: [(&str, &str, f64); 15] = [
            ("fdb_entries", "MAC addresses in the FDB (aged ones until the next sweep)", n(sw.fdb.len())),
            ("fdb_max_entries", "Most MAC addresses the FDB holds", n(sw.fdb.max_entries())),
            ("neighbours", "Neighbours learned from ARP and NDP (backends behind ports)", n(sw.neigh.len())),
            ("pool_frames", "Frame buffers in the pool", n(pool.total())),
            (
                "pool_free_frames",
                "Frame buffers free (in the pool or a worker's cache)",
                n(pool.total().saturating_sub(pool.outstanding())),
            ),
            ("services", "Service ports (VIP, port, protocol) programmed", n(services.all.len())),
            ("service_backends", "Backends over all service ports", n(backends)),
            ("service_usable_backends", "Backends that take new flows, over all service ports", n(usable)),
            ("services_without_backends", "Service ports with no backend that takes new flows", n(without)),
            ("conntrack_entries", "Service flows tracked", n(ct.len())),
            ("conntrack_max_entries", "Most service flows tracked", n(ct.max())),
            (
                "conntrack_per_client_max_entries",
                "Most service flows one client may hold",
                f64::from(ct.per_client()),
            ),
            ("control_connections", "Control socket connections open", n(conns.in_use())),
            ("control_max_connections", "Most control socket connections at once", n(conns.max())),
            (
                "lost_ports",
                "Pod ports whose TAP could not be re-opened after a restart (retried)",
                n(ctl.lost_ports().len()),
            ),
        ];
        for (name, help, v) in gauges {
            gauge(e, name, help, None, v)?;
        }
        let c = &ct.counters;
        let counters: [(&str, &str, &std::sync::atomic::AtomicU64); 9] = [
            ("conntrack_created_flows", "Service flows created", &c.created),
            ("conntrack_expired_flows", "Service flows timed out", &c.expired),
            (
                "conntrack_evicted_flows",
                "Unconfirmed or expired flows removed to make room (table full)",
                &c.evicted,
            ),
            ("conntrack_quota_refused_flows", "New flows refused: their client held its quota", &c.quota),
            (
                "conntrack_full_refused_flows",
                "New flows refused: the table held only confirmed live flows",
                &c.full,
            ),
            (
                "conntrack_backend_flushed_flows",
                "Flows of removed backends or detached pods flushed",
                &c.backend_flushed,
            ),
            (
                "conntrack_backend_ended_flows",
                "TCP flows of removed backends or detached pods ended",
                &c.backend_ended,
            ),
            ("conntrack_resets", "RSTs the service stage sent for ended flows", &c.resets),
            ("affinity_full", "ClientIP affinity pins refused (table full)", &sw.affinity.full),
        ];
        for (name, help, v) in counters {
            counter(e, name, help, None, v.load(Relaxed))?;
        }
        for (key, v) in conns.counters() {
            let name = key.strip_prefix("ctl_").unwrap_or(&key);
            let help = match name {
                "timed_out" => "Control connections cut off at a request or answer deadline",
                "evicted" => "Waiting control connections closed to make room for a new one",
                "refused" => "Control connections refused: every slot busy",
                _ => "Control socket counter",
            };
            counter(e, &format!("control_{name}"), help, None, v)?;
        }

        // The uplink (and any other port with counters of its own).
        let mut up_counters: Vec<(String, Labels, u64)> = Vec::new();
        let mut up_gauges: Vec<(String, Labels, u64)> = Vec::new();
        for (p, _) in &ports {
            for (key, v) in p.io.stats() {
                let key = key.strip_prefix("uplink_").unwrap_or(&key).to_string();
                let base: Labels =
                    vec![("port", p.id.to_string().into()), ("ifname", p.meta.ifname.clone().into())];
                // Per-queue figures: `q<N>_<name>` → `queue_<name>{queue="N"}`.
                let (name, labels) = match key.strip_prefix('q').and_then(|r| r.split_once('_')) {
                    Some((q, rest)) if !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit()) => {
                        (format!("queue_{rest}"), with(base, "queue", q.to_string()))
                    }
                    _ => (key, base),
                };
                if UPLINK_GAUGES.contains(&name.as_str()) {
                    up_gauges.push((name, labels, v));
                } else {
                    up_counters.push((name, labels, v));
                }
            }
        }
        up_counters.sort_by(|a, b| a.0.cmp(&b.0));
        up_gauges.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, rows) in group(up_counters) {
            family(
                e,
                &format!("uplink_{name}"),
                &format!("Uplink counter {name} (see docs/uplink.md)"),
                None,
                MetricType::Counter,
                rows.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
            )?;
        }
        for (name, rows) in group(up_gauges) {
            family(
                e,
                &format!("uplink_{name}"),
                &format!("Uplink level {name} (see docs/uplink.md)"),
                None,
                MetricType::Gauge,
                rows.into_iter().map(|(l, v)| (l, ConstGauge::new(v as f64))),
            )?;
        }

        // The API watcher, once one registered.
        if let Some(watch) = ctl.metrics.watch.load_full() {
            encode_watch(e, &watch())?;
        }
        Ok(())
    }
}

/// Groups sorted (name, labels, value) rows by name.
fn group(rows: Vec<(String, Labels, u64)>) -> Vec<(String, Vec<(Labels, u64)>)> {
    let mut out: Vec<(String, Vec<(Labels, u64)>)> = Vec::new();
    for (name, l, v) in rows {
        match out.last_mut() {
            Some((n, rows)) if *n == name => rows.push((l, v)),
            _ => out.push((name, vec![(l, v)])),
        }
    }
    out
}

fn encode_watch(e: &mut DescriptorEncoder, w: &WatchReport) -> fmt::Result {
    gauge(
        e,
        "watch_connected",
        "1 while the Kubernetes API watch is connected",
        None,
        f64::from(u8::from(w.connected)),
    )?;
    gauge(
        e,
        "watch_state_age",
        "Seconds since the watch connected or lost its connection",
        Some(Unit::Seconds),
        w.state_age_seconds,
    )?;
    if let Some(age) = w.last_event_age_seconds {
        gauge(e, "watch_last_event_age", "Seconds since the last watch event", Some(Unit::Seconds), age)?;
    }
    counter(
        e,
        "watch_errors",
        "Failed API connections, lists and watches (410 Gone included)",
        None,
        w.errors,
    )?;
    let kind = |k: &WatchKind| vec![("kind", Cow::Owned(k.kind.clone()))];
    family(
        e,
        "watch_objects",
        "Objects of each kind held from the API",
        None,
        MetricType::Gauge,
        w.kinds.iter().map(|k| (kind(k), ConstGauge::new(k.objects as f64))),
    )?;
    family(
        e,
        "watch_lists",
        "Full lists of each kind (initial and relists)",
        None,
        MetricType::Counter,
        w.kinds.iter().map(|k| (kind(k), ConstCounter::new(k.lists))),
    )?;
    family(
        e,
        "watch_events",
        "Watch events by kind and type",
        None,
        MetricType::Counter,
        w.kinds.iter().flat_map(|k| {
            k.events.iter().map(move |(t, n)| (with(kind(k), "type", t.clone()), ConstCounter::new(*n)))
        }),
    )
}

#[cfg(test)]
mod tests;
