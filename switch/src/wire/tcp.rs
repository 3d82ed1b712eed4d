//! TCP headers: a checked view ([`TcpPacket`]) with its field offsets and flags, and the RST
//! the switch answers a segment of a dead flow with ([`reset_in_place`]).

use super::checksum::{fold, pseudo_ip, sum};
use super::ethernet::{EthernetFrame, HEADER_LEN as ETH_LEN};
use super::frame::IpL4;
use super::ip::{self, emit_header, PROTO_TCP};
use super::Mac;

/// Length of a TCP header without options.
pub const MIN_LEN: usize = 20;

/// TCP header fields.
pub mod field {
    use std::ops::Range;
    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Sequence number.
    pub const SEQ: Range<usize> = 4..8;
    /// Acknowledgment number.
    pub const ACK: Range<usize> = 8..12;
    /// Data offset (high nibble).
    pub const DATA_OFF: usize = 12;
    /// Flags.
    pub const FLAGS: usize = 13;
    /// Window.
    pub const WINDOW: Range<usize> = 14..16;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 16..18;
}

/// TCP flag bits.
pub mod flags {
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
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// A view over a TCP header: after [`TcpPacket::new_checked`] (20 bytes at least) no
/// accessor panics. The data offset is not checked here (see [`TcpPacket::header_len`]).
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// A view over at least a minimal header.
    pub fn new_checked(buffer: T) -> Option<TcpPacket<T>> {
        (buffer.as_ref().len() >= MIN_LEN).then_some(TcpPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.b(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.b(), field::DST_PORT.start)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.b(), field::SEQ.start)
    }

    /// Acknowledgment number.
    pub fn ack(&self) -> u32 {
        be32(self.b(), field::ACK.start)
    }

    /// The header length the data offset gives (may be below 20 or past the buffer in a
    /// malformed segment: callers that need the options check it).
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::DATA_OFF] >> 4) * 4
    }

    /// The flags ([`flags`]).
    pub fn flags(&self) -> u8 {
        self.b()[field::FLAGS]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM.start)
    }
}

