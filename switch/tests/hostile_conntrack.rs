//! Conntrack against a hostile pod, and flows of removed backends (docs/security.md,
//! "Connection tracking"): a pod flooding a VIP with ACK-only segments from a raw socket only
//! fills its own quota, with unconfirmed short-lived entries, while a neighbour's connection
//! through the same VIP goes on, and into a full table it evicts only unconfirmed entries, never
//! the neighbour's; a UDP flow whose backend is removed moves to the remaining
//! backend; a TCP flow whose backend is removed or detached is reset; and nothing is flooded
//! meanwhile. Needs root; skips (passes) without it.
//!
//! Pod ranges 10.231.130.0/24 .. 10.231.139.0/24; VIPs in 10.96.SUBNET.0/24.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::conntrack::*;
use common::servers::*;
use common::*;
use tapway_api::{
    ConntrackFilter, ConntrackList, ConntrackListRequest, DetachResult, FlowInfo, Op, PortSelector, Protocol,
    SyncResult,
};

const ACK: u8 = 0x10;

fn flows(node: &Node) -> Vec<FlowInfo> {
    let req = ConntrackListRequest { filter: ConntrackFilter::default(), limit: 100_000 };
    node.call::<ConntrackList>(Op::ConntrackList(req)).flows
}

fn client_ip(f: &FlowInfo) -> IpAddr {
    f.client.parse::<SocketAddr>().expect("client address").ip()
}

fn gateway_mac(node: &Node) -> [u8; 6] {
    let host = node.ports().into_iter().find(|p| p.kind == "host").expect("a host port");
    tapway_api::validate::mac(&host.mac).expect("valid MAC")
}

/// Sends `q` from `sock` to `target` until an answer comes; returns the answering backend.
fn ask(node: &Node, sock: &UdpSocket, target: SocketAddr, q: &str) -> String {
    sock.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    let mut buf = [0u8; 512];
    for _ in 0..20 {
        sock.send_to(q.as_bytes(), target).expect("send");
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(from, target, "the answer comes from the VIP");
            let answer = String::from_utf8_lossy(&buf[..n]).to_string();
            let (who, echoed) = answer.split_once(':').expect("ip:payload");
            assert_eq!(echoed, q);
            return who.to_string();
        }
    }
    panic!("no answer to {q}:\n{:#?}", node.stats());
}

#[test]
fn ack_flood_fills_only_its_own_quota() {
    if skip() {
        return;
    }
    let node = Node::start_with("cq", 130, &["--conntrack-per-client", "200"]);
    let backend = node.quiet_pod("cqb");
    let good = node.quiet_pod("cqg");
    let hostile = node.quiet_pod("cqh");
    let _server = tcp_server(&backend, 8080);
    let v = "10.96.130.10";
    node.call::<SyncResult>(Op::ServiceSet(spec(v, 80, Protocol::Tcp, &[&backend], 8080)));
    let (who, mut conn) = tcp_hello(&good, &format!("{v}:80"));
    assert_eq!(who, backend.ip.to_string());
    echo(&mut conn, "before the flood").expect("echo");

    // Thousands of ACK-only segments from as many source ports: each would be a new flow,
    // picked up mid-stream.
    let raw = RawSocket::open(&hostile.ns, hostile.ifindex());
    let (gw, vip): (_, Ipv4Addr) = (gateway_mac(&node), v.parse().expect("vip"));
    let sent = 3000u16;
    for i in 0..sent {
        let seg = tcp_segment((hostile.mac(), gw), (hostile.ip, 10_000 + i), (vip, 80), 7, 7, ACK, b"");
        raw.send(&seg);
        if i % 100 == 99 {
            // The neighbour's connection keeps working all along (and paces the flood).
            echo(&mut conn, &format!("during the flood {i}")).expect("echo during the flood");
        }
    }
    let s = node.wait_stats("the flood over the quota is dropped", |s| {
        drops(port_of(s, hostile.port.id), "conntrack_quota") >= 1000
    });
    assert_eq!(drops(port_of(&s, good.port.id), "conntrack_quota"), 0);
    assert_eq!(s.switch["ct_quota"], drops(port_of(&s, hostile.port.id), "conntrack_quota"));
    assert_eq!(s.switch["ct_evicted"], 0, "nobody's flow was pushed out");
    echo(&mut conn, "after the flood").expect("echo after the flood");
    let (_, mut second) = tcp_hello(&good, &format!("{v}:80"));
    echo(&mut second, "a new connection of the neighbour").expect("echo");

    let all = flows(&node);
    let hostile_flows: Vec<&FlowInfo> =
        all.iter().filter(|f| client_ip(f) == IpAddr::V4(hostile.ip)).collect();
    assert!(!hostile_flows.is_empty() && hostile_flows.len() <= 200, "bounded: {}", hostile_flows.len());
    for f in &hostile_flows {
        // Answered by the backend's RST at most: never confirmed, never long-lived.
        assert!(!f.confirmed && f.expires_in <= 30, "hostile entry {f:?}");
    }
    let good_flows: Vec<&FlowInfo> = all.iter().filter(|f| client_ip(f) == IpAddr::V4(good.ip)).collect();
    assert_eq!(good_flows.len(), 2, "{good_flows:?}");
    for f in good_flows {
        assert!(f.confirmed && f.replied && f.state == "established" && f.expires_in > 30, "{f:?}");
    }
}

