//! Answers for flows to a service with no usable backend, as kube-proxy's REJECT rules give:
//! a TCP RST, or an ICMP (ICMPv6) port unreachable for UDP. The answer is written over the
//! offending frame in place (no buffer allocated) and goes back out the port it came from.

use std::net::IpAddr;

use crate::wire::checksum::{checksum, fold, pseudo_v4, pseudo_v6, sum};
use crate::wire::l4::{tcp_flags, IpL4, IPV6_HDR, IP_OFF, PROTO_ICMPV6, PROTO_TCP};
use crate::wire::Mac;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes an IP header (20-byte IPv4 or 40-byte IPv6) at [`IP_OFF`] for a payload of
/// `payload` bytes; returns the header length. `src`/`dst` are of one family.
fn ip_header(eth: &mut [u8], payload: u16, proto: u8, src: IpAddr, dst: IpAddr) -> usize {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = &mut eth[IP_OFF..IP_OFF + 20];
            h.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            h[2..4].copy_from_slice(&(payload + 20).to_be_bytes());
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            20
        }
        (s, d) => {
            let h = &mut eth[IP_OFF..IP_OFF + IPV6_HDR];
            h[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, proto, 64]);
            h[4..6].copy_from_slice(&payload.to_be_bytes());
            h[8..24].copy_from_slice(&v6_octets(s));
            h[24..40].copy_from_slice(&v6_octets(d));
            IPV6_HDR
        }
    }
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// The pseudo-header sum for an L4 segment of `len` bytes.
fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_v4(s.octets(), d.octets(), proto, len as u16),
        (s, d) => pseudo_v6(v6_octets(s), v6_octets(d), proto, len as u32),
    }
}

