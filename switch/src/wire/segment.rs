//! Software segmentation (TSO/USO emulation) and checksum completion, for ports that cannot
//! take what a TAP hands over.
//!
//! A pod's kernel gives its TAP TCP (and UDP) super-frames of up to 64 KiB with a vnet header
//! saying "GSO, cut into `gso_size` pieces" and a partial checksum. Pod and host TAPs take such
//! frames as they are, but the AF_XDP uplink is a wire: every frame on it must fit its MTU and
//! carry complete checksums. [`SegmentPlan`] describes how one super-frame is cut, and
//! [`SegmentPlan::write`] writes segment `i` straight into the destination buffer (an UMEM
//! frame), so a segment costs one copy of its bytes. [`complete_csum`] finishes the partial
//! checksum of a frame that is not GSO.
//!
//! Per segment: IPv4 total length, identification (`id + i`) and header checksum; IPv6 payload
//! length; TCP sequence number (`seq + i * mss`), PSH/FIN only on the last segment and CWR only on
//! the first, as the kernel's own TSO does; UDP length; the L4 checksum is computed in full.
//! Everything is checked first: a malformed frame is an error, never a panic. The vnet header is
//! validated here too ([`VnetHdr::validate`]), although the parse stage already did so for
//! every frame from a port: whatever calls it, a plan never has more than
//! [`UDP_MAX_SEGMENTS`] (UDP) or [`TCP_MAX_SEGMENTS`] (TCP) segments.

use super::checksum::{self, fold, sum};
use super::ethernet::HEADER_LEN as ETH_LEN;
use super::frame::IpL4;
use super::ip::{self, Ipv4Packet, IPV6_HDR_LEN, PROTO_TCP, PROTO_UDP};
use super::tcp::{self, flags};
use super::udp;
use super::vnet::{
    VnetError, VnetHdr, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, TCP_MAX_SEGMENTS,
    UDP_MAX_SEGMENTS,
};

/// Why a frame cannot be segmented or have its checksum completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// The frame's headers are truncated or inconsistent.
    #[error("truncated or inconsistent headers")]
    Malformed,
    /// The GSO type is one the switch does not emulate (legacy UFO, or an L4 protocol that does
    /// not match it).
    #[error("unsupported GSO type {0:#x}")]
    Unsupported(u8),
    /// The vnet header says GSO with a segment size of 0.
    #[error("GSO size is zero")]
    ZeroMss,
    /// A segment would not fit the egress MTU.
    #[error("segment of {0} bytes exceeds the MTU")]
    TooBig(usize),
    /// The destination buffer is smaller than the segment.
    #[error("destination buffer too small")]
    NoRoom,
    /// The vnet header does not describe the frame (see [`VnetHdr::validate`]).
    #[error("invalid vnet header: {0}")]
    Invalid(VnetError),
    /// The frame would become more segments than the cap for its protocol.
    #[error("{0} segments exceed the cap")]
    TooManySegments(usize),
}

/// Which L4 protocol a plan cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    Tcp,
    Udp,
}

/// How one GSO super-frame is cut into wire-sized segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPlan {
    ipv6: bool,
    l4: L4,
    /// Offset of the L4 header (end of the IP header).
    l4_off: usize,
    /// Offset of the payload (end of the L4 header).
    hdr_len: usize,
    /// Payload bytes per segment.
    mss: usize,
    /// Payload bytes in the whole super-frame.
    payload: usize,
}

impl SegmentPlan {
    /// Plans the segmentation of `frame` (the Ethernet frame, without vnet header) as `hdr` asks,
    /// for an egress whose MTU (IP packet size) is `mtu`. Parses the frame's headers: a caller
    /// that holds the frame's [`crate::wire::FrameMeta`] passes its transport header to
    /// [`SegmentPlan::with_l4`] instead.
    pub fn new(hdr: &VnetHdr, frame: &[u8], mtu: usize) -> Result<SegmentPlan, SegmentError> {
        let l4 = IpL4::parse(frame);
        SegmentPlan::with_l4(hdr, frame, l4.as_ref(), mtu)
    }

