//! ICMP and ICMPv6 errors the switch writes itself: the port unreachable with which kube-proxy's
//! REJECT answers a UDP datagram to a service without a usable backend.

use super::checksum::{checksum, fold, pseudo_ip, sum};
use super::ethernet::{EthernetFrame, HEADER_LEN as ETH_LEN};
use super::frame::IpL4;
use super::ip::{emit_header, IPV4_MIN_LEN, IPV6_HDR_LEN, PROTO_ICMP, PROTO_ICMPV6};
use super::udp;
use super::Mac;

/// ICMP / ICMPv6 header length (type, code, checksum, four unused bytes).
pub const HEADER_LEN: usize = 8;

/// ICMP header fields.
pub mod field {
    use std::ops::Range;
    /// Type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 2..4;
}

/// ICMP destination unreachable, code port unreachable.
pub const V4_PORT_UNREACHABLE: (u8, u8) = (3, 3);
/// ICMPv6 destination unreachable, code port unreachable.
pub const V6_PORT_UNREACHABLE: (u8, u8) = (1, 4);

/// Turns the UDP datagram `l` (the first `len` bytes of `buf`, which may be longer) into an
/// ICMP port unreachable (ICMPv6 destination unreachable, port unreachable) from its
/// destination, sent from `from_mac` to its sender's MAC; the IP header(s) and the UDP header
/// are quoted. Returns the new length, or `None` when `buf` has no room for it.
pub fn port_unreachable_in_place(buf: &mut [u8], len: usize, l: &IpL4, from_mac: &Mac) -> Option<usize> {
    let quoted = l.l4_off.checked_sub(ETH_LEN)? + udp::HEADER_LEN;
    let ip_len = if l.is_v6() { IPV6_HDR_LEN } else { IPV4_MIN_LEN };
    let out_len = ETH_LEN + ip_len + HEADER_LEN + quoted;
    if len < ETH_LEN + quoted || buf.len() < out_len || l.later_fragment {
        return None;
    }
    let client_mac = EthernetFrame::new_checked(&*buf).ok()?.src();
    buf.copy_within(ETH_LEN..ETH_LEN + quoted, ETH_LEN + ip_len + HEADER_LEN);
    EthernetFrame::new_checked(&mut *buf).ok()?.set_macs(&client_mac, from_mac);
    let icmp_len = HEADER_LEN + quoted;
    let (proto, (ty, code)) =
        if l.is_v6() { (PROTO_ICMPV6, V6_PORT_UNREACHABLE) } else { (PROTO_ICMP, V4_PORT_UNREACHABLE) };
    emit_header(&mut buf[ETH_LEN..], u16::try_from(icmp_len).ok()?, proto, l.dst, l.src, 64)?;
    let icmp = &mut buf[ETH_LEN + ip_len..out_len];
    icmp[..HEADER_LEN].copy_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
    let c = if l.is_v6() {
        !fold(sum(icmp, pseudo_ip(&l.dst, &l.src, PROTO_ICMPV6, icmp_len as u32)))
    } else {
        checksum(icmp)
    };
    icmp[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    Some(out_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Mac = [2, 0xaa, 0, 0, 0, 1];
    const C6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

    fn query(v6: bool) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], GW);
        let b = if v6 { b.ipv6(C6, V6, 64) } else { b.ipv4([10, 0, 0, 2], [10, 96, 0, 10], 64) };
        let mut f = Vec::new();
        b.udp(5000, 53).write(&mut f, b"query").unwrap();
        f
    }

    #[test]
    fn udp_gets_port_unreachable() {
        let mut f = query(false);
        let len = f.len();
        let l = IpL4::parse(&f).unwrap();
        f.resize(200, 0);
        let n = port_unreachable_in_place(&mut f, len, &l, &GW).unwrap();
        let p = etherparse::SlicedPacket::from_ethernet(&f[..n]).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("not ipv4") };
        assert_eq!(ip.header().source(), [10, 96, 0, 10]);
        assert_eq!(ip.header().destination(), [10, 0, 0, 2]);
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        let icmp = &f[34..n];
        assert_eq!((icmp[0], icmp[1]), (3, 3));
        assert_eq!(fold(sum(icmp, 0)), 0xffff);
        // The quoted datagram starts with the original IP header (dst = VIP) and UDP ports.
        assert_eq!(&icmp[8 + 16..8 + 20], &[10, 96, 0, 10]);
        assert_eq!(&icmp[8 + 20..8 + 24], &[0x13, 0x88, 0, 53]);
        // No room: refused, nothing panics.
        let mut small = query(false);
        let len = small.len();
        assert_eq!(port_unreachable_in_place(&mut small, len, &l, &GW), None);
    }

    #[test]
    fn v6_udp_gets_icmpv6_port_unreachable() {
        let mut f = query(true);
        let len = f.len();
        let l = IpL4::parse(&f).unwrap();
        f.resize(300, 0);
        let n = port_unreachable_in_place(&mut f, len, &l, &GW).unwrap();
        let p = etherparse::SlicedPacket::from_ethernet(&f[..n]).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else { panic!("not ipv6") };
        assert_eq!((ip.header().source(), ip.header().destination()), (V6, C6));
        let Some(etherparse::TransportSlice::Icmpv6(i)) = &p.transport else { panic!("not icmpv6") };
        assert_eq!((i.type_u8(), i.code_u8()), V6_PORT_UNREACHABLE);
        assert!(i.is_checksum_valid(V6, C6), "etherparse verifies our checksum");
        let icmp = &f[54..n];
        let p = crate::wire::checksum::pseudo(&V6, &C6, PROTO_ICMPV6, icmp.len() as u32);
        assert_eq!(fold(sum(icmp, p)), 0xffff);
    }
}