#[test]
fn udp_flow_moves_on_when_its_backend_is_removed() {
    if skip() {
        return;
    }
    // IPv6 off on the node and the pods, so no kernel chatters on its own during the count.
    let node = Node::start_prepared("cu", 131, &[], disable_ipv6);
    let backends: Vec<Pod> = (0..2).map(|i| node.quiet_pod(&format!("cub{i}"))).collect();
    let client = node.quiet_pod("cuc");
    let third = node.quiet_pod("cut");
    let _servers: Vec<Server> = backends.iter().map(|b| udp_server(b, 5353)).collect();
    let v = "10.96.131.53";
    let target: SocketAddr = format!("{v}:53").parse().expect("addr");
    node.call::<SyncResult>(Op::ServiceSet(spec(v, 53, Protocol::Udp, &[&backends[0], &backends[1]], 5353)));
    // Both backends answer the client once, so every kernel knows every neighbour before the
    // flooded-frame count is taken.
    let mut seen = BTreeSet::new();
    for i in 0..200 {
        seen.insert(ask(&node, &udp_in(&client.ns, "0.0.0.0:0"), target, &format!("warm{i}")));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both backends answered");

    let sock = udp_in(&client.ns, "0.0.0.0:0");
    let first = ask(&node, &sock, target, "ctmark before");
    let pinned = backends.iter().position(|b| b.ip.to_string() == first).expect("a backend");
    let other = &backends[1 - pinned];
    let tap = PacketTap::open(&third.ns, third.ifindex());
    tap.count(b"ctmark");
    let before = node.stats();

    // Its backend leaves the service (still running): the same socket's next datagrams go to
    // the remaining one.
    node.call::<SyncResult>(Op::ServiceSet(spec(v, 53, Protocol::Udp, &[other], 5353)));
    for i in 0..20 {
        assert_eq!(ask(&node, &sock, target, &format!("ctmark after {i}")), other.ip.to_string());
    }
    let after = node.stats();
    assert_eq!(tap.count(b"ctmark"), 0, "a third pod saw the client's datagrams");
    assert_eq!(after.switch["flooded"], before.switch["flooded"], "nothing was flooded");
    assert!(after.switch["ct_backend_flushed"] >= 1);
    let port = sock.local_addr().expect("local address").port();
    let mine: Vec<FlowInfo> =
        flows(&node).into_iter().filter(|f| f.client.ends_with(&format!(":{port}"))).collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].backend, format!("{}:5353", other.ip));
    assert!(mine[0].replied);
}

/// The next send on `conn` ends in a reset (not a hang, not an answer).
fn assert_reset(conn: &mut std::io::BufReader<std::net::TcpStream>, what: &str) {
    match echo(conn, "ctmark after") {
        Ok(()) => panic!("{what}: the connection still works"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
            ),
            "{what}: {e}"
        ),
    }
}

