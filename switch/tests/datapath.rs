//! Datapath integration tests: a real tapwayd in a test node namespace, pods attached through
//! the control API, real traffic between them. Needs root; skips (passes) without it.
//!
//! Pod ranges: 10.231.1.0/24 .. 10.231.10.0/24, one per test (control.rs uses 21..=37,
//! workers.rs 41).

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};

use common::*;
use tapway_api::{IpConfig, Op, PortInfo};

#[test]
fn pods_ping_each_other_the_gateway_and_the_host() {
    if skip() {
        return;
    }
    let node = Node::start("pg", 1);
    let a = node.pod("pa");
    let b = node.pod("pb");
    let c = node.pod("pc");
    let ids: BTreeSet<u16> = [0, a.port.id, b.port.id, c.port.id].into();
    assert_eq!(ids.len(), 4, "every port has its own number");

    // ARP + ICMP both ways between pods, pods → gateway, host → pods.
    for (from, to) in [(&a, &b), (&b, &a), (&a, &c), (&c, &b)] {
        from.ns.ping(&to.ip.to_string());
    }
    for p in [&a, &b, &c] {
        p.ns.ping(&node.gateway());
        node.ns.ping(&p.ip.to_string());
    }

    // ARP resolved each address to the MAC tapwayd gave that pod.
    let host = node.ports().into_iter().find(|p| p.kind == "host").expect("the host port is listed");
    assert_eq!((host.id, host.ifname.as_str()), (0, "tapway0"));
    for (from, to_ip, to_mac) in [
        (&a, b.ip.to_string(), &b.port.mac),
        (&b, a.ip.to_string(), &a.port.mac),
        (&a, c.ip.to_string(), &c.port.mac),
        (&c, node.gateway(), &host.mac),
    ] {
        let neigh = from.ns.ip(&["neigh", "show", &to_ip, "dev", "eth0"]);
        assert!(
            neigh.contains(&format!("lladdr {to_mac}")),
            "{}: neighbour {to_ip} is {neigh:?}, want {to_mac}",
            from.ns.name
        );
    }

    // Each MAC was learned on its own port.
    let fdb = node.fdb();
    for (mac, id, ifname) in [
        (&a.port.mac, a.port.id, "eth0"),
        (&b.port.mac, b.port.id, "eth0"),
        (&c.port.mac, c.port.id, "eth0"),
        (&host.mac, 0, "tapway0"),
    ] {
        let e = fdb.iter().find(|e| e.mac == *mac).unwrap_or_else(|| panic!("{mac} not learned: {fdb:#?}"));
        assert_eq!((e.port, e.ifname.as_str()), (id, ifname), "{mac} learned on the wrong port: {fdb:#?}");
    }

    // Legitimate traffic (pings, ARP, the kernels' own IPv6 chatter) is never dropped.
    let stats = node.stats();
    for p in &stats.ports {
        assert!(p.drops.is_empty(), "port {} dropped legitimate frames: {:?}", p.id, p.drops);
        assert!(p.rx_packets > 0 && p.tx_packets > 0, "port {} counted no traffic: {p:?}", p.id);
    }
}

