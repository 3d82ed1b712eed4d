//! `struct virtio_net_hdr_v1` (12 bytes), as a TAP with `IFF_VNET_HDR` and `TUNSETVNETHDRSZ 12`
//! reads and writes it before every frame. It carries the GSO (segmentation offload) and
//! checksum-offload metadata that lets a 64 KiB TCP super-frame cross the switch as one frame.
//!
//! Fields are little-endian: the daemon sets `TUNSETVNETLE` so this holds on any host.
//!
//! A pod's header is untrusted: [`VnetHdr::validate`] checks it against the frame it describes
//! the way the kernel's `virtio_net_hdr_to_skb` does for a header from a guest or a packet
//! socket, before the switch forwards or segments anything (see docs/security.md).

use super::ethernet::HEADER_LEN as ETH_LEN;
use super::frame::IpL4;
use super::ip::{IPV4_MIN_LEN, PROTO_TCP, PROTO_UDP};
use super::tcp;

/// Length of the header the switch uses on every TAP.
pub const VNET_HDR_LEN: usize = 12;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified.
pub const F_DATA_VALID: u8 = 2;

/// GSO types (`VIRTIO_NET_HDR_GSO_*`).
pub const GSO_NONE: u8 = 0;
/// TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// UDP fragmentation offload (legacy).
pub const GSO_UDP: u8 = 3;
/// TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// UDP segmentation offload (USO, both families).
pub const GSO_UDP_L4: u8 = 5;
/// ECN bit that may be or-ed into the GSO type.
pub const GSO_ECN: u8 = 0x80;
/// `GSO_BY_FRAGS`: a kernel-internal segment size that never comes from a device.
const GSO_BY_FRAGS: u16 = 0xffff;

/// Most segments one UDP GSO frame may be cut into: the kernel's `UDP_MAX_SEGMENTS`
/// (include/linux/udp.h), which `virtio_net_hdr_to_skb` and `udp_send_skb` enforce. It was
/// `1 << 6` = 64 for years and is `1 << 7` = 128 in recent kernels (6.18 here takes a
/// 128-segment `UDP_SEGMENT` send and refuses 129); the larger value, so that a recent pod
/// kernel's own trains pass.
pub const UDP_MAX_SEGMENTS: usize = 128;
/// The smallest TCP segment size a full 64 KiB super-frame may ask for: the kernel's default
/// `net.ipv4.tcp_min_snd_mss`, below which a Linux TCP sender does not cut segments.
pub const TCP_MIN_GSO_SIZE: usize = 48;
/// Most segments one TCP super-frame may be cut into: 64 KiB at [`TCP_MIN_GSO_SIZE`]. (The
/// kernel's own bound, `GSO_MAX_SEGS` = 65535, would let a frame with `gso_size` 1 become 64K
/// segments.) A smaller frame may have a smaller `gso_size`, as GRO makes from short segments.
pub const TCP_MAX_SEGMENTS: usize = 65_536usize.div_ceil(TCP_MIN_GSO_SIZE);
/// Ethernet + the smallest IPv4 header: no transport header starts before it (the kernel's
/// `nh_min_len`).
const MIN_L4_OFF: usize = ETH_LEN + IPV4_MIN_LEN;

mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Range<usize> = 2..4;
    pub const GSO_SIZE: Range<usize> = 4..6;
    pub const CSUM_START: Range<usize> = 6..8;
    pub const CSUM_OFFSET: Range<usize> = 8..10;
    pub const NUM_BUFFERS: Range<usize> = 10..12;
}

/// A decoded vnet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_*` flags.
    pub flags: u8,
    /// `GSO_*` type, ECN bit included.
    pub gso_type: u8,
    /// Length of the headers to replicate in each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (from the Ethernet header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum is stored.
    pub csum_offset: u16,
}

