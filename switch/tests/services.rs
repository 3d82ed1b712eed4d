//! Service VIP integration tests: a real tapwayd in a node namespace, backend and client pods
//! attached through the control API, real TCP and UDP through VIPs. Needs root; skips (passes)
//! without it.
//!
//! Pod ranges 10.231.51.0/24 .. 10.231.60.0/24 (datapath.rs uses 1..=10, control.rs 21..=37,
//! workers.rs 41); VIPs in 10.96.SUBNET.0/24.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::servers::*;
use common::*;
use tapway_api::{
    Affinity, BackendSpec, ConntrackFilter, ConntrackList, ConntrackListRequest, Op, Protocol, ServiceInfo,
    ServiceKey, ServiceSpec, SyncResult,
};

fn vip(subnet: u8, host: u8) -> String {
    format!("10.96.{subnet}.{host}")
}

fn services(node: &Node) -> BTreeMap<String, ServiceInfo> {
    node.call::<Vec<ServiceInfo>>(Op::ServiceList).into_iter().map(|s| (s.spec.key.to_string(), s)).collect()
}

fn flows(node: &Node, vip: Option<&str>) -> ConntrackList {
    let filter = ConntrackFilter { vip: vip.map(|v| v.parse().expect("vip")), backend: None };
    node.call(Op::ConntrackList(ConntrackListRequest { filter, limit: 0 }))
}

#[test]
fn tcp_vip_spreads_over_every_backend_and_answers_from_the_vip() {
    if skip() {
        return;
    }
    // Two workers: clients and backends are spread over both, so replies come back through
    // the other worker and both must agree on the flows.
    let node = Node::start_with("sv", 51, &["--cores", "0,1"]);
    let backends: Vec<Pod> = (0..3).map(|i| node.pod(&format!("svb{i}"))).collect();
    let client = node.pod("svc");
    let _servers: Vec<Server> = backends.iter().map(|b| tcp_server(b, 8080)).collect();
    let v = vip(51, 10);
    let r: SyncResult =
        node.call(Op::ServiceSet(spec(&v, 80, Protocol::Tcp, &backends.iter().collect::<Vec<_>>(), 8080)));
    assert_eq!(r.added, 1);

    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..60 {
        let (who, mut conn) = tcp_hello(&client, &format!("{v}:80"));
        echo(&mut conn, "ping").expect("echo");
        *seen.entry(who).or_default() += 1;
    }
    let want: BTreeSet<String> = backends.iter().map(|b| b.ip.to_string()).collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), want, "every backend got flows: {seen:?}");

    let s = &services(&node)[&format!("{v}:80/tcp")];
    assert_eq!(s.new_flows, 60);
    assert_eq!(s.backend_stats.iter().map(|b| b.new_flows).sum::<u64>(), 60);
    assert_eq!(s.maglev_size, 401);
    let share: f64 = s.backend_stats.iter().map(|b| b.table_share).sum();
    assert!((share - 1.0).abs() < 1e-9, "the Maglev table is fully assigned: {share}");
    let ct = flows(&node, Some(&v));
    assert_eq!(ct.total, 60, "one tracked flow per connection: {ct:?}");
    assert!(ct.flows.iter().all(|f| f.vip == format!("{v}:80") && f.snat.is_none()));
    // Closed connections went through FIN: their entries move to the short timeout (the last
    // FINs may still be on their way).
    let start = std::time::Instant::now();
    loop {
        let ct = flows(&node, Some(&v));
        if ct.flows.iter().all(|f| f.state == "closing" || f.state == "closed") {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "flows never saw their FIN: {ct:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(node.stats().switch["svc_rejected"], 0);
}

#[test]
fn udp_vip_answers_from_the_vip() {
    if skip() {
        return;
    }
    let node = Node::start("su", 52);
    let backends: Vec<Pod> = (0..2).map(|i| node.pod(&format!("sub{i}"))).collect();
    let client = node.pod("suc");
    let _servers: Vec<Server> = backends.iter().map(|b| udp_server(b, 5353)).collect();
    let v = vip(52, 53);
    node.call::<SyncResult>(Op::ServiceSet(spec(&v, 53, Protocol::Udp, &[&backends[0], &backends[1]], 5353)));
    let target: SocketAddr = format!("{v}:53").parse().expect("addr");
    let mut seen = BTreeSet::new();
    for i in 0..40 {
        let sock = udp_in(&client.ns, "0.0.0.0:0");
        let q = format!("q{i}");
        let mut answer = None;
        for _ in 0..5 {
            sock.send_to(q.as_bytes(), target).expect("send");
            sock.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
            let mut buf = [0u8; 512];
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                assert_eq!(from, target, "the answer comes from the VIP, not the backend");
                answer = Some(String::from_utf8_lossy(&buf[..n]).to_string());
                break;
            }
        }
        let answer = answer.unwrap_or_else(|| panic!("no answer to {q}:\n{:#?}", node.stats()));
        let (who, echoed) = answer.split_once(':').expect("ip:payload");
        assert_eq!(echoed, q);
        seen.insert(who.to_string());
    }
    assert_eq!(seen.len(), 2, "both backends answered: {seen:?}");
    let ct = flows(&node, Some(&v));
    assert!(ct.flows.iter().all(|f| f.state == "udp" && f.protocol == Protocol::Udp));
}