#[test]
fn tcp_transfer_is_intact_and_super_frames_cross_whole() {
    if skip() {
        return;
    }
    let node = Node::start("tc", 2);
    let a = node.pod("ta");
    let b = node.pod("tb");
    const MIB: u64 = 256;

    let before = node.stats();
    let got = tcp_transfer(&a.ns, &b.ns, &b.ip.to_string(), 5001, MIB, 0x5eed);
    assert_eq!(got, MIB << 20);
    let after = node.stats();
    let (a0, a1) = (port_of(&before, a.port.id), port_of(&after, a.port.id));
    let (b0, b1) = (port_of(&before, b.port.id), port_of(&after, b.port.id));
    let rx_pkts = a1.rx_packets - a0.rx_packets;
    let rx_gso = a1.rx_gso_packets - a0.rx_gso_packets;
    let tx_pkts = b1.tx_packets - b0.tx_packets;
    assert!(rx_gso > 0, "the sender's port read no GSO super-frame: {a1:?}");
    assert!(a1.rx_bytes - a0.rx_bytes >= MIB << 20, "sender port rx_bytes: {a0:?} → {a1:?}");
    assert!(b1.tx_bytes - b0.tx_bytes >= MIB << 20, "receiver port tx_bytes: {b0:?} → {b1:?}");
    // Super-frames cross whole: the switch writes (about) as many frames to the receiver as it
    // read from the sender. Segmenting them would multiply the count by the segments per
    // super-frame. The slack covers the host port's own multicast chatter flooded to b.
    assert!(
        tx_pkts <= rx_pkts + 100,
        "the switch wrote {tx_pkts} frames to the receiver for {rx_pkts} read from the sender \
         ({rx_gso} super-frames): were they segmented?"
    );
    for p in [a1, b1] {
        assert!(p.drops.is_empty(), "port {} dropped frames during the transfer: {:?}", p.id, p.drops);
    }

    // The other direction, and a pod → host (gateway) transfer through the host port.
    assert_eq!(tcp_transfer(&b.ns, &a.ns, &a.ip.to_string(), 5002, 64, 0xb0b), 64 << 20);
    assert!(node.port_stats(b.port.id).rx_gso_packets > 0, "b → a sent no super-frame");
    assert_eq!(tcp_transfer(&a.ns, &node.ns, &node.gateway(), 5003, 32, 0x6a7e), 32 << 20);
    assert_eq!(tcp_transfer(&node.ns, &b.ns, &b.ip.to_string(), 5004, 32, 0x4057), 32 << 20);
}

#[test]
fn udp_datagrams_arrive_intact_both_ways() {
    if skip() {
        return;
    }
    let node = Node::start("ud", 3);
    let a = node.pod("ua");
    let b = node.pod("ub");
    let server = udp_in(&b.ns, &format!("{}:6000", b.ip));
    let client = udp_in(&a.ns, &format!("{}:0", a.ip));
    client.connect(format!("{}:6000", b.ip)).expect("connect udp");

    // b echoes every datagram back until told to stop.
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut count = 0usize;
        loop {
            let (n, from) = server.recv_from(&mut buf).expect("echo: recv");
            if &buf[..n] == b"stop" {
                return count;
            }
            count += 1;
            server.send_to(&buf[..n], from).expect("echo: send");
        }
    });

    // One at a time, from 1 byte to a 60 KB datagram that crosses as IP fragments.
    let mut rng = Rng(0xda7a);
    let sizes = [1usize, 18, 64, 512, 1000, 1472, 1473, 3000, 8000, 20000, 60000];
    let mut buf = vec![0u8; 65536];
    for (i, &size) in sizes.iter().cycle().take(3 * sizes.len()).enumerate() {
        let payload = rng.bytes(size);
        client.send(&payload).expect("send");
        let n =
            client.recv(&mut buf).unwrap_or_else(|e| panic!("datagram {i} ({size} bytes) not echoed: {e}"));
        assert_eq!(&buf[..n], &payload[..], "datagram {i} ({size} bytes) came back altered");
    }

    // A burst, small enough for the receive buffer: all of it arrives.
    let burst: Vec<Vec<u8>> = (0..32u32)
        .map(|i| {
            let mut p = i.to_be_bytes().to_vec();
            p.extend(rng.bytes(500));
            p
        })
        .collect();
    for p in &burst {
        client.send(p).expect("send burst");
    }
    let mut seen = BTreeSet::new();
    while seen.len() < burst.len() {
        let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("burst: {} of 32 echoed: {e}", seen.len()));
        let i = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(&buf[..n], &burst[i][..], "burst datagram {i} altered");
        seen.insert(i);
    }
    client.send(b"stop").expect("send stop");
    assert_eq!(echo.join().expect("echo thread"), 3 * sizes.len() + burst.len());
}