/// Why a vnet header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VnetError {
    /// The buffer is shorter than the header.
    #[error("shorter than the vnet header")]
    Truncated,
    /// The GSO type is not one the switch knows.
    #[error("unknown GSO type {0:#x}")]
    UnknownGso(u8),
    /// The checksum location is outside the frame.
    #[error("checksum offset outside the frame")]
    CsumOutOfRange,
    /// The GSO type does not describe the frame (TCPv4 on a frame that is not IPv4/TCP, UDP
    /// on one that is not UDP, legacy UFO, a truncated transport header).
    #[error("GSO type {0:#x} does not match the frame")]
    GsoMismatch(u8),
    /// The ECN bit on a GSO type other than TCP.
    #[error("ECN bit without TCP segmentation")]
    EcnWithoutTcp,
    /// `gso_size` 0 or `GSO_BY_FRAGS`.
    #[error("GSO size {0} is invalid")]
    BadGsoSize(u16),
    /// The frame would be cut into more segments than the kernel allows.
    #[error("{0} segments exceed the cap")]
    TooManySegments(usize),
    /// `hdr_len` beyond the frame.
    #[error("header length {0} does not fit the frame")]
    BadHdrLen(u16),
    /// The partial checksum does not point at the L4 checksum field (or starts inside the IP
    /// header).
    #[error("partial checksum at {start}+{offset} is not the transport checksum")]
    CsumMisplaced {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
    },
}

fn le16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[r]);
    u16::from_le_bytes(a)
}

impl VnetHdr {
    /// Decodes the header at the start of `buf` (`buf` = header + frame) and checks it against
    /// the frame length that follows it.
    pub fn parse(buf: &[u8]) -> Result<VnetHdr, VnetError> {
        if buf.len() < VNET_HDR_LEN {
            return Err(VnetError::Truncated);
        }
        let hdr = VnetHdr {
            flags: buf[field::FLAGS],
            gso_type: buf[field::GSO_TYPE],
            hdr_len: le16(buf, field::HDR_LEN),
            gso_size: le16(buf, field::GSO_SIZE),
            csum_start: le16(buf, field::CSUM_START),
            csum_offset: le16(buf, field::CSUM_OFFSET),
        };
        match hdr.gso_type & !GSO_ECN {
            GSO_NONE | GSO_TCPV4 | GSO_UDP | GSO_TCPV6 | GSO_UDP_L4 => {}
            other => return Err(VnetError::UnknownGso(other)),
        }
        let frame_len = buf.len() - VNET_HDR_LEN;
        if hdr.flags & F_NEEDS_CSUM != 0
            && usize::from(hdr.csum_start) + usize::from(hdr.csum_offset) + 2 > frame_len
        {
            return Err(VnetError::CsumOutOfRange);
        }
        Ok(hdr)
    }

    /// Checks the header against `frame` (the Ethernet frame after it), as the kernel's
    /// `virtio_net_hdr_to_skb` does for a header it did not write:
    /// - GSO: TCPv4 only on IPv4/TCP, TCPv6 only on IPv6/TCP, UDP_L4 only on UDP (and with
    ///   `NEEDS_CSUM`), ECN only with TCP, no legacy UFO; `gso_size` neither 0 nor
    ///   `GSO_BY_FRAGS`; at most [`UDP_MAX_SEGMENTS`] / [`TCP_MAX_SEGMENTS`] segments; a
    ///   partial checksum at the transport header's checksum field;
    /// - any frame: a partial checksum inside the frame and not before the end of a minimal IP
    ///   header, at the checksum field when it starts at a TCP/UDP header (a tunnel's inner
    ///   checksum may start deeper); `hdr_len` not beyond the frame.
    ///
    /// A super-frame's non-zero `hdr_len` short of its headers is raised to their end rather
    /// than refused, as tun raises it to cover the checksum: the kernel writes `skb_headlen`
    /// there, only a hint, which a pod forwarding GRO'd traffic may legitimately leave short.
    /// The caller writes the header back when [`VnetHdr::hdr_len`] changed.
    ///
    /// Only reads bytes, never panics. Parses the frame's transport header for the check:
    /// [`VnetHdr::validate_with`] takes the one the parse stage found.
    pub fn validate(&mut self, frame: &[u8]) -> Result<(), VnetError> {
        let l4 = IpL4::parse(frame);
        self.validate_with(frame, l4.as_ref())
    }

