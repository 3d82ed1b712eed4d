//! Hostile pods against neighbour discovery and MAC learning (issue 12): forged neighbour
//! advertisements, router advertisements, floods of NDP from addresses a pod does not own, and
//! a pod's MAC sent from the host port. Each attack is real frames from a raw socket; the
//! assertions are on the neighbours (their `ip -6 neigh`, routes, addresses, traffic) and on
//! the drop counters. Needs root; skips (passes) without it.
//!
//! Pod ranges: 10.231.100.0/24 .. 10.231.104.0/24 with fd00:231:100::/64 .. fd00:231:104::/64.

mod common;

use std::net::Ipv6Addr;

use common::learn::*;
use common::*;
use tapway_api::validate::format_mac;
use tapway_switch::wire::ndp::{eui64_link_local, na_flags, NdpRepr};

/// A forged, unsolicited override advertisement of `target` at `mac`.
fn forged_na(target: Ipv6Addr, mac: [u8; 6]) -> NdpRepr {
    NdpRepr::NeighborAdvert { flags: na_flags::OVERRIDE, target, target_lladdr: Some(mac) }
}

#[test]
fn forged_neighbour_advertisements_do_not_poison_neighbours() {
    if skip() {
        return;
    }
    let n = DualNode::start("na", 100);
    let (a, b, c) = (n.pod("naa", 0xa), n.pod("nab", 0xb), n.pod("nac", 0xc));
    // B knows C and the gateway first.
    b.ns().ping(&c.ip6.to_string());
    b.ns().ping(&n.gw6.to_string());
    let c_ll = link_local(c.ns());
    let host_ll = eui64_link_local(&n.host_mac);
    let want_c = neigh_lladdr(b.ns(), &c.ip6).expect("B has a neighbour entry for C");
    let want_gw = neigh_lladdr(b.ns(), &n.gw6).expect("B has a neighbour entry for the gateway");
    assert_eq!(want_c, format_mac(&c.mac()));
    assert_eq!(want_gw, format_mac(&n.host_mac));
    let before = n.node.port_stats(a.id());

    // A claims C's and the gateway's addresses (global and link-local), from its own global and
    // link-local sources, to all nodes: what a pod with CAP_NET_RAW can do.
    let raw = RawSocket::open(a.ns(), a.pod.ifindex());
    let a_ll = link_local(a.ns());
    let mut ndp_spoofed = 0;
    for target in [c.ip6, n.gw6, c_ll, host_ll] {
        for src in [a.ip6, a_ll] {
            raw.send(&ndp_frame(forged_na(target, a.mac()), a.mac(), src, ALL_NODES.0, ALL_NODES.1));
            // The same without the option: the Ethernet source then speaks for it.
            let bare = NdpRepr::NeighborAdvert { flags: na_flags::OVERRIDE, target, target_lladdr: None };
            raw.send(&ndp_frame(bare, a.mac(), src, ALL_NODES.0, ALL_NODES.1));
            ndp_spoofed += 2;
        }
        // Unicast to B, as if answering B's solicitation.
        let solicited = NdpRepr::NeighborAdvert {
            flags: na_flags::OVERRIDE | na_flags::SOLICITED,
            target,
            target_lladdr: Some(a.mac()),
        };
        raw.send(&ndp_frame(solicited, a.mac(), a.ip6, &b.ip6.to_string(), b.mac()));
        ndp_spoofed += 1;
    }
    // Its own address with a MAC that is not its own (C's): redirects C's traffic to nowhere.
    raw.send(&ndp_frame(forged_na(a.ip6, c.mac()), a.mac(), a.ip6, ALL_NODES.0, ALL_NODES.1));
    ndp_spoofed += 1;
    // From C's address itself: caught by the source check already.
    raw.send(&ndp_frame(forged_na(c.ip6, a.mac()), a.mac(), c.ip6, ALL_NODES.0, ALL_NODES.1));

    let stats = n.node.wait_stats("forged NAs counted", |s| {
        let p = port_of(s, a.id());
        drops(p, "ndp_spoofed") >= drops(&before, "ndp_spoofed") + ndp_spoofed
            && drops(p, "spoofed_ip") > drops(&before, "spoofed_ip")
    });
    let after = port_of(&stats, a.id());
    assert_eq!(drops(after, "ndp_spoofed") - drops(&before, "ndp_spoofed"), ndp_spoofed, "{after:?}");
    assert_eq!(drops(after, "spoofed_ip") - drops(&before, "spoofed_ip"), 1, "{after:?}");
    // B still believes what is true, and still reaches C and the gateway.
    assert_eq!(neigh_lladdr(b.ns(), &c.ip6).as_deref(), Some(want_c.as_str()));
    assert_eq!(neigh_lladdr(b.ns(), &n.gw6).as_deref(), Some(want_gw.as_str()));
    b.ns().ping(&c.ip6.to_string());
    b.ns().ping(&n.gw6.to_string());
    assert_eq!(neigh_lladdr(b.ns(), &c.ip6).as_deref(), Some(want_c.as_str()));
    // So does the node: its entry for C is C's MAC.
    let node_c = n.node.ns.ip(&["-6", "neigh", "show", &c.ip6.to_string()]);
    assert!(!node_c.contains(&a.pod.port.mac), "the node believes C is at A's MAC: {node_c}");
    // Nobody else dropped anything: the attack stopped at A's port.
    for p in n.node.stats().ports.iter().filter(|p| p.id != a.id()) {
        assert!(p.drops.is_empty(), "port {} dropped frames: {:?}", p.id, p.drops);
    }
}

