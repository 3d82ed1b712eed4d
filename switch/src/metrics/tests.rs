//! Tests of the exposition (it parses, names follow the conventions, every drop reason and
//! switch counter is there) and of the HTTP endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tapway_api::{ApiError, ErrorCode, Owner};

use super::http::{stale, Endpoints, MetricsServer};
use super::*;
use crate::config::{Args, DaemonConfig};
use crate::port::mem::MemPort;
use crate::stats::PortCounters;
use crate::switch::{Running, Switch, SwitchConfig};
use crate::table::{PortKind, PortMeta, SpoofGuard};
use crate::wire::frame::tests::udp4;
use crate::wire::VNET_HDR_LEN;

/// A running switch with a control plane whose socket would be in `dir`.
struct Rig {
    running: Option<Running>,
    ctl: Arc<Control>,
    dir: PathBuf,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("tapway-metrics-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let cfg = DaemonConfig::resolve(Args::parse_from([
            "tapwayd",
            "--socket",
            sock.to_str().unwrap(),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ]))
        .unwrap();
        let sw = SwitchConfig {
            cores: vec![None, None],
            pool_frames: 256,
            frame_capacity: 2048,
            ..Default::default()
        };
        let running = Switch::start(sw).unwrap();
        let ctl = Arc::new(Control::new(running.switch.clone(), &cfg));
        Rig { running: Some(running), ctl, dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("s.sock")
    }

    /// Publishes a pod port on a memory port, owned by namespace `ns`, pod `pod`.
    fn pod(&self, id: u16, ns: Option<&str>, pod: &str) -> (Arc<MemPort>, Arc<PortEntry>) {
        let io = Arc::new(MemPort::new(64));
        let mac = [2, 0, 0, 0, (id >> 8) as u8, id as u8];
        let ip = format!("10.0.{}.{}/16", id >> 8, id & 0xff).parse().unwrap();
        let entry = Arc::new(PortEntry {
            id,
            kind: PortKind::Pod,
            io: io.clone(),
            mac,
            guard: Some(SpoofGuard::new(mac, &[ip])),
            worker: usize::from(id) % 2,
            counters: PortCounters::default(),
            police: Default::default(),
            meta: PortMeta {
                name: "eth0".into(),
                ifname: "eth0".into(),
                owner: Owner {
                    pod_namespace: ns.map(str::to_string),
                    pod_name: Some(pod.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            },
        });
        self.ctl.switch.update(|t| (t.with(entry.clone()), ()));
        (io, entry)
    }

    fn scrape(&self, format: Format) -> String {
        encode(&registry(&self.ctl), format).unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A parsed exposition: TYPE of each family, and the samples (name, labels, value).
struct Parsed {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// Parses the text format line by line and fails on any line that is not a comment, a
/// HELP/TYPE line or a sample with a numeric value.
fn parse(text: &str) -> Parsed {
    use prometheus_parse::LineInfo;
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Type { metric_name, metric_alias, sample_type } => {
                let name = metric_alias.unwrap_or(metric_name);
                let kind = line.rsplit(' ').next().unwrap().to_string();
                assert_ne!(sample_type, prometheus_parse::SampleType::Untyped, "{line}");
                assert!(types.insert(name, kind).is_none(), "TYPE given twice: {line}");
            }
            LineInfo::Doc { .. } => {}
            LineInfo::Sample { metric_name, labels, value, .. } => {
                let v: f64 = match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
                };
                let labels = labels
                    .map(|l| {
                        l.split("\",")
                            .filter(|kv| !kv.is_empty())
                            .map(|kv| {
                                let (k, v) =
                                    kv.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line}"));
                                (k.to_string(), v.trim_end_matches('"').to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                samples.push((metric_name.to_string(), labels, v));
            }
            LineInfo::Empty => {}
            LineInfo::Ignored if line == "# EOF" || line.starts_with("# UNIT ") => {}
            LineInfo::Ignored => panic!("not in the exposition format: {line:?}"),
        }
    }
    Parsed { types, samples }
}

impl Parsed {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
    }
}

#[test]
fn exposition_parses_and_follows_the_conventions() {
    let rig = Rig::new("names");
    let (_io, p) = rig.pod(3, Some("shop"), "web-1");
    p.counters.at(0).rx_packets.add(7);
    p.counters.at(0).tx_bytes.add(1500);
    p.counters.at(0).drop_frame(DropReason::SpoofedIp);
    let _ = rig.ctl.metrics.attach(|| Err::<(), _>(ApiError::new(ErrorCode::AddressConflict, "taken")));
    let _ = rig.ctl.metrics.attach(|| Ok(()));
    rig.ctl.metrics.detach(&Ok(tapway_api::DetachResult { detached: false }));

    let text = rig.scrape(Format::Prometheus);
    let m = parse(&text);
    assert!(m.samples.len() > 50, "{text}");
    for (name, kind) in &m.types {
        assert!(name.starts_with("tapway_"), "{name} lacks the prefix");
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name} is not snake_case"
        );
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name} does not end in _total"),
            _ => assert!(!name.ends_with("_total"), "{kind} {name} ends in _total"),
        }
        if name.contains("bytes") {
            assert!(name.ends_with("_bytes") || name.ends_with("_bytes_total"), "unit not last: {name}");
        }
        if name.contains("seconds") {
            assert!(name.ends_with("_seconds") || name.ends_with("_seconds_total"), "unit not last: {name}");
        }
    }
    // Every sample belongs to a typed family.
    for (name, _, _) in &m.samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s).filter(|f| m.types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(m.types.contains_key(family), "sample {name} has no TYPE");
    }

    let pod = [("port", "3"), ("kind", "pod"), ("ifname", "eth0"), ("namespace", "shop"), ("pod", "web-1")];
    assert_eq!(m.value("tapway_port_rx_frames_total", &pod), Some(7.0));
    assert_eq!(m.value("tapway_port_tx_bytes_total", &pod), Some(1500.0));
    // Every reason is served for every port, so a first drop shows as an increase.
    for r in DropReason::ALL {
        let want = if r == DropReason::SpoofedIp { 1.0 } else { 0.0 };
        assert_eq!(
            m.value("tapway_port_drops_total", &[("port", "3"), ("reason", r.name())]),
            Some(want),
            "{r:?}"
        );
    }
    // Every switch counter is served, named or not.
    let names: BTreeSet<&str> = m.types.keys().map(String::as_str).collect();
    for key in rig.ctl.switch.counters.to_map().keys() {
        let served = SWITCH_COUNTERS
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, n, _)| format!("tapway_{n}_total"))
            .unwrap_or(format!("tapway_switch_{key}_total"));
        assert!(names.contains(served.as_str()), "switch counter {key} is not served as {served}");
    }
    for name in [
        "tapway_flooded_frames_total",
        "tapway_fdb_entries",
        "tapway_fdb_max_entries",
        "tapway_pool_frames",
        "tapway_pool_free_frames",
        "tapway_worker_busy_seconds_total",
        "tapway_services",
        "tapway_service_backends",
        "tapway_conntrack_entries",
        "tapway_conntrack_created_flows_total",
        "tapway_conntrack_evicted_flows_total",
        "tapway_conntrack_quota_refused_flows_total",
        "tapway_conntrack_resets_total",
        "tapway_neighbours",
        "tapway_neigh_quota_total",
        "tapway_control_connections",
        "tapway_control_refused_total",
        "tapway_lost_ports",
        "tapway_cni_attaches_total",
        "tapway_cni_detaches_total",
        "tapway_cni_attach_duration_seconds",
    ] {
        assert!(names.contains(name), "{name} missing");
    }
    assert_eq!(m.types["tapway_cni_attach_duration_seconds"], "histogram");
    assert_eq!(m.value("tapway_fdb_max_entries", &[]), Some(16384.0));
    assert_eq!(m.value("tapway_pool_frames", &[]), Some(256.0));
    assert_eq!(m.value("tapway_worker_busy_seconds_total", &[("worker", "1")]).map(|v| v >= 0.0), Some(true));
    assert_eq!(m.value("tapway_worker_ports", &[("worker", "1")]), Some(1.0));
    assert_eq!(m.value("tapway_ports", &[("kind", "pod")]), Some(1.0));
    assert_eq!(m.value("tapway_cni_attaches_total", &[("result", "address_conflict")]), Some(1.0));
    assert_eq!(m.value("tapway_cni_attaches_total", &[("result", "ok")]), Some(1.0));
    assert_eq!(m.value("tapway_cni_detaches_total", &[("result", "absent")]), Some(1.0));
    assert_eq!(m.value("tapway_cni_attach_duration_seconds_count", &[("result", "ok")]), Some(1.0));
    assert_eq!(
        m.value("tapway_cni_attach_duration_seconds_bucket", &[("result", "ok"), ("le", "+Inf")]),
        Some(1.0)
    );
    // No watcher registered: no watch metrics.
    assert!(!names.iter().any(|n| n.starts_with("tapway_watch_")));

    // OpenMetrics, when asked for, has the same samples and ends with `# EOF`.
    let om = rig.scrape(Format::OpenMetrics);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# UNIT tapway_port_rx_bytes bytes"), "{om}");
    assert_eq!(parse(&om).value("tapway_port_rx_frames_total", &pod), Some(7.0));
    assert_eq!(
        Format::from_accept("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
        Format::OpenMetrics
    );
    assert_eq!(Format::from_accept("*/*"), Format::Prometheus);
}

