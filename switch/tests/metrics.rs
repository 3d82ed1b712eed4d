//! `--metrics-address` end to end: a real Prometheus scrapes a real tapwayd while pods exchange
//! traffic, and its query API shows the forwarding rate and a provoked drop with its reason.
//! Root only (network namespaces); needs Debian's `prometheus` (scripts/deps.sh).
//!
//! Subnets 170..=179 (10.231.17x.0/24) belong to this file.

mod common;

use std::process::{Child, Command, Stdio};

use common::metrics::{http_get, Prometheus, METRICS_ADDR};
use common::*;
use tapway_api::{DetachResult, Op, Owner, PortInfo, PortSelector};

/// Attaches a pod namespace with the Kubernetes names the runtime would pass.
fn k8s_pod(node: &Node, tag: &str, namespace: &str, name: &str) -> Pod {
    let ns = Netns::new(tag);
    disable_ipv6(&ns);
    let ip = node.next_ip();
    let mut req = node.attach_request(&ns, ip);
    req.owner = Owner {
        container_id: Some(unique(tag)),
        pod_namespace: Some(namespace.into()),
        pod_name: Some(name.into()),
        ..Default::default()
    };
    let port: PortInfo = node.call(Op::Attach(req));
    Pod { port, ip, ns }
}

/// A ping running in the background, killed on drop.
struct Pinger(Child);