    /// [`VnetHdr::validate`] with `l4`, the TCP/UDP header [`crate::wire::frame::parse_frame`]
    /// found in `frame` (`None`: none).
    pub fn validate_with(&mut self, frame: &[u8], l4: Option<&IpL4>) -> Result<(), VnetError> {
        if usize::from(self.hdr_len) > frame.len() {
            return Err(VnetError::BadHdrLen(self.hdr_len));
        }
        let csum = self.flags & F_NEEDS_CSUM != 0;
        let (start, offset) = (usize::from(self.csum_start), usize::from(self.csum_offset));
        if csum && start + offset + 2 > frame.len() {
            return Err(VnetError::CsumOutOfRange);
        }
        let misplaced = VnetError::CsumMisplaced { start: self.csum_start, offset: self.csum_offset };
        if csum && start < MIN_L4_OFF {
            return Err(misplaced);
        }
        let l4 = l4.filter(|l| !l.later_fragment);
        let kind = self.gso_type & !GSO_ECN;
        if kind == GSO_NONE {
            if self.gso_type & GSO_ECN != 0 {
                return Err(VnetError::EcnWithoutTcp);
            }
            if let Some(l) = l4.filter(|l| csum && l.l4_off == start) {
                if l.csum_off() != start + offset {
                    return Err(misplaced);
                }
            }
            return Ok(());
        }
        let mismatch = VnetError::GsoMismatch(self.gso_type);
        let l = l4.ok_or(mismatch)?;
        let (proto, cap) = match kind {
            GSO_TCPV4 if !l.is_v6() => (PROTO_TCP, TCP_MAX_SEGMENTS),
            GSO_TCPV6 if l.is_v6() => (PROTO_TCP, TCP_MAX_SEGMENTS),
            GSO_UDP_L4 => (PROTO_UDP, UDP_MAX_SEGMENTS),
            _ => return Err(mismatch),
        };
        if l.proto != proto {
            return Err(mismatch);
        }
        if proto == PROTO_UDP && (self.gso_type & GSO_ECN != 0) {
            return Err(VnetError::EcnWithoutTcp);
        }
        let hdrs = l.payload_off;
        if (proto == PROTO_TCP && hdrs < l.l4_off + tcp::MIN_LEN) || hdrs > frame.len() {
            return Err(mismatch);
        }
        if self.hdr_len != 0 && usize::from(self.hdr_len) < hdrs {
            // (The headers end inside the frame, which the kernel never makes larger than 64 KiB.)
            self.hdr_len = u16::try_from(hdrs).map_err(|_| VnetError::BadHdrLen(self.hdr_len))?;
        }
        let want = l.csum_field();
        if csum && (start != l.l4_off || usize::from(self.csum_offset) != want)
            || (!csum && proto == PROTO_UDP)
        {
            return Err(misplaced);
        }
        if self.gso_size == 0 || self.gso_size == GSO_BY_FRAGS {
            return Err(VnetError::BadGsoSize(self.gso_size));
        }
        let segments = (frame.len() - hdrs).div_ceil(usize::from(self.gso_size));
        if segments > cap {
            return Err(VnetError::TooManySegments(segments));
        }
        Ok(())
    }

