//! tapwayd following the Kubernetes API (`--kubeconfig`) through the fake API server
//! (kube/fake), with real traffic between pods: the initial list, a MODIFIED EndpointSlice,
//! endpoints and Services deleted, the API server killed and back with its history compacted
//! (410 and a relist), 10,000 Services, a coalesced burst, the pod range from the Node, and
//! `tapwayctl sync` refused while the watch owns the table. Needs root; skips (passes) without
//! it. SUBNETs 150-159; VIPs in 10.96.SUBNET.0/24.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::watch::*;
use common::*;
use tapway_api::Op;
use tapway_fake_apiserver::FakeApiServer;

fn vip(subnet: u8, host: u8) -> String {
    format!("10.96.{subnet}.{host}")
}

/// Starts a node whose tapwayd follows `fake`, served inside the node netns.
/// Where a watched node serves its metrics (inside its own netns).
const WATCH_METRICS: &str = "127.0.0.1:9172";

fn watched_node(tag: &str, subnet: u8, fake: &FakeApiServer) -> Node {
    let kc = kubeconfig_path(tag);
    let kcs = kc.display().to_string();
    let f = fake.clone();
    let args = ["--kubeconfig", &kcs, "--node-name", "n", "--metrics-address", WATCH_METRICS];
    Node::start_prepared(tag, subnet, &args, move |ns| serve_fake_in(ns, &f, &kc))
}

#[test]
fn tapwayctl_links_no_datapath() {
    let out = std::process::Command::new("nm").arg(env!("CARGO_BIN_EXE_tapwayctl")).output();
    let Ok(out) = out else {
        eprintln!("no nm: skipped");
        return;
    };
    let syms = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = syms
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| {
            ["xsk_", "xdp_", "libxdp_", "bpf_"].iter().any(|p| s.starts_with(p))
                || s.contains("tapway_switch")
        })
        .take(5)
        .collect();
    assert!(!syms.is_empty(), "nm printed nothing");
    assert!(bad.is_empty(), "tapwayctl links the datapath: {bad:?}");
    if let Ok(out) = std::process::Command::new("ldd").arg(env!("CARGO_BIN_EXE_tapwayctl")).output() {
        let libs = String::from_utf8_lossy(&out.stdout);
        for lib in ["libxdp", "libbpf", "libelf", "libz."] {
            assert!(!libs.contains(lib), "tapwayctl needs {lib}: {libs}");
        }
    }
}