#[test]
fn a_pod_without_a_namespace_has_no_empty_labels() {
    let rig = Rig::new("labels");
    rig.pod(4, None, "bare");
    let text = rig.scrape(Format::Prometheus);
    assert!(!text.contains("=\"\""), "empty label value:\n{text}");
    // Before any attach, the `ok` series are already there at 0.
    assert!(text.contains("tapway_cni_attaches_total{result=\"ok\"} 0\n"), "{text}");
    assert!(text.contains("tapway_cni_attach_duration_seconds_count{result=\"ok\"} 0\n"), "{text}");
    assert!(
        text.contains("tapway_port_rx_frames_total{port=\"4\",kind=\"pod\",ifname=\"eth0\",pod=\"bare\"} 0"),
        "{text}"
    );
}

#[test]
fn watch_report_is_served_once_registered() {
    let rig = Rig::new("watch");
    rig.ctl.metrics.set_watch(|| WatchReport {
        connected: true,
        state_age_seconds: 12.0,
        last_event_age_seconds: Some(0.5),
        errors: 2,
        kinds: vec![WatchKind {
            kind: "EndpointSlice".into(),
            objects: 40,
            lists: 3,
            events: vec![("listed".into(), 40), ("applied".into(), 9)],
        }],
    });
    let m = parse(&rig.scrape(Format::Prometheus));
    assert_eq!(m.value("tapway_watch_connected", &[]), Some(1.0));
    assert_eq!(m.value("tapway_watch_state_age_seconds", &[]), Some(12.0));
    assert_eq!(m.value("tapway_watch_last_event_age_seconds", &[]), Some(0.5));
    assert_eq!(m.value("tapway_watch_errors_total", &[]), Some(2.0));
    assert_eq!(m.value("tapway_watch_objects", &[("kind", "EndpointSlice")]), Some(40.0));
    assert_eq!(m.value("tapway_watch_lists_total", &[("kind", "EndpointSlice")]), Some(3.0));
    assert_eq!(
        m.value("tapway_watch_events_total", &[("kind", "EndpointSlice"), ("type", "applied")]),
        Some(9.0)
    );
}