    /// [`SegmentPlan::new`] for a frame whose TCP/UDP header `l4` the parse stage found. The
    /// header is validated against the frame again here, with `l4`, so a plan never exceeds the
    /// segment caps whoever calls it.
    pub fn with_l4(
        hdr: &VnetHdr,
        frame: &[u8],
        l4: Option<&IpL4>,
        mtu: usize,
    ) -> Result<SegmentPlan, SegmentError> {
        let mut checked = *hdr;
        checked.validate_with(frame, l4).map_err(SegmentError::Invalid)?;
        let gso = hdr.gso_type & !GSO_ECN;
        let l = l4.filter(|l| !l.later_fragment).ok_or(SegmentError::Malformed)?;
        let kind = match gso {
            GSO_TCPV4 | GSO_TCPV6 => L4::Tcp,
            GSO_UDP_L4 => L4::Udp,
            other => return Err(SegmentError::Unsupported(other)),
        };
        let ipv6 = l.is_v6();
        // Extension headers are not cut: the kernel's TSO frames from pods carry none (and the
        // IPv6 payload length written per segment would leave them out).
        if ipv6 && l.l4_off != ETH_LEN + IPV6_HDR_LEN {
            return Err(SegmentError::Unsupported(gso));
        }
        let want = match kind {
            L4::Tcp => PROTO_TCP,
            L4::Udp => PROTO_UDP,
        };
        if l.proto != want || gso == GSO_TCPV6 && !ipv6 || gso == GSO_TCPV4 && ipv6 {
            return Err(SegmentError::Unsupported(gso));
        }
        let (l4, l4_off, hdr_len) = (kind, l.l4_off, l.payload_off);
        if (kind == L4::Tcp && hdr_len < l4_off + tcp::MIN_LEN) || frame.len() < hdr_len {
            return Err(SegmentError::Malformed);
        }
        let mss = usize::from(hdr.gso_size);
        if mss == 0 {
            return Err(SegmentError::ZeroMss);
        }
        let payload = frame.len() - hdr_len;
        let ip_packet = hdr_len - ETH_LEN + mss.min(payload);
        if ip_packet > mtu {
            return Err(SegmentError::TooBig(ip_packet));
        }
        let plan = SegmentPlan { ipv6, l4, l4_off, hdr_len, mss, payload };
        let cap = match l4 {
            L4::Tcp => TCP_MAX_SEGMENTS,
            L4::Udp => UDP_MAX_SEGMENTS,
        };
        if plan.count() > cap {
            return Err(SegmentError::TooManySegments(plan.count()));
        }
        Ok(plan)
    }

    /// Packs as many of the sender's TCP segments into each wire segment as the egress MTU
    /// (IP packet size) allows: on an uplink whose MTU is larger than the pods', a super-frame
    /// then becomes fewer, larger segments, each a whole number of the sender's MSS, so the
    /// receiving node's GRO can restore the pods' MSS. UDP keeps its datagram boundaries.
    pub fn pack_to_mtu(mut self, mtu: usize) -> SegmentPlan {
        if self.l4 == L4::Tcp {
            let room = mtu.saturating_sub(self.hdr_len - ETH_LEN);
            let per = (room / self.mss).max(1);
            self.mss = self.mss.saturating_mul(per);
        }
        self
    }

    /// Payload bytes per segment.
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// How many segments the frame becomes (at least one, even without payload).
    pub fn count(&self) -> usize {
        self.payload.div_ceil(self.mss).max(1)
    }

    /// Bytes of segment `i` (Ethernet frame).
    pub fn segment_len(&self, i: usize) -> usize {
        let start = (i * self.mss).min(self.payload);
        let end = (start + self.mss).min(self.payload);
        self.hdr_len + (end - start)
    }

