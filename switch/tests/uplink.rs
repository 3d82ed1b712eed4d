//! The AF_XDP uplink and multi-node: two node namespaces, each running its own tapwayd whose
//! uplink is a veth into a fabric namespace holding a Linux bridge; pods attached through the
//! control API in one flat /16. Needs root; skips (passes) without it.
//!
//! Pod ranges: 10.231.61.0/24 .. 10.231.69.0/24 and 10.231.71.0/24 .. (node ranges inside the
//! flat 10.231.0.0/16).

mod common;
#[path = "common/nodes.rs"]
mod nodes;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;

use common::*;
use nodes::*;
use tapway_api::{IpConfig, Op, PortInfo};

/// Sends datagrams of `sizes` from `a` to `b` and checks each arrives intact.
fn udp_exchange(from: &UdpSocket, to: &UdpSocket, to_addr: &str, sizes: &[usize]) {
    let mut buf = vec![0u8; 65536];
    for (i, &n) in sizes.iter().enumerate() {
        let msg: Vec<u8> = (0..n).map(|j| (i * 31 + j * 7) as u8).collect();
        from.send_to(&msg, to_addr).expect("send udp");
        let (got, _) =
            to.recv_from(&mut buf).unwrap_or_else(|e| panic!("datagram {i} ({n} bytes) lost: {e}"));
        assert_eq!(&buf[..got], &msg[..], "datagram {i} differs");
    }
}