#[test]
fn long_lived_connection_survives_backend_changes() {
    if skip() {
        return;
    }
    let node = Node::start("sl", 53);
    let pods: Vec<Pod> = (0..3).map(|i| node.pod(&format!("slb{i}"))).collect();
    let client = node.pod("slc");
    let _servers: Vec<Server> = pods.iter().map(|b| tcp_server(b, 8080)).collect();
    let v = vip(53, 10);
    node.call::<SyncResult>(Op::ServiceSet(spec(&v, 80, Protocol::Tcp, &[&pods[0], &pods[1]], 8080)));
    let (first, mut conn) = tcp_hello(&client, &format!("{v}:80"));
    echo(&mut conn, "before").expect("echo");
    let pinned = pods.iter().position(|p| p.ip.to_string() == first).expect("a known backend");
    let other = 1 - pinned; // the other one of the first two

    // A backend added and the other removed: the connection goes on.
    node.call::<SyncResult>(Op::ServiceSet(spec(&v, 80, Protocol::Tcp, &[&pods[pinned], &pods[2]], 8080)));
    echo(&mut conn, "after an add and a remove").expect("echo");
    // Its own backend terminating (still listed, as Kubernetes keeps a terminating endpoint
    // until the pod is gone): existing flows keep going (graceful). Removing it from the
    // list would end them (hostile_conntrack.rs).
    let mut s = spec(&v, 80, Protocol::Tcp, &[&pods[pinned], &pods[2]], 8080);
    s.backends[0].ready = false;
    s.backends[0].terminating = true;
    let r: SyncResult = node.call(Op::ServiceSet(s));
    assert_eq!(r.updated, 1);
    echo(&mut conn, "after its backend started terminating").expect("echo");
    // New connections only go to the remaining backend.
    for _ in 0..10 {
        let (who, _c) = tcp_hello(&client, &format!("{v}:80"));
        assert_eq!(who, pods[2].ip.to_string());
    }
    // Terminating backends get no new flows while a ready one exists.
    let mut s = spec(&v, 80, Protocol::Tcp, &[&pods[other], &pods[2], &pods[pinned]], 8080);
    for b in &mut s.backends[1..] {
        b.ready = false;
        b.terminating = true;
    }
    node.call::<SyncResult>(Op::ServiceSet(s));
    for _ in 0..10 {
        let (who, _c) = tcp_hello(&client, &format!("{v}:80"));
        assert_eq!(who, pods[other].ip.to_string(), "no new flows to a terminating backend");
    }
    echo(&mut conn, "still alive").expect("echo");
}

