//! IPv4 and IPv6 headers: checked views ([`Ipv4Packet`], [`Ipv6Packet`]) with their field
//! offsets, the protocol numbers the switch knows, the walk over IPv6 extension headers to
//! the transport header, and the header builder the switch's own answers use.
//!
//! The IP length fields are not compared with the buffer: a GSO super-frame legitimately
//! carries more than one packet's worth, and a truncated frame is caught where its transport
//! header would be.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::{checksum, pseudo};

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IPv6 next-header value of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers: hop-by-hop options, routing, fragment, destination options.
pub const EXT_HOP_BY_HOP: u8 = 0;
/// Routing header.
pub const EXT_ROUTING: u8 = 43;
/// Fragment header.
pub const EXT_FRAGMENT: u8 = 44;
/// Destination options.
pub const EXT_DEST_OPTIONS: u8 = 60;

/// Most IPv6 extension headers walked before giving up.
const MAX_EXT_HEADERS: usize = 8;

/// Length of an IPv4 header without options.
pub const IPV4_MIN_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HDR_LEN: usize = 40;

/// IPv4 header fields.
pub mod v4 {
    use std::ops::Range;
    /// Version and IHL.
    pub const VER_IHL: usize = 0;
    /// DSCP and ECN.
    pub const TOS: usize = 1;
    /// Total length.
    pub const LENGTH: Range<usize> = 2..4;
    /// Identification.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags and fragment offset.
    pub const FRAG: Range<usize> = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source address.
    pub const SRC: Range<usize> = 12..16;
    /// Destination address.
    pub const DST: Range<usize> = 16..20;
    /// The don't-fragment bit, in the first byte of [`FRAG`].
    pub const DF: u8 = 0x40;
    /// The more-fragments bit and the fragment offset's top bits, in the first byte of [`FRAG`].
    pub const MF_OFFSET_HI: u8 = 0x3f;
}

/// IPv6 header fields.
pub mod v6 {
    use std::ops::Range;
    /// Payload length.
    pub const LENGTH: Range<usize> = 4..6;
    /// Next header.
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC: Range<usize> = 8..24;
    /// Destination address.
    pub const DST: Range<usize> = 24..40;
    /// Both addresses, as the pseudo header takes them.
    pub const ADDRS: Range<usize> = 8..40;
}

/// Why bytes are not an IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    /// Shorter than its header.
    #[error("truncated IP header")]
    Truncated,
    /// Another version than the EtherType says.
    #[error("wrong IP version")]
    Version,
    /// An IPv4 header length below 20 bytes.
    #[error("IPv4 header length below 20")]
    HeaderLen,
}

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

/// A view over an IPv4 header (and what follows it).
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view over a header of version 4 with an IHL of at least 5, all there.
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, IpError> {
        let b = buffer.as_ref();
        let vihl = *b.get(v4::VER_IHL).ok_or(IpError::Truncated)?;
        if vihl >> 4 != 4 {
            return Err(if b.len() < IPV4_MIN_LEN { IpError::Truncated } else { IpError::Version });
        }
        let ihl = usize::from(vihl & 0x0f) * 4;
        if ihl < IPV4_MIN_LEN {
            return Err(IpError::HeaderLen);
        }
        if b.len() < ihl {
            return Err(IpError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Header length, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[v4::VER_IHL] & 0x0f) * 4
    }

    /// Total length as the header says.
    pub fn total_len(&self) -> u16 {
        be16(self.b(), v4::LENGTH)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.b(), v4::IDENT)
    }

    /// The fragment offset, in units of 8 bytes.
    pub fn frag_offset(&self) -> u16 {
        be16(self.b(), v4::FRAG) & 0x1fff
    }

    /// The more-fragments bit.
    pub fn more_frags(&self) -> bool {
        self.b()[v4::FRAG.start] & 0x20 != 0
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.b()[v4::PROTOCOL]
    }

    /// The header checksum as sent.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), v4::CHECKSUM)
    }

    /// Whether the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        checksum(&self.b()[..self.header_len()]) == 0
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        let s = &self.b()[v4::SRC];
        Ipv4Addr::new(s[0], s[1], s[2], s[3])
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        let d = &self.b()[v4::DST];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the total length.
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[v4::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, id: u16) {
        self.buffer.as_mut()[v4::IDENT].copy_from_slice(&id.to_be_bytes());
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[v4::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }
}

