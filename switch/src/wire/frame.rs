//! The one parse of a frame: [`parse`] reads the vnet header and the Ethernet, ARP, IPv4/IPv6
//! and TCP/UDP headers (and any neighbour discovery message) of a frame once, through the
//! checked views of the other `wire` modules, into a [`FrameMeta`] that every stage of the
//! pipeline reads: anti-spoofing, learning, the service stage (which rewrites at its offsets)
//! and forwarding.
//!
//! Only headers are read; payload lengths are not compared with the IP total length, because
//! a GSO super-frame is legitimately larger than one segment. Only Ethernet II framing is read
//! past layer 2 (pod ports refuse VLAN tags).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::arp::ArpPacket;
use super::ethernet::{ethertype, EthernetFrame, HEADER_LEN as ETH_LEN};
use super::ip::{Ipv4Packet, Ipv6Packet, PROTO_TCP, PROTO_UDP};
use super::ndp::{self, NdpScan};
use super::tcp::TcpPacket;
use super::udp::{self, UdpPacket};
use super::vnet::{VnetError, VnetHdr, VNET_HDR_LEN};
use super::Mac;

/// Everything the switch decides on about one frame, from one parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// The vnet header, validated against the frame (all zero from [`parse_frame`]).
    pub vnet: VnetHdr,
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// EtherType of the outer header.
    pub ethertype: u16,
    /// Who the frame claims to come from at layer 3 (its header at [`L3_OFF`]).
    pub l3: L3Src,
    /// The TCP or UDP packet it carries, over IPv4 or IPv6: addresses, ports, flags and where
    /// its headers sit (what the service stage matches and rewrites).
    pub l4: Option<IpL4>,
    /// The neighbour discovery message it carries (IPv6 only).
    pub ndp: NdpScan,
}

impl FrameMeta {
    /// Takes `l4` as the frame's transport header after a rewrite of its addresses or ports
    /// (the layer-3 source follows).
    pub fn set_l4(&mut self, l4: IpL4) {
        self.l3 = match l4.src {
            IpAddr::V4(a) => L3Src::Ipv4(a),
            IpAddr::V6(a) => L3Src::Ipv6(a),
        };
        self.l4 = Some(l4);
    }
}

/// Offset of the layer-3 header in every frame the switch parses.
pub const L3_OFF: usize = ETH_LEN;

/// The layer-3 sender of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3Src {
    /// IPv4 packet from this address.
    Ipv4(Ipv4Addr),
    /// IPv6 packet from this address.
    Ipv6(Ipv6Addr),
    /// Ethernet/IPv4 ARP, with its sender fields.
    Arp {
        /// Sender hardware address.
        sender_mac: Mac,
        /// Sender protocol address.
        sender_ip: Ipv4Addr,
    },
    /// A VLAN-tagged frame (802.1Q, 802.1ad).
    Vlan,
    /// Any other EtherType.
    Other,
}

/// A TCP or UDP packet over IPv4 or IPv6, located in its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpL4 {
    /// Offset of the L4 header (from the start of the Ethernet frame), after any IPv4 options
    /// or IPv6 extension headers.
    pub l4_off: usize,
    /// Offset of the L4 payload: the end of the UDP header, or of the TCP header as its data
    /// offset says (not checked against the frame); `l4_off` for a later fragment.
    pub payload_off: usize,
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
    /// The TCP/UDP packet of an Ethernet frame, as [`parse_frame`] finds it.
    pub fn parse(eth: &[u8]) -> Option<IpL4> {
        parse_frame(eth).ok().and_then(|m| m.l4)
    }

    /// Offset of the L4 checksum field.
    pub fn csum_off(&self) -> usize {
        self.l4_off + self.csum_field()
    }

    /// Offset of the checksum field inside the L4 header.
    pub fn csum_field(&self) -> usize {
        if self.proto == PROTO_TCP {
            super::tcp::field::CHECKSUM.start
        } else {
            udp::field::CHECKSUM.start
        }
    }

    /// Whether the packet is IPv6.
    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// Why a frame could not be parsed. `Vnet` is a drop reason of its own (`gso_invalid`, or
/// `malformed` when the frame is shorter than the header); the rest are `malformed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The vnet header is truncated, or does not describe its frame.
    #[error("vnet header: {0}")]
    Vnet(VnetError),
    /// Shorter than an Ethernet header.
    #[error("truncated Ethernet header")]
    Ethernet,
    /// The IPv4 header is truncated or invalid.
    #[error("bad IPv4 header")]
    Ipv4,
    /// The IPv6 header is truncated or invalid.
    #[error("bad IPv6 header")]
    Ipv6,
    /// The ARP packet is truncated, or not Ethernet/IPv4 ARP.
    #[error("bad ARP packet")]
    Arp,
}