#[test]
fn follows_services_endpoints_and_converges_after_an_outage() {
    if skip() {
        return;
    }
    let fake = FakeApiServer::new();
    let v = vip(150, 10);
    let b1_ip = "10.231.150.2".to_string();
    let b2_ip = "10.231.150.3".to_string();
    // The initial list: one Service with one endpoint, and one that will go while the API
    // server is down.
    fake.apply_all(vec![
        service("web", "front", &v, 80),
        slice("web", "front-a", "front", std::slice::from_ref(&b1_ip)),
        service("old", "gone", &vip(150, 20), 80),
    ])
    .expect("objects");
    let node = watched_node("kw", 150, &fake);
    let b1 = node.pod("kwb1");
    let b2 = node.pod("kwb2");
    let client = node.pod("kwc");
    assert_eq!((b1.ip.to_string(), b2.ip.to_string()), (b1_ip.clone(), b2_ip.clone()));
    let _t1 = hello_server(&b1);
    let _t2 = hello_server(&b2);
    let _u1 = udp_hello_server(&b1);
    let _u2 = udp_hello_server(&b2);

    // Initial list: the VIP works.
    let st = wait_kube(&node, "the initial sync", |s| s.service_ports == 4 && s.syncs >= 1);
    assert!(st.connected && st.owns_services, "{st:?}");
    assert_eq!(st.objects["Service"], 2);
    assert_eq!(st.objects["EndpointSlice"], 1);
    // The metrics serve the same watch state.
    let (code, text) =
        common::metrics::http_get(&node.ns, WATCH_METRICS, "/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    for want in [
        "tapway_watch_connected 1.0",
        "tapway_watch_objects{kind=\"Service\"} 2.0",
        "tapway_watch_events_total{kind=\"Service\",type=\"listed\"} 2",
    ] {
        assert!(text.lines().any(|l| l == want), "{want} missing from:\n{}", grep_watch(&text));
    }
    let tcp = format!("{v}:80");
    let udp = format!("{v}:53");
    assert_eq!(who_answers(&client, &tcp), b1_ip);
    assert_eq!(who_answers_udp(&client, &udp), b1_ip);

    // A MODIFIED EndpointSlice adds a backend: new flows reach it.
    fake.apply(slice("web", "front-a", "front", &[b1_ip.clone(), b2_ip.clone()])).expect("modify");
    wait_services(&node, "the second backend", |l| {
        l.iter()
            .any(|s| s.spec.key.port == 80 && s.spec.name == "web/front:http" && s.spec.backends.len() == 2)
    });
    let start = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        seen.insert(who_answers(&client, &tcp));
        assert!(start.elapsed() < DEADLINE * 3, "only {seen:?} answered");
    }

    // `tapwayctl sync` and `service set` are refused while the watch owns the table; --force passes.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube-services.json");
    let sock = node.socket.display().to_string();
    let ctl = |args: &[&str]| {
        let mut all = vec!["--socket", sock.as_str()];
        all.extend_from_slice(args);
        run(env!("CARGO_BIN_EXE_tapwayctl"), &all)
    };
    let out = ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status: {out:?}");
    assert!(text.contains("kubernetes http://127.0.0.1:") && text.contains(" connected for "), "{text}");
    assert!(text.contains("Service 2") && text.contains("(owned by the watch)"), "{text}");
    let out = ctl(&["--json", "status"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(json["kube"]["connected"], true, "{json}");
    assert!(json["kube"]["last_event_age_secs"].as_f64().is_some(), "{json}");
    let out = ctl(&["sync", fixture]);
    assert_eq!(out.status.code(), Some(10), "sync refused: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Kubernetes API") && err.contains("--force"), "the refusal says why: {err}");
    let out = ctl(&["service", "delete", &tcp]);
    assert_eq!(out.status.code(), Some(10), "service delete refused: {out:?}");
    assert_eq!(kube_status(&node).service_ports, 4, "nothing changed");
    // Forced, a write goes through; the watch takes it back at its next relist.
    let extra = format!("{}:80", vip(150, 40));
    let out = ctl(&["service", "set", "--force", &extra, "--backend", &format!("{b1_ip}:8080")]);
    assert!(out.status.success(), "service set --force: {out:?}");
    assert_eq!(who_answers(&client, &extra), b1_ip);

    // The API server is killed: traffic keeps flowing and nothing is removed.
    let port = fake.addr().expect("address").port();
    fake.stop();
    wait_kube(&node, "the watch notices the outage", |s| !s.connected && s.last_error.is_some());
    let fresh = who_answers(&client, &tcp);
    assert!(fresh == b1_ip || fresh == b2_ip, "{fresh}");
    assert_eq!(who_answers_udp(&client, &udp).len(), b1_ip.len());
    // While it is down: one Service goes, one comes, and history is compacted, so the watch
    // cannot resume (410) and must list again.
    fake.delete("Service", "old", "gone");
    fake.apply_all(vec![
        service("new", "came", &vip(150, 30), 80),
        slice("new", "came-a", "came", std::slice::from_ref(&b2_ip)),
    ])
    .expect("objects");
    fake.compact();
    let relists_before: u64 = kube_status(&node).relists.values().sum();
    fake.restart(listen_in(&node.ns, port)).expect("restart on the same port");
    let st = wait_kube(&node, "the relist converges", |s| {
        s.connected && s.relists.values().sum::<u64>() > relists_before
    });
    let list = wait_services(&node, "gone went, came came", |l| {
        l.iter().any(|s| s.spec.name == "new/came:http" && s.spec.backends.len() == 1)
            && !l.iter().any(|s| s.spec.name.starts_with("old/"))
    });
    assert!(
        !list.iter().any(|s| s.spec.key.vip.to_string() == vip(150, 40)),
        "the forced service went: {list:?}"
    );
    assert_eq!(who_answers(&client, &format!("{}:80", vip(150, 30))), b2_ip);
    assert!(fake.requests().keys().any(|k| k.ends_with("watch")), "{:?}", fake.requests());
    eprintln!("after the outage: {st:?}");

    // History compacted under open watches: an in-stream ERROR 410, and a relist.
    let relists_before: u64 = st.relists.values().sum();
    fake.compact();
    wait_kube(&node, "the in-stream 410 relists", |s| s.relists.values().sum::<u64>() >= relists_before + 2);
    fake.apply(slice("new", "came-a", "came", std::slice::from_ref(&b1_ip))).expect("modify");
    wait_services(&node, "the change after the relist", |l| {
        l.iter().any(|s| {
            s.spec.name == "new/came:http"
                && s.spec.backends.len() == 1
                && s.spec.backends[0].ip.to_string() == b1_ip
        })
    });

    // The endpoints go: TCP gets an RST, UDP an ICMP port unreachable.
    fake.delete("EndpointSlice", "web", "front-a");
    wait_services(&node, "no backends", |l| {
        l.iter().any(|s| s.spec.name == "web/front:http" && s.spec.backends.is_empty())
    });
    let addr: SocketAddr = tcp.parse().expect("addr");
    let err = client
        .ns
        .enter(move || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map(|_| ()));
    assert_eq!(err.expect_err("connect must fail").kind(), std::io::ErrorKind::ConnectionRefused, "RST");
    let sock = udp_in(&client.ns, "0.0.0.0:0");
    sock.connect(&udp).expect("connect udp");
    sock.send(b"anyone?").expect("send");
    let mut buf = [0u8; 64];
    let err = sock.recv(&mut buf).expect_err("no answer but an ICMP error");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "ICMP port unreachable");
    // The Service goes: so does its VIP.
    fake.delete("Service", "web", "front");
    wait_services(&node, "the Service went", |l| !l.iter().any(|s| s.spec.name.starts_with("web/")));

    // `tapwayctl sync --force` is accepted (it was refused above).
    let out = ctl(&["sync", "--force", fixture]);
    assert!(out.status.success(), "sync --force: {out:?}");
    let forced: Vec<tapway_api::ServiceInfo> = node.call(Op::ServiceList);
    assert!(forced.iter().any(|s| s.spec.name == "default/web:http"), "the forced sync was applied");
}