/// A view over an IPv6 header (and what follows it).
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// A view over a whole fixed header of version 6.
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>, IpError> {
        let b = buffer.as_ref();
        if b.len() < IPV6_HDR_LEN {
            return Err(IpError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(IpError::Version);
        }
        Ok(Ipv6Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Payload length as the header says (extension headers included).
    pub fn payload_len(&self) -> u16 {
        be16(self.b(), v6::LENGTH)
    }

    /// The first next-header value.
    pub fn next_header(&self) -> u8 {
        self.b()[v6::NEXT_HEADER]
    }

    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr16(&self.b()[v6::SRC]))
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr16(&self.b()[v6::DST]))
    }

    /// The bytes after the fixed header.
    pub fn payload(&self) -> &[u8] {
        &self.b()[IPV6_HDR_LEN..]
    }

    /// Walks the hop-by-hop, routing, destination-options and fragment headers to the
    /// transport header: (its protocol, its offset from the start of the IPv6 header, whether
    /// a fragment header says it is in an earlier fragment). The walk stops at the first other
    /// header (ESP, AH, ICMPv6, ...) or after 8 extension headers; `None` for a truncated
    /// chain.
    pub fn transport(&self) -> Option<(u8, usize, bool)> {
        let b = self.b();
        let (mut next, mut off, mut later) = (self.next_header(), IPV6_HDR_LEN, false);
        for _ in 0..MAX_EXT_HEADERS {
            match next {
                EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTIONS => {
                    // (next header, length in 8-octet units less one)
                    next = *b.get(off)?;
                    off += (usize::from(*b.get(off + 1)?) + 1) * 8;
                }
                EXT_FRAGMENT => {
                    next = *b.get(off)?;
                    later = u16::from_be_bytes([*b.get(off + 2)?, *b.get(off + 3)?]) & 0xfff8 != 0;
                    off += 8;
                }
                _ => return Some((next, off, later)),
            }
        }
        Some((next, off, later))
    }
}

fn addr16(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    a
}

/// The 4 or 16 bytes of an address.
pub fn octets(a: &IpAddr) -> ([u8; 16], usize) {
    match a {
        IpAddr::V4(v) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&v.octets());
            (o, 4)
        }
        IpAddr::V6(v) => (v.octets(), 16),
    }
}

/// The pseudo-header sum of a transport segment of `l4_len` bytes in the Ethernet frame
/// `frame`, with the addresses of its IP header (IPv6 or IPv4, whose header the caller
/// checked).
pub fn pseudo_in_frame(frame: &[u8], ipv6: bool, proto: u8, l4_len: usize) -> u64 {
    let ip = &frame[super::ethernet::HEADER_LEN..];
    let (s, d) = if ipv6 { (v6::SRC, v6::DST) } else { (v4::SRC, v4::DST) };
    pseudo(&ip[s], &ip[d], proto, l4_len as u32)
}