#[test]
fn uplink_style_port_stats_become_counters_and_gauges() {
    struct Nic;
    impl crate::port::PortIo for Nic {
        fn recv_frame(
            &self,
            _: usize,
            _: &mut crate::pool::LocalPool,
        ) -> Result<Option<crate::pool::Frame>, crate::port::PortError> {
            Ok(None)
        }
        fn send(&self, _: usize, _: &[u8]) -> Result<(), crate::port::PortError> {
            Ok(())
        }
        fn readiness_fd(&self, _: usize) -> Option<std::os::fd::RawFd> {
            None
        }
        fn stats(&self) -> Vec<(String, u64)> {
            [("uplink_tx_kicks", 5), ("uplink_chunks_free", 9), ("uplink_q1_rx_frames", 4)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        }
    }
    let rig = Rig::new("uplink");
    let meta = PortMeta { ifname: "eth1".into(), ..Default::default() };
    let entry = Arc::new(PortEntry { meta, ..PortEntry::test(1, PortKind::Uplink, Arc::new(Nic)) });
    rig.ctl.switch.update(|t| (t.with(entry), ()));
    let m = parse(&rig.scrape(Format::Prometheus));
    assert_eq!(m.types["tapway_uplink_tx_kicks_total"], "counter");
    assert_eq!(m.value("tapway_uplink_tx_kicks_total", &[("port", "1"), ("ifname", "eth1")]), Some(5.0));
    assert_eq!(m.types["tapway_uplink_chunks_free"], "gauge");
    assert_eq!(m.value("tapway_uplink_chunks_free", &[]), Some(9.0));
    assert_eq!(m.value("tapway_uplink_queue_rx_frames_total", &[("queue", "1")]), Some(4.0));
}

#[test]
fn workers_count_busy_time_and_beat() {
    let rig = Rig::new("busy");
    let (a, _) = rig.pod(1, None, "a");
    rig.pod(2, None, "b");
    let sw = rig.ctl.switch.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sw.lanes[1].busy_ns.get() == 0 && Instant::now() < deadline {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend(udp4([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [10, 0, 0, 1], [10, 0, 0, 2]));
        a.inject(f);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sw.lanes[1].busy_ns.get() > 0, "port 1's worker (1) never counted busy time");
    let m = parse(&rig.scrape(Format::Prometheus));
    assert!(m.value("tapway_worker_busy_seconds_total", &[("worker", "1")]).unwrap() > 0.0);
    // Both workers went round their loop lately, idle or not.
    let now = sw.now();
    assert!(sw
        .lanes
        .iter()
        .all(|l| now.saturating_sub(l.heartbeat.load(Relaxed)) <= super::http::STALE_SECS));
}

#[test]
fn stale_threads_are_named() {
    let beats = || vec![("worker 0".to_string(), 100), ("the main loop".to_string(), 90)].into_iter();
    assert!(stale(100, beats(), 10).is_empty(), "10 s old is not stale yet");
    assert_eq!(stale(105, beats(), 10), vec!["the main loop has not run for 15 s"]);
    assert!(stale(50, beats(), 10).is_empty(), "a beat ahead of the clock is not stale");
}

/// A plain HTTP/1.0 request; returns (status, body).
fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn healthz_and_readyz_over_http() {
    let rig = Rig::new("http");
    rig.pod(2, Some("default"), "p");
    let ctl_server =
        crate::control::server::Server::start(rig.ctl.clone(), &rig.socket(), Vec::new()).unwrap();
    rig.ctl.metrics.main_beat(rig.ctl.switch.now());
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), rig.ctl.clone(), rig.socket()).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(http(addr, "GET", "/healthz"), (200, "ok\n".into()));
    assert_eq!(http(addr, "GET", "/readyz"), (200, "ready\n".into()));
    let (status, body) = http(addr, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("tapway_port_rx_frames_total{port=\"2\""), "{body}");
    assert_eq!(http(addr, "GET", "/nope").0, 404);
    assert_eq!(http(addr, "POST", "/metrics").0, 405);
    // Without the control socket an ADD would fail: not ready, but still alive.
    ctl_server.stop();
    let (status, body) = http(addr, "GET", "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("control socket does not answer"), "{body}");
    assert_eq!(http(addr, "GET", "/healthz").0, 200);
    server.stop();
    // tiny_http's acceptor closes the listener on its own thread, soon after.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "still listening after stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Before the switch exists (tapwayd waits for the Node's pod range) the probes get answers:
/// alive, not ready and why; then the same socket serves the switch's endpoints.
#[test]
fn the_wait_for_a_pod_range_is_served() {
    let why = "waiting for the pod range: Node n1 has no spec.podCIDRs";
    let server =
        MetricsServer::start_waiting("127.0.0.1:0".parse().unwrap(), std::sync::Arc::new(move || why.into()))
            .unwrap();
    let addr = server.local_addr();
    let (status, body) = http(addr, "GET", "/healthz");
    assert_eq!(status, 200, "a liveness probe must not restart a waiting tapwayd");
    assert!(body.contains(why), "{body}");
    assert_eq!(http(addr, "GET", "/readyz"), (503, format!("{why}\n")));
    let (status, body) = http(addr, "GET", "/metrics");
    assert_eq!(status, 200);
    assert_eq!(parse(&body).samples, vec![("tapway_waiting".to_string(), Default::default(), 1.0)], "{body}");
    let rig = Rig::new("wait");
    rig.pod(2, Some("default"), "p");
    rig.ctl.metrics.main_beat(rig.ctl.switch.now());
    server.serve_control(rig.ctl.clone(), rig.dir.join("missing.sock"));
    assert!(http(addr, "GET", "/metrics").1.contains("tapway_port_rx_frames_total{port=\"2\""));
    let (status, body) = http(addr, "GET", "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("control socket does not answer"), "{body}");
    server.stop();
}

#[test]
fn readyz_reports_not_ready_reasons() {
    let rig = Rig::new("ready");
    let ep = Endpoints::new(rig.ctl.clone(), rig.dir.join("missing.sock"));
    let r = ep.get("/readyz", "");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("does not answer"), "{}", r.body);
    assert_eq!(ep.get("/healthz", "").status, 200);
}

/// Scrape time with 100 pod ports (printed; run with --nocapture to see it).
#[test]
fn scrape_of_100_ports() {
    let rig = Rig::new("scale");
    for id in 1..=100 {
        rig.pod(id, Some("bench"), &format!("pod-{id}"));
    }
    let reg = registry(&rig.ctl);
    let start = Instant::now();
    let rounds = 20;
    let mut len = 0;
    for _ in 0..rounds {
        len = encode(&reg, Format::Prometheus).unwrap().len();
    }
    let per = start.elapsed() / rounds;
    let m = parse(&encode(&reg, Format::Prometheus).unwrap());
    eprintln!("scrape of 100 ports: {per:?}, {len} bytes, {} samples", m.samples.len());
    assert!(m.samples.len() > 100 * (5 + DropReason::ALL.len()));
}
