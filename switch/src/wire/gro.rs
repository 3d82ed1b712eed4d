//! Software GRO: consecutive TCP segments of one flow, received on the uplink in one burst, are
//! coalesced into one super-frame with a GSO vnet header before they go to a pod's TAP.
//!
//! A TAP write costs a syscall and a pass through the pod's receive path per frame; coalescing
//! 40 segments into one 64 KiB frame makes that cost per 64 KiB, as it is for traffic between
//! pods of one node. The rules follow the kernel's `tcp_gro_receive`: same addresses and ports,
//! the next expected sequence number, same ACK number, same flags word (data offset, flags,
//! window) except PSH, identical TCP options, no payload larger than the first one's (the
//! MSS); a shorter segment or one with PSH ends the train. Only segments whose IPv4 header and
//! TCP checksums are correct are coalesced (the merged frame carries a partial checksum that
//! the pod's kernel trusts), and only what is already in the burst: nothing waits for more.
//!
//! The merged frame keeps the first segment's headers, with the IP length (and IPv4 header
//! checksum) fixed, PSH if any merged segment had it, and the TCP checksum field holding the
//! pseudo-header sum as `VIRTIO_NET_HDR_F_NEEDS_CSUM` requires.

use super::checksum::{fold, sum};
use super::ethernet::{ethertype, HEADER_LEN as ETH_LEN};
use super::ip::{self, pseudo_in_frame, IPV4_MIN_LEN, IPV6_HDR_LEN, PROTO_TCP};
use super::tcp::{self, flags::ACK as TCP_ACK, flags::PSH as TCP_PSH};
use super::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6};
/// Largest IP packet a merged frame may become (the IP length fields are 16 bits).
const MAX_IP: usize = 65535;

/// A TCP segment eligible for coalescing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    v6: bool,
    l4_off: usize,
    hdr_len: usize,
    payload: usize,
    seq: u32,
    flags: u8,
}

