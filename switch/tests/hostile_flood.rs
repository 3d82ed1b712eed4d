//! A hostile pod floods, and hands its interface offload (vnet) headers: storm control bounds
//! what it floods to its neighbours, in frames and in bytes (64 KiB super-frames included),
//! and GSO headers are capped before anything is forwarded or segmented. Each test makes the
//! attack with real frames from a pod's sockets and checks the neighbours: what reached them,
//! that their own traffic still flows, and the counters. Needs root; skips (passes) without it.
//!
//! Pod ranges 10.231.140.0/24 ..= 10.231.142.0/24 (this file owns 140..=149).

mod common;

use std::net::Ipv4Addr;

use common::flood::{drain, udp_gso_in, virtio_hdr, PacketSocket};
use common::*;

/// Sends a unicast UDP `marker` from `from` to `to` (whose MAC the switch knows) through `sock`
/// and waits until `to` has it: the switch handles a port's frames in order, so everything
/// `from` sent before has been dealt with. Returns the datagrams `to` got before it.
fn sync_through(sock: &PacketSocket, from: &Pod, to: &Pod, to_sock: &std::net::UdpSocket) -> Vec<Vec<u8>> {
    let marker = b"flood-test-marker";
    sock.send_surely(&udp_frame(from.mac(), to.mac(), from.ip, to.ip, 7000, marker));
    recv_until(to_sock, marker)
}

/// A pod floods broadcast frames (UDP to the subnet broadcast and ARP requests) from a raw
/// socket, thousands at once: its neighbours get fewer than it sent, the rest is counted as
/// `storm_control` on its port, and a TCP transfer and pings between two other pods work during
/// and after the storm. The transfer also shows that the pods' kernels' own TSO headers pass
/// the vnet checks (super-frames counted, none `gso_invalid`).
#[test]
fn broadcast_storm_is_bounded_and_neighbours_keep_talking() {
    if skip() {
        return;
    }
    let node = Node::start_with("fls", 140, &["--storm-pps", "100", "--storm-pps-burst", "200"]);
    let hostile = node.quiet_pod("flh");
    let (b, c, d) = (node.quiet_pod("flb"), node.quiet_pod("flc"), node.quiet_pod("fld"));
    b.ns.ping(&c.ip.to_string());
    d.ns.ping(&node.gateway()); // d's MAC is learned: the marker goes to it unicast
    let d_sock = udp_in(&d.ns, &format!("{}:7000", d.ip));
    let raw = PacketSocket::open(&hostile.ns, hostile.ifindex(), false);
    let before = node.stats();

    let bcast = Ipv4Addr::new(10, 231, 140, 255);
    let nobody = Ipv4Addr::new(10, 231, 140, 250);
    let frames = [
        udp_frame(hostile.mac(), [0xff; 6], hostile.ip, bcast, 9, &[0x5a; 200]),
        arp_request(hostile.mac(), hostile.mac(), hostile.ip, nobody),
    ];
    let sent = std::thread::scope(|s| {
        let transfer = s.spawn(|| tcp_transfer(&b.ns, &c.ns, &c.ip.to_string(), 5201, 64, 140));
        let mut sent = 0u64;
        for i in 0..5000 {
            if raw.send(&frames[i % 2]).is_ok() {
                sent += 1;
            }
        }
        assert_eq!(transfer.join().expect("transfer thread"), 64 << 20, "the transfer during the storm");
        sent
    });
    let got_before_marker = sync_through(&raw, &hostile, &d, &d_sock);
    assert!(got_before_marker.is_empty(), "d's port 7000 only gets the marker");
    let after = node.stats();

    let h = port_of(&after, hostile.port.id);
    let storm = drops(h, "storm_control") - drops(port_of(&before, hostile.port.id), "storm_control");
    let to_d = port_of(&after, d.port.id).tx_packets - port_of(&before, d.port.id).tx_packets;
    eprintln!("sent {sent} broadcasts; d got {to_d} frames; storm_control {storm}");
    assert!(sent > 1000, "the kernel took only {sent} of 5000 frames");
    assert!(storm > 0, "nothing was dropped by storm control: {h:#?}");
    assert!(to_d < sent, "d got {to_d} frames of the {sent} flooded at it");
    // Only floods beyond the budget were dropped; the neighbours' own traffic never was.
    for p in [&b, &c, &d] {
        let s = port_of(&after, p.port.id);
        assert_eq!(drops(s, "storm_control"), 0, "{s:#?}");
        assert_eq!(drops(s, "gso_invalid"), 0, "{s:#?}");
    }
    let gso = port_of(&after, b.port.id).rx_gso_packets - port_of(&before, b.port.id).rx_gso_packets;
    assert!(gso > 0, "b's kernel sent no TSO super-frame: the transfer did not test the vnet checks");
    // After the storm: pings and another transfer.
    b.ns.ping(&c.ip.to_string());
    c.ns.ping(&d.ip.to_string());
    assert_eq!(tcp_transfer(&c.ns, &b.ns, &b.ip.to_string(), 5202, 8, 141), 8 << 20);
}