/// Turns the TCP segment `l` (in the Ethernet frame `eth`) into the RST answering it, from
/// the segment's destination and sent from `from_mac` to its sender's MAC. Returns the new
/// frame length, or `None` when the segment is itself a RST (never answered), a later
/// fragment, or too short.
pub fn reset_in_place(eth: &mut [u8], l: &IpL4, from_mac: &Mac) -> Option<usize> {
    if l.proto != PROTO_TCP || l.flags & flags::RST != 0 || l.later_fragment {
        return None;
    }
    let t = l.l4_off;
    let ip_len = if l.is_v6() { ip::IPV6_HDR_LEN } else { ip::IPV4_MIN_LEN };
    if eth.len() < t + MIN_LEN || eth.len() < ETH_LEN + ip_len + MIN_LEN {
        return None;
    }
    let seg = TcpPacket::new_checked(&eth[t..])?;
    // Payload length: IPv4 total length less headers; IPv6 payload length less extensions.
    let (len_field, before_tcp) = if l.is_v6() {
        (ip::v6::LENGTH, t - ETH_LEN - ip::IPV6_HDR_LEN)
    } else {
        (ip::v4::LENGTH, t - ETH_LEN)
    };
    let len_field = usize::from(be16(&eth[ETH_LEN..], len_field.start));
    let payload = len_field.saturating_sub(before_tcp + seg.header_len());
    let seg_len =
        payload as u32 + u32::from(l.flags & flags::SYN != 0) + u32::from(l.flags & flags::FIN != 0);
    let (seq, ack, out_flags) = if l.flags & flags::ACK != 0 {
        (seg.ack(), 0, flags::RST)
    } else {
        (0, seg.seq().wrapping_add(seg_len), flags::RST | flags::ACK)
    };
    let client_mac = EthernetFrame::new_checked(&*eth).ok()?.src();
    EthernetFrame::new_checked(&mut *eth).ok()?.set_macs(&client_mac, from_mac);
    let (src, dst) = (l.dst, l.src);
    let h = emit_header(&mut eth[ETH_LEN..], MIN_LEN as u16, PROTO_TCP, src, dst, 64)?;
    let tcp = eth.get_mut(ETH_LEN + h..ETH_LEN + h + MIN_LEN)?;
    tcp.fill(0);
    tcp[field::SRC_PORT].copy_from_slice(&l.dport.to_be_bytes());
    tcp[field::DST_PORT].copy_from_slice(&l.sport.to_be_bytes());
    tcp[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    tcp[field::ACK].copy_from_slice(&ack.to_be_bytes());
    tcp[field::DATA_OFF] = 5 << 4;
    tcp[field::FLAGS] = out_flags;
    let c = !fold(sum(tcp, pseudo_ip(&src, &dst, PROTO_TCP, MIN_LEN as u32)));
    tcp[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    Some(ETH_LEN + h + MIN_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::IpL4;

    // TCP 40000 → 80, seq 1000, ack 7, data offset 5, SYN+ACK, window 65535.
    static SEG: [u8; 20] =
        [0x9c, 0x40, 0, 80, 0, 0, 0x03, 0xe8, 0, 0, 0, 7, 0x50, 0x12, 0xff, 0xff, 0xab, 0xcd, 0, 0];

    #[test]
    fn deconstruct() {
        let t = TcpPacket::new_checked(&SEG[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port(), t.seq(), t.ack()), (40000, 80, 1000, 7));
        assert_eq!((t.header_len(), t.flags(), t.checksum()), (20, flags::SYN | flags::ACK, 0xabcd));
        assert!(TcpPacket::new_checked(&SEG[..19]).is_none());
    }

    const GW: Mac = [2, 0xaa, 0, 0, 0, 1];

    fn syn(v6: bool, flags_rst: bool) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], GW);
        let b =
            if v6 { b.ipv6([0xfd; 16], [0xfe; 16], 64) } else { b.ipv4([10, 0, 0, 2], [10, 96, 0, 1], 64) };
        let b = b.tcp(40000, 80, 1000, 500);
        let b = if flags_rst { b.rst() } else { b.syn() };
        let mut f = Vec::new();
        b.write(&mut f, &[]).unwrap();
        f
    }

    /// Build → parse: the RST parses back with etherparse, its checksums verified by the one
    /// checksum module against etherparse's own.
    #[test]
    fn syn_gets_rst_ack_both_families() {
        for v6 in [false, true] {
            let mut f = syn(v6, false);
            let l = IpL4::parse(&f).unwrap();
            let n = reset_in_place(&mut f, &l, &GW).unwrap();
            assert_eq!(n, if v6 { 74 } else { 54 });
            let p = etherparse::SlicedPacket::from_ethernet(&f[..n]).unwrap();
            let Some(etherparse::TransportSlice::Tcp(t)) = &p.transport else { panic!("not tcp") };
            assert!(t.rst() && t.ack() && !t.syn());
            assert_eq!((t.source_port(), t.destination_port(), t.acknowledgment_number()), (80, 40000, 1001));
            let want = match &p.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    assert_eq!(
                        (ip.header().source(), ip.header().destination()),
                        ([10, 96, 0, 1], [10, 0, 0, 2])
                    );
                    let v4 = crate::wire::ip::Ipv4Packet::new_checked(&f[14..34]).unwrap();
                    assert!(v4.verify_checksum());
                    t.to_header().calc_checksum_ipv4(&ip.header().to_header(), &[]).unwrap()
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => {
                    assert_eq!((ip.header().source(), ip.header().destination()), ([0xfe; 16], [0xfd; 16]));
                    t.to_header().calc_checksum_ipv6(&ip.header().to_header(), &[]).unwrap()
                }
                _ => panic!("not ip"),
            };
            assert_eq!(t.checksum(), want);
            let back = IpL4::parse(&f[..n]).unwrap();
            assert_eq!(fold(sum(&f[back.l4_off..n], pseudo_ip(&back.src, &back.dst, PROTO_TCP, 20))), 0xffff);
            assert_eq!((&f[0..6], &f[6..12]), (&[2, 0, 0, 0, 0, 1][..], &GW[..]));
        }
    }

    #[test]
    fn rst_is_never_answered() {
        let mut f = syn(false, true);
        let l = IpL4::parse(&f).unwrap();
        assert_eq!(reset_in_place(&mut f, &l, &GW), None);
    }
}