#[test]
fn hairpin_a_backend_reaches_itself_through_the_vip() {
    if skip() {
        return;
    }
    let node = Node::start("sh", 54);
    let pod = node.pod("shp");
    let _server = tcp_server(&pod, 8080);
    let v = vip(54, 10);
    node.call::<SyncResult>(Op::ServiceSet(spec(&v, 80, Protocol::Tcp, &[&pod], 8080)));
    for i in 0..5 {
        let (who, mut conn) = tcp_hello(&pod, &format!("{v}:80"));
        assert_eq!(who, pod.ip.to_string());
        echo(&mut conn, &format!("hairpin {i}")).expect("echo");
    }
    let ct = flows(&node, Some(&v));
    assert_eq!(ct.total, 5);
    assert!(
        ct.flows.iter().all(|f| f.snat.as_deref().is_some_and(|s| s.starts_with(&node.gateway()))),
        "hairpin flows are SNATed to the gateway: {ct:?}"
    );
}

#[test]
fn client_ip_affinity_pins_a_client() {
    if skip() {
        return;
    }
    let node = Node::start("sa", 55);
    let pods: Vec<Pod> = (0..3).map(|i| node.pod(&format!("sab{i}"))).collect();
    let clients: Vec<Pod> = (0..3).map(|i| node.pod(&format!("sac{i}"))).collect();
    let _servers: Vec<Server> = pods.iter().map(|b| tcp_server(b, 8080)).collect();
    let v = vip(55, 10);
    let mut s = spec(&v, 80, Protocol::Tcp, &pods.iter().collect::<Vec<_>>(), 8080);
    s.affinity = Affinity::ClientIp { timeout: 10_800 };
    node.call::<SyncResult>(Op::ServiceSet(s));
    for c in &clients {
        let (first, _) = tcp_hello(c, &format!("{v}:80"));
        for _ in 0..15 {
            let (who, _) = tcp_hello(c, &format!("{v}:80"));
            assert_eq!(who, first, "client {} stays on its backend", c.ip);
        }
    }
}

#[test]
fn no_endpoints_means_rst_and_icmp_unreachable() {
    if skip() {
        return;
    }
    let node = Node::start("sn", 56);
    let client = node.pod("snc");
    let v = vip(56, 10);
    node.call::<SyncResult>(Op::ServiceSet(spec(&v, 80, Protocol::Tcp, &[], 8080)));
    node.call::<SyncResult>(Op::ServiceSet(spec(&v, 53, Protocol::Udp, &[], 53)));
    let addr: SocketAddr = format!("{v}:80").parse().expect("addr");
    let err = client
        .ns
        .enter(move || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map(|_| ()));
    assert_eq!(err.expect_err("connect must fail").kind(), std::io::ErrorKind::ConnectionRefused, "RST");

    let sock = udp_in(&client.ns, "0.0.0.0:0");
    sock.connect(format!("{v}:53")).expect("connect udp");
    sock.send(b"anyone?").expect("send");
    let mut buf = [0u8; 64];
    let err = sock.recv(&mut buf).expect_err("no answer but an ICMP error");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "ICMP port unreachable");
    let list = services(&node);
    assert!(list[&format!("{v}:80/tcp")].rejected >= 1);
    assert!(list[&format!("{v}:53/udp")].rejected >= 1);
    assert!(node.stats().switch["svc_rejected"] >= 2);
}

#[test]
fn services_survive_a_restart_and_flows_resume() {
    if skip() {
        return;
    }
    let mut node = Node::start("sr", 57);
    let backend = node.pod("srb");
    let client = node.pod("src");
    let _server = tcp_server(&backend, 8080);
    let v = vip(57, 10);
    node.call::<SyncResult>(Op::ServiceSet(spec(&v, 80, Protocol::Tcp, &[&backend], 8080)));
    let (_, mut conn) = tcp_hello(&client, &format!("{v}:80"));
    echo(&mut conn, "before restart").expect("echo");
    node.restart(&[]);
    assert_eq!(services(&node).len(), 1, "the service table came back from the state file");
    // Conntrack was lost with the process; the next segment is picked up mid-stream and, the
    // backend set being the same, Maglev places it on the same backend.
    echo(&mut conn, "after restart").expect("echo");
    let (who, _) = tcp_hello(&client, &format!("{v}:80"));
    assert_eq!(who, backend.ip.to_string());
}