#[test]
fn router_advertisements_from_pods_are_dropped() {
    if skip() {
        return;
    }
    let n = DualNode::start("ra", 101);
    let (a, b) = (n.pod("raa", 0xa), n.pod("rab", 0xb));
    let a_ll = link_local(a.ns());
    link_local(b.ns());
    let (routes, addrs) = (routes6(b.ns()), addrs6(b.ns()));
    assert!(!routes.contains("proto ra"), "{routes}");
    let before = n.node.port_stats(a.id());

    let raw = RawSocket::open(a.ns(), a.pod.ifindex());
    let prefix: Ipv6Addr = "fd00:dead:101::".parse().expect("prefix");
    for _ in 0..5 {
        raw.send(&router_advert(a.mac(), a_ll, prefix));
    }
    // A redirect to B: "send traffic for C through me".
    let b_ll = link_local(b.ns());
    let c: Ipv6Addr = format!("{}c", n.prefix6).parse().expect("ip");
    raw.send(&redirect(a.mac(), b.mac(), a_ll, b_ll, a_ll, c));
    let stats = n.node.wait_stats("RAs counted", |s| {
        drops(port_of(s, a.id()), "ndp_router_only") >= drops(&before, "ndp_router_only") + 6
    });
    assert_eq!(drops(port_of(&stats, a.id()), "ndp_router_only") - drops(&before, "ndp_router_only"), 6);

    // B got no default route, no prefix route and no address from it. (Its kernel takes RAs:
    // accept_ra is on and it does not forward.)
    assert_eq!(conf6(b.ns(), "eth0/accept_ra"), "1");
    assert_eq!(conf6(b.ns(), "eth0/forwarding"), "0");
    // A last legitimate round trip, so anything forwarded before it has been processed.
    b.ns().ping(&a.ip6.to_string());
    let now = routes6(b.ns());
    assert_eq!(now, routes, "B's IPv6 routes changed");
    assert!(!now.contains("fd00:dead") && !now.contains("proto ra"), "{now}");
    assert_eq!(addrs6(b.ns()), addrs, "B's IPv6 addresses changed");
    // And B's default route is still the gateway.
    assert!(now.contains(&format!("default via {}", n.gw6)), "{now}");
}