impl Pinger {
    fn start(from: &Netns, to: &str) -> Pinger {
        let child = Command::new("ip")
            .args(["netns", "exec", &from.name, "ping", "-n", "-q", "-i", "0.2", "-w", "300", to])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ping");
        Pinger(child)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_forwarding_and_drops() {
    if skip() {
        return;
    }
    let node = Node::start_with("mtp", 170, &["--metrics-address", METRICS_ADDR]);
    let a = k8s_pod(&node, "mta", "shop", "web-a");
    let b = k8s_pod(&node, "mtb", "shop", "web-b");
    a.ns.ping(&b.ip.to_string());

    // Our own endpoints first.
    assert_eq!(http_get(&node.ns, METRICS_ADDR, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(&node.ns, METRICS_ADDR, "/readyz"), Some((200, "ready\n".to_string())));
    let (status, body) = http_get(&node.ns, METRICS_ADDR, "/metrics").expect("tapwayd serves /metrics");
    assert_eq!(status, 200);
    lint(&body);

    let prom = Prometheus::start(&node.ns);
    let _ping = Pinger::start(&a.ns, &b.ip.to_string());

    // The pods' traffic as Prometheus sees it.
    let rate = prom.wait(r#"rate(tapway_port_tx_frames_total{namespace="shop",pod="web-b"}[5s])"#, |r| {
        r.iter().any(|(_, v)| *v > 0.0)
    });
    let (labels, _) = &rate[0];
    assert_eq!(labels["port"], b.port.id.to_string(), "{labels}");
    assert_eq!(labels["kind"], "pod");
    assert_eq!(labels["ifname"], "eth0");
    prom.wait(r#"rate(tapway_worker_busy_seconds_total[5s])"#, |r| r.iter().any(|(_, v)| *v > 0.0));

    // A spoofed datagram from a's raw socket (b's neighbour, claiming another address) is
    // dropped: b never sees it, and Prometheus shows the drop under its reason.
    let receiver = udp_in(&b.ns, &format!("{}:6170", b.ip));
    let raw = RawSocket::open(&a.ns, a.ifindex());
    let fake: std::net::Ipv4Addr = format!("{}.250", node.prefix).parse().expect("ip");
    for i in 0..3 {
        raw.send(&udp_frame(a.mac(), b.mac(), fake, b.ip, 6170, format!("spoof-{i}").as_bytes()));
    }
    let sender = udp_in(&a.ns, &format!("{}:0", a.ip));
    sender.send_to(b"marker", format!("{}:6170", b.ip)).expect("send the marker");
    let leaked = recv_until(&receiver, b"marker");
    assert!(leaked.is_empty(), "b received spoofed datagrams: {leaked:?}");
    let drops = prom.wait(r#"tapway_port_drops_total{reason="spoofed_ip",pod="web-a"}"#, |r| {
        r.iter().any(|(_, v)| *v >= 3.0)
    });
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(drops[0].0["namespace"], "shop");
    assert_eq!(drops[0].0["port"], a.port.id.to_string());
    assert_eq!(drops[0].1, 3.0, "exactly the spoofed frames were dropped");
    // Nothing else on b's port was dropped, and the daemon's own stats agree.
    let b_drops = prom.query(&format!("sum(tapway_port_drops_total{{port=\"{}\"}})", b.port.id));
    assert_eq!(b_drops.first().map(|r| r.1), Some(0.0), "{b_drops:?}");
    assert_eq!(drops_of(&node, a.port.id, "spoofed_ip"), 3);

    // The attaches were counted and timed; Prometheus had nothing to complain about.
    let attaches = prom.query(r#"tapway_cni_attaches_total{result="ok"}"#);
    assert_eq!(attaches.first().map(|r| r.1), Some(2.0), "{attaches:?}");
    let timed = prom.query(r#"tapway_cni_attach_duration_seconds_count{result="ok"}"#);
    assert_eq!(timed.first().map(|r| r.1), Some(2.0), "{timed:?}");
    for (health, error) in prom.targets() {
        assert_eq!((health.as_str(), error.as_str()), ("up", ""), "scrape target unhealthy");
    }

    // A DEL, then the same DEL again (nothing left to detach), and an ADD of a taken address.
    let sel = PortSelector { netns: Some(b.ns.path()), container_id: None, ifname: "eth0".into() };
    assert!(node.call::<DetachResult>(Op::Detach(sel.clone())).detached);
    assert!(!node.call::<DetachResult>(Op::Detach(sel)).detached);
    let thief = Netns::new("mtt");
    let taken = node.attach_request(&thief, a.ip);
    assert!(node.try_call::<PortInfo>(Op::Attach(taken)).is_err(), "a's address was attached again");
    let (_, body) = http_get(&node.ns, METRICS_ADDR, "/metrics").expect("tapwayd serves /metrics");
    for line in [
        "tapway_cni_detaches_total{result=\"ok\"} 1",
        "tapway_cni_detaches_total{result=\"absent\"} 1",
        "tapway_cni_attaches_total{result=\"address_conflict\"} 1",
        "tapway_ports{kind=\"pod\"} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "no `{line}` in:\n{body}");
    }
}

fn drops_of(node: &Node, port: u16, reason: &str) -> u64 {
    drops(&node.port_stats(port), reason)
}

/// `promtool check metrics`: Prometheus' own linter of an exposition (naming, suffixes, help).
fn lint(body: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) runs");
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_are_off_by_default() {
    if skip() {
        return;
    }
    let node = Node::start("mto", 171);
    assert!(http_get(&node.ns, METRICS_ADDR, "/metrics").is_none(), "something listens without the flag");
    assert!(node.log().contains("ready"), "{}", node.log());
}

#[test]
fn a_taken_metrics_address_stops_tapwayd_with_a_clear_error() {
    if skip() {
        return;
    }
    let ns = Netns::new("mtb");
    let held = ns.enter(|| std::net::TcpListener::bind(METRICS_ADDR).expect("bind in the netns"));
    let dir = std::env::temp_dir().join(unique("mtb"));
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("s.sock");
    let state = dir.join("state");
    let (status, out) = run_daemon(
        &ns,
        &[
            "--socket",
            sock.to_str().expect("utf-8"),
            "--state-dir",
            state.to_str().expect("utf-8"),
            "--pod-cidr",
            "10.231.172.0/24",
            "--metrics-address",
            METRICS_ADDR,
        ],
    );
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "tapwayd started on a taken metrics address:\n{out}");
    assert!(out.contains("serving metrics on 127.0.0.1:9170"), "{out}");
}