#[test]
fn sync_from_kubectl_json_is_idempotent() {
    if skip() {
        return;
    }
    let node = Node::start("sy", 58);
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube-services.json");
    let sock = node.socket.display().to_string();
    let ctl = |args: &[&str]| {
        let mut all = vec!["--socket", sock.as_str(), "--json"];
        all.extend_from_slice(args);
        run(env!("CARGO_BIN_EXE_tapwayctl"), &all)
    };
    let out = ctl(&["sync", fixture]);
    assert!(out.status.success(), "sync: {}", String::from_utf8_lossy(&out.stderr));
    let first: SyncResult = serde_json::from_slice(&out.stdout).expect("sync result");
    assert!(first.added > 0 && first.removed == 0, "{first:?}");
    let skipped = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(skipped.contains("skipped"), "unsupported objects are reported: {skipped}");
    let again: SyncResult = serde_json::from_slice(&ctl(&["sync", fixture]).stdout).expect("sync result");
    assert_eq!((again.added, again.updated, again.removed), (0, 0, 0), "a second sync changes nothing");
    assert_eq!(again.unchanged, first.added);
    assert_eq!(services(&node).len(), first.added);
    // An empty list removes everything.
    let empty = node.dir.join("empty.json");
    std::fs::write(&empty, r#"{"apiVersion":"v1","kind":"List","items":[]}"#).expect("write");
    let gone: SyncResult =
        serde_json::from_slice(&ctl(&["sync", &empty.display().to_string()]).stdout).expect("sync result");
    assert_eq!(gone.removed, first.added);
    assert!(services(&node).is_empty());
}

#[test]
fn ten_thousand_services_program_in_one_sync() {
    if skip() {
        return;
    }
    let node = Node::start("sk", 59);
    let client = node.pod("skc");
    let backend = node.pod("skb");
    let _server = tcp_server(&backend, 8080);
    let mut list: Vec<ServiceSpec> = (0..10_000u32)
        .map(|i| ServiceSpec {
            name: format!("bulk/s{i}"),
            key: ServiceKey {
                vip: std::net::Ipv4Addr::from(0x0a60_0000 + i + 256).into(),
                port: 80,
                protocol: Protocol::Tcp,
            },
            affinity: Affinity::None,
            backends: (0..10u32)
                .map(|j| BackendSpec::ready(std::net::Ipv4Addr::from(0x0af4_0000 + i * 10 + j).into(), 8080))
                .collect(),
        })
        .collect();
    // One real service among them, served by a real pod.
    list[0].backends = vec![BackendSpec::ready(backend.ip.into(), 8080)];
    let v = list[0].key.vip.to_string();
    let r: SyncResult = node.call(Op::ServiceSync(tapway_api::ServiceSync { services: list.clone() }));
    assert_eq!(r.added, 10_000);
    eprintln!("10,000 services × 10 backends programmed in {} µs (debug build)", r.elapsed_us);
    let (who, _) = tcp_hello(&client, &format!("{v}:80"));
    assert_eq!(who, backend.ip.to_string());
    let r: SyncResult = node.call(Op::ServiceSync(tapway_api::ServiceSync { services: list }));
    assert_eq!((r.unchanged, r.added, r.updated), (10_000, 0, 0));
}

#[test]
fn bulk_tcp_through_a_vip_keeps_super_frames_valid() {
    if skip() {
        return;
    }
    let node = Node::start_with("sg", 60, &["--cores", "0,1"]);
    let backend = node.pod("sgb");
    let client = node.pod("sgc");
    let v = vip(60, 10);
    node.call::<SyncResult>(Op::ServiceSet(spec(&v, 90, Protocol::Tcp, &[&backend], 9000)));
    let mib = 64;
    let listener = tcp_listen_in(&backend.ns, "0.0.0.0:9000");
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(io_timeout()).expect("timeout");
        let pattern = Pattern::new(7);
        let (mut want, mut got) = (Vec::new(), vec![0u8; Pattern::CHUNK]);
        for n in 0..mib {
            conn.read_exact(&mut got).unwrap_or_else(|e| panic!("receiver: chunk {n}: {e}"));
            pattern.chunk(n, &mut want);
            assert!(got == want, "chunk {n} differs after DNAT");
        }
        conn.write_all(b"done").expect("reply");
    });
    let mut conn = tcp_connect_in(&client.ns, &format!("{v}:90"));
    let pattern = Pattern::new(7);
    let mut buf = Vec::new();
    for n in 0..mib {
        pattern.chunk(n, &mut buf);
        conn.write_all(&buf).expect("send");
    }
    let mut done = [0u8; 4];
    conn.read_exact(&mut done).expect("the reply comes back through reverse NAT");
    assert_eq!(&done, b"done");
    receiver.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    let st = node.port_stats(client.port.id);
    assert!(st.rx_gso_packets > 0, "the client sent super-frames through the VIP: {st:?}");
    assert!(st.drops.is_empty(), "{st:?}");
}