/// Pod on node 1 ↔ pod on node 2 through both uplinks in `mode`: ARP, ping, UDP, TCP both ways
/// with every byte checked; super-frames from the TAPs are segmented on the way out; no UMEM
/// frame is lost; the XDP program is gone once the daemons stop.
fn cross_node(mode: &str, base: u8, queues: u32, n1_extra: &[&str]) {
    let fabric = Fabric::new("upf");
    let mut n1 = fabric.node_queues("upn", base, mode, queues, n1_extra);
    let mut n2 = fabric.node_queues("upn", base + 1, mode, queues, &[]);
    for n in [&n1, &n2] {
        let st = n.status();
        let up = st.uplink.as_ref().unwrap_or_else(|| panic!("no uplink in status: {st:?}"));
        assert_eq!((up.ifname.as_str(), up.mode.as_str(), up.mtu), (UPLINK, mode, 1500), "{up:?}");
        assert_eq!(up.queues, (0..queues).collect::<Vec<_>>());
        let port = n.ports().into_iter().find(|p| p.kind == "uplink").expect("an uplink port");
        assert_eq!((port.id, port.ifname.as_str()), (up.port, UPLINK));
        assert!(xdp_attached(&n.ns), "no XDP program on {UPLINK}");
    }
    let a = flat_pod(&n1, "upa");
    let b = flat_pod(&n2, "upb");
    let workers = n1.status().workers.len();
    let uplink_worker = n1.ports().into_iter().find(|p| p.kind == "uplink").map(|p| p.worker);
    if workers > 1 {
        assert_ne!(uplink_worker, Some(a.port.worker), "uplink and pod a share a worker");
    }
    // ARP and ping, both ways.
    a.ns.ping(&b.ip.to_string());
    b.ns.ping(&a.ip.to_string());
    // Each node learned the other's pod on its uplink.
    let uplink_of = |n: &Node| n.status().uplink.map(|u| u.port).expect("uplink");
    let learned = |n: &Node, mac: &str| n.fdb().into_iter().find(|e| e.mac == mac).map(|e| e.port);
    assert_eq!(learned(&n1, &b.port.mac), Some(uplink_of(&n1)));
    assert_eq!(learned(&n2, &a.port.mac), Some(uplink_of(&n2)));

    // UDP, small and IP-fragmented.
    let ua = udp_in(&a.ns, &format!("{}:7001", a.ip));
    let ub = udp_in(&b.ns, &format!("{}:7002", b.ip));
    udp_exchange(&ua, &ub, &format!("{}:7002", b.ip), &[1, 64, 1000, 1472, 4000, 20000]);
    udp_exchange(&ub, &ua, &format!("{}:7001", a.ip), &[1, 1472, 9000]);

    // TCP: the TAPs hand over 64 KiB super-frames, which leave through the uplink as
    // MSS-sized segments with correct checksums (the receiving kernel checks them).
    let seg_before = counter(&n1, "uplink_tx_segments");
    assert_eq!(tcp_transfer(&a.ns, &b.ns, &b.ip.to_string(), 7101, 24, 0x5e61), 24 << 20);
    assert_eq!(tcp_transfer(&b.ns, &a.ns, &a.ip.to_string(), 7102, 8, 0x5e62), 8 << 20);
    let s1 = n1.stats();
    let gso = s1.switch.get("uplink_tx_gso_frames").copied().unwrap_or(0);
    let segs = s1.switch.get("uplink_tx_segments").copied().unwrap_or(0) - seg_before;
    assert!(gso > 0 && segs > gso, "super-frames were not segmented: {:?}", s1.switch);
    assert!(port_of(&s1, a.port.id).rx_gso_packets > 0, "the pod sent no super-frame: {s1:?}");
    // Node 2 coalesced the segments back into super-frames for pod b (GRO).
    let s2 = n2.stats();
    let gro = s2.switch.get("uplink_rx_gro_frames").copied().unwrap_or(0);
    assert!(gro > 0, "no GRO on the receiving node: {:?}", s2.switch);
    assert!(port_of(&s2, uplink_of(&n2)).rx_gso_packets >= gro, "{s2:?}");
    if workers > 1 && queues == 1 {
        assert!(counter(&n1, "ring_handoffs") > 0, "no frame crossed a worker ring");
    }
    if workers > 1 && queues > 1 {
        // Every worker serves a queue, and pod a's worker sends on its own.
        let up = n1.status().uplink.expect("uplink");
        let want: Vec<usize> = (0..queues as usize).map(|q| q % workers).collect();
        assert_eq!(up.queue_workers, want);
        let q =
            up.queue_workers.iter().position(|w| *w == a.port.worker).expect("a queue for pod a's worker");
        let sent = counter(&n1, &format!("uplink_q{}_tx_frames", up.queues[q]));
        assert!(sent > 0, "pod a's worker did not transmit on its own queue: {:?}", n1.stats().switch);
    }
    for n in [&n1, &n2] {
        let s = n.stats();
        for p in &s.ports {
            assert_eq!(
                drops(p, "tx_full") + drops(p, "tx_error") + drops(p, "malformed"),
                0,
                "port {} drops: {:?}",
                p.id,
                p.drops
            );
        }
        assert_eq!(s.switch.get("uplink_tx_bad_gso"), Some(&0), "{:?}", s.switch);
        // Small frames went out in the buffer the TAP was read into, and came in in the
        // buffer the kernel received into: the pool lives in the UMEM.
        assert!(counter(n, "uplink_tx_zero_copy") > 0, "{:?}", s.switch);
        assert!(counter(n, "uplink_rx_zero_copy") > 0, "{:?}", s.switch);
        assert_umem_balanced(n);
    }

    // Stopping the daemon closes the sockets and detaches the XDP program.
    for n in [&mut n1, &mut n2] {
        let st = n.stop().expect("the daemon ran");
        assert!(st.success(), "tapwayd exited with {st}:\n{}", n.log());
        assert!(
            !xdp_attached(&n.ns),
            "XDP program left on {UPLINK}:\n{}",
            n.ns.ip(&["-d", "link", "show", UPLINK])
        );
        assert!(n.log().contains("uplink UMEM at shutdown"), "{}", n.log());
        assert_pool_returned(n);
    }
}

#[test]
fn cross_node_generic_mode() {
    if skip() {
        return;
    }
    // Node 1 has two workers and one queue: the uplink is on worker 0 (its queue's) and pod a
    // on worker 1, so every frame between them crosses a worker ring (and the uplink's tx is
    // flushed after the hand-off).
    cross_node("generic", 61, 1, &["--cores", "0,1"]);
}