    /// Writes segment `i` of `frame` (the same frame the plan was made for) into `dst`; returns
    /// its length.
    pub fn write(&self, frame: &[u8], i: usize, dst: &mut [u8]) -> Result<usize, SegmentError> {
        let n = self.count();
        if i >= n || frame.len() != self.hdr_len + self.payload {
            return Err(SegmentError::Malformed);
        }
        let len = self.segment_len(i);
        let seg_payload = len - self.hdr_len;
        let dst = dst.get_mut(..len).ok_or(SegmentError::NoRoom)?;
        let start = self.hdr_len + i * self.mss;
        dst[..self.hdr_len].copy_from_slice(&frame[..self.hdr_len]);
        dst[self.hdr_len..].copy_from_slice(&frame[start..start + seg_payload]);
        let last = i + 1 == n;
        // IP header: lengths, id, header checksum.
        let l4_total = len - self.l4_off;
        let ip = &mut dst[ETH_LEN..];
        if self.ipv6 {
            ip[ip::v6::LENGTH].copy_from_slice(&(l4_total as u16).to_be_bytes());
        } else {
            let mut v4 = Ipv4Packet::new_checked(&mut ip[..self.l4_off - ETH_LEN])
                .map_err(|_| SegmentError::Malformed)?;
            v4.set_total_len((len - ETH_LEN) as u16);
            let id = v4.ident().wrapping_add(i as u16);
            v4.set_ident(id);
            v4.fill_checksum();
        }
        // L4 header.
        let l4 = self.l4_off;
        let csum_at = match self.l4 {
            L4::Tcp => {
                let at = l4 + tcp::field::SEQ.start;
                let seq = get32(dst, at).wrapping_add((i * self.mss) as u32);
                put32(dst, at, seq);
                let mut f = dst[l4 + tcp::field::FLAGS];
                if !last {
                    f &= !(flags::FIN | flags::PSH);
                }
                if i > 0 {
                    f &= !flags::CWR;
                }
                dst[l4 + tcp::field::FLAGS] = f;
                l4 + tcp::field::CHECKSUM.start
            }
            L4::Udp => {
                put16(dst, l4 + udp::field::LENGTH.start, l4_total as u16);
                l4 + udp::field::CHECKSUM.start
            }
        };
        put16(dst, csum_at, 0);
        let proto = match self.l4 {
            L4::Tcp => PROTO_TCP,
            L4::Udp => PROTO_UDP,
        };
        let pseudo = ip::pseudo_in_frame(dst, self.ipv6, proto, l4_total);
        let mut c = !fold(sum(&dst[l4..], pseudo));
        if self.l4 == L4::Udp && c == 0 {
            c = 0xffff;
        }
        put16(dst, csum_at, c);
        Ok(len)
    }
}

/// Whether a frame with this vnet header must be segmented before a port without offloads.
pub fn needs_segmentation(hdr: &VnetHdr) -> bool {
    hdr.gso_type & !GSO_ECN != GSO_NONE
}