#[test]
fn host_network_backend_is_reached_through_the_node() {
    if skip() {
        return;
    }
    // Like the `kubernetes` Service, whose backend is the API server on a node address.
    let node = Node::start("sx", 61);
    node.ns.ip(&["addr", "add", "192.168.231.1/32", "dev", "lo"]);
    let client = node.pod("sxc");
    let listener = tcp_listen_in(&node.ns, "192.168.231.1:6443");
    let server = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut c, _) = listener.accept().expect("accept");
            c.write_all(b"node\n").expect("greet");
        }
    });
    let v = vip(61, 1);
    let s = ServiceSpec {
        name: "default/kubernetes:https".into(),
        key: ServiceKey { vip: v.parse().expect("vip"), port: 443, protocol: Protocol::Tcp },
        affinity: Affinity::None,
        backends: vec![BackendSpec::ready("192.168.231.1".parse().expect("ip"), 6443)],
    };
    node.call::<SyncResult>(Op::ServiceSet(s));
    for _ in 0..3 {
        let (who, _) = tcp_hello(&client, &format!("{v}:443"));
        assert_eq!(who, "node");
    }
    server.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
}

/// Attaches a dual-stack pod (`10.231.62.N/24` and `fd00:231:62::N/64`).
fn dual_stack_pod(node: &Node, tag: &str) -> (Pod, String) {
    let ns = Netns::new(tag);
    let ip = node.next_ip();
    let v6 = format!("fd00:231:62::{}", ip.octets()[3]);
    let mut req = node.attach_request(&ns, ip);
    req.ips
        .push(tapway_api::IpConfig { address: format!("{v6}/64"), gateway: Some("fd00:231:62::1".into()) });
    let port: tapway_api::PortInfo = node.call(Op::Attach(req));
    (Pod { port, ip, ns }, v6)
}