#[test]
fn broadcast_reaches_every_other_port() {
    if skip() {
        return;
    }
    let node = Node::start("bc", 4);
    let a = node.pod("ba");
    let b = node.pod("bb");
    let c = node.pod("bc");
    let receivers = [
        ("b", udp_in(&b.ns, "0.0.0.0:6100")),
        ("c", udp_in(&c.ns, "0.0.0.0:6100")),
        ("host", udp_in(&node.ns, "0.0.0.0:6100")),
    ];
    let ip = a.ip;
    let sender = a.ns.enter(move || {
        let s = UdpSocket::bind((ip, 0)).expect("bind sender");
        s.set_broadcast(true).expect("SO_BROADCAST");
        s
    });
    let flooded = node.stats().switch.get("flooded").copied().unwrap_or(0);
    let bcast = format!("{}.255:6100", node.prefix);
    for i in 0..5 {
        sender.send_to(format!("bcast-{i}").as_bytes(), &bcast).expect("send broadcast");
    }
    for (who, r) in &receivers {
        let mut got = BTreeSet::new();
        let mut buf = [0u8; 64];
        while got.len() < 5 {
            let (n, from) =
                r.recv_from(&mut buf).unwrap_or_else(|e| panic!("{who}: {} of 5 broadcasts: {e}", got.len()));
            assert_eq!(from.ip(), std::net::IpAddr::V4(a.ip), "{who}: broadcast from the wrong sender");
            got.insert(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let want: BTreeSet<String> = (0..5).map(|i| format!("bcast-{i}")).collect();
        assert_eq!(got, want, "{who}");
    }
    let now = node.stats().switch.get("flooded").copied().unwrap_or(0);
    assert!(now >= flooded + 5, "flooded counter: {flooded} → {now}");
    // The broadcasts taught the switch where a is.
    let fdb = node.fdb();
    assert!(fdb.iter().any(|e| e.mac == a.port.mac && e.port == a.port.id), "{fdb:#?}");
}

/// A minimal IPv6 packet (no payload, next header "none") from `src`.
fn ipv6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, 59, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f
}

#[test]
fn spoofed_frames_are_dropped_and_counted() {
    if skip() {
        return;
    }
    let node = Node::start("sp", 5);
    let a = node.pod("sa");
    let b = node.pod("sb");
    let (a_mac, b_mac) = (a.mac(), b.mac());
    let receiver = udp_in(&b.ns, &format!("{}:6200", b.ip));
    let raw = RawSocket::open(&a.ns, a.ifindex());
    let fake_mac = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
    let fake_ip: Ipv4Addr = format!("{}.200", node.prefix).parse().expect("ip");
    let gateway: Ipv4Addr = node.gateway().parse().expect("ip");
    let before = node.port_stats(a.port.id);

    // Wrong source MAC: 5 UDP frames, an ARP claim from another MAC (Ethernet and ARP sender
    // fields), and an ARP whose sender MAC alone is wrong.
    for i in 0..5 {
        raw.send(&udp_frame(fake_mac, b_mac, a.ip, b.ip, 6200, format!("spoof-mac-{i}").as_bytes()));
    }
    raw.send(&arp_request(fake_mac, fake_mac, a.ip, b.ip));
    raw.send(&arp_request(a_mac, fake_mac, a.ip, b.ip));
    let spoofed_mac = 7;
    // Right MAC, wrong source address: UDP from .200, ARP claiming the gateway's address (the
    // classic neighbour-cache poisoning), IPv6 from a global address that is not a's.
    for i in 0..6 {
        raw.send(&udp_frame(a_mac, b_mac, fake_ip, b.ip, 6200, format!("spoof-ip-{i}").as_bytes()));
    }
    for _ in 0..3 {
        raw.send(&arp_request(a_mac, a_mac, gateway, b.ip));
    }
    let v6_src: std::net::Ipv6Addr = "fd00::99".parse().expect("ip");
    raw.send(&ipv6_frame(a_mac, b_mac, v6_src, "fd00::2".parse().expect("ip")));
    raw.send(&ipv6_frame(a_mac, [0x33, 0x33, 0, 0, 0, 1], v6_src, "ff02::1".parse().expect("ip")));
    let spoofed_ip = 11;

    // A legitimate datagram after them, on the same path.
    let sender = udp_in(&a.ns, &format!("{}:0", a.ip));
    sender.send_to(b"marker", format!("{}:6200", b.ip)).expect("send marker");
    let leaked = recv_until(&receiver, b"marker");
    assert!(leaked.is_empty(), "b received spoofed datagrams: {leaked:?}");

    let stats = node.wait_stats("spoof drops", |s| {
        let p = port_of(s, a.port.id);
        drops(p, "spoofed_mac") >= drops(&before, "spoofed_mac") + spoofed_mac
            && drops(p, "spoofed_ip") >= drops(&before, "spoofed_ip") + spoofed_ip
    });
    let after = port_of(&stats, a.port.id);
    assert_eq!(drops(after, "spoofed_mac") - drops(&before, "spoofed_mac"), spoofed_mac, "{after:?}");
    assert_eq!(drops(after, "spoofed_ip") - drops(&before, "spoofed_ip"), spoofed_ip, "{after:?}");
    for other in stats.ports.iter().filter(|p| p.id != a.port.id) {
        assert!(other.drops.is_empty(), "port {} dropped frames: {:?}", other.id, other.drops);
    }
    // Nothing more arrived at b after the marker either.
    receiver.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 256];
    if let Ok(n) = receiver.recv(&mut buf) {
        panic!("b received {:?} after the marker", String::from_utf8_lossy(&buf[..n]));
    }
    // The spoofed MAC was not learned, and b's neighbour cache was not poisoned.
    let fdb = node.fdb();
    assert!(!fdb.iter().any(|e| e.mac == "02:de:ad:be:ef:01"), "spoofed MAC learned: {fdb:#?}");
    let neigh = b.ns.ip(&["neigh", "show", &node.gateway()]);
    assert!(!neigh.contains(&a.port.mac), "b believes the gateway is at a's MAC: {neigh}");
    // And a still talks normally.
    a.ns.ping(&b.ip.to_string());
}