/// Completes the partial checksum of `frame` (Ethernet frame) as its vnet header describes
/// ([`checksum::complete`]).
pub fn complete_csum(frame: &mut [u8], csum_start: u16, csum_offset: u16) -> Result<(), SegmentError> {
    if checksum::complete(frame, usize::from(csum_start), usize::from(csum_offset)) {
        Ok(())
    } else {
        Err(SegmentError::Malformed)
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vnet::{F_NEEDS_CSUM, GSO_UDP};
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const DST: [u8; 6] = [2, 0, 0, 0, 0, 2];

    /// Ethernet + IPv4 or IPv6 headers between the same two hosts, for a transport to follow.
    fn ip(v6: bool) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        let b = PacketBuilder::ethernet2(SRC, DST);
        if v6 {
            b.ipv6(
                [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        }
    }

    fn tcp_frame(v6: bool, payload: &[u8], fin: bool, psh: bool) -> Vec<u8> {
        let b = ip(v6);
        let mut b = b.tcp(40000, 5201, 0xffff_ff00, 500).ack(77);
        if fin {
            b = b.fin();
        }
        if psh {
            b = b.psh();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        if !v6 {
            // A recognisable IP id.
            out[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&0xfffeu16.to_be_bytes());
        }
        out
    }

    fn udp_frame(v6: bool, payload: &[u8]) -> Vec<u8> {
        let b = ip(v6);
        let mut out = Vec::new();
        b.udp(1000, 2000).write(&mut out, payload).unwrap();
        out
    }

    fn gso(kind: u8, mss: u16) -> VnetHdr {
        VnetHdr { gso_type: kind, gso_size: mss, ..Default::default() }
    }

    /// `hdr` with the partial checksum where the kernel puts it for `frame` (at its transport
    /// header's checksum field), as a valid header has it.
    fn fit(hdr: VnetHdr, frame: &[u8]) -> VnetHdr {
        let l = IpL4::parse(frame).unwrap();
        VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: l.l4_off as u16,
            csum_offset: (l.csum_off() - l.l4_off) as u16,
            ..hdr
        }
    }

    /// Cuts `frame` and checks every segment against etherparse; returns (segments, payload).
    fn cut_and_verify(frame: &[u8], hdr: &VnetHdr, mtu: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
        let plan = SegmentPlan::new(&fit(*hdr, frame), frame, mtu).unwrap();
        let mut segs = Vec::new();
        let mut payload = Vec::new();
        for i in 0..plan.count() {
            let mut buf = vec![0u8; 9000];
            let n = plan.write(frame, i, &mut buf).unwrap();
            assert_eq!(n, plan.segment_len(i));
            buf.truncate(n);
            assert!(n - ETH_LEN <= mtu);
            {
                let p = SlicedPacket::from_ethernet(&buf).unwrap();
                match (&p.net, &p.transport) {
                    (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) => {
                        let h = ip.header().to_header();
                        assert_eq!(h.header_checksum, h.calc_header_checksum());
                        assert_eq!(usize::from(h.total_len), n - ETH_LEN);
                        let want = tcp.to_header().calc_checksum_ipv4(&h, tcp.payload()).unwrap();
                        assert_eq!(tcp.checksum(), want, "tcp checksum of segment {i}");
                        payload.extend_from_slice(tcp.payload());
                    }
                    (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Tcp(tcp))) => {
                        let h = ip.header().to_header();
                        assert_eq!(usize::from(h.payload_length), n - ETH_LEN - 40);
                        let want = tcp.to_header().calc_checksum_ipv6(&h, tcp.payload()).unwrap();
                        assert_eq!(tcp.checksum(), want);
                        payload.extend_from_slice(tcp.payload());
                    }
                    (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) => {
                        let h = ip.header().to_header();
                        assert_eq!(h.header_checksum, h.calc_header_checksum());
                        let want = udp.to_header().calc_checksum_ipv4(&h, udp.payload()).unwrap();
                        assert_eq!(udp.checksum(), want);
                        payload.extend_from_slice(udp.payload());
                    }
                    (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Udp(udp))) => {
                        let h = ip.header().to_header();
                        let want = udp.to_header().calc_checksum_ipv6(&h, udp.payload()).unwrap();
                        assert_eq!(udp.checksum(), want);
                        payload.extend_from_slice(udp.payload());
                    }
                    other => panic!("unexpected segment {other:?}"),
                }
            }
            segs.push(buf);
        }
        (segs, payload)
    }

    #[test]
    fn tcp4_super_frame_is_cut_like_tso() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let frame = tcp_frame(false, &data, true, true);
        let (segs, payload) = cut_and_verify(&frame, &gso(GSO_TCPV4, 1448), 1500);
        assert_eq!(payload, data);
        assert_eq!(segs.len(), 7);
        for (i, s) in segs.iter().enumerate() {
            let id = u16::from_be_bytes([s[18], s[19]]);
            assert_eq!(id, 0xfffeu16.wrapping_add(i as u16), "ids increment and wrap");
            let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
            assert_eq!(seq, 0xffff_ff00u32.wrapping_add(1448 * i as u32), "seq wraps");
            let flags = s[47];
            let last = i == segs.len() - 1;
            assert_eq!(flags & (flags::FIN | flags::PSH) != 0, last, "PSH/FIN only on the last");
            assert_eq!(flags & 0x10, 0x10, "ACK on all");
        }
    }

    #[test]
    fn segments_pack_to_a_larger_mtu() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 3) as u8).collect();
        let frame = tcp_frame(false, &data, false, true);
        let plan =
            SegmentPlan::new(&fit(gso(GSO_TCPV4, 1448), &frame), &frame, 3500).unwrap().pack_to_mtu(3500);
        // 40 bytes of IPv4 + TCP headers: two 1448-byte pieces fit 3500, three do not.
        assert_eq!(plan.mss(), 2896);
        assert_eq!(plan.count(), 7);
        let mut out = Vec::new();
        for i in 0..plan.count() {
            let mut b = vec![0u8; 4000];
            let n = plan.write(&frame, i, &mut b).unwrap();
            assert!(n - ETH_LEN <= 3500);
            out.extend_from_slice(&b[54..n]);
        }
        assert_eq!(out, data);
        // The pods' MTU on the wire: unchanged.
        let plan =
            SegmentPlan::new(&fit(gso(GSO_TCPV4, 1448), &frame), &frame, 1500).unwrap().pack_to_mtu(1500);
        assert_eq!(plan.mss(), 1448);
        // UDP datagrams are never packed together.
        let udp = udp_frame(false, &data);
        let plan = SegmentPlan::new(&fit(gso(GSO_UDP_L4, 1400), &udp), &udp, 9000).unwrap();
        assert_eq!(plan.pack_to_mtu(9000).mss(), 1400);
    }

    #[test]
    fn tcp6_and_udp_segments() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let (segs, payload) =
            cut_and_verify(&tcp_frame(true, &data, false, true), &gso(GSO_TCPV6, 1000), 1500);
        assert_eq!((segs.len(), payload), (5, data.clone()));
        let (segs, payload) = cut_and_verify(&udp_frame(false, &data), &gso(GSO_UDP_L4, 1400), 1500);
        assert_eq!((segs.len(), payload.as_slice()), (4, &data[..]));
        let (segs, _) = cut_and_verify(&udp_frame(true, &data), &gso(GSO_UDP_L4, 1200), 1500);
        assert_eq!(segs.len(), 5);
    }

    #[test]
    fn refuses_what_it_cannot_cut() {
        use VnetError::*;
        let frame = tcp_frame(false, &[1; 3000], false, false);
        let new = |kind, mss, f: &[u8], mtu| SegmentPlan::new(&gso(kind, mss), f, mtu);
        assert_eq!(new(GSO_TCPV4, 1448, &frame, 1000), Err(SegmentError::TooBig(1488)));
        assert_eq!(new(GSO_TCPV4, 0, &frame, 1500), Err(SegmentError::Invalid(BadGsoSize(0))));
        assert_eq!(new(GSO_UDP, 1000, &frame, 1500), Err(SegmentError::Invalid(GsoMismatch(GSO_UDP))));
        assert_eq!(new(GSO_TCPV6, 1000, &frame, 1500), Err(SegmentError::Invalid(GsoMismatch(GSO_TCPV6))));
        assert_eq!(
            SegmentPlan::new(&fit(gso(GSO_UDP_L4, 1000), &frame), &frame, 1500),
            Err(SegmentError::Invalid(GsoMismatch(GSO_UDP_L4)))
        );
        assert_eq!(
            new(GSO_TCPV4, 1000, &frame[..40], 1500),
            Err(SegmentError::Invalid(GsoMismatch(GSO_TCPV4)))
        );
        let plan = SegmentPlan::new(&gso(GSO_TCPV4, 1000), &frame, 1500).unwrap();
        assert_eq!(plan.write(&frame, 0, &mut [0u8; 100]), Err(SegmentError::NoRoom));
        assert_eq!(plan.write(&frame, 3, &mut [0u8; 2000]), Err(SegmentError::Malformed));
        assert_eq!(plan.write(&frame[..100], 0, &mut [0u8; 2000]), Err(SegmentError::Malformed));
        // The caps: a thousand UDP datagrams of one byte, 64 KiB of TCP in 1-byte segments.
        let udp = udp_frame(false, &[7; 1000]);
        assert_eq!(
            SegmentPlan::new(&fit(gso(GSO_UDP_L4, 1), &udp), &udp, 1500),
            Err(SegmentError::Invalid(TooManySegments(1000)))
        );
        let big = tcp_frame(false, &[1; 65_000], false, false);
        assert_eq!(new(GSO_TCPV4, 1, &big, 1500), Err(SegmentError::Invalid(TooManySegments(65_000))));
    }

    /// The kernel's partial checksum: the folded pseudo-header sum in the checksum field.
    fn make_partial(frame: &mut [u8], v6: bool, proto: u8) -> (u16, u16, u16) {
        let l4 = if v6 { ETH_LEN + 40 } else { ETH_LEN + 20 };
        let at = if proto == PROTO_TCP { l4 + 16 } else { l4 + 6 };
        let good = be16(frame, at);
        let partial = fold(ip::pseudo_in_frame(frame, v6, proto, frame.len() - l4));
        put16(frame, at, partial);
        (l4 as u16, (at - l4) as u16, good)
    }

    #[test]
    fn partial_checksums_are_completed() {
        for v6 in [false, true] {
            let mut f = tcp_frame(v6, b"hello, odd length", false, true);
            let (start, off, good) = make_partial(&mut f, v6, PROTO_TCP);
            complete_csum(&mut f, start, off).unwrap();
            assert_eq!(be16(&f, usize::from(start + off)), good);
            let mut f = udp_frame(v6, b"0123456789");
            let (start, off, good) = make_partial(&mut f, v6, PROTO_UDP);
            complete_csum(&mut f, start, off).unwrap();
            assert_eq!(be16(&f, usize::from(start + off)), good);
        }
        assert_eq!(complete_csum(&mut [0u8; 10], 8, 1), Err(SegmentError::Malformed));
    }

    proptest! {
        #[test]
        fn any_super_frame_reassembles(
            len in 0usize..20_000,
            mss in 88u16..1440,
            v6 in any::<bool>(),
            fin in any::<bool>(),
            seed in any::<u8>(),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let frame = tcp_frame(v6, &data, fin, true);
            let kind = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
            let (segs, payload) = cut_and_verify(&frame, &gso(kind, mss), 1500);
            prop_assert_eq!(payload, data);
            prop_assert_eq!(segs.len(), len.div_ceil(usize::from(mss)).max(1));
        }

        /// Whatever the header says, a plan never has more segments than the kernel's caps,
        /// and every plan that exists passed validation.
        #[test]
        fn segments_never_exceed_the_cap(
            len in 0usize..65_000,
            v6 in any::<bool>(),
            udp in any::<bool>(),
            kind in prop::sample::select(vec![GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, GSO_UDP, GSO_NONE, 2, 0x81]),
            gso_size in prop_oneof![0u16..100, any::<u16>()],
            flags in 0u8..4,
            hdr_len in prop_oneof![Just(0u16), any::<u16>()],
            csum_start in prop_oneof![Just(34u16), Just(54u16), any::<u16>()],
            csum_offset in prop_oneof![Just(6u16), Just(16u16), any::<u16>()],
        ) {
            let data = vec![0x5a; len];
            let frame = if udp { udp_frame(v6, &data) } else { tcp_frame(v6, &data, false, false) };
            let hdr = VnetHdr { flags, gso_type: kind, hdr_len, gso_size, csum_start, csum_offset };
            if let Ok(plan) = SegmentPlan::new(&hdr, &frame, 65_535) {
                let mut checked = hdr;
                prop_assert!(checked.validate(&frame).is_ok());
                let cap = if udp { UDP_MAX_SEGMENTS } else { TCP_MAX_SEGMENTS };
                prop_assert!(plan.count() <= cap, "{} segments", plan.count());
                prop_assert!(plan.pack_to_mtu(65_535).count() <= cap);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), kind in 0u8..6, mss in 0u16..2000) {
            if let Ok(plan) = SegmentPlan::new(&gso(kind, mss), &bytes, 1500) {
                let mut buf = vec![0u8; 2000];
                for i in 0..plan.count() {
                    let _ = plan.write(&bytes, i, &mut buf);
                }
            }
            let _ = complete_csum(&mut bytes.clone(), mss, u16::from(kind));
        }
    }
}
