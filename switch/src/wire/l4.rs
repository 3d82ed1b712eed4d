//! The transport view of a frame: addresses, ports and where each field sits, which is what
//! the service stage matches flows on and rewrites. IPv4 and IPv6 (with hop-by-hop, routing,
//! destination-options and fragment extension headers walked over).
//!
//! Only Ethernet II framing is recognised (no VLAN tag: pod ports refuse tagged frames). The IP
//! payload length is not compared with the frame length, because a GSO super-frame
//! legitimately carries more than one segment's worth.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IPv6 next-header value of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

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

/// Offset of the IP header in an Ethernet II frame.
pub const IP_OFF: usize = 14;

/// Length of the fixed IPv6 header.
pub const IPV6_HDR: usize = 40;

/// Most IPv6 extension headers walked before giving up.
const MAX_EXT_HEADERS: usize = 8;

/// A TCP or UDP packet over IPv4 or IPv6, located in its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpL4 {
    /// Offset of the L4 header (from the start of the Ethernet frame).
    pub l4_off: usize,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 for a non-first fragment).
    pub sport: u16,
    /// Destination port (0 for a non-first fragment).
    pub dport: u16,
    /// TCP flags (0 for UDP).
    pub flags: u8,
    /// A fragment other than the first: no L4 header in this frame.
    pub later_fragment: bool,
}

impl IpL4 {
    /// Offset of the L4 checksum field.
    pub fn csum_off(&self) -> usize {
        self.l4_off + if self.proto == PROTO_TCP { 16 } else { 6 }
    }

    /// Whether the packet is IPv6.
    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Finds the TCP/UDP headers of an Ethernet frame carrying IPv4 or IPv6. `None` for anything
/// else or anything truncated.
pub fn parse_ip_l4(eth: &[u8]) -> Option<IpL4> {
    let (proto, src, dst, l4_off, later_fragment) = match be16(eth, 12)? {
        0x0800 => {
            let ip = eth.get(IP_OFF..)?;
            let vihl = *ip.first()?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 || ip.len() < ihl {
                return None;
            }
            let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
            (ip[9], src, dst, IP_OFF + ihl, be16(ip, 6)? & 0x1fff != 0)
        }
        0x86dd => {
            let ip = eth.get(IP_OFF..IP_OFF + IPV6_HDR)?;
            if ip[0] >> 4 != 6 {
                return None;
            }
            let a: [u8; 16] = ip[8..24].try_into().ok()?;
            let b: [u8; 16] = ip[24..40].try_into().ok()?;
            let (mut next, mut off, mut later) = (ip[6], IP_OFF + IPV6_HDR, false);
            for _ in 0..MAX_EXT_HEADERS {
                match next {
                    PROTO_TCP | PROTO_UDP => break,
                    0 | 43 | 60 => {
                        // hop-by-hop, routing, destination options: (next, len in 8-octet units - 1)
                        next = *eth.get(off)?;
                        off += (usize::from(*eth.get(off + 1)?) + 1) * 8;
                    }
                    44 => {
                        next = *eth.get(off)?;
                        later = be16(eth, off + 2)? & 0xfff8 != 0;
                        off += 8;
                    }
                    _ => return None,
                }
            }
            (next, IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)), off, later)
        }
        _ => return None,
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let mut out = IpL4 { l4_off, proto, src, dst, sport: 0, dport: 0, flags: 0, later_fragment };
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
        let l = parse_ip_l4(&f).unwrap();
        assert_eq!((l.proto, l.sport, l.dport, l.l4_off), (PROTO_UDP, 1000, 2000, 34));
        assert_eq!((l.src, l.dst), (IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])));
        let mut t = Vec::new();
        etherparse::PacketBuilder::ethernet2(A, B)
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
            .tcp(40000, 80, 7, 100)
            .syn()
            .write(&mut t, &[])
            .unwrap();
        let l = parse_ip_l4(&t).unwrap();
        assert_eq!((l.proto, l.sport, l.dport, l.flags), (PROTO_TCP, 40000, 80, tcp_flags::SYN));
        assert_eq!(l.csum_off(), 34 + 16);
        assert!(!l.is_v6());
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let (s, d): ([u8; 16], [u8; 16]) = ([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], [0xfd; 16]);
        let mut t = Vec::new();
        etherparse::PacketBuilder::ethernet2(A, B)
            .ipv6(s, d, 64)
            .tcp(40000, 443, 1, 100)
            .write(&mut t, b"x")
            .unwrap();
        let l = parse_ip_l4(&t).unwrap();
        assert!(l.is_v6());
        assert_eq!((l.proto, l.sport, l.dport, l.l4_off), (PROTO_TCP, 40000, 443, 54));
        // Insert a destination-options header (8 bytes) in front of TCP.
        let mut e = t.clone();
        e[IP_OFF + 6] = 60;
        let pl = u16::from_be_bytes([e[18], e[19]]) + 8;
        e[18..20].copy_from_slice(&pl.to_be_bytes());
        e.splice(54..54, [PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
        let l = parse_ip_l4(&e).unwrap();
        assert_eq!((l.l4_off, l.dport), (62, 443));
        // A later fragment.
        let mut f = t.clone();
        f[IP_OFF + 6] = 44;
        f.splice(54..54, [PROTO_TCP, 0, 0x05, 0x00, 0, 0, 0, 1]);
        assert!(parse_ip_l4(&f).unwrap().later_fragment);
        // ICMPv6 is not L4 here.
        let mut i = t;
        i[IP_OFF + 6] = PROTO_ICMPV6;
        assert_eq!(parse_ip_l4(&i), None);
    }

    #[test]
    fn not_l4_or_truncated() {
        assert_eq!(parse_ip_l4(&arp(A, [1, 1, 1, 1])), None);
        let f = udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]);
        assert_eq!(parse_ip_l4(&f[..40]), None);
        let mut later = f.clone();
        later[14 + 6] = 0x00;
        later[14 + 7] = 0x10; // fragment offset 16
        let l = parse_ip_l4(&later).unwrap();
        assert!(l.later_fragment);
        assert_eq!((l.sport, l.dport), (0, 0));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..140), v6: bool) {
            let mut b = bytes;
            if b.len() > 14 {
                if v6 { b[12] = 0x86; b[13] = 0xdd; } else { b[12] = 8; b[13] = 0; }
            }
            let _ = parse_ip_l4(&b);
        }
    }
}