/// Turns the TCP segment `l` (in `eth`) into the RST answering it, sent from `from_mac`.
/// Returns the new Ethernet frame length, or `None` when the segment is itself a RST (never
/// answered) or too short.
pub fn tcp_reset(eth: &mut [u8], l: &IpL4, from_mac: &Mac) -> Option<usize> {
    if l.proto != PROTO_TCP || l.flags & tcp_flags::RST != 0 || l.later_fragment {
        return None;
    }
    let t = l.l4_off;
    let ip_len = if l.is_v6() { IPV6_HDR } else { 20 };
    if eth.len() < t + 20 || eth.len() < IP_OFF + ip_len + 20 {
        return None;
    }
    // Payload length: IPv4 total length less headers; IPv6 payload length less extensions.
    let tcp_hdr = usize::from(eth[t + 12] >> 4) * 4;
    let len_field = usize::from(u16::from_be_bytes([
        eth[IP_OFF + 2 + 2 * usize::from(l.is_v6())],
        eth[IP_OFF + 3 + 2 * usize::from(l.is_v6())],
    ]));
    let before_tcp = if l.is_v6() { t - IP_OFF - IPV6_HDR } else { t - IP_OFF };
    let payload = len_field.saturating_sub(before_tcp + tcp_hdr);
    let seg_len =
        payload as u32 + u32::from(l.flags & tcp_flags::SYN != 0) + u32::from(l.flags & tcp_flags::FIN != 0);
    let (seq, ack, flags) = if l.flags & tcp_flags::ACK != 0 {
        (be32(eth, t + 8), 0, tcp_flags::RST)
    } else {
        (0, be32(eth, t + 4).wrapping_add(seg_len), tcp_flags::RST | tcp_flags::ACK)
    };
    let client_mac: Mac = eth[6..12].try_into().ok()?;
    eth[0..6].copy_from_slice(&client_mac);
    eth[6..12].copy_from_slice(from_mac);
    let (src, dst) = (l.dst, l.src);
    let h = ip_header(eth, 20, PROTO_TCP, src, dst);
    let tcp = &mut eth[IP_OFF + h..IP_OFF + h + 20];
    tcp.fill(0);
    tcp[0..2].copy_from_slice(&l.dport.to_be_bytes());
    tcp[2..4].copy_from_slice(&l.sport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    let c = !fold(sum(tcp, pseudo(src, dst, PROTO_TCP, 20)));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    Some(IP_OFF + h + 20)
}

/// ICMP / ICMPv6 header length.
const ICMP_HDR: usize = 8;

/// Turns the UDP datagram `l` (the first `len` bytes of `buf`, which may be longer) into an
/// ICMP port unreachable (ICMPv6 destination unreachable, port unreachable) from its
/// destination, sent from `from_mac`; the IP header(s) and the UDP header are quoted. Returns
/// the new length.
pub fn icmp_port_unreachable(buf: &mut [u8], len: usize, l: &IpL4, from_mac: &Mac) -> Option<usize> {
    let quoted = l.l4_off - IP_OFF + 8;
    let ip_len = if l.is_v6() { IPV6_HDR } else { 20 };
    let out_len = IP_OFF + ip_len + ICMP_HDR + quoted;
    if len < IP_OFF + quoted || buf.len() < out_len || l.later_fragment {
        return None;
    }
    let client_mac: Mac = buf[6..12].try_into().ok()?;
    buf.copy_within(IP_OFF..IP_OFF + quoted, IP_OFF + ip_len + ICMP_HDR);
    buf[0..6].copy_from_slice(&client_mac);
    buf[6..12].copy_from_slice(from_mac);
    let icmp_len = ICMP_HDR + quoted;
    let (proto, head) = if l.is_v6() { (PROTO_ICMPV6, [1, 4]) } else { (1, [3, 3]) };
    ip_header(buf, icmp_len as u16, proto, l.dst, l.src);
    let icmp = &mut buf[IP_OFF + ip_len..out_len];
    icmp[..ICMP_HDR].copy_from_slice(&[head[0], head[1], 0, 0, 0, 0, 0, 0]);
    let c = if l.is_v6() {
        !fold(sum(icmp, pseudo(l.dst, l.src, PROTO_ICMPV6, icmp_len)))
    } else {
        checksum(icmp)
    };
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(out_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::l4::parse_ip_l4;

    const GW: Mac = [2, 0xaa, 0, 0, 0, 1];

    #[test]
    fn syn_gets_rst_ack() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], GW)
            .ipv4([10, 0, 0, 2], [10, 96, 0, 1], 64)
            .tcp(40000, 80, 1000, 500)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        let l = parse_ip_l4(&f).unwrap();
        let n = tcp_reset(&mut f, &l, &GW).unwrap();
        let p = etherparse::SlicedPacket::from_ethernet(&f[..n]).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("not ipv4") };
        assert_eq!(ip.header().source(), [10, 96, 0, 1]);
        assert_eq!(ip.header().destination(), [10, 0, 0, 2]);
        let Some(etherparse::TransportSlice::Tcp(t)) = &p.transport else { panic!("not tcp") };
        assert!(t.rst() && t.ack() && !t.syn());
        assert_eq!((t.source_port(), t.destination_port(), t.acknowledgment_number()), (80, 40000, 1001));
        let want = t.to_header().calc_checksum_ipv4(&ip.header().to_header(), &[]).unwrap();
        assert_eq!(t.checksum(), want);
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[6..12], &GW);
    }

    #[test]
    fn rst_is_never_answered() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], GW)
            .ipv4([10, 0, 0, 2], [10, 96, 0, 1], 64)
            .tcp(40000, 80, 1000, 500)
            .rst()
            .write(&mut f, &[])
            .unwrap();
        let l = parse_ip_l4(&f).unwrap();
        assert_eq!(tcp_reset(&mut f, &l, &GW), None);
    }

    #[test]
    fn udp_gets_port_unreachable() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], GW)
            .ipv4([10, 0, 0, 2], [10, 96, 0, 10], 64)
            .udp(5000, 53)
            .write(&mut f, b"query")
            .unwrap();
        let len = f.len();
        let l = parse_ip_l4(&f).unwrap();
        f.resize(200, 0);
        let n = icmp_port_unreachable(&mut f, len, &l, &GW).unwrap();
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
    }

    const C6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

    #[test]
    fn v6_syn_gets_rst_ack() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], GW)
            .ipv6(C6, V6, 64)
            .tcp(40000, 80, 1000, 500)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        let l = parse_ip_l4(&f).unwrap();
        let n = tcp_reset(&mut f, &l, &GW).unwrap();
        assert_eq!(n, 14 + 40 + 20);
        let p = etherparse::SlicedPacket::from_ethernet(&f[..n]).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else { panic!("not ipv6") };
        assert_eq!((ip.header().source(), ip.header().destination()), (V6, C6));
        let Some(etherparse::TransportSlice::Tcp(t)) = &p.transport else { panic!("not tcp") };
        assert!(t.rst() && t.ack());
        assert_eq!(t.acknowledgment_number(), 1001);
        let want = t.to_header().calc_checksum_ipv6(&ip.header().to_header(), &[]).unwrap();
        assert_eq!(t.checksum(), want);
    }

    #[test]
    fn v6_udp_gets_icmpv6_port_unreachable() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], GW)
            .ipv6(C6, V6, 64)
            .udp(5000, 53)
            .write(&mut f, b"query")
            .unwrap();
        let len = f.len();
        let l = parse_ip_l4(&f).unwrap();
        f.resize(300, 0);
        let n = icmp_port_unreachable(&mut f, len, &l, &GW).unwrap();
        let p = etherparse::SlicedPacket::from_ethernet(&f[..n]).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else { panic!("not ipv6") };
        assert_eq!((ip.header().source(), ip.header().destination()), (V6, C6));
        let Some(etherparse::TransportSlice::Icmpv6(i)) = &p.transport else { panic!("not icmpv6") };
        assert_eq!((i.type_u8(), i.code_u8()), (1, 4));
        let icmp = &f[54..n];
        assert_eq!(fold(sum(icmp, pseudo_v6(V6, C6, PROTO_ICMPV6, icmp.len() as u32))), 0xffff);
    }
}