#[test]
fn malformed_frames_are_dropped_and_counted_and_forwarding_goes_on() {
    if skip() {
        return;
    }
    let node = Node::start("mf", 6);
    let a = node.pod("ma");
    let b = node.pod("mb");
    let (a_mac, b_mac) = (a.mac(), b.mac());
    let receiver = udp_in(&b.ns, &format!("{}:6300", b.ip));
    let sender = udp_in(&a.ns, &format!("{}:0", a.ip));
    let dst = format!("{}:6300", b.ip);
    let raw = RawSocket::open(&a.ns, a.ifindex());
    let good = udp_frame(a_mac, b_mac, a.ip, b.ip, 6300, b"payload");
    let eth = |ethertype: [u8; 2], rest: &[u8]| {
        let mut f = Vec::new();
        f.extend_from_slice(&b_mac);
        f.extend_from_slice(&a_mac);
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(rest);
        f
    };
    let with = |at: usize, byte: u8| {
        let mut f = good.clone();
        f[at] = byte;
        f
    };

    // Phase 1: each kind of bad frame, with a's own addresses so that only the defect counts.
    let mut malformed: Vec<Vec<u8>> = vec![
        eth([0x08, 0x00], &[]),                    // Ethernet header only, IPv4 missing
        good[..14 + 10].to_vec(),                  // truncated IPv4 header
        with(14, 0x41),                            // IHL 1
        with(14, 0x44),                            // IHL 4
        with(14, 0x4f),                            // IHL 15, longer than the packet
        with(14, 0x65),                            // IPv4 EtherType, version 6
        eth([0x86, 0xdd], &[0x60, 0, 0, 0, 0, 0]), // truncated IPv6 header
        eth([0x08, 0x06], &[0, 1, 8, 0, 6, 4]),    // truncated ARP
    ];
    let mut arp_bad_size = arp_request(a_mac, a_mac, a.ip, b.ip);
    arp_bad_size[18] = 8; // hardware address size 8
    malformed.push(arp_bad_size);
    let mut arp_not_ip = arp_request(a_mac, a_mac, a.ip, b.ip);
    arp_not_ip[16..18].copy_from_slice(&[0x86, 0xdd]); // protocol IPv6
    malformed.push(arp_not_ip);
    let mut group_src = good.clone();
    group_src[6] |= 1; // multicast source MAC
    malformed.push(group_src);
    let mut zero_src = good.clone();
    zero_src[6..12].fill(0);
    malformed.push(zero_src);
    let mut tagged = vec![0x00, 0x64];
    tagged.extend_from_slice(&good[12..]);
    let denied: Vec<Vec<u8>> = vec![
        eth([0x81, 0x00], &tagged),  // 802.1Q: VLAN 100, then IPv4
        eth([0x88, 0xa8], &tagged),  // 802.1ad
        eth([0x88, 0xcc], &[0; 46]), // LLDP
        eth([0x90, 0x00], &[0; 46]), // loopback
        eth([0x05, 0xdc], &[0; 46]), // 802.3 length field
    ];

    let before = node.port_stats(a.port.id);
    for f in malformed.iter().chain(&denied) {
        raw.send(f);
    }
    sender.send_to(b"marker-1", &dst).expect("send marker");
    let leaked = recv_until(&receiver, b"marker-1");
    assert!(leaked.is_empty(), "b received {leaked:?}");
    let (nm, nd) = (malformed.len() as u64, denied.len() as u64);
    let stats = node.wait_stats("malformed drops", |s| {
        let p = port_of(s, a.port.id);
        drops(p, "malformed") >= drops(&before, "malformed") + nm
            && drops(p, "ethertype_denied") >= drops(&before, "ethertype_denied") + nd
    });
    let mid = port_of(&stats, a.port.id).clone();
    assert_eq!(drops(&mid, "malformed") - drops(&before, "malformed"), nm, "{mid:?}");
    assert_eq!(drops(&mid, "ethertype_denied") - drops(&before, "ethertype_denied"), nd, "{mid:?}");
    for reason in ["spoofed_mac", "spoofed_ip"] {
        assert_eq!(drops(&mid, reason), drops(&before, reason), "{reason}: {mid:?}");
    }

    // Phase 2: a stream of random frames. Each is dropped for one reason or another (none can
    // carry a's MAC as its source), so the drop counters grow by exactly their number.
    let mut rng = Rng(0xbad_f00d);
    const RANDOM: u64 = 400;
    for _ in 0..RANDOM {
        let len = rng.range(14, 1514);
        raw.send(&rng.bytes(len));
    }
    sender.send_to(b"marker-2", &dst).expect("send marker");
    let leaked = recv_until(&receiver, b"marker-2");
    assert!(leaked.is_empty(), "b received {} random frames", leaked.len());
    let total = |p: &tapway_api::PortStats| p.drops.values().sum::<u64>();
    let stats = node.wait_stats("random drops", |s| total(port_of(s, a.port.id)) >= total(&mid) + RANDOM);
    let end = port_of(&stats, a.port.id);
    assert_eq!(total(end) - total(&mid), RANDOM, "{mid:?} → {end:?}");

    // The switch kept forwarding, both ways, and learned nothing from the junk.
    a.ns.ping(&b.ip.to_string());
    b.ns.ping(&a.ip.to_string());
    a.ns.ping(&node.gateway());
    let fdb = node.fdb();
    assert_eq!(fdb.len(), 3, "only a, b and the host port are learned: {fdb:#?}");
}