    /// Whether this frame is a GSO super-frame.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `buf` (`num_buffers` = 0).
    /// Returns false when `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        let Some(out) = buf.get_mut(..VNET_HDR_LEN) else { return false };
        out[field::FLAGS] = self.flags;
        out[field::GSO_TYPE] = self.gso_type;
        out[field::HDR_LEN].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[field::GSO_SIZE].copy_from_slice(&self.gso_size.to_le_bytes());
        out[field::CSUM_START].copy_from_slice(&self.csum_start.to_le_bytes());
        out[field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_le_bytes());
        out[field::NUM_BUFFERS].fill(0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A TCPv4 super-frame header as the kernel writes it: NEEDS_CSUM, gso 1448, csum at 34+16.
    static TSO4: [u8; 12] = [0x01, 0x01, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0];

    #[test]
    fn deconstruct() {
        let mut buf = TSO4.to_vec();
        buf.resize(12 + 200, 0);
        let h = VnetHdr::parse(&buf).unwrap();
        assert_eq!(
            h,
            VnetHdr {
                flags: 1,
                gso_type: GSO_TCPV4,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16
            }
        );
        assert!(h.is_gso());
    }

    #[test]
    fn construct_round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut buf = [0xffu8; 12];
        assert!(h.emit(&mut buf));
        assert_eq!(buf, TSO4);
        assert!(!h.emit(&mut [0u8; 11]));
    }

    // Ethernet + IPv4 (10.0.0.1 → 10.0.0.2) + TCP (40000 → 5201, data offset 5, ACK).
    static TCP4: [u8; 54] = [
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
        0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0, // TCP
    ];
    // Ethernet + IPv6 (fd00::1 → fd00::2) + UDP (1000 → 2000).
    static UDP6: [u8; 62] = [
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd, // Ethernet
        0x60, 0, 0, 0, 0, 0, 17, 64, // IPv6: version, length, next header UDP, hop limit
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // source
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // destination
        0x03, 0xe8, 0x07, 0xd0, 0, 0, 0, 0, // UDP
    ];

    /// `headers` followed by `payload` bytes.
    fn frame(headers: &[u8], payload: usize) -> Vec<u8> {
        let mut f = headers.to_vec();
        f.resize(headers.len() + payload, 0xab);
        f
    }

    /// The header the kernel writes for a TCP super-frame of TCP4 (partial checksum at 34+16).
    fn tso(gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    /// The header of a UDP GSO frame of UDP6 (partial checksum at 54+6).
    fn uso(gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 62,
            gso_size,
            csum_start: 54,
            csum_offset: 6,
        }
    }

    #[test]
    fn valid_headers_pass() {
        let tcp = frame(&TCP4, 10_000);
        assert_eq!(tso(1448).validate(&tcp), Ok(()));
        assert_eq!(VnetHdr { gso_type: GSO_TCPV4 | GSO_ECN, ..tso(1448) }.validate(&tcp), Ok(()));
        assert_eq!(VnetHdr { hdr_len: 0, flags: 0, ..tso(1448) }.validate(&tcp), Ok(()), "no partial csum");
        assert_eq!(uso(1400).validate(&frame(&UDP6, 5000)), Ok(()));
        // Plain frames: no header, or a partial checksum at the transport checksum.
        assert_eq!(VnetHdr::default().validate(&tcp), Ok(()));
        assert_eq!(VnetHdr { gso_type: 0, gso_size: 0, ..tso(0) }.validate(&tcp), Ok(()));
        // A tunnel's inner checksum starts deeper than the outer transport header.
        let mut inner =
            VnetHdr { flags: F_NEEDS_CSUM, csum_start: 200, csum_offset: 16, ..Default::default() };
        assert_eq!(inner.validate(&tcp), Ok(()));
        // A frame no larger than one segment is not really GSO, whatever gso_size says.
        assert_eq!(tso(1).validate(&frame(&TCP4, 1)), Ok(()));
    }

