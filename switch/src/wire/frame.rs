//! Frame classification: the Ethernet addresses and the layer-3 source identity of a frame,
//! which is what MAC learning, anti-spoofing and forwarding decide on.
//!
//! Only headers are read (etherparse's checked header slices); payload lengths are not
//! compared with the IP total length, because a GSO super-frame is legitimately larger than
//! one segment.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpHardwareId, ArpPacketSlice, EtherType, Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6HeaderSlice,
};

use super::Mac;

/// The parts of a frame the switch decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// EtherType of the outer header.
    pub ethertype: u16,
    /// Who the frame claims to come from at layer 3.
    pub l3: L3Src,
}

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

/// Why a frame could not be classified. Each is a drop reason (`malformed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
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

/// Classifies an Ethernet frame (without vnet header).
pub fn parse_frame(frame: &[u8]) -> Result<FrameMeta, ParseError> {
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
        EtherType::VLAN_TAGGED_FRAME | EtherType::PROVIDER_BRIDGING | EtherType::VLAN_DOUBLE_TAGGED_FRAME => {
            L3Src::Vlan
        }
        _ => L3Src::Other,
    };
    Ok(FrameMeta { dst: eth.destination(), src: eth.source(), ethertype: ethertype.0, l3 })
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

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse_frame(&bytes);
        }
    }
}