#[test]
fn dual_stack_pods_talk_over_ipv6() {
    if skip() {
        return;
    }
    let node = Node::start_with("v6", 7, &["--pod-cidr", "fd00:231:7::/64"]);
    let host = node.ports().into_iter().find(|p| p.kind == "host").expect("host port");
    let gw6 = host.ips.iter().find(|i| i.contains(':')).expect("an IPv6 gateway on the host port");
    let gw6 = gw6.split('/').next().expect("address").to_string();
    let pod = |tag: &str, n: u8| {
        let ns = Netns::new(tag);
        let ip = node.next_ip();
        let mut req = node.attach_request(&ns, ip);
        req.ips.push(IpConfig { address: format!("fd00:231:7::{n}/64"), gateway: Some(gw6.clone()) });
        let port: PortInfo = node.call(Op::Attach(req));
        assert_eq!(port.ips.len(), 2, "{port:?}");
        (Pod { port, ip, ns }, format!("fd00:231:7::{n}"))
    };
    let (a, a6) = pod("6a", 0xa);
    let (b, b6) = pod("6b", 0xb);

    // Neighbour discovery and ICMPv6 both ways, to the gateway and from the host.
    a.ns.ping(&b6);
    b.ns.ping(&a6);
    a.ns.ping(&gw6);
    node.ns.ping(&b6);
    let neigh = a.ns.ip(&["-6", "neigh", "show", &b6, "dev", "eth0"]);
    assert!(neigh.contains(&format!("lladdr {}", b.port.mac)), "{neigh}");

    // TCP over IPv6 crosses as TSO6 super-frames, intact.
    let before = node.port_stats(a.port.id).rx_gso_packets;
    assert_eq!(tcp_transfer(&a.ns, &b.ns, &format!("[{b6}]"), 5005, 32, 0x66), 32 << 20);
    assert!(node.port_stats(a.port.id).rx_gso_packets > before, "no IPv6 super-frame");

    // Link-local sources, DAD and MLD are allowed: nothing was dropped.
    for p in node.stats().ports {
        assert!(p.drops.is_empty(), "port {} dropped legitimate frames: {:?}", p.id, p.drops);
    }
}