#[test]
fn ndp_floods_from_addresses_a_pod_does_not_own_do_not_fill_the_neighbour_table() {
    if skip() {
        return;
    }
    let n = DualNode::start("nf", 102);
    let (a, b) = (n.pod("nfa", 0xa), n.pod("nfb", 0xb));
    a.ns().ping(&b.ip6.to_string());
    a.ns().ping(&n.gw6.to_string());
    let a_ll = link_local(a.ns());
    let entries = n.neigh_entries();
    let fdb = n.node.fdb().len();
    let before = n.node.port_stats(a.id());

    let raw = RawSocket::open(a.ns(), a.pod.ifindex());
    let mut rng = Rng(0x4e44_5046);
    const EACH: u64 = 1500;
    // Rounds of 300 frames, each waited for: the pod's TAP queue holds 1000, and a faster
    // sender would only lose frames in its own kernel.
    const ROUND: u64 = 100;
    let (mut spoofed_ip, mut ndp_spoofed) = (0u64, 0u64);
    let counted = |spoofed_ip: u64, ndp_spoofed: u64| {
        n.node.wait_stats("the flood counted", |s| {
            let p = port_of(s, a.id());
            drops(p, "spoofed_ip") >= drops(&before, "spoofed_ip") + spoofed_ip
                && drops(p, "ndp_spoofed") >= drops(&before, "ndp_spoofed") + ndp_spoofed
        })
    };
    for i in 0..EACH {
        let host = rng.next_u64();
        // Solicitations from link-local addresses it does not own.
        let ll = Ipv6Addr::from((0xfe80_u128 << 112) | u128::from(host));
        let ns = NdpRepr::NeighborSolicit { target: b.ip6, source_lladdr: Some(a.mac()) };
        let (group, gmac) = solicited_node(&b.ip6);
        raw.send(&ndp_frame(ns, a.mac(), ll, &group, gmac));
        // Advertisements from global addresses it does not own, of themselves.
        let global: Ipv6Addr = format!("{}1:{:x}:{:x}", n.prefix6, i >> 8, host as u16).parse().expect("ip");
        raw.send(&ndp_frame(forged_na(global, a.mac()), a.mac(), global, ALL_NODES.0, ALL_NODES.1));
        spoofed_ip += 2;
        // Advertisements from its own address of addresses it does not own.
        raw.send(&ndp_frame(forged_na(global, a.mac()), a.mac(), a_ll, ALL_NODES.0, ALL_NODES.1));
        ndp_spoofed += 1;
        if (i + 1) % ROUND == 0 {
            counted(spoofed_ip, ndp_spoofed);
        }
    }
    let stats = counted(spoofed_ip, ndp_spoofed);
    let after = port_of(&stats, a.id());
    assert_eq!(drops(after, "spoofed_ip") - drops(&before, "spoofed_ip"), spoofed_ip);
    assert_eq!(drops(after, "ndp_spoofed") - drops(&before, "ndp_spoofed"), ndp_spoofed);
    // The neighbour table did not grow from it: it holds at most what the ports own (each
    // pod's IPv4, IPv6 and link-local address; the node's, behind the host port), not the
    // thousands of addresses of the flood.
    let now = n.neigh_entries();
    assert!(now <= 12, "neighbour table grew from {entries} to {now}");
    assert_eq!(stats.switch.get("neigh_foreign"), Some(&0), "the flood never reached learning");
    assert_eq!(n.node.fdb().len(), fdb, "the FDB grew");
    // B is unharmed.
    b.ns().ping(&a.ip6.to_string());
    assert_eq!(neigh_lladdr(b.ns(), &a.ip6), Some(a.pod.port.mac.clone()));
}