/// Writes a fresh IP header at the start of `buf` (20-byte IPv4 with DF and TTL 64, or
/// 40-byte IPv6 with hop limit `hop_limit`) for a payload of `payload` bytes; returns the
/// header length, or `None` when `buf` is too short. `src` and `dst` are of one family (an
/// IPv4 address with an IPv6 one is written IPv4-mapped).
pub fn emit_header(
    buf: &mut [u8],
    payload: u16,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    hop_limit: u8,
) -> Option<usize> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = buf.get_mut(..IPV4_MIN_LEN)?;
            h.copy_from_slice(&[
                0x45,
                0,
                0,
                0,
                0,
                0,
                v4::DF,
                0,
                hop_limit,
                proto,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
            h[v4::LENGTH].copy_from_slice(&payload.checked_add(20)?.to_be_bytes());
            h[v4::SRC].copy_from_slice(&s.octets());
            h[v4::DST].copy_from_slice(&d.octets());
            let c = checksum(h);
            h[v4::CHECKSUM].copy_from_slice(&c.to_be_bytes());
            Some(IPV4_MIN_LEN)
        }
        (s, d) => {
            let h = buf.get_mut(..IPV6_HDR_LEN)?;
            h[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, proto, hop_limit]);
            h[v6::LENGTH].copy_from_slice(&payload.to_be_bytes());
            h[v6::SRC].copy_from_slice(&v6_octets(s));
            h[v6::DST].copy_from_slice(&v6_octets(d));
            Some(IPV6_HDR_LEN)
        }
    }
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // IPv4 10.0.0.1 → 10.0.0.2, TCP, id 1, DF, TTL 64, checksum right.
    static V4: [u8; 20] = [0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0x26, 0xcd, 10, 0, 0, 1, 10, 0, 0, 2];

    #[test]
    fn ipv4_deconstruct() {
        let p = Ipv4Packet::new_checked(&V4[..]).unwrap();
        assert_eq!((p.header_len(), p.total_len(), p.ident(), p.protocol()), (20, 40, 1, PROTO_TCP));
        assert_eq!((p.src(), p.dst()), (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!((p.frag_offset(), p.more_frags()), (0, false));
        assert!(p.verify_checksum(), "{:#x}", p.checksum());
    }

    #[test]
    fn ipv4_construct() {
        let mut buf = [0u8; 20];
        let n = emit_header(&mut buf, 20, PROTO_TCP, [10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 64).unwrap();
        let mut want = V4;
        want[4..6].fill(0); // a fresh header has id 0
        Ipv4Packet::new_checked(&mut want[..]).unwrap().fill_checksum();
        assert_eq!((n, buf), (20, want));
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_ident(1);
        p.set_total_len(40);
        p.fill_checksum();
        assert_eq!(buf, V4);
        assert_eq!(emit_header(&mut [0u8; 19], 0, 6, [1, 1, 1, 1].into(), [1, 1, 1, 1].into(), 64), None);
    }

    #[test]
    fn ipv4_truncated_or_bad() {
        assert_eq!(Ipv4Packet::new_checked(&V4[..19]).err(), Some(IpError::Truncated));
        assert_eq!(Ipv4Packet::new_checked(&[][..]).err(), Some(IpError::Truncated));
        let mut b = V4;
        b[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).err(), Some(IpError::HeaderLen));
        b[0] = 0x46;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).err(), Some(IpError::Truncated), "options cut off");
        b[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).err(), Some(IpError::Version));
    }

    fn v6_header(next: u8, payload: u16) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        emit_header(&mut b, payload, next, "fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 64)
            .unwrap();
        b
    }

    #[test]
    fn ipv6_deconstruct_and_walk() {
        let mut b = v6_header(EXT_HOP_BY_HOP, 16);
        b.extend_from_slice(&[EXT_FRAGMENT, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop, 8 bytes
        b.extend_from_slice(&[PROTO_UDP, 0, 0, 0x11, 0, 0, 0, 1]); // fragment at offset 16
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.payload_len(), p.next_header()), (16, EXT_HOP_BY_HOP));
        assert_eq!((p.src(), p.dst()), ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()));
        assert_eq!(p.transport(), Some((PROTO_UDP, 56, true)));
        assert_eq!(Ipv6Packet::new_checked(&b[..50]).unwrap().transport(), None, "truncated chain");
        let plain = v6_header(PROTO_TCP, 0);
        assert_eq!(Ipv6Packet::new_checked(&plain[..]).unwrap().transport(), Some((PROTO_TCP, 40, false)));
        assert_eq!(Ipv6Packet::new_checked(&plain[..39]).err(), Some(IpError::Truncated));
        let mut v4 = plain;
        v4[0] = 0x45;
        assert_eq!(Ipv6Packet::new_checked(&v4[..]).err(), Some(IpError::Version));
    }

    proptest::proptest! {
        /// The views accept exactly what etherparse's checked slices accept.
        #[test]
        fn views_agree_with_etherparse(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let ours = Ipv4Packet::new_checked(&bytes[..]).map(|p| (p.src(), p.dst(), p.protocol()));
            let theirs = etherparse::Ipv4HeaderSlice::from_slice(&bytes)
                .map(|h| (h.source_addr(), h.destination_addr(), h.protocol().0));
            proptest::prop_assert_eq!(ours.ok(), theirs.ok());
            let ours = Ipv6Packet::new_checked(&bytes[..]).map(|p| (p.src(), p.dst(), p.next_header()));
            let theirs = etherparse::Ipv6HeaderSlice::from_slice(&bytes)
                .map(|h| (h.source_addr(), h.destination_addr(), h.next_header().0));
            proptest::prop_assert_eq!(ours.ok(), theirs.ok());
            if let Ok(p) = Ipv6Packet::new_checked(&bytes[..]) {
                let _ = p.transport();
            }
        }
    }
}