#[test]
fn pod_range_comes_from_the_node_object() {
    if skip() {
        return;
    }
    let fake = FakeApiServer::new();
    let kc = kubeconfig_path("kn");
    let kcs = kc.display().to_string();
    let f = fake.clone();
    let mut node = start_without_pod_cidr(
        "kn",
        151,
        &["--kubeconfig", &kcs, "--node-name", "node-151", "--metrics-address", WATCH_METRICS],
        move |ns| serve_fake_in(ns, &f, &kc),
    );
    // No Node yet: tapwayd waits, and says so.
    let start = Instant::now();
    while !node.log().contains("waiting for Node node-151") {
        assert!(start.elapsed() < DEADLINE, "no word of the wait:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Meanwhile the socket answers: `status` says not ready and why, attaches are refused.
    wait_open(&mut node);
    let sock = node.socket.display().to_string();
    let ctl =
        |args: &[&str]| run(env!("CARGO_BIN_EXE_tapwayctl"), &[&["--socket", sock.as_str()], args].concat());
    let why = "waiting for the pod range: Node node-151 has no spec.podCIDRs";
    let out = ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("NOT READY: {why}")), "{text}");
    assert!(text.contains("waiting for Node node-151"), "{text}");
    let out = ctl(&["status", "--json"]);
    let st: tapway_api::StatusInfo = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(st.not_ready, vec![why.to_string()], "{st:?}");
    let k = st.kube.as_ref().expect("kube status while waiting");
    assert!(k.waiting.as_deref().is_some_and(|w| w.contains("node-151")), "{k:?}");
    // The probes: alive (a liveness probe must not restart a waiting tapwayd), not ready.
    let get = |node: &Node, path: &str| common::metrics::http_get(&node.ns, WATCH_METRICS, path);
    let (status, body) = get(&node, "/healthz").expect("/healthz answers while waiting");
    assert!(status == 200 && body.contains(why), "{status} {body}");
    assert_eq!(get(&node, "/readyz"), Some((503, format!("{why}\n"))));
    assert!(get(&node, "/metrics").is_some_and(|(s, b)| s == 200 && b.contains("tapway_waiting 1")));
    let waiter = Netns::new("knw");
    let req = node.attach_request(&waiter, "10.231.151.9".parse().expect("ip"));
    let err = node.try_call::<serde_json::Value>(Op::Attach(req)).expect_err("no attach while waiting");
    assert_eq!(err.code, tapway_api::ErrorCode::FailedPrecondition, "{err:?}");
    assert!(err.message.contains(why), "{err:?}");
    drop(waiter);
    // A Node without podCIDRs yet, then with them (dual stack).
    fake.apply(node_object("node-151", &[])).expect("node");
    fake.apply(node_object("other", &["10.231.99.0/24"])).expect("another node");
    fake.apply(node_object("node-151", &["10.231.151.0/24", "fd00:231:151::/64"])).expect("node");
    wait_socket(&mut node);
    let st = node.status();
    assert_eq!(st.pod_cidr.as_deref(), Some("10.231.151.0/24"), "{st:?}");
    assert_eq!(st.gateway.as_deref(), Some("10.231.151.1"));
    let k = st.kube.expect("kube status");
    assert_eq!(k.node.as_deref(), Some("node-151"));
    assert_eq!(k.waiting, None);
    let pod = node.pod("knp");
    pod.ns.ping(&node.gateway());
    let start = Instant::now();
    while get(&node, "/readyz").map(|r| r.0) != Some(200) {
        assert!(start.elapsed() < DEADLINE, "not ready after the range came: {:?}", get(&node, "/readyz"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(get(&node, "/metrics").is_some_and(|(_, b)| b.contains("tapway_port_rx_frames_total")));
}

#[test]
fn ten_thousand_services_and_a_coalesced_burst() {
    if skip() {
        return;
    }
    let fake = FakeApiServer::new();
    let mut objs = Vec::new();
    for i in 0..10_000u32 {
        let name = format!("s{i}");
        let vip = format!("10.97.{}.{}", i / 250, i % 250 + 1);
        objs.push(service("bulk", &name, &vip, 80));
        let ips: Vec<String> = (0..10).map(|j| format!("10.231.152.{}", 10 + (i + j) % 200)).collect();
        objs.push(slice("bulk", &format!("{name}-a"), &name, &ips));
    }
    let v = vip(152, 10);
    objs.push(service("web", "front", &v, 80));
    objs.push(slice("web", "front-a", "front", &["10.231.152.2".to_string()]));
    fake.apply_all(objs).expect("objects");
    let node = watched_node("kt", 152, &fake);
    let backend = node.pod("ktb");
    let client = node.pod("ktc");
    let _t = hello_server(&backend);
    let st = wait_kube(&node, "10,000 services", |s| s.service_ports == 20_002);
    assert!(fake.requests()["Service list"] > 1, "the list was paged: {:?}", fake.requests());
    assert_eq!(who_answers(&client, &format!("{v}:80")), backend.ip.to_string());

    // 100 endpoint changes within a second: far fewer syncs.
    let syncs = st.syncs;
    for n in 1..=100u32 {
        let ips: Vec<String> = (0..n).map(|j| format!("10.231.152.{}", 10 + j)).collect();
        fake.apply(slice("bulk", "s0-a", "s0", &ips)).expect("modify");
    }
    wait_services(&node, "the burst applied", |l| {
        l.iter().any(|s| s.spec.name == "bulk/s0:http" && s.spec.backends.len() == 100)
    });
    let after = kube_status(&node);
    let used = after.syncs - syncs;
    eprintln!("100 EndpointSlice changes → {used} syncs");
    assert!(used <= 25, "100 changes were not coalesced: {used} syncs");
    assert!(after.events["EndpointSlice"] >= 10_101);
}

/// Figures for docs/performance.md (bench/watch.sh runs it): the latency from an
/// EndpointSlice event on the fake API server to the service table the datapath reads, over
/// 100 events, and the watcher's resident memory at 10,000 Services × 10 endpoints.
#[test]
#[ignore]
fn bench_watch_latency_and_memory() {
    if skip() {
        return;
    }
    let make = |i: u32| {
        let name = format!("s{i}");
        let vip = format!("10.97.{}.{}", i / 250, i % 250 + 1);
        let ips: Vec<String> = (0..10).map(|j| format!("10.231.153.{}", 10 + (i + j) % 200)).collect();
        (service("bulk", &name, &vip, 80), slice("bulk", &format!("{name}-a"), &name, &ips))
    };
    let mut objs = Vec::new();
    for i in 0..10_000 {
        let (s, e) = make(i);
        objs.push(s);
        objs.push(e);
    }
    // Memory: the same table through `tapwayctl sync` (no watch) and through the watch.
    let plain = Node::start("kp", 154);
    let rss0 = rss_kib(plain.pid());
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objs.clone()});
    let file = plain.dir.join("bulk.json");
    std::fs::write(&file, list.to_string()).expect("write");
    let out = run(
        env!("CARGO_BIN_EXE_tapwayctl"),
        &["--socket", &plain.socket.display().to_string(), "sync", &file.display().to_string()],
    );
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_secs(2));
    let rss_sync = rss_kib(plain.pid());

    let fake = FakeApiServer::new();
    fake.apply_all(objs).expect("objects");
    let node = watched_node("kb", 153, &fake);
    wait_kube(&node, "10,000 services", |s| s.service_ports == 20_000);
    std::thread::sleep(Duration::from_secs(2));
    let rss_watch = rss_kib(node.pid());
    eprintln!(
        "RSS: idle {} MiB, 10k×10 by sync {} MiB, 10k×10 by watch {} MiB: the watcher adds {} MiB",
        rss0 / 1024,
        rss_sync / 1024,
        rss_watch / 1024,
        (rss_watch.saturating_sub(rss_sync)) / 1024
    );

    // Latency: one new endpoint per event, timed until the watch's sync of it is published
    // (`syncs` goes up once the new table is stored for the workers; status is cheap to poll,
    // unlike a service_list of 20,000 ports).
    let mut lat = Vec::new();
    let mut last = Vec::new();
    for n in 0..100u32 {
        let ips: Vec<String> = (0..11).map(|j| format!("10.231.153.{}", 10 + (n + j) % 240)).collect();
        let before = kube_status(&node).syncs;
        let t = Instant::now();
        fake.apply(slice("bulk", "s7-a", "s7", &ips)).expect("modify");
        wait_kube(&node, "the sync", |s| s.syncs > before);
        lat.push(t.elapsed());
        last = ips;
    }
    let want: std::collections::BTreeSet<String> = last.into_iter().collect();
    wait_services(&node, "the last backends", |l| {
        l.iter().any(|s| {
            s.spec.name == "bulk/s7:http"
                && s.spec.backends.iter().map(|b| b.ip.to_string()).collect::<std::collections::BTreeSet<_>>()
                    == want
        })
    });
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "EndpointSlice event → service table, 100 events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(lat[49]),
        ms(lat[98]),
        ms(lat[99])
    );
}

/// The `tapway_watch_` lines of a scrape (for a failure message).
fn grep_watch(text: &str) -> String {
    text.lines().filter(|l| l.starts_with("tapway_watch_")).collect::<Vec<_>>().join("\n")
}