    #[test]
    fn gso_type_must_match_the_frame() {
        let tcp4 = frame(&TCP4, 3000);
        let mut tcp6 = frame(&UDP6, 3000);
        tcp6[20] = 6; // next header TCP, and a TCP header where the UDP one was
        tcp6[54 + 12] = 0x50;
        let udp6 = frame(&UDP6, 3000);
        let m = |t| Err(VnetError::GsoMismatch(t));
        assert_eq!(VnetHdr { gso_type: GSO_TCPV6, ..tso(1448) }.validate(&tcp4), m(GSO_TCPV6));
        let mut tcp6_hdr = VnetHdr { gso_type: GSO_TCPV4, hdr_len: 74, csum_start: 54, ..tso(1448) };
        assert_eq!(tcp6_hdr.validate(&tcp6), m(GSO_TCPV4));
        assert_eq!(VnetHdr { gso_type: GSO_TCPV6, ..tcp6_hdr }.validate(&tcp6), Ok(()));
        assert_eq!(VnetHdr { gso_type: GSO_UDP_L4, ..tso(1448) }.validate(&tcp4), m(GSO_UDP_L4));
        assert_eq!(VnetHdr { gso_type: GSO_TCPV6, ..uso(1400) }.validate(&udp6), m(GSO_TCPV6));
        assert_eq!(VnetHdr { gso_type: GSO_UDP, ..uso(1400) }.validate(&udp6), m(GSO_UDP), "no UFO");
        // Not IP at all, or a later fragment (no transport header).
        let mut arp = tcp4.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(tso(1448).validate(&arp), m(GSO_TCPV4));
        let mut frag = tcp4.clone();
        frag[20..22].copy_from_slice(&[0x00, 0x10]);
        assert_eq!(tso(1448).validate(&frag), m(GSO_TCPV4));
        // A TCP header shorter than 20 bytes, or cut off.
        let mut short = tcp4.clone();
        short[34 + 12] = 0x40;
        assert_eq!(tso(1448).validate(&short), m(GSO_TCPV4));
        let mut long = tcp4.clone();
        long[34 + 12] = 0xf0; // 60 bytes of TCP header: hdr_len 54 is now short of it, and raised
        let mut h = tso(1448);
        assert_eq!(h.validate(&long), Ok(()));
        assert_eq!(h.hdr_len, 94);
        assert_eq!(tso(1448).validate(&long[..60]), m(GSO_TCPV4), "headers cut off");
    }

    #[test]
    fn ecn_only_with_tcp() {
        let udp6 = frame(&UDP6, 3000);
        let e = Err(VnetError::EcnWithoutTcp);
        assert_eq!(VnetHdr { gso_type: GSO_UDP_L4 | GSO_ECN, ..uso(1400) }.validate(&udp6), e);
        assert_eq!(VnetHdr { gso_type: GSO_ECN, ..Default::default() }.validate(&udp6), e);
    }

    #[test]
    fn gso_size_and_segment_caps() {
        assert_eq!(tso(0).validate(&frame(&TCP4, 3000)), Err(VnetError::BadGsoSize(0)));
        assert_eq!(tso(0xffff).validate(&frame(&TCP4, 3000)), Err(VnetError::BadGsoSize(0xffff)));
        // UDP: 128 segments, as the kernel allows, and not one more.
        assert_eq!(uso(100).validate(&frame(&UDP6, 12_800)), Ok(()));
        assert_eq!(uso(100).validate(&frame(&UDP6, 12_801)), Err(VnetError::TooManySegments(129)));
        assert_eq!(uso(1).validate(&frame(&UDP6, 1000)), Err(VnetError::TooManySegments(1000)));
        // TCP: a full 64 KiB super-frame at 48 bytes a segment, not below.
        let full = frame(&TCP4, 65_535 - 40);
        assert_eq!(tso(48).validate(&full), Ok(()));
        assert_eq!(TCP_MAX_SEGMENTS, 1366);
        assert_eq!(tso(47).validate(&full), Err(VnetError::TooManySegments(1394)));
        assert_eq!(tso(1).validate(&full), Err(VnetError::TooManySegments(65_495)));
        // Short segments are fine in a short frame (GRO of small segments makes these).
        assert_eq!(tso(10).validate(&frame(&TCP4, 600)), Ok(()));
    }