#[test]
fn cross_node_native_mode_two_queues() {
    if skip() {
        return;
    }
    // One socket per queue, both polled through one epoll fd.
    cross_node("native", 63, 2, &[]);
}

#[test]
fn cross_node_two_queues_on_two_workers() {
    if skip() {
        return;
    }
    // Each worker serves one queue: it polls that queue's rx ring and transmits on its tx
    // ring, without handing frames to the uplink's owner.
    cross_node("native", 75, 2, &["--cores", "0,1"]);
}

#[test]
fn zero_copy_on_veth_fails_clearly_and_auto_falls_back() {
    if skip() {
        return;
    }
    let fabric = Fabric::new("upz");
    let ns = Netns::new("upz");
    fabric.plug(&ns, 1500);
    let dir = std::env::temp_dir().join(unique("upz"));
    let sock = dir.join("s.sock");
    let state = dir.join("state");
    let args = [
        "--socket",
        sock.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--uplink",
        UPLINK,
        "--xdp-mode",
        "zero-copy",
    ];
    let (status, err) = run_daemon(&ns, &args);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "zero-copy on a veth was accepted");
    assert!(err.contains("zero-copy") && err.contains("veth lacks"), "unclear error: {err}");
    assert!(!xdp_attached(&ns), "a failed bind left an XDP program");
    drop(ns);

    // auto: zero-copy fails, the next mode is taken and reported.
    let n = fabric.node("upz", 65, "auto", &[]);
    let up = n.status().uplink.expect("uplink");
    assert!(up.mode == "native" || up.mode == "generic", "{up:?}");
    assert!(n.log().contains("trying the next"), "{}", n.log());
    let p = flat_pod(&n, "upza");
    // The fabric has no other node: the pod's ARP is flooded out of the uplink.
    let before = n.port_stats(up.port).tx_packets;
    let _ = p.ns.exec("ping", &["-c", "1", "-W", "1", "10.231.66.9"]);
    assert!(n.port_stats(up.port).tx_packets > before, "nothing left through the uplink");
}

#[test]
fn mtu_is_checked_at_start() {
    if skip() {
        return;
    }
    let fabric = Fabric::new("upm");
    let try_start = |mtu: u32, extra: &[&str]| {
        let ns = Netns::new("upm");
        fabric.plug(&ns, mtu);
        let dir = std::env::temp_dir().join(unique("upm"));
        let sock = dir.join("s.sock");
        let state = dir.join("state");
        let mut args = vec![
            "--socket",
            sock.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--uplink",
            UPLINK,
        ];
        args.extend_from_slice(extra);
        let (status, err) = run_daemon(&ns, &args);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!status.success(), "MTU {mtu} {extra:?} was accepted");
        err
    };
    let err = try_start(9300, &[]);
    assert!(err.contains("MTU 9300") && err.contains("9216"), "{err}");
    let err = try_start(3600, &["--xdp-mode", "native"]);
    assert!(err.contains("3506"), "{err}");
    let err = try_start(1400, &[]);
    assert!(err.contains("pod MTU 1500") && err.contains("1400"), "{err}");
}