#[test]
fn jumbo_frames_cross_between_jumbo_pods() {
    if skip() {
        return;
    }
    let node = Node::start("jb", 8);
    let pod = |tag: &str| {
        let ns = Netns::new(tag);
        let ip = node.next_ip();
        let mut req = node.attach_request(&ns, ip);
        req.mtu = Some(9000);
        let port: PortInfo = node.call(Op::Attach(req));
        assert_eq!(port.mtu, 9000);
        Pod { port, ip, ns }
    };
    let a = pod("ja");
    let b = pod("jb");
    assert!(a.ns.ip(&["-o", "link", "show", "dev", "eth0"]).contains("mtu 9000"));
    // 8972 bytes of ICMP payload + 28 = a 9000-byte IP packet, not fragmented.
    a.ns.ping_with(&b.ip.to_string(), &["-s", "8972", "-M", "do"]);
    b.ns.ping_with(&a.ip.to_string(), &["-s", "8972", "-M", "do"]);
    assert_eq!(tcp_transfer(&a.ns, &b.ns, &b.ip.to_string(), 5006, 32, 0x9000), 32 << 20);
    // The host port keeps the daemon's MTU; the kernel fragments towards it.
    a.ns.ping_with(&node.gateway(), &["-s", "4000"]);
    for p in node.stats().ports {
        assert!(p.drops.is_empty(), "port {} dropped frames: {:?}", p.id, p.drops);
    }
}

#[test]
fn a_host_route_pod_reaches_its_gateway() {
    if skip() {
        return;
    }
    let node = Node::start("hr", 9);
    let ns = Netns::new("hra");
    let mut req = node.attach_request(&ns, "10.231.9.7".parse().expect("ip"));
    req.ips[0].address = "10.231.9.7/32".into();
    node.call::<PortInfo>(Op::Attach(req));
    let routes = ns.ip(&["route", "show"]);
    assert!(routes.contains("default via 10.231.9.1"), "{routes}");
    assert!(routes.contains("10.231.9.1 dev eth0"), "on-link route to the gateway: {routes}");
    ns.ping(&node.gateway());
    node.ns.ping("10.231.9.7");
}

#[test]
fn the_fdb_is_bounded_and_entries_age_out() {
    if skip() {
        return;
    }
    let node = Node::start_prepared("fd", 10, &["--fdb-max", "2", "--fdb-aging", "1"], disable_ipv6);
    let st = node.status();
    assert_eq!((st.fdb_max, st.fdb_aging_secs), (2, 1));
    let a = node.quiet_pod("fa");
    let b = node.quiet_pod("fb");
    let c = node.quiet_pod("fc");

    // Four MACs (three pods and the host port) for two entries: forwarding still works (what
    // is not learned is flooded) and the overflow is counted.
    for (from, to) in [(&a, &b), (&b, &c), (&c, &a)] {
        from.ns.ping(&to.ip.to_string());
    }
    a.ns.ping(&node.gateway());
    let st = node.status();
    assert!(st.fdb_entries <= 2, "{st:?}");
    assert!(node.fdb().len() <= 2);
    let full = node.stats().switch.get("fdb_full").copied().unwrap_or(0);
    assert!(full > 0, "fdb_full not counted");

    // Nobody talks now: every entry ages out...
    let start = std::time::Instant::now();
    while !node.fdb().is_empty() {
        assert!(start.elapsed() < DEADLINE, "FDB entries never aged out: {:#?}", node.fdb());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // ...and is learned again on the next frame.
    a.ns.ping(&b.ip.to_string());
    let fdb = node.fdb();
    assert!(fdb.iter().any(|e| e.mac == a.port.mac && e.port == a.port.id), "{fdb:#?}");
}