    #[test]
    fn hdr_len_within_the_frame_and_the_headers() {
        let tcp = frame(&TCP4, 3000);
        assert_eq!(VnetHdr { hdr_len: 3055, ..tso(1448) }.validate(&tcp), Err(VnetError::BadHdrLen(3055)));
        assert_eq!(VnetHdr { hdr_len: 3054, ..tso(1448) }.validate(&tcp), Ok(()), "the kernel's skb_headlen");
        let mut short = VnetHdr { hdr_len: 40, ..tso(1448) };
        assert_eq!(short.validate(&tcp), Ok(()));
        assert_eq!(short.hdr_len, 54, "a short hdr_len is raised to the end of the headers");
        let mut zero = VnetHdr { hdr_len: 0, ..tso(1448) };
        assert_eq!((zero.validate(&tcp), zero.hdr_len), (Ok(()), 0), "0: no hint, left alone");
        let mut plain = VnetHdr { hdr_len: 9000, ..Default::default() };
        assert_eq!(plain.validate(&tcp), Err(VnetError::BadHdrLen(9000)));
    }

    #[test]
    fn partial_checksum_at_the_transport_checksum() {
        let tcp = frame(&TCP4, 3000);
        let udp6 = frame(&UDP6, 3000);
        let mis = |start, offset| Err(VnetError::CsumMisplaced { start, offset });
        assert_eq!(VnetHdr { csum_offset: 6, ..tso(1448) }.validate(&tcp), mis(34, 6));
        assert_eq!(VnetHdr { csum_start: 40, ..tso(1448) }.validate(&tcp), mis(40, 16));
        assert_eq!(
            VnetHdr { csum_start: 14, ..tso(1448) }.validate(&tcp),
            mis(14, 16),
            "inside the IP header"
        );
        assert_eq!(VnetHdr { csum_offset: 16, ..uso(1400) }.validate(&udp6), mis(54, 16));
        assert_eq!(VnetHdr { flags: 0, ..uso(1400) }.validate(&udp6), mis(54, 6), "USO needs a partial csum");
        let plain = |start, offset| VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: start,
            csum_offset: offset,
            ..Default::default()
        };
        assert_eq!(plain(34, 6).validate(&tcp), mis(34, 6), "a plain TCP frame's csum field");
        assert_eq!(plain(34, 16).validate(&tcp), Ok(()));
        assert_eq!(plain(54, 6).validate(&udp6), Ok(()));
        assert_eq!(plain(3000, 100).validate(&tcp), Err(VnetError::CsumOutOfRange));
        assert_eq!(plain(u16::MAX, u16::MAX).validate(&tcp), Err(VnetError::CsumOutOfRange));
    }

    proptest::proptest! {
        #[test]
        fn validate_never_panics(
            hdr in proptest::array::uniform12(proptest::prelude::any::<u8>()),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            base in 0usize..3,
        ) {
            let mut buf = hdr.to_vec();
            buf.extend_from_slice([&TCP4[..], &UDP6[..], &[][..]][base]);
            buf.extend_from_slice(&bytes);
            if let Ok(mut h) = VnetHdr::parse(&buf) {
                let _ = h.validate(&buf[VNET_HDR_LEN..]);
            }
        }
    }

    #[test]
    fn refuses_bad_headers() {
        assert_eq!(VnetHdr::parse(&TSO4[..11]), Err(VnetError::Truncated));
        // checksum offset past the end of a 40-byte frame
        let mut buf = TSO4.to_vec();
        buf.resize(12 + 40, 0);
        assert_eq!(VnetHdr::parse(&buf), Err(VnetError::CsumOutOfRange));
        let mut bad = TSO4.to_vec();
        bad[1] = 9;
        bad.resize(200, 0);
        assert_eq!(VnetHdr::parse(&bad), Err(VnetError::UnknownGso(9)));
        let plain = [0u8; 12];
        assert!(!VnetHdr::parse(&plain).unwrap().is_gso());
    }
}