/// A pod streams UDP GSO super-frames (64 KiB each, `UDP_SEGMENT`) to a MAC the switch does
/// not know, so every one of them is flooded: the byte budget bounds them although the frame
/// budget has room, the super-frames still arrive whole (a GSO frame to an unknown MAC is
/// legitimate and is forwarded, counted in the byte budget), and the neighbours get fewer
/// bytes than were sent.
#[test]
fn unknown_unicast_super_frames_count_in_the_byte_budget() {
    if skip() {
        return;
    }
    let node = Node::start_with("flu", 141, &["--storm-bytes", "1000000", "--storm-bytes-burst", "262144"]);
    let hostile = node.quiet_pod("fluh");
    let (b, d) = (node.quiet_pod("flub"), node.quiet_pod("flud"));
    d.ns.ping(&node.gateway());
    b.ns.ping(&d.ip.to_string());
    let d_sock = udp_in(&d.ns, &format!("{}:7000", d.ip));
    // A peer whose MAC no port has: a pod with a static neighbour entry, or one whose peer's
    // FDB entry aged out. (A pod without CAP_NET_ADMIN reaches the same with a stale entry.)
    let ghost = "10.231.141.200";
    hostile.ns.ip(&[
        "neigh",
        "replace",
        ghost,
        "lladdr",
        "02:00:00:00:ee:01",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let sock = udp_gso_in(&hostile.ns, &format!("{}:0", hostile.ip), 1400);
    let raw = PacketSocket::open(&hostile.ns, hostile.ifindex(), false);
    let before = node.stats();

    let datagram = vec![0x77u8; 1400 * 46]; // 64,400 bytes: one super-frame of 46 segments
    let mut sent_bytes = 0u64;
    for _ in 0..400 {
        if sock.send_to(&datagram, format!("{ghost}:9")).is_ok() {
            sent_bytes += datagram.len() as u64;
        }
    }
    sync_through(&raw, &hostile, &d, &d_sock);
    let after = node.stats();

    let h = port_of(&after, hostile.port.id);
    let h0 = port_of(&before, hostile.port.id);
    let storm = drops(h, "storm_control") - drops(h0, "storm_control");
    let supers = h.rx_gso_packets - h0.rx_gso_packets;
    let to_d = port_of(&after, d.port.id).tx_bytes - port_of(&before, d.port.id).tx_bytes;
    eprintln!(
        "sent {sent_bytes} bytes in super-frames; {supers} arrived as GSO; d got {to_d} bytes; storm {storm}"
    );
    assert!(sent_bytes > 10 << 20, "the kernel took only {sent_bytes} bytes");
    if supers == 0 {
        // A kernel before 6.2 has no USO on TAPs: the pod's kernel cut the trains itself, and
        // the frame budget binds instead of the byte budget.
        eprintln!("no super-frame reached the switch whole: the TAP has no USO on this kernel");
    }
    assert!(storm > 0, "nothing was dropped by storm control: {h:#?}");
    assert!(to_d < sent_bytes, "d got {to_d} bytes of the {sent_bytes} flooded at it");
    assert_eq!(drops(h, "gso_invalid"), 0, "the kernel's own USO headers are valid: {h:#?}");
    b.ns.ping(&d.ip.to_string());
    assert_eq!(tcp_transfer(&b.ns, &d.ns, &d.ip.to_string(), 5203, 8, 142), 8 << 20);
}

/// An IPv4 + UDP frame from `from` to `to` carrying `payload`, with the UDP checksum field
/// holding the pseudo-header sum, as a partial checksum (`NEEDS_CSUM`) wants it.
fn partial_udp(from: &Pod, to: &Pod, payload: &[u8]) -> Vec<u8> {
    let mut f = udp_frame(from.mac(), to.mac(), from.ip, to.ip, 7000, payload);
    let udp_len = (8 + payload.len()) as u32;
    let mut sum = 17 + udp_len;
    for pair in f[26..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[40..42].copy_from_slice(&(sum as u16).to_be_bytes());
    f
}

/// An IPv4 + TCP (ACK) frame from `from` to `to` port 7000 carrying `payload`, the TCP checksum
/// holding the pseudo-header sum (a partial checksum).
fn partial_tcp(from: &Pod, to: &Pod, payload: &[u8]) -> Vec<u8> {
    let mut f = udp_frame(from.mac(), to.mac(), from.ip, to.ip, 7000, &[]);
    f.truncate(34);
    let total = u16::try_from(20 + 20 + payload.len()).expect("fits an IPv4 packet");
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[23] = 6;
    f[24..26].copy_from_slice(&[0, 0]);
    let csum = inet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&csum.to_be_bytes());
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&7000u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x10; // ACK
    tcp[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
    f.extend_from_slice(&tcp);
    f.extend_from_slice(payload);
    let mut sum = 6 + (20 + payload.len()) as u32;
    for pair in f[26..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[50..52].copy_from_slice(&(sum as u16).to_be_bytes());
    f
}

/// GSO with a tiny `gso_size`, the way a pod can make it: through a UDP socket with
/// `UDP_SEGMENT`, and through a packet socket with `PACKET_VNET_HDR` (packet(7)), which hands
/// the pod's interface a frame with a vnet header of the pod's choosing.
///
/// What the pod's kernel does with them, observed here (6.18): it refuses a UDP train of more
/// than `UDP_MAX_SEGMENTS` (128 on this kernel, 64 on older ones) at the send, from either socket, and a header
/// whose checksum offset does not fit its GSO type (`virtio_net_hdr_to_skb`). A header it
/// accepts reaches tapwayd as GSO, rebuilt from the skb (`virtio_net_hdr_from_skb`) but with
/// the pod's `gso_size` and type: for TCP the kernel caps no segment count, so a 64 KiB frame
/// of 1-byte segments gets through to tapwayd, which drops it (`gso_invalid`). Headers that
/// the pod's kernel never lets through (a GSO type for another protocol, a misplaced checksum,
/// UFO, `hdr_len` beyond the frame) cannot be sent from a pod: the unit tests of
/// `wire/vnet.rs` and of the pipeline over in-memory ports (`datapath/pipeline.rs`,
/// `invalid_vnet_headers_are_dropped_at_parse`) cover them, dropped as `gso_invalid`.
#[test]
fn udp_gso_with_a_tiny_gso_size_is_capped() {
    if skip() {
        return;
    }
    let node = Node::start("flg", 142);
    let hostile = node.quiet_pod("flgh");
    let d = node.quiet_pod("flgd");
    d.ns.ping(&node.gateway());
    hostile.ns.ping(&d.ip.to_string());
    let d_sock = udp_in(&d.ns, &format!("{}:7000", d.ip));
    let plain = PacketSocket::open(&hostile.ns, hostile.ifindex(), false);
    let before = node.stats();

    // A UDP socket: as many segments of 8 bytes as the kernel's UDP_MAX_SEGMENTS pass (128
    // on recent kernels, 64 on older ones, both within tapwayd's cap); one more is refused by
    // the pod's kernel.
    let sock = udp_gso_in(&hostile.ns, &format!("{}:0", hostile.ip), 8);
    let to = format!("{}:7000", d.ip);
    let kernel_cap = match sock.send_to(&[1u8; 8 * 128], &to) {
        Ok(_) => 128,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            sock.send_to(&[1u8; 8 * 64], &to).expect("a train of 64 segments");
            64
        }
        Err(e) => panic!("a train of 128 segments: {e}"),
    };
    let refused = sock.send_to(&vec![1u8; 8 * (kernel_cap + 1)], &to).expect_err("one segment too many");
    assert_eq!(refused.raw_os_error(), Some(libc::EINVAL));
    let got = sync_through(&plain, &hostile, &d, &d_sock);
    assert_eq!(got.len(), kernel_cap, "d gets the {kernel_cap} datagrams of the train");
    assert!(got.iter().all(|g| g.len() == 8));
    let mid = node.stats();
    let h = port_of(&mid, hostile.port.id);
    let h0 = port_of(&before, hostile.port.id);
    eprintln!("UDP_SEGMENT train: {} GSO frame(s) read from the TAP", h.rx_gso_packets - h0.rx_gso_packets);
    assert!(h.rx_gso_packets > h0.rx_gso_packets, "the train reached the switch as one super-frame");

    // A packet socket with a vnet header: USO of 1-byte segments, 1000 of them.
    let vnet = PacketSocket::open(&hostile.ns, hostile.ifindex(), true);
    let uso = |gso_size: u16, gso_type: u8, csum_off: u16, payload: &[u8]| {
        let mut b = virtio_hdr(1, gso_type, 42, gso_size, 34, csum_off);
        b.extend_from_slice(&partial_udp(&hostile, &d, payload));
        b
    };
    let e = vnet.send(&uso(1, 5, 6, &[2u8; 1000])).expect_err("1000 segments");
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    // TCPv4 segmentation asked for a UDP datagram, with the UDP checksum: refused.
    let e = vnet.send(&uso(100, 1, 6, &[3u8; 1000])).expect_err("TCP GSO of a UDP frame");
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    // 63 segments of 16 bytes: taken, and cut by the pod's kernel (the header is "dodgy").
    vnet.send(&uso(16, 5, 6, &[4u8; 1000])).expect("63 segments");
    let got = sync_through(&plain, &hostile, &d, &d_sock);
    let after = node.stats();
    let h = port_of(&after, hostile.port.id);
    let hm = port_of(&mid, hostile.port.id);
    eprintln!(
        "PACKET_VNET_HDR train of 63: d got {} datagrams; {} GSO frame(s) and {} frames read from the TAP",
        got.len(),
        h.rx_gso_packets - hm.rx_gso_packets,
        h.rx_packets - hm.rx_packets
    );
    assert!(got.len() <= 63 && got.iter().all(|g| g.len() <= 16), "{got:?}");
    assert_eq!(drops(h, "gso_invalid"), 0, "nothing invalid got through the pod's kernel: {h:#?}");
    assert!(drain(&d_sock).is_empty());

    // TCP: the kernel caps nothing, so a super-frame of 1-byte segments (3000 of them) goes
    // through the pod's kernel, header intact, and is dropped by tapwayd as gso_invalid
    // (at most 1366 segments: 64 KiB at 48 bytes a segment), counted on the pod's port.
    let mut tso = virtio_hdr(1, 1, 54, 1, 34, 16);
    tso.extend_from_slice(&partial_tcp(&hostile, &d, &[5u8; 3000]));
    vnet.send_surely(&tso);
    // 20 segments of 100 bytes: a valid super-frame, forwarded.
    let mut fine = virtio_hdr(1, 1, 54, 100, 34, 16);
    fine.extend_from_slice(&partial_tcp(&hostile, &d, &[6u8; 2000]));
    vnet.send_surely(&fine);
    sync_through(&plain, &hostile, &d, &d_sock);
    let end = node.stats();
    let h = port_of(&end, hostile.port.id);
    let ha = port_of(&after, hostile.port.id);
    eprintln!("PACKET_VNET_HDR TCP: {} GSO frame(s) read from the TAP", h.rx_gso_packets - ha.rx_gso_packets);
    assert_eq!(drops(h, "gso_invalid"), 1, "the 3000-segment super-frame: {h:#?}");
    assert_eq!(h.rx_gso_packets - ha.rx_gso_packets, 1, "only the valid super-frame counts as GSO");
    let dd = port_of(&end, d.port.id);
    assert_eq!(drops(dd, "gso_invalid"), 0);
    hostile.ns.ping(&d.ip.to_string());
}
