//! The IPv4 transport view of a frame: addresses, ports and where each field sits, which is what
//! the service stage matches flows on and rewrites.
//!
//! Only Ethernet II + IPv4 + TCP/UDP is recognised (no VLAN tag: pod ports refuse tagged
//! frames). The IPv4 total length is not compared with the frame length, because a GSO
//! super-frame legitimately carries more than one segment's worth.

use std::net::Ipv4Addr;

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Offset of the IPv4 header in an Ethernet II frame.
pub const IP_OFF: usize = 14;

/// A TCP or UDP packet over IPv4, located in its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4L4 {
    /// Offset of the L4 header (from the start of the Ethernet frame).
    pub l4_off: usize,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (0 for a non-first fragment).
    pub sport: u16,
    /// Destination port (0 for a non-first fragment).
    pub dport: u16,
    /// TCP flags (0 for UDP).
    pub flags: u8,
    /// A fragment other than the first: no L4 header in this frame.
    pub later_fragment: bool,
}

impl Ipv4L4 {
    /// Offset of the L4 checksum field.
    pub fn csum_off(&self) -> usize {
        self.l4_off + if self.proto == PROTO_TCP { 16 } else { 6 }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Finds the IPv4 TCP/UDP headers of an Ethernet frame. `None` for anything else or anything
/// truncated.
pub fn parse_ipv4_l4(eth: &[u8]) -> Option<Ipv4L4> {
    if be16(eth, 12)? != 0x0800 {
        return None;
    }
    let ip = eth.get(IP_OFF..)?;
    let vihl = *ip.first()?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let proto = ip[9];
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let frag = be16(ip, 6)?;
    let later_fragment = frag & 0x1fff != 0;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4_off = IP_OFF + ihl;
    let mut out = Ipv4L4 { l4_off, proto, src, dst, sport: 0, dport: 0, flags: 0, later_fragment };
    if later_fragment {
        return Some(out);
    }
    let min = if proto == PROTO_TCP { 20 } else { 8 };
    if eth.len() < l4_off + min {
        return None;
    }
    out.sport = be16(eth, l4_off)?;
    out.dport = be16(eth, l4_off + 2)?;
    if proto == PROTO_TCP {
        out.flags = eth[l4_off + 13];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::tests::{arp, udp4, A, B};

    #[test]
    fn udp_and_tcp() {
        let f = udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]);
        let l = parse_ipv4_l4(&f).unwrap();
        assert_eq!((l.proto, l.sport, l.dport, l.l4_off), (PROTO_UDP, 1000, 2000, 34));
        assert_eq!((l.src, l.dst), (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)));
        let mut t = Vec::new();
        etherparse::PacketBuilder::ethernet2(A, B)
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
            .tcp(40000, 80, 7, 100)
            .syn()
            .write(&mut t, &[])
            .unwrap();
        let l = parse_ipv4_l4(&t).unwrap();
        assert_eq!((l.proto, l.sport, l.dport, l.flags), (PROTO_TCP, 40000, 80, tcp_flags::SYN));
        assert_eq!(l.csum_off(), 34 + 16);
    }

    #[test]
    fn not_l4_or_truncated() {
        assert_eq!(parse_ipv4_l4(&arp(A, [1, 1, 1, 1])), None);
        let f = udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]);
        assert_eq!(parse_ipv4_l4(&f[..40]), None);
        let mut later = f.clone();
        later[14 + 6] = 0x00;
        later[14 + 7] = 0x10; // fragment offset 16
        let l = parse_ipv4_l4(&later).unwrap();
        assert!(l.later_fragment);
        assert_eq!((l.sport, l.dport), (0, 0));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let mut b = bytes;
            if b.len() > 14 { b[12] = 8; b[13] = 0; }
            let _ = parse_ipv4_l4(&b);
        }
    }
}