/// An uplink MTU larger than the pods' (a jumbo fabric): TCP leaves in segments of two of the
/// sender's MSS each, and arrives intact both ways, cut back to the pods' MSS for them; UDP and
/// ping are not packed.
#[test]
fn jumbo_fabric_packs_tcp_segments() {
    if skip() {
        return;
    }
    let fabric = Fabric::new("upj");
    let n1 = fabric.node_with("upj", 48, "native", 1, 3500, &[]);
    let n2 = fabric.node_with("upj", 49, "native", 1, 3500, &[]);
    assert_eq!(n1.status().uplink.map(|u| u.mtu), Some(3500));
    let a = flat_pod(&n1, "upja");
    let b = flat_pod(&n2, "upjb");
    a.ns.ping(&b.ip.to_string());
    let ua = udp_in(&a.ns, &format!("{}:7201", a.ip));
    let ub = udp_in(&b.ns, &format!("{}:7202", b.ip));
    udp_exchange(&ua, &ub, &format!("{}:7202", b.ip), &[1, 1472, 3000]);
    let before = counter(&n1, "uplink_tx_segments");
    assert_eq!(tcp_transfer(&a.ns, &b.ns, &b.ip.to_string(), 7203, 16, 0x7a11), 16 << 20);
    assert_eq!(tcp_transfer(&b.ns, &a.ns, &a.ip.to_string(), 7204, 4, 0x7a12), 4 << 20);
    // With 1448-byte cuts 16 MiB would take more than 11,500 segments; packed in pairs, about
    // half that (super-frames only: the rest of the stream goes as it came).
    let segs = counter(&n1, "uplink_tx_segments") - before;
    let mss_cuts = (16u64 << 20) / 1448;
    assert!(segs > 0 && segs < mss_cuts * 3 / 4, "{segs} segments for 16 MiB: not packed");
    // The receiving node handed pod b super-frames (GRO), none dropped for size.
    assert!(counter(&n2, "uplink_rx_gro_frames") > 0);
    for n in [&n1, &n2] {
        assert_umem_balanced(n);
    }
}

/// A 9000-byte fabric and 9000-byte pods: frames span three UMEM frames (multi-buffer).
/// Jumbo datagrams and TCP cross both ways intact, gathered on receive and split on transmit;
/// nothing is lost in the UMEM.
fn jumbo(mode: &str, base: u8) {
    let fabric = Fabric::new("upk");
    let mut n1 = fabric.node_with("upk", base, mode, 1, 9000, &["--mtu", "9000"]);
    let mut n2 = fabric.node_with("upk", base + 1, mode, 1, 9000, &["--mtu", "9000"]);
    assert_eq!(n1.status().uplink.map(|u| (u.mtu, u.mode)), Some((9000, mode.to_string())));
    let a = flat_pod(&n1, "upka");
    let b = flat_pod(&n2, "upkb");
    a.ns.ping(&b.ip.to_string());
    let ua = udp_in(&a.ns, &format!("{}:7301", a.ip));
    let ub = udp_in(&b.ns, &format!("{}:7302", b.ip));
    // Up to 8972 bytes: one 9014-byte frame, not an IP fragment.
    udp_exchange(&ua, &ub, &format!("{}:7302", b.ip), &[1, 3000, 4000, 8000, 8972]);
    udp_exchange(&ub, &ua, &format!("{}:7301", a.ip), &[8972, 100, 7777]);
    assert_eq!(tcp_transfer(&a.ns, &b.ns, &b.ip.to_string(), 7303, 16, 0x7b11), 16 << 20);
    assert_eq!(tcp_transfer(&b.ns, &a.ns, &a.ip.to_string(), 7304, 4, 0x7b12), 4 << 20);
    for n in [&n1, &n2] {
        assert!(counter(n, "uplink_tx_multi_buffer") > 0, "{:?}", n.stats().switch);
        assert!(counter(n, "uplink_rx_multi_buffer") > 0, "{:?}", n.stats().switch);
        assert_eq!(counter(n, "uplink_rx_bad_desc"), 0);
        assert_umem_balanced(n);
    }
    // Whoever loaded the XDP program, it is gone once the daemon stops.
    for n in [&mut n1, &mut n2] {
        let st = n.stop().expect("the daemon ran");
        assert!(st.success(), "tapwayd exited with {st}:\n{}", n.log());
        assert!(!xdp_attached(&n.ns), "XDP program left on {UPLINK}");
        assert_pool_returned(n);
    }
}

#[test]
fn jumbo_frames_with_multi_buffer_generic() {
    if skip() {
        return;
    }
    // libxdp's own program; the kernel hands it a linear skb.
    jumbo("generic", 51);
}

#[test]
fn jumbo_frames_with_multi_buffer_native() {
    if skip() {
        return;
    }
    // tapwayd loads the program itself, with frags support, or the veth refuses the MTU.
    jumbo("native", 53);
}