#[test]
fn tcp_flows_end_when_their_backend_is_removed_or_detached() {
    if skip() {
        return;
    }
    let node = Node::start_prepared("ct", 132, &[], disable_ipv6);
    let backends: Vec<Pod> = (0..2).map(|i| node.quiet_pod(&format!("ctb{i}"))).collect();
    let client = node.quiet_pod("ctc");
    let third = node.quiet_pod("ctt");
    let _servers: Vec<Server> = backends.iter().map(|b| tcp_server(b, 8080)).collect();
    let v = "10.96.132.10";
    node.call::<SyncResult>(Op::ServiceSet(spec(v, 80, Protocol::Tcp, &[&backends[0], &backends[1]], 8080)));
    let mut conns = BTreeMap::new();
    for _ in 0..200 {
        let (who, mut c) = tcp_hello(&client, &format!("{v}:80"));
        echo(&mut c, "hello").expect("echo");
        conns.entry(who).or_insert(c);
        if conns.len() == 2 {
            break;
        }
    }
    assert_eq!(conns.len(), 2, "a connection to each backend");
    let tap = PacketTap::open(&third.ns, third.ifindex());
    tap.count(b"ctmark");
    let before = node.stats();

    // Backend 0 leaves the service: its connection is reset on the client's next send.
    node.call::<SyncResult>(Op::ServiceSet(spec(v, 80, Protocol::Tcp, &[&backends[1]], 8080)));
    let mut c0 = conns.remove(&backends[0].ip.to_string()).expect("connection to backend 0");
    assert_reset(&mut c0, "backend removed from the service");
    let mut c1 = conns.remove(&backends[1].ip.to_string()).expect("connection to backend 1");
    echo(&mut c1, "the other backend's connection goes on").expect("echo");

    // Backend 1's pod is detached (still listed in the service): its connection is reset too.
    let sel = PortSelector { netns: Some(backends[1].ns.path()), container_id: None, ifname: "eth0".into() };
    assert!(node.call::<DetachResult>(Op::Detach(sel)).detached);
    assert_reset(&mut c1, "backend pod detached");

    let after = node.stats();
    assert_eq!(tap.count(b"ctmark"), 0, "a third pod saw the client's segments");
    assert_eq!(after.switch["flooded"], before.switch["flooded"], "nothing was flooded");
    assert!(after.switch["ct_backend_ended"] >= 2, "{:?}", after.switch);
}

#[test]
fn full_table_evicts_only_unconfirmed_flows() {
    if skip() {
        return;
    }
    // Two flows per shard and no quota: the flood fills every shard, so every new flow
    // evicts, and only unconfirmed entries may go.
    let node = Node::start_with("ce", 133, &["--conntrack-max", "128", "--conntrack-per-client", "0"]);
    let backend = node.quiet_pod("ceb");
    let good = node.quiet_pod("ceg");
    let hostile = node.quiet_pod("ceh");
    let _server = tcp_server(&backend, 8080);
    let v = "10.96.133.10";
    node.call::<SyncResult>(Op::ServiceSet(spec(v, 80, Protocol::Tcp, &[&backend], 8080)));
    let (_, mut conn) = tcp_hello(&good, &format!("{v}:80"));
    echo(&mut conn, "before the flood").expect("echo");

    let raw = RawSocket::open(&hostile.ns, hostile.ifindex());
    let (gw, vip): (_, Ipv4Addr) = (gateway_mac(&node), v.parse().expect("vip"));
    for i in 0..3000u16 {
        raw.send(&tcp_segment((hostile.mac(), gw), (hostile.ip, 10_000 + i), (vip, 80), 7, 7, ACK, b""));
        if i % 100 == 99 {
            echo(&mut conn, &format!("during the flood {i}")).expect("echo during the flood");
        }
    }
    node.wait_stats("the flood evicts", |s| s.switch["ct_evicted"] >= 1000);
    echo(&mut conn, "after the flood").expect("echo after the flood");
    let (_, mut second) = tcp_hello(&good, &format!("{v}:80"));
    echo(&mut second, "a new connection of the neighbour").expect("echo");
    let all = flows(&node);
    assert!(all.len() <= 128);
    let mine: Vec<&FlowInfo> = all.iter().filter(|f| client_ip(f) == IpAddr::V4(good.ip)).collect();
    assert_eq!(mine.len(), 2, "the neighbour's flows were never evicted: {mine:?}");
    assert!(mine.iter().all(|f| f.confirmed));
}