/// Parses `buf` as a TAP hands it over (vnet header + Ethernet frame). The vnet header is
/// checked against the frame ([`VnetHdr::validate_with`], with the transport header found
/// here) before the frame's own headers are judged, so a header that does not describe its
/// frame is [`ParseError::Vnet`] whatever else is wrong. A short `hdr_len` is raised in the
/// returned [`FrameMeta::vnet`] (see [`parse_in_place`]).
pub fn parse(buf: &[u8]) -> Result<FrameMeta, ParseError> {
    parse_vnet(buf).map(|(meta, _)| meta)
}

/// [`parse`], writing back into `buf` a vnet header whose short `hdr_len` it raised, so that
/// the frame leaves with the header its meta describes.
pub fn parse_in_place(buf: &mut [u8]) -> Result<FrameMeta, ParseError> {
    let (meta, raised) = parse_vnet(buf)?;
    if raised {
        meta.vnet.emit(buf);
    }
    Ok(meta)
}

/// [`parse`], and whether the vnet header's `hdr_len` was raised.
fn parse_vnet(buf: &[u8]) -> Result<(FrameMeta, bool), ParseError> {
    let mut vnet = VnetHdr::parse(buf).map_err(ParseError::Vnet)?;
    let hint = vnet.hdr_len;
    let eth = buf.get(VNET_HDR_LEN..).unwrap_or_default();
    let frame = parse_frame(eth);
    // (A frame whose IP header does not parse has no transport header either.)
    let l4 = frame.as_ref().ok().and_then(|m| m.l4.as_ref());
    vnet.validate_with(eth, l4).map_err(ParseError::Vnet)?;
    let mut meta = frame?;
    meta.vnet = vnet;
    Ok((meta, vnet.hdr_len != hint))
}

/// Parses an Ethernet frame without vnet header (`vnet` all zero).
pub fn parse_frame(eth: &[u8]) -> Result<FrameMeta, ParseError> {
    let e = EthernetFrame::new_checked(eth).map_err(|_| ParseError::Ethernet)?;
    let et = e.ethertype();
    let (l3, l4, ndp) = match et {
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(e.payload()).map_err(|_| ParseError::Ipv4)?;
            let (src, dst) = (IpAddr::V4(ip.src()), IpAddr::V4(ip.dst()));
            let l4 = transport(eth, ip.protocol(), src, dst, L3_OFF + ip.header_len(), ip.frag_offset() != 0);
            (L3Src::Ipv4(ip.src()), l4, Ok(None))
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(e.payload()).map_err(|_| ParseError::Ipv6)?;
            let (src, dst) = (IpAddr::V6(ip.src()), IpAddr::V6(ip.dst()));
            let l4 = ip
                .transport()
                .and_then(|(proto, off, later)| transport(eth, proto, src, dst, L3_OFF + off, later));
            (L3Src::Ipv6(ip.src()), l4, ndp::scan(&ip))
        }
        ethertype::ARP => {
            let arp = ArpPacket::new_checked(e.payload()).ok_or(ParseError::Arp)?;
            (L3Src::Arp { sender_mac: arp.sender_mac(), sender_ip: arp.sender_ip() }, None, Ok(None))
        }
        ethertype::VLAN | ethertype::PROVIDER_BRIDGING | ethertype::VLAN_DOUBLE => {
            (L3Src::Vlan, None, Ok(None))
        }
        _ => (L3Src::Other, None, Ok(None)),
    };
    Ok(FrameMeta { vnet: VnetHdr::default(), dst: e.dst(), src: e.src(), ethertype: et, l3, l4, ndp })
}

