//! Attach against addresses that belong to others, and attach across a kill -9 of tapwayd:
//! through the control API and the real `tapwayctl`, against a real tapwayd. Needs root; skips
//! (passes) without it.
//!
//! Pod ranges: 10.231.120.0/24 .. 10.231.124.0/24 (of the 120..129 this file owns).

mod common;
#[path = "common/nodes.rs"]
mod nodes;

use common::attach::*;
use common::*;
use tapway_api::{ClientError, ErrorCode, IpConfig, Op, Owner, PortInfo};

/// IPv6 pod range of the conflict test's node (nodes are namespaces of their own).
const V6_CIDR: &str = "fd00:231:120::/64";
const V6_GW: &str = "fd00:231:120::1";

/// The attempt: an attach request's MAC and addresses, and what it tries to take.
struct Attempt {
    what: &'static str,
    mac: Option<String>,
    ips: Vec<String>,
}

#[test]
fn attach_refuses_addresses_of_others() {
    if skip() {
        return;
    }
    let _serial = serial();
    let node = Node::start_with("hac", 120, &["--pod-cidr", V6_CIDR]);
    let gw = node.gateway();
    let dual = |ns: &Netns, v4: &str, v6: &str| {
        let mut r = node.attach_request(ns, v4.parse().expect("ip"));
        r.ips.push(IpConfig { address: format!("{v6}/64"), gateway: Some(V6_GW.into()) });
        r
    };
    let victim_ns = Netns::new("hav");
    let victim_req = dual(&victim_ns, "10.231.120.2", "fd00:231:120::2");
    let victim = Pod {
        port: node.call(Op::Attach(victim_req)),
        ip: "10.231.120.2".parse().expect("ip"),
        ns: victim_ns,
    };
    let peer_ns = Netns::new("hap");
    let peer = Pod {
        port: node.call(Op::Attach(dual(&peer_ns, "10.231.120.3", "fd00:231:120::3"))),
        ip: "10.231.120.3".parse().expect("ip"),
        ns: peer_ns,
    };
    let addrs = ["10.231.120.2", "fd00:231:120::2"];
    // The FDB learns the victim from its replies.
    assert_victim_intact(&node, &victim, &peer, &addrs);
    let host_mac = node.ports().into_iter().find(|p| p.kind == "host").expect("host port").mac;
    let ports_before = node.ports().len();

    let fresh = |h: u8| vec![format!("10.231.120.{h}/24")];
    let attempts = [
        Attempt { what: "the victim's IPv4", mac: None, ips: vec!["10.231.120.2/24".into()] },
        Attempt { what: "the victim's IPv4 as a /32", mac: None, ips: vec!["10.231.120.2/32".into()] },
        Attempt {
            what: "the victim's IPv6",
            mac: None,
            ips: vec!["10.231.120.40/24".into(), "fd00:231:120::2/64".into()],
        },
        Attempt { what: "the victim's MAC", mac: Some(victim.port.mac.clone()), ips: fresh(41) },
        Attempt { what: "the IPv4 gateway", mac: None, ips: vec![format!("{gw}/24")] },
        Attempt { what: "the IPv6 gateway", mac: None, ips: vec![format!("{V6_GW}/64")] },
        Attempt { what: "the host port's MAC", mac: Some(host_mac), ips: fresh(42) },
    ];
    for a in &attempts {
        // The control API.
        let ns = Netns::new("haa");
        let mut req = node.attach_request(&ns, "10.231.120.99".parse().expect("ip"));
        req.mac = a.mac.clone();
        req.ips = a.ips.iter().map(|ip| IpConfig { address: ip.clone(), gateway: None }).collect();
        req.owner = Owner { container_id: Some(unique("att")), ..Default::default() };
        let err = node.try_call::<PortInfo>(Op::Attach(req)).expect_err(a.what);
        assert_eq!(err.code, ErrorCode::AddressConflict, "{}: {err}", a.what);
        assert_eq!(ns.links(), vec!["lo"], "{}: nothing made in the attacker's netns", a.what);

        // tapwayctl: exit code 9.
        let path = ns.path();
        let mut args = vec!["attach", "--netns", path.as_str()];
        for ip in &a.ips {
            args.extend_from_slice(&["--ip", ip.as_str()]);
        }
        if let Some(m) = &a.mac {
            args.extend_from_slice(&["--mac", m.as_str()]);
        }
        let out = tapwayctl(&node, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(9), "{}: tapwayctl {args:?}: {stderr}", a.what);
        assert!(stderr.contains("address_conflict"), "{}: {stderr}", a.what);
        assert_eq!(ns.links(), vec!["lo"], "{}: nothing made by tapwayctl either", a.what);
        assert_eq!(node.ports().len(), ports_before, "{}: no port added", a.what);
        assert_victim_intact(&node, &victim, &peer, &addrs);
    }
    victim.ns.ping(&gw);
    victim.ns.ping(V6_GW);
}

#[test]
fn attach_refuses_the_uplinks_mac() {
    if skip() {
        return;
    }
    let _serial = serial();
    let fabric = nodes::Fabric::new("hauf");
    let node = fabric.node("hau", 121, "generic", &[]);
    let uplink = node.ports().into_iter().find(|p| p.kind == "uplink").expect("uplink port");
    let ns = Netns::new("hauv");
    let mut req = node.attach_request(&ns, node.next_ip());
    req.mac = Some(uplink.mac.clone());
    let err = node.try_call::<PortInfo>(Op::Attach(req)).expect_err("took the uplink's MAC");
    assert_eq!(err.code, ErrorCode::AddressConflict, "{err}");
    assert!(err.message.contains("uplink"), "{err}");
    assert_eq!(ns.links(), vec!["lo"]);
}