/// Parses `frame` (Ethernet) as a plain TCP segment with data: no IP options or extension
/// headers, no fragment, only ACK (and PSH) set, checksums correct.
fn parse(frame: &[u8]) -> Option<Seg> {
    if frame.len() < ETH_LEN + IPV4_MIN_LEN + tcp::MIN_LEN {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let (v6, l4_off, ip_len) = match u16::from_be_bytes([frame[12], frame[13]]) {
        ethertype::IPV4 => {
            let ip = &ip[..IPV4_MIN_LEN];
            // Version 4, IHL 5, not a fragment (MF clear, offset 0), TCP.
            let frag = ip[ip::v4::FRAG.start] & ip::v4::MF_OFFSET_HI != 0 || ip[ip::v4::FRAG.start + 1] != 0;
            if ip[ip::v4::VER_IHL] != 0x45 || frag || ip[ip::v4::PROTOCOL] != PROTO_TCP {
                return None;
            }
            if fold(sum(ip, 0)) != 0xffff {
                return None;
            }
            (false, ETH_LEN + IPV4_MIN_LEN, usize::from(be16(ip, ip::v4::LENGTH.start)))
        }
        ethertype::IPV6 => {
            if frame.len() < ETH_LEN + IPV6_HDR_LEN + tcp::MIN_LEN
                || ip[0] >> 4 != 6
                || ip[ip::v6::NEXT_HEADER] != PROTO_TCP
            {
                return None;
            }
            (true, ETH_LEN + IPV6_HDR_LEN, IPV6_HDR_LEN + usize::from(be16(ip, ip::v6::LENGTH.start)))
        }
        _ => return None,
    };
    // No Ethernet padding or truncation: the frame is exactly the IP packet.
    if ETH_LEN + ip_len != frame.len() {
        return None;
    }
    let th = tcp::TcpPacket::new_checked(frame.get(l4_off..)?)?;
    let doff = th.header_len();
    let flags = th.flags();
    if doff < tcp::MIN_LEN || flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    let hdr_len = l4_off + doff;
    if hdr_len >= frame.len() {
        return None;
    }
    let l4_len = frame.len() - l4_off;
    if fold(sum(&frame[l4_off..], pseudo_in_frame(frame, v6, PROTO_TCP, l4_len))) != 0xffff {
        return None;
    }
    let seq = th.seq();
    Some(Seg { v6, l4_off, hdr_len, payload: frame.len() - hdr_len, seq, flags })
}

/// A super-frame being built in a buffer from consecutive segments.
#[derive(Debug)]
pub struct Merge {
    first: Seg,
    count: usize,
    len: usize,
    next_seq: u32,
    psh: bool,
    done: bool,
}

impl Merge {
    /// Starts a merge with `frame`, already copied to the start of the output buffer. None
    /// when the frame cannot be coalesced (deliver it as it is).
    pub fn start(frame: &[u8]) -> Option<Merge> {
        let s = parse(frame)?;
        let psh = s.flags & TCP_PSH != 0;
        Some(Merge {
            first: s,
            count: 1,
            len: frame.len(),
            next_seq: s.seq.wrapping_add(s.payload as u32),
            psh,
            done: psh,
        })
    }

    /// Bytes of the merged frame so far.
    pub fn frame_len(&self) -> usize {
        self.len
    }

    /// Segments merged so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Appends `next`'s payload to `out` (which holds the merge so far) if `next` continues the
    /// flow; false (and nothing changed) otherwise.
    pub fn append(&mut self, out: &mut [u8], next: &[u8]) -> bool {
        if self.done {
            return false;
        }
        let Some(s) = parse(next) else { return false };
        let f = self.first;
        if s.v6 != f.v6 || s.hdr_len != f.hdr_len || s.seq != self.next_seq || s.payload > f.payload {
            return false;
        }
        let ip_len = self.len - ETH_LEN + s.payload;
        if ip_len > MAX_IP || self.len + s.payload > out.len() {
            return false;
        }
        let first = &out[..f.hdr_len];
        // Same MACs and addresses.
        let a = if f.v6 { ip::v6::ADDRS } else { ip::v4::SRC.start..ip::v4::DST.end };
        let addrs = ETH_LEN + a.start..ETH_LEN + a.end;
        if first[..12] != next[..12] || first[addrs.clone()] != next[addrs] {
            return false;
        }
        if !f.v6 {
            // Same TOS, DF and TTL.
            let ip = ETH_LEN;
            let (tos, frag, ttl) = (ip + ip::v4::TOS, ip + ip::v4::FRAG.start, ip + ip::v4::TTL);
            if first[tos] != next[tos]
                || first[frag] & ip::v4::DF != next[frag] & ip::v4::DF
                || first[ttl] != next[ttl]
            {
                return false;
            }
        }
        let l4 = f.l4_off;
        // Ports, ACK number, data offset + flags (but PSH) + window, options.
        let at = |r: std::ops::Range<usize>| l4 + r.start..l4 + r.end;
        let (doff, fl) = (l4 + tcp::field::DATA_OFF, l4 + tcp::field::FLAGS);
        let same = first[at(tcp::field::SRC_PORT.start..tcp::field::DST_PORT.end)]
            == next[at(tcp::field::SRC_PORT.start..tcp::field::DST_PORT.end)]
            && first[at(tcp::field::ACK)] == next[at(tcp::field::ACK)]
            && first[doff] == next[doff]
            && first[fl] & !TCP_PSH == next[fl] & !TCP_PSH
            && first[at(tcp::field::WINDOW)] == next[at(tcp::field::WINDOW)]
            && first[l4 + tcp::MIN_LEN..f.hdr_len] == next[l4 + tcp::MIN_LEN..f.hdr_len];
        if !same {
            return false;
        }
        out[self.len..self.len + s.payload].copy_from_slice(&next[s.hdr_len..]);
        self.len += s.payload;
        self.count += 1;
        self.next_seq = s.seq.wrapping_add(s.payload as u32);
        if s.flags & TCP_PSH != 0 {
            self.psh = true;
            self.done = true;
        }
        if s.payload < f.payload {
            self.done = true;
        }
        true
    }

    /// Fixes the headers of the merged frame in `out` and returns its vnet header, whose
    /// `gso_size` is the first segment's payload, at most what an IP packet of `mtu` bytes (the
    /// pods' MTU) carries: segments packed beyond the pods' MSS on a larger-MTU uplink are cut
    /// to it again if the pod forwards them. One segment that fits the MTU is left untouched
    /// with a plain header.
    pub fn finish(&self, out: &mut [u8], mtu: usize) -> VnetHdr {
        let f = self.first;
        let mss = f.payload.min(mtu.saturating_sub(f.hdr_len - ETH_LEN)).max(1);
        if self.count < 2 && f.payload <= mss {
            return VnetHdr::default();
        }
        let Some(out) = out.get_mut(..self.len) else { return VnetHdr::default() };
        let ip = ETH_LEN;
        let l4_len = self.len - f.l4_off;
        if f.v6 {
            put16(out, ip + ip::v6::LENGTH.start, l4_len as u16);
        } else {
            let Ok(mut v4) = ip::Ipv4Packet::new_checked(&mut out[ip..f.l4_off]) else {
                return VnetHdr::default();
            };
            v4.set_total_len((self.len - ETH_LEN) as u16);
            v4.fill_checksum();
        }
        if self.psh {
            out[f.l4_off + tcp::field::FLAGS] |= TCP_PSH;
        }
        let partial = fold(pseudo_in_frame(out, f.v6, PROTO_TCP, l4_len));
        put16(out, f.l4_off + tcp::field::CHECKSUM.start, partial);
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if f.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: f.hdr_len as u16,
            gso_size: mss as u16,
            csum_start: f.l4_off as u16,
            csum_offset: tcp::field::CHECKSUM.start as u16,
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::segment::{complete_csum, SegmentPlan};
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn super_frame(v6: bool, payload: &[u8], psh: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b =
            if v6 { b.ipv6([0xfd; 16], [0xfe; 16], 64) } else { b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64) };
        let mut b = b.tcp(40000, 5201, 0xffff_f000, 500).ack(77);
        if psh {
            b = b.psh();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    /// Cuts `orig` (a TCP super-frame sent with MSS `mss`) as the uplink does for a fabric of
    /// MTU `mtu`; with `pack`, as many MSS in a segment as fit.
    fn cut(orig: &[u8], mss: u16, mtu: usize, pack: bool) -> Vec<Vec<u8>> {
        let v6 = orig[12] == 0x86;
        let l4 = if v6 { ETH_LEN + 40 } else { ETH_LEN + 20 };
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            gso_size: mss,
            csum_start: l4 as u16,
            csum_offset: 16,
            ..Default::default()
        };
        let plan = SegmentPlan::new(&hdr, orig, mtu).unwrap();
        let plan = if pack { plan.pack_to_mtu(mtu) } else { plan };
        (0..plan.count())
            .map(|i| {
                let mut b = vec![0u8; mtu + 100];
                let n = plan.write(orig, i, &mut b).unwrap();
                b.truncate(n);
                b
            })
            .collect()
    }

    /// Merges `segs` back into one frame for pods of MTU `pod_mtu` (every one must merge);
    /// returns the frame, its checksum completed if partial, and its vnet header.
    fn merge(segs: &[Vec<u8>], pod_mtu: usize) -> (Vec<u8>, VnetHdr) {
        let mut out = vec![0u8; 70000];
        out[..segs[0].len()].copy_from_slice(&segs[0]);
        let mut m = Merge::start(&segs[0]).unwrap();
        for s in &segs[1..] {
            assert!(m.append(&mut out, s), "segment not merged");
        }
        assert_eq!(m.count(), segs.len());
        let h = m.finish(&mut out, pod_mtu);
        out.truncate(m.frame_len());
        if h.flags & F_NEEDS_CSUM != 0 {
            complete_csum(&mut out, h.csum_start, h.csum_offset).unwrap();
        }
        (out, h)
    }

    /// Cuts a super-frame with the segmenter, merges the segments back, and checks the result
    /// equals the original once its partial checksum is completed.
    fn round_trip(v6: bool, len: usize, mss: u16, psh: bool) {
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
        let orig = super_frame(v6, &data, psh);
        let segs = cut(&orig, mss, 1500, false);
        let (out, h) = merge(&segs, 1500);
        if segs.len() > 1 {
            assert_eq!(h.gso_size, mss);
            assert_eq!(usize::from(h.csum_start), if v6 { 54 } else { 34 });
        }
        // The segmenter gave the first segment IP id +0 and the original's id; PSH on the last.
        assert_eq!(out, orig);
    }

    #[test]
    fn segments_merge_back_into_the_super_frame() {
        round_trip(false, 10_000, 1448, true);
        round_trip(true, 6000, 1428, false);
        round_trip(false, 1448 * 3, 1448, false);
        round_trip(false, 100, 1448, false);
    }

    #[test]
    fn segments_larger_than_the_pods_mss_get_it_back() {
        // Two 2896-byte wire segments (two 1448-byte pieces each) from a 3500-MTU uplink.
        let data: Vec<u8> = (0..2896 * 2).map(|i| (i * 5) as u8).collect();
        let orig = super_frame(false, &data, false);
        let segs = cut(&orig, 1448, 3500, true);
        assert_eq!(segs.len(), 2);
        let (out, h) = merge(&segs, 1500);
        // 1500 minus 40 bytes of IPv4 + TCP headers (this frame has no TCP options).
        assert_eq!((h.gso_type, h.gso_size), (GSO_TCPV4, 1460), "the pods' MSS, not the wire's");
        assert_eq!(out, orig);
        // A lone oversized segment is marked GSO too, so a forwarding pod can cut it.
        let mut one = vec![0u8; 4000];
        one[..segs[0].len()].copy_from_slice(&segs[0]);
        let m = Merge::start(&segs[0]).unwrap();
        let h = m.finish(&mut one, 1500);
        assert_eq!((h.gso_size, h.flags), (1460, F_NEEDS_CSUM));
        one.truncate(m.frame_len());
        complete_csum(&mut one, h.csum_start, h.csum_offset).unwrap();
        assert_eq!(one, segs[0]);
        // At the wire's own MTU a lone segment stays as it is.
        let m = Merge::start(&segs[0]).unwrap();
        assert_eq!(m.finish(&mut segs[0].clone(), 3500), VnetHdr::default());
    }

    #[test]
    fn what_does_not_merge() {
        let a = super_frame(false, &[1; 1000], false);
        let mut out = vec![0u8; 70000];
        out[..a.len()].copy_from_slice(&a);
        let mut m = Merge::start(&a).unwrap();
        // Wrong sequence number.
        let mut b = super_frame(false, &[2; 1000], false);
        assert!(!m.append(&mut out, &b));
        // Right one, but a corrupted checksum.
        b[38..42].copy_from_slice(&(0xffff_f000u32 + 1000).to_be_bytes());
        let mut bad = b.clone();
        bad[60] ^= 1;
        assert!(!m.append(&mut out, &bad));
        assert!(Merge::start(&bad).is_none(), "bad checksum refused");
        // A SYN never starts one; a frame with padding neither.
        let mut syn = a.clone();
        syn[47] = 0x02;
        assert!(Merge::start(&syn).is_none());
        let mut padded = a.clone();
        padded.push(0);
        assert!(Merge::start(&padded).is_none());
        assert!(Merge::start(&a[..50]).is_none());
        // Now fix the checksum of b: it merges.
        let mut good = b.clone();
        good[50..52].fill(0);
        let l4_len = good.len() - 34;
        let c = !fold(sum(&good[34..], pseudo_in_frame(&good, false, PROTO_TCP, l4_len)));
        good[50..52].copy_from_slice(&c.to_be_bytes());
        assert!(m.append(&mut out, &good));
        assert_eq!(m.count(), 2);
        assert_eq!(m.frame_len(), a.len() + 1000);
    }

    proptest! {
        #[test]
        fn any_train_round_trips(len in 1usize..30_000, mss in 200u16..1440, v6 in any::<bool>(), psh in any::<bool>()) {
            round_trip(v6, len, mss, psh);
        }

        /// Cut for a fabric of any MTU up to a jumbo frame (several MSS per segment), merged
        /// back on the other side: the same bytes, and a GSO size that fits the pods' MTU.
        #[test]
        fn packed_segments_round_trip(
            len in 1usize..60_000,
            mss in 500u16..1448,
            fabric in 1500usize..9216,
            v6 in any::<bool>(),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let orig = super_frame(v6, &data, false);
            let segs = cut(&orig, mss, fabric, true);
            let hdrs = if v6 { 60 } else { 40 };
            for s in &segs {
                prop_assert!(s.len() - 14 <= fabric, "a {}-byte segment on a {fabric} fabric", s.len());
            }
            for s in &segs[..segs.len() - 1] {
                prop_assert_eq!((s.len() - 14 - hdrs) % usize::from(mss), 0, "not whole MSS pieces");
            }
            let (out, h) = merge(&segs, 1500);
            if h.gso_type != 0 {
                prop_assert!(usize::from(h.gso_size) + hdrs <= 1500);
            }
            prop_assert_eq!(out, orig);
        }

        #[test]
        fn garbage_never_panics(a in proptest::collection::vec(any::<u8>(), 0..200), b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(mut m) = Merge::start(&a) {
                let mut out = vec![0u8; 400];
                out[..a.len()].copy_from_slice(&a);
                let _ = m.append(&mut out, &b);
                let _ = m.finish(&mut out, 1500);
            }
        }
    }
}
