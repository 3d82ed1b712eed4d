//! Ethernet/IPv4 ARP (RFC 826): a checked view ([`ArpPacket`]) and the two messages the
//! switch writes itself: the request it resolves a backend with ([`emit_request`]) and the
//! reply with which it answers the node for a VIP ([`reply_in_place`]).

use std::net::Ipv4Addr;

use super::ethernet::{ethertype, EthernetFrame, HEADER_LEN as ETH_LEN};
use super::Mac;

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// Operation codes.
pub mod op {
    /// Request.
    pub const REQUEST: u16 = 1;
    /// Reply.
    pub const REPLY: u16 = 2;
}

/// ARP fields (Ethernet/IPv4 sizes).
pub mod field {
    use std::ops::Range;
    /// Hardware type (1: Ethernet).
    pub const HTYPE: Range<usize> = 0..2;
    /// Protocol type (0x0800).
    pub const PTYPE: Range<usize> = 2..4;
    /// Hardware address length (6).
    pub const HLEN: usize = 4;
    /// Protocol address length (4).
    pub const PLEN: usize = 5;
    /// Operation.
    pub const OPER: Range<usize> = 6..8;
    /// Sender hardware address.
    pub const SHA: Range<usize> = 8..14;
    /// Sender protocol address.
    pub const SPA: Range<usize> = 14..18;
    /// Target hardware address.
    pub const THA: Range<usize> = 18..24;
    /// Target protocol address.
    pub const TPA: Range<usize> = 24..28;
}

/// The fixed first eight bytes of an Ethernet/IPv4 ARP packet, less the operation.
const ETH_IPV4: [u8; 6] = [0, 1, 0x08, 0, 6, 4];

/// A view over an Ethernet/IPv4 ARP packet: [`ArpPacket::new_checked`] refuses any other
/// hardware or protocol type, address sizes, or a packet shorter than 28 bytes.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// A view over a whole Ethernet/IPv4 ARP packet.
    pub fn new_checked(buffer: T) -> Option<ArpPacket<T>> {
        let b = buffer.as_ref();
        (b.len() >= PACKET_LEN && b[..6] == ETH_IPV4).then_some(ArpPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The operation ([`op`]).
    pub fn operation(&self) -> u16 {
        u16::from_be_bytes([self.b()[field::OPER.start], self.b()[field::OPER.start + 1]])
    }

    /// Sender hardware address.
    pub fn sender_mac(&self) -> Mac {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.b()[field::SHA]);
        m
    }

    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        ip(&self.b()[field::SPA])
    }

    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        ip(&self.b()[field::TPA])
    }
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Writes a broadcast ARP request "who has `target`, tell `sender_ip`" from `sender_mac` as a
/// whole Ethernet frame at the start of `buf`; returns its length, or `None` when `buf` is too
/// short.
pub fn emit_request(
    buf: &mut [u8],
    sender_mac: &Mac,
    sender_ip: Ipv4Addr,
    target: Ipv4Addr,
) -> Option<usize> {
    let out = buf.get_mut(..ETH_LEN + PACKET_LEN)?;
    EthernetFrame::new_checked(&mut *out).ok()?.emit(&[0xff; 6], sender_mac, ethertype::ARP);
    let a = &mut out[ETH_LEN..];
    a[..6].copy_from_slice(&ETH_IPV4);
    a[field::OPER].copy_from_slice(&op::REQUEST.to_be_bytes());
    a[field::SHA].copy_from_slice(sender_mac);
    a[field::SPA].copy_from_slice(&sender_ip.octets());
    a[field::THA].fill(0);
    a[field::TPA].copy_from_slice(&target.octets());
    Some(ETH_LEN + PACKET_LEN)
}

/// Turns the ARP request in the Ethernet frame `eth` into the reply that `mac` has its
/// target address, sent back to the asker from `mac`. `None` (nothing changed) when `eth` is
/// not an Ethernet/IPv4 ARP request. The frame keeps its length (Ethernet padding included).
pub fn reply_in_place(eth: &mut [u8], mac: &Mac) -> Option<()> {
    let req = ArpPacket::new_checked(eth.get(ETH_LEN..)?)?;
    if req.operation() != op::REQUEST {
        return None;
    }
    let (asker_mac, asker_ip, target) = (req.sender_mac(), req.sender_ip(), req.target_ip());
    EthernetFrame::new_checked(&mut *eth).ok()?.set_macs(&asker_mac, mac);
    let a = &mut eth[ETH_LEN..];
    a[field::OPER].copy_from_slice(&op::REPLY.to_be_bytes());
    a[field::SHA].copy_from_slice(mac);
    a[field::SPA].copy_from_slice(&target.octets());
    a[field::THA].copy_from_slice(&asker_mac);
    a[field::TPA].copy_from_slice(&asker_ip.octets());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Mac = [2, 0, 0, 0, 0, 0xee];

    /// Build → parse, against etherparse's ARP slice.
    #[test]
    fn request_round_trips() {
        let mut buf = [0u8; 60];
        let n = emit_request(&mut buf, &GW, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 3)).unwrap();
        assert_eq!(n, 42);
        let e = EthernetFrame::new_checked(&buf[..n]).unwrap();
        assert_eq!((e.dst(), e.src(), e.ethertype()), ([0xff; 6], GW, ethertype::ARP));
        let a = ArpPacket::new_checked(e.payload()).unwrap();
        assert_eq!(
            (a.operation(), a.sender_mac(), a.sender_ip()),
            (op::REQUEST, GW, Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(a.target_ip(), Ipv4Addr::new(10, 0, 0, 3));
        let theirs = etherparse::ArpPacketSlice::from_slice(&buf[14..n]).unwrap();
        assert_eq!(theirs.target_protocol_addr(), &[10, 0, 0, 3]);
        assert_eq!(emit_request(&mut buf[..41], &GW, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED), None);
    }

    #[test]
    fn request_becomes_reply() {
        let asker = [2, 0, 0, 0, 0, 1];
        let mut f = [0u8; 60];
        emit_request(&mut f, &asker, Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 96, 0, 10)).unwrap();
        reply_in_place(&mut f, &GW).unwrap();
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!((e.dst(), e.src()), (asker, GW));
        let a = ArpPacket::new_checked(e.payload()).unwrap();
        assert_eq!(
            (a.operation(), a.sender_mac(), a.sender_ip()),
            (op::REPLY, GW, Ipv4Addr::new(10, 96, 0, 10))
        );
        assert_eq!((&f[32..38], a.target_ip()), (&asker[..], Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(reply_in_place(&mut f, &GW), None, "a reply is not answered");
    }

    #[test]
    fn truncated_or_other() {
        let mut f = [0u8; 42];
        emit_request(&mut f, &GW, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED).unwrap();
        assert!(ArpPacket::new_checked(&f[14..41]).is_none());
        f[14 + field::HLEN] = 8;
        assert!(ArpPacket::new_checked(&f[14..]).is_none());
        assert_eq!(reply_in_place(&mut f[..20], &GW), None);
    }
}