#[test]
fn a_pods_mac_from_the_host_port_is_dropped_and_never_learned() {
    if skip() {
        return;
    }
    let n = DualNode::start("mp", 103);
    let (b, c) = (n.pod("mpb", 0xb), n.pod("mpc", 0xc));
    b.ns().ping(&c.pod.ip.to_string());
    let fdb_entry = |mac: &str| n.node.fdb().into_iter().find(|e| e.mac == mac).map(|e| e.port);
    let b_mac = b.pod.port.mac.clone();
    assert_eq!(fdb_entry(&b_mac), Some(b.id()));
    let before = n.drops_of(0, "mac_pinned");

    // The node (or anything behind the host port) sends as B: to C, and an ARP claiming B.
    let receiver = udp_in(c.ns(), &format!("{}:6300", c.pod.ip));
    let raw = RawSocket::open(&n.node.ns, n.host_ifindex());
    for i in 0..5 {
        let f = udp_frame(b.mac(), c.mac(), b.pod.ip, c.pod.ip, 6300, format!("forged-{i}").as_bytes());
        raw.send(&f);
    }
    raw.send(&arp_request(b.mac(), b.mac(), b.pod.ip, c.pod.ip));
    let gw: std::net::Ipv4Addr = n.node.gateway().parse().expect("ip");
    raw.send(&arp_request(b.mac(), b.mac(), gw, c.pod.ip));
    n.node.wait_stats("pinned MAC drops", |s| drops(port_of(s, 0), "mac_pinned") >= before + 7);
    assert_eq!(n.drops_of(0, "mac_pinned") - before, 7);

    // The FDB still has B on its port; C got none of the forged datagrams, and still gets B's.
    assert_eq!(fdb_entry(&b_mac), Some(b.id()));
    let sender = udp_in(b.ns(), &format!("{}:0", b.pod.ip));
    sender.send_to(b"marker", format!("{}:6300", c.pod.ip)).expect("send marker");
    let leaked = recv_until(&receiver, b"marker");
    assert!(leaked.is_empty(), "C received forged datagrams: {leaked:?}");
    // Frames to B still reach B (from C and from the node).
    c.ns().ping(&b.pod.ip.to_string());
    n.node.ns.ping(&b.pod.ip.to_string());
    assert_eq!(fdb_entry(&b_mac), Some(b.id()));
    let neigh = c.ns().ip(&["neigh", "show", &n.node.gateway()]);
    assert!(!neigh.contains(&b_mac), "C believes the gateway is at B's MAC: {neigh}");
}

#[test]
fn legitimate_ipv6_and_duplicate_address_detection_still_work() {
    if skip() {
        return;
    }
    let n = DualNode::start("l6", 104);
    let (a, b) = (n.pod("l6a", 0xa), n.pod("l6b", 0xb));
    // The kernel's link-local address is the EUI-64 one the switch expects, and its DAD passed.
    for p in [&a, &b] {
        assert_eq!(link_local(p.ns()), eui64_link_local(&p.mac()), "{}", p.pod.port.mac);
        assert_eq!(conf6(p.ns(), "eth0/addr_gen_mode"), "0", "addr_gen_mode is EUI-64");
    }
    a.ns().ping(&b.ip6.to_string());
    b.ns().ping(&a.ip6.to_string());
    a.ns().ping(&n.gw6.to_string());
    n.node.ns.ping(&b.ip6.to_string());
    let b_ll = link_local(b.ns());
    a.ns().ping(&format!("{b_ll}%eth0"));
    assert_eq!(neigh_lladdr(a.ns(), &b.ip6), Some(b.pod.port.mac.clone()));

    // Duplicate address detection probes (from ::, no option) for its own addresses pass and
    // reach the neighbours' kernels.
    let before = n.node.port_stats(a.id());
    let seen = snmp6(b.ns(), "Icmp6InNeighborSolicits");
    let raw = RawSocket::open(a.ns(), a.pod.ifindex());
    let a_ll = link_local(a.ns());
    const PROBES: u64 = 20;
    for i in 0..PROBES {
        let target = if i % 2 == 0 { a.ip6 } else { a_ll };
        let dad = NdpRepr::NeighborSolicit { target, source_lladdr: None };
        raw.send(&ndp_frame(dad, a.mac(), Ipv6Addr::UNSPECIFIED, ALL_NODES.0, ALL_NODES.1));
    }
    let start = std::time::Instant::now();
    while snmp6(b.ns(), "Icmp6InNeighborSolicits") < seen + PROBES {
        assert!(start.elapsed() < DEADLINE, "B's kernel never saw A's {PROBES} DAD probes");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = n.node.port_stats(a.id());
    assert_eq!(after.drops, before.drops, "DAD probes were dropped");

    // Nothing legitimate was dropped anywhere: the kernels' own NDP, MLD and router
    // solicitations all passed.
    for p in n.node.stats().ports {
        assert!(p.drops.is_empty(), "port {} dropped legitimate frames: {:?}", p.id, p.drops);
    }
}