/// The TCP/UDP header at `l4_off` of `eth`; `None` for another protocol or a first fragment
/// too short for it.
fn transport(eth: &[u8], proto: u8, src: IpAddr, dst: IpAddr, l4_off: usize, later: bool) -> Option<IpL4> {
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let mut out = IpL4 {
        l4_off,
        payload_off: l4_off,
        proto,
        src,
        dst,
        sport: 0,
        dport: 0,
        flags: 0,
        later_fragment: later,
    };
    if later {
        return Some(out);
    }
    let seg = eth.get(l4_off..)?;
    if proto == PROTO_TCP {
        let t = TcpPacket::new_checked(seg)?;
        (out.sport, out.dport, out.flags) = (t.src_port(), t.dst_port(), t.flags());
        out.payload_off = l4_off + t.header_len();
    } else {
        let u = UdpPacket::new_checked(seg)?;
        (out.sport, out.dport) = (u.src_port(), u.dst_port());
        out.payload_off = l4_off + udp::HEADER_LEN;
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    pub const B: Mac = [0x02, 0, 0, 0, 0, 0x0b];

    /// An Ethernet + IPv4 + UDP frame from `src`/`sip`, built with etherparse.
    pub fn udp4(src: Mac, dst: Mac, sip: [u8; 4], dip: [u8; 4]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2(src, dst).ipv4(sip, dip, 64).udp(1000, 2000);
        let mut out = Vec::new();
        b.write(&mut out, b"hello").unwrap();
        out
    }

    /// An ARP request from `mac`/`ip`.
    pub fn arp(mac: Mac, ip: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 0, 0, 1]);
        f
    }

    #[test]
    fn ipv4() {
        let f = udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]);
        let m = parse_frame(&f).unwrap();
        assert_eq!((m.src, m.dst, m.ethertype), (A, B, 0x0800));
        assert_eq!(m.l3, L3Src::Ipv4(Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn ipv6() {
        let b = etherparse::PacketBuilder::ethernet2(A, B)
            .ipv6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], [0xfd; 16], 64)
            .udp(1, 2);
        let mut f = Vec::new();
        b.write(&mut f, b"x").unwrap();
        assert_eq!(parse_frame(&f).unwrap().l3, L3Src::Ipv6("fd00::2".parse().unwrap()));
    }

    #[test]
    fn arp_request() {
        let m = parse_frame(&arp(A, [10, 0, 0, 2])).unwrap();
        assert_eq!(m.dst, [0xff; 6]);
        assert_eq!(m.l3, L3Src::Arp { sender_mac: A, sender_ip: Ipv4Addr::new(10, 0, 0, 2) });
    }

    #[test]
    fn vlan_and_other() {
        let mut f = udp4(A, B, [1, 1, 1, 1], [2, 2, 2, 2]);
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(parse_frame(&f).unwrap().l3, L3Src::Vlan);
        f[12..14].copy_from_slice(&[0x88, 0xcc]);
        assert_eq!(parse_frame(&f).unwrap().l3, L3Src::Other);
    }

    #[test]
    fn truncated() {
        let f = udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]);
        assert_eq!(parse_frame(&f[..13]), Err(ParseError::Ethernet));
        assert_eq!(parse_frame(&f[..20]), Err(ParseError::Ipv4));
        let a = arp(A, [10, 0, 0, 2]);
        assert_eq!(parse_frame(&a[..30]), Err(ParseError::Arp));
        let mut bad_ihl = f.clone();
        bad_ihl[14] = 0x41; // IHL 1
        assert_eq!(parse_frame(&bad_ihl), Err(ParseError::Ipv4));
        let mut v6 = f;
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(parse_frame(&v6), Err(ParseError::Ipv6));
    }

    #[test]
    fn parse_reads_the_vnet_header_and_checks_it_against_the_frame() {
        use crate::wire::vnet::{F_NEEDS_CSUM, GSO_TCPV4, GSO_UDP_L4};
        let f = udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]);
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 20,
            gso_size: 2,
            csum_start: 34,
            csum_offset: 6,
        };
        let mut buf = vec![0u8; VNET_HDR_LEN];
        h.emit(&mut buf);
        buf.extend_from_slice(&f);
        let m = parse(&buf).unwrap();
        assert_eq!((m.vnet.gso_type, m.vnet.hdr_len), (GSO_UDP_L4, 42), "hdr_len raised to the headers");
        assert_eq!(m.l4.map(|l| (l.l4_off, l.payload_off, l.sport)), Some((34, 42, 1000)));
        assert_eq!(VnetHdr::parse(&buf).unwrap().hdr_len, 20);
        let m2 = parse_in_place(&mut buf).unwrap();
        assert_eq!((m2, VnetHdr::parse(&buf).unwrap()), (m, m.vnet), "written back");
        // A header that does not describe its frame, before anything else is judged.
        VnetHdr { gso_type: GSO_TCPV4, ..h }.emit(&mut buf);
        assert_eq!(parse(&buf), Err(ParseError::Vnet(VnetError::GsoMismatch(GSO_TCPV4))));
        assert_eq!(parse(&buf[..11]), Err(ParseError::Vnet(VnetError::Truncated)));
        VnetHdr::default().emit(&mut buf);
        assert_eq!(parse(&buf[..VNET_HDR_LEN + 20]), Err(ParseError::Ipv4));
    }

    #[test]
    fn udp_and_tcp() {
        let f = udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]);
        let l = IpL4::parse(&f).unwrap();
        assert_eq!((l.proto, l.sport, l.dport, l.l4_off), (PROTO_UDP, 1000, 2000, 34));
        assert_eq!((l.src, l.dst), (IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])));
        let mut t = Vec::new();
        etherparse::PacketBuilder::ethernet2(A, B)
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
            .tcp(40000, 80, 7, 100)
            .syn()
            .write(&mut t, &[])
            .unwrap();
        let l = IpL4::parse(&t).unwrap();
        assert_eq!(
            (l.proto, l.sport, l.dport, l.flags),
            (PROTO_TCP, 40000, 80, crate::wire::tcp::flags::SYN)
        );
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
        let l = IpL4::parse(&t).unwrap();
        assert!(l.is_v6());
        assert_eq!((l.proto, l.sport, l.dport, l.l4_off), (PROTO_TCP, 40000, 443, 54));
        // Insert a destination-options header (8 bytes) in front of TCP.
        let mut e = t.clone();
        e[L3_OFF + 6] = 60;
        let pl = u16::from_be_bytes([e[18], e[19]]) + 8;
        e[18..20].copy_from_slice(&pl.to_be_bytes());
        e.splice(54..54, [PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
        let l = IpL4::parse(&e).unwrap();
        assert_eq!((l.l4_off, l.dport), (62, 443));
        // A later fragment.
        let mut f = t.clone();
        f[L3_OFF + 6] = 44;
        f.splice(54..54, [PROTO_TCP, 0, 0x05, 0x00, 0, 0, 0, 1]);
        assert!(IpL4::parse(&f).unwrap().later_fragment);
        // ICMPv6 is not L4 here.
        let mut i = t;
        i[L3_OFF + 6] = crate::wire::ip::PROTO_ICMPV6;
        assert_eq!(IpL4::parse(&i), None);
    }

    #[test]
    fn not_l4_or_truncated() {
        assert_eq!(IpL4::parse(&arp(A, [1, 1, 1, 1])), None);
        let f = udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]);
        assert_eq!(IpL4::parse(&f[..40]), None);
        let mut later = f.clone();
        later[14 + 6] = 0x00;
        later[14 + 7] = 0x10; // fragment offset 16
        let l = IpL4::parse(&later).unwrap();
        assert!(l.later_fragment);
        assert_eq!((l.sport, l.dport), (0, 0));
    }

    proptest::proptest! {
        #[test]
        fn l4_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..140), v6: bool) {
            let mut b = bytes;
            if b.len() > 14 {
                if v6 { b[12] = 0x86; b[13] = 0xdd; } else { b[12] = 8; b[13] = 0; }
            }
            let _ = IpL4::parse(&b);
        }
    }

    /// The per-stage parsers this module replaced (etherparse for the classification,
    /// `l4.rs` for NAT and the vnet check), kept to check the one parse against.
    mod old {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

        use etherparse::{
            ArpHardwareId, ArpPacketSlice, EtherType, Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6HeaderSlice,
        };

        use super::super::{L3Src, ParseError};
        use crate::wire::Mac;

        /// (L4 offset, protocol, source, destination, ports, TCP flags, later fragment)
        pub type OldL4 = (usize, u8, IpAddr, IpAddr, u16, u16, u8, bool);

        const PROTO_TCP: u8 = 6;
        const PROTO_UDP: u8 = 17;
        const IP_OFF: usize = 14;
        const IPV6_HDR: usize = 40;
        const MAX_EXT_HEADERS: usize = 8;
        /// Classifies an Ethernet frame (without vnet header).
        pub fn parse_frame(frame: &[u8]) -> Result<(Mac, Mac, u16, L3Src), ParseError> {
            let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| ParseError::Ethernet)?;
            let ethertype = eth.ether_type();
            let payload = &frame[eth.slice().len()..];
            let l3 = match ethertype {
                EtherType::IPV4 => {
                    let ip = Ipv4HeaderSlice::from_slice(payload).map_err(|_| ParseError::Ipv4)?;
                    L3Src::Ipv4(ip.source_addr())
                }
                EtherType::IPV6 => {
                    let ip = Ipv6HeaderSlice::from_slice(payload).map_err(|_| ParseError::Ipv6)?;
                    L3Src::Ipv6(ip.source_addr())
                }
                EtherType::ARP => {
                    let arp = ArpPacketSlice::from_slice(payload).map_err(|_| ParseError::Arp)?;
                    if arp.hw_addr_type() != ArpHardwareId::ETHERNET
                        || arp.proto_addr_type() != EtherType::IPV4
                        || arp.hw_addr_size() != 6
                        || arp.proto_addr_size() != 4
                    {
                        return Err(ParseError::Arp);
                    }
                    let mac: Mac = arp.sender_hw_addr().try_into().map_err(|_| ParseError::Arp)?;
                    let ip: [u8; 4] = arp.sender_protocol_addr().try_into().map_err(|_| ParseError::Arp)?;
                    L3Src::Arp { sender_mac: mac, sender_ip: Ipv4Addr::from(ip) }
                }
                EtherType::VLAN_TAGGED_FRAME
                | EtherType::PROVIDER_BRIDGING
                | EtherType::VLAN_DOUBLE_TAGGED_FRAME => L3Src::Vlan,
                _ => L3Src::Other,
            };
            Ok((eth.destination(), eth.source(), ethertype.0, l3))
        }

        fn be16(b: &[u8], at: usize) -> Option<u16> {
            Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
        }

        /// Finds the TCP/UDP headers of an Ethernet frame carrying IPv4 or IPv6. `None` for anything
        /// else or anything truncated.
        pub fn parse_ip_l4(eth: &[u8]) -> Option<OldL4> {
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
            let mut out = (l4_off, proto, src, dst, 0u16, 0u16, 0u8, later_fragment);
            if later_fragment {
                return Some(out);
            }
            let min = if proto == PROTO_TCP { 20 } else { 8 };
            if eth.len() < l4_off + min {
                return None;
            }
            out.4 = be16(eth, l4_off)?;
            out.5 = be16(eth, l4_off + 2)?;
            if proto == PROTO_TCP {
                out.6 = eth[l4_off + 13];
            }
            Some(out)
        }
    }

    /// Frames that reach every branch: IPv4/IPv6 TCP/UDP (with options and extension headers),
    /// fragments, ARP, NDP, VLAN and garbage, mutated byte-wise.
    fn interesting() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let bases = vec![
            udp4(A, B, [10, 0, 0, 2], [10, 0, 0, 3]),
            arp(A, [10, 0, 0, 2]),
            crate::wire::ndp::tests::NA.to_vec(),
            {
                let mut t = Vec::new();
                etherparse::PacketBuilder::ethernet2(A, B)
                    .ipv6([0xfd; 16], [0xfe; 16], 64)
                    .tcp(1, 2, 3, 4)
                    .write(&mut t, b"abc")
                    .unwrap();
                t
            },
            {
                let mut t = Vec::new();
                etherparse::PacketBuilder::ethernet2(A, B)
                    .ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
                    .tcp(1, 2, 3, 4)
                    .write(&mut t, b"abc")
                    .unwrap();
                t
            },
        ];
        (
            proptest::sample::select(bases),
            proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
            0usize..100,
        )
            .prop_map(|(mut f, edits, cut)| {
                for (at, v) in edits {
                    if let Some(b) = f.get_mut(at) {
                        *b = v;
                    }
                }
                let keep = f.len().saturating_sub(cut % 40);
                f.truncate(if cut > 90 { keep } else { f.len() });
                f
            })
    }

    proptest::proptest! {
        /// The one parse agrees with the old per-stage parsers on every frame, and its
        /// offsets stay inside the frame.
        #[test]
        fn one_parse_agrees_with_the_old_stages(f in interesting()) {
            let new = parse_frame(&f);
            let old = old::parse_frame(&f);
            proptest::prop_assert_eq!(new.map(|m| (m.dst, m.src, m.ethertype, m.l3)), old);
            let l4 = new.ok().and_then(|m| m.l4);
            let flat = l4.map(|l| (l.l4_off, l.proto, l.src, l.dst, l.sport, l.dport, l.flags, l.later_fragment));
            proptest::prop_assert_eq!(flat, old::parse_ip_l4(&f));
            if let Ok(m) = new {
                proptest::prop_assert_eq!(m.ndp, crate::wire::ndp::parse_ndp(&f));
            }
            if let Some(l) = l4 {
                proptest::prop_assert!(l.l4_off <= f.len());
                if !l.later_fragment {
                    proptest::prop_assert!(l.csum_off() + 2 <= f.len());
                    proptest::prop_assert!(l.payload_off >= l.l4_off);
                }
            }
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
            let mut b = bytes.clone();
            let _ = parse_in_place(&mut b);
        }
    }
}