#[test]
fn concurrent_attaches_cannot_both_take_an_address() {
    if skip() {
        return;
    }
    let _serial = serial();
    let node = Node::start("hacc", 122);
    let ip = node.next_ip();
    let (a, b) = (Netns::new("hacca"), Netns::new("haccb"));
    let reqs = [node.attach_request(&a, ip), node.attach_request(&b, ip)];
    let results: Vec<Result<PortInfo, ClientError>> = std::thread::scope(|s| {
        let handles: Vec<_> = reqs
            .into_iter()
            .map(|r| {
                let client = node.client.clone();
                s.spawn(move || client.call::<PortInfo>(Op::Attach(r)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("attach thread")).collect()
    });
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(ClientError::Api(e)) if e.code == ErrorCode::AddressConflict))
        .count();
    assert_eq!((won, conflicts), (1, 1), "{results:?}");
    let winner = if results[0].is_ok() { &a } else { &b };
    winner.ping(&node.gateway());
}

#[test]
fn attach_retried_after_kill_9_at_each_point_succeeds() {
    if skip() {
        return;
    }
    let _serial = serial();
    let mut node = Node::start("hak", 123);
    let victim = node.quiet_pod("hakv");
    for point in POINTS {
        let ns = Netns::new("hakp");
        let ip = node.next_ip();
        let mut req = node.attach_request(&ns, ip);
        req.owner = Owner { container_id: Some(unique("k9")), ..Default::default() };

        attach_killed_at(&mut node, point, &req);
        let left = ns.links().contains(&"eth0".to_string());
        match point {
            "attach:before_tap" => assert!(!left, "{point}: nothing was made"),
            "attach:after_save" | "attach:after_publish" => {}
            _ => assert!(left, "{point}: the TAP was left behind"),
        }

        node.restart(&[]);
        let restored = node.ports().iter().filter(|p| p.netns == ns.path()).count();
        // The state file is written before the port is published.
        let saved = matches!(point, "attach:after_save" | "attach:after_publish");
        assert_eq!(restored, usize::from(saved), "{point}: only a saved port is restored");
        let port: PortInfo = node
            .client
            .call(Op::Attach(req))
            .unwrap_or_else(|e| panic!("{point}: retried attach failed: {e}\n{}", node.log()));
        let ports: Vec<PortInfo> = node.ports().into_iter().filter(|p| p.netns == ns.path()).collect();
        assert_eq!(ports.len(), 1, "{point}: one port for the pod: {ports:?}");
        assert_eq!(ports[0].id, port.id, "{point}");
        ns.ping(&node.gateway());
        ns.ping(&victim.ip.to_string());
        // Torn down cleanly, so the next point starts from a clean netns.
        let sel =
            tapway_api::PortSelector { netns: Some(ns.path()), container_id: None, ifname: "eth0".into() };
        let d: tapway_api::DetachResult = node.call(Op::Detach(sel));
        assert!(d.detached, "{point}");
        assert_eq!(ns.links(), vec!["lo"], "{point}");
    }
}

#[test]
fn leftover_tap_is_replaced_but_not_someone_elses_interface() {
    if skip() {
        return;
    }
    let _serial = serial();
    let node = Node::start("hal", 124);
    let gw = node.gateway();

    // What a tapwayd killed after configuring leaves: a persistent vnet_hdr TAP that nobody
    // holds, with its address and MAC; made here by hand.
    let left = Netns::new("hall");
    left.ip(&["tuntap", "add", "dev", "eth0", "mode", "tap", "vnet_hdr"]);
    left.ip(&["link", "set", "eth0", "address", "02:aa:00:00:01:24", "up"]);
    left.ip(&["addr", "add", "10.231.124.50/24", "dev", "eth0"]);
    let path = left.path();
    let ip = node.next_ip().to_string();
    let cidr = format!("{ip}/24");
    let out = tapwayctl(&node, &["attach", "--netns", &path, "--ip", &cidr, "--gateway", &gw]);
    assert!(out.status.success(), "attach over a leftover TAP: {}", String::from_utf8_lossy(&out.stderr));
    let addrs = left.ip(&["-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(&cidr) && !addrs.contains("10.231.124.50"), "a fresh interface: {addrs}");
    left.ping(&gw);

    // A veth of that name (the runtime's): exists, exit code 6, and the veth stays.
    let veth = Netns::new("halv");
    veth.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    let vpath = veth.path();
    let vcidr = format!("{}/24", node.next_ip());
    let out = tapwayctl(&node, &["attach", "--netns", &vpath, "--ip", &vcidr]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(veth.ip(&["-d", "link", "show", "eth0"]).contains("veth"), "the veth is still there");

    // A TAP of ours that a process holds open (its carrier is on): not left behind.
    let held = Netns::new("halh");
    let tap = held.enter(|| tapway_switch::port::tap::TapPort::open("eth0", true, true).expect("TAP"));
    let hpath = held.path();
    let hcidr = format!("{}/24", node.next_ip());
    let out = tapwayctl(&node, &["attach", "--netns", &hpath, "--ip", &hcidr]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(held.links().contains(&"eth0".to_string()));
    tap.release().expect("release the held TAP");
    drop(tap);
}