/// Sends `total` bytes as one UDP GSO write (`UDP_SEGMENT` = `seg`) from `from` to `to_addr`.
fn send_udp_gso(from: &UdpSocket, to_addr: &str, seg: u16, msg: &[u8]) {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::from(seg);
    // SAFETY: setsockopt on a socket we own, with a c_int value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            from.as_raw_fd(),
            libc::SOL_UDP,
            103, // UDP_SEGMENT
            std::ptr::addr_of!(v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
    from.send_to(msg, to_addr).expect("send a UDP GSO super-datagram");
}

/// IPv6 across the uplinks: neighbour discovery, ping, TCP (TSO6 super-frames segmented on the
/// way out, coalesced on the way in); and UDP GSO (USO) super-datagrams cut into datagrams.
#[test]
fn cross_node_ipv6_tcp_and_udp_gso() {
    if skip() {
        return;
    }
    let fabric = Fabric::new("upf");
    let n1 = fabric.node("upn", 67, "generic", &[]);
    let n2 = fabric.node("upn", 68, "generic", &[]);
    // Pods with IPv6 on, a flat /16 for IPv4 and a flat /64 for IPv6 (on-link, no gateway).
    let pod = |node: &Node, tag: &str, n: u8| {
        let ns = Netns::new(tag);
        let ip = node.next_ip();
        let mut req = node.attach_request(&ns, ip);
        req.ips[0].address = format!("{ip}/16");
        req.ips.push(IpConfig { address: format!("fd00:231:67::{n}/64"), gateway: None });
        let port: PortInfo = node.call(Op::Attach(req));
        (Pod { port, ip, ns }, format!("fd00:231:67::{n}"))
    };
    let (a, a6) = pod(&n1, "up6a", 0xa);
    let (b, b6) = pod(&n2, "up6b", 0xb);
    a.ns.ping(&b6);
    b.ns.ping(&a6);
    assert_eq!(tcp_transfer(&a.ns, &b.ns, &format!("[{b6}]"), 7201, 16, 0x6e61), 16 << 20);
    assert_eq!(tcp_transfer(&b.ns, &a.ns, &format!("[{a6}]"), 7202, 8, 0x6e62), 8 << 20);
    let s1 = n1.stats();
    assert!(s1.switch.get("uplink_tx_segments").copied().unwrap_or(0) > 0, "{:?}", s1.switch);
    assert!(counter(&n2, "uplink_rx_gro_frames") > 0, "no GRO of IPv6 segments");

    // UDP GSO over IPv4 and IPv6: one 4 KiB write leaves pod a as one super-datagram (USO on
    // the TAP), is cut on node 1's uplink and reaches pod b as four 1000-byte datagrams.
    for (src, dst) in [
        (format!("{}:7301", a.ip), format!("{}:7302", b.ip)),
        (format!("[{a6}]:7303"), format!("[{b6}]:7304")),
    ] {
        let ua = udp_in(&a.ns, &src);
        let ub = udp_in(&b.ns, &dst);
        let before = counter(&n1, "uplink_tx_gso_frames");
        let msg: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        send_udp_gso(&ua, &dst, 1000, &msg);
        let mut buf = vec![0u8; 65536];
        for k in 0..4 {
            let (n, _) = ub.recv_from(&mut buf).unwrap_or_else(|e| panic!("datagram {k} to {dst}: {e}"));
            assert_eq!(&buf[..n], &msg[k * 1000..(k + 1) * 1000], "datagram {k} to {dst}");
        }
        assert!(
            counter(&n1, "uplink_tx_gso_frames") > before,
            "the 4 KiB write did not cross as a USO super-frame"
        );
    }
    for n in [&n1, &n2] {
        assert_eq!(counter(n, "uplink_tx_bad_gso"), 0);
        assert_umem_balanced(n);
    }
}

/// A tapwayd killed with SIGKILL leaves libxdp's program on the NIC; the next one takes the
/// NIC over in the mode it asks for (not the leftover program's), and leaves nothing behind
/// when it stops cleanly.
#[test]
fn restart_after_a_crash_takes_the_nic_over() {
    if skip() {
        return;
    }
    let fabric = Fabric::new("upc");
    let ns = Netns::new("upc");
    fabric.plug(&ns, 1500);
    let dir = std::env::temp_dir().join(unique("upc"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut first = Daemon::start(&ns, &dir, &["--uplink", UPLINK, "--xdp-mode", "native"]);
    assert_eq!(first.status().uplink.map(|u| u.mode).as_deref(), Some("native"));
    first.kill();
    let link = ns.ip(&["link", "show", UPLINK]);
    assert!(xdp_attached(&ns) && !link.contains("xdpgeneric"), "no native program left: {link}");

    let mut second = Daemon::start(&ns, &dir, &["--uplink", UPLINK, "--xdp-mode", "generic"]);
    assert_eq!(second.status().uplink.map(|u| u.mode).as_deref(), Some("generic"));
    let link = ns.ip(&["link", "show", UPLINK]);
    assert!(link.contains("xdpgeneric"), "the leftover native program is still in use: {link}");
    let st = second.stop().expect("the daemon ran");
    let log = std::fs::read_to_string(dir.join("tapwayd.log")).unwrap_or_default();
    assert!(st.success(), "{log}");
    assert!(log.contains("already attached"), "{log}");
    assert!(!xdp_attached(&ns), "XDP program left: {}", ns.ip(&["link", "show", UPLINK]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Service VIP whose only backend is a pod on the other node, both ways: the client's node
/// DNATs and sends the frame out of its uplink (after resolving the remote backend with ARP),
/// and un-NATs the reply that comes back through it.
#[test]
fn service_vip_with_a_backend_on_the_other_node() {
    if skip() {
        return;
    }
    let fabric = Fabric::new("ups");
    let n1 = fabric.node("ups", 71, "native", &[]);
    let n2 = fabric.node("ups", 72, "native", &[]);
    let a = flat_pod(&n1, "upsa");
    let b = flat_pod(&n2, "upsb");
    for (client_node, client, backend, vip) in [(&n1, &a, &b, "10.96.71.10"), (&n2, &b, &a, "10.96.72.10")] {
        let listener = tcp_listen_in(&backend.ns, "0.0.0.0:8080");
        let me = backend.ip.to_string();
        let server = std::thread::spawn(move || {
            for _ in 0..3 {
                let (mut c, _) = listener.accept().expect("accept");
                c.write_all(format!("{me}\n").as_bytes()).expect("greet");
                let mut line = String::new();
                let mut r = BufReader::new(c.try_clone().expect("clone"));
                r.read_line(&mut line).expect("read");
                c.write_all(line.as_bytes()).expect("echo");
            }
        });
        let spec = tapway_api::ServiceSpec {
            name: "test/remote".into(),
            key: tapway_api::ServiceKey {
                vip: vip.parse().expect("vip"),
                port: 80,
                protocol: tapway_api::Protocol::Tcp,
            },
            affinity: tapway_api::Affinity::None,
            backends: vec![tapway_api::BackendSpec::ready(backend.ip.into(), 8080)],
        };
        client_node.call::<tapway_api::SyncResult>(Op::ServiceSet(spec));
        for i in 0..3 {
            let conn = tcp_connect_in(&client.ns, &format!("{vip}:80"));
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            r.read_line(&mut line).expect("greeting through the VIP");
            assert_eq!(line.trim(), backend.ip.to_string());
            (&conn).write_all(format!("hello {i}\n").as_bytes()).expect("send");
            line.clear();
            r.read_line(&mut line).expect("echo through the VIP");
            assert_eq!(line.trim(), format!("hello {i}"));
        }
        server.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let list: Vec<tapway_api::ServiceInfo> = client_node.call(Op::ServiceList);
        assert_eq!(list[0].new_flows, 3, "{list:?}");
    }
    assert_umem_balanced(&n1);
    assert_umem_balanced(&n2);
}