#[test]
fn ipv6_vips_work_like_ipv4() {
    if skip() {
        return;
    }
    let node = Node::start_with("s6", 62, &["--pod-cidr", "fd00:231:62::/64"]);
    let (b0, b0v6) = dual_stack_pod(&node, "s6b0");
    let (b1, b1v6) = dual_stack_pod(&node, "s6b1");
    let (client, _) = dual_stack_pod(&node, "s6c");
    // TCP servers on [::]:8080 (dual-stack sockets answer on the IPv6 address too).
    let _servers: Vec<Server> = [&b0, &b1].iter().map(|b| tcp_server_at(b, "[::]:8080")).collect();
    let vip6 = "fd00:96:62::10";
    let mk = |port, protocol, backends: Vec<(&str, u16)>| ServiceSpec {
        name: "test/v6".into(),
        key: ServiceKey { vip: vip6.parse().expect("vip"), port, protocol },
        affinity: Affinity::None,
        backends: backends.iter().map(|(ip, p)| BackendSpec::ready(ip.parse().expect("ip"), *p)).collect(),
    };
    node.call::<SyncResult>(Op::ServiceSet(mk(80, Protocol::Tcp, vec![(&b0v6, 8080), (&b1v6, 8080)])));
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let (who, mut conn) = tcp_hello(&client, &format!("[{vip6}]:80"));
        echo(&mut conn, "v6").expect("echo");
        seen.insert(who);
    }
    assert_eq!(seen, [b0.ip.to_string(), b1.ip.to_string()].into(), "both IPv6 backends reached");
    let ct = flows(&node, Some(vip6));
    assert_eq!(ct.total, 30);
    assert!(ct.flows.iter().all(|f| f.vip == format!("[{vip6}]:80")), "{ct:?}");

    // No endpoints: RST for TCP, ICMPv6 port unreachable for UDP.
    node.call::<SyncResult>(Op::ServiceSet(mk(81, Protocol::Tcp, vec![])));
    node.call::<SyncResult>(Op::ServiceSet(mk(53, Protocol::Udp, vec![])));
    let addr: SocketAddr = format!("[{vip6}]:81").parse().expect("addr");
    let err = client
        .ns
        .enter(move || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map(|_| ()));
    assert_eq!(err.expect_err("refused").kind(), std::io::ErrorKind::ConnectionRefused);
    let sock = udp_in(&client.ns, "[::]:0");
    sock.connect(format!("[{vip6}]:53")).expect("connect udp");
    sock.send(b"anyone?").expect("send");
    let mut buf = [0u8; 64];
    let err = sock.recv(&mut buf).expect_err("ICMPv6 error");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "ICMPv6 port unreachable");

    // Hairpin over IPv6: SNAT to the IPv6 gateway.
    node.call::<SyncResult>(Op::ServiceSet(mk(82, Protocol::Tcp, vec![(&b0v6, 8080)])));
    let (who, mut conn) = tcp_hello(&b0, &format!("[{vip6}]:82"));
    assert_eq!(who, b0.ip.to_string());
    echo(&mut conn, "hairpin v6").expect("echo");
    let hp = flows(&node, Some(vip6));
    assert!(
        hp.flows.iter().any(|f| f.snat.as_deref().is_some_and(|s| s.starts_with("[fd00:231:62::1]"))),
        "{hp:?}"
    );
}

#[test]
fn the_node_itself_reaches_vips_with_a_service_cidr() {
    if skip() {
        return;
    }
    let node = Node::start_with("sz", 63, &["--service-cidr", "10.96.63.0/24"]);
    let route = node.ns.ip(&["route", "show", "10.96.63.0/24"]);
    assert!(route.contains("dev tapway0"), "the service range is routed into the host port: {route}");
    let backend = node.pod("szb");
    let _server = tcp_server(&backend, 8080);
    let v = vip(63, 10);
    node.call::<SyncResult>(Op::ServiceSet(spec(&v, 80, Protocol::Tcp, &[&backend], 8080)));
    // A host-network client (the node netns itself): ARP for the VIP is answered by the switch.
    for i in 0..3 {
        let (who, mut conn) = tcp_hello_from(&node.ns, &format!("{v}:80"));
        assert_eq!(who, backend.ip.to_string());
        echo(&mut conn, &format!("from the node {i}")).expect("echo");
    }
    let ct = flows(&node, Some(&v));
    assert!(ct.flows.iter().all(|f| f.client.starts_with(&node.gateway())), "{ct:?}");
}
