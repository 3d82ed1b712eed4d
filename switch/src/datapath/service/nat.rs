//! Address and port rewriting with incremental checksum updates (DNAT, SNAT and their reverse).
//!
//! A frame from a pod TAP may carry a `NEEDS_CSUM` vnet header (checksum offload, always so for
//! GSO super-frames): its L4 checksum field then holds only the pseudo-header seed, and the
//! kernel completes the sum over the L4 bytes when the frame leaves the receiving TAP. Such a
//! seed covers the addresses but not the ports, so only address changes are folded into it;
//! the new ports are summed by whoever completes the checksum. A finished checksum gets both.

use std::net::IpAddr;

use crate::wire::checksum::{update16, update_addr, update_seed_addr};
use crate::wire::ethernet::EthernetFrame;
use crate::wire::frame::{IpL4, L3_OFF};
use crate::wire::ip::{v4, v6, PROTO_UDP};
use crate::wire::{tcp, FrameMeta, Mac};

/// Which end of the packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Source address and port.
    Src,
    /// Destination address and port.
    Dst,
}

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Rewrites `side`'s address and port of the packet `l` describes (`eth` is the Ethernet frame
/// `l` was parsed from), and `l` with it, so that the frame's meta stays true for later stages.
/// `partial`: the L4 checksum field holds a `NEEDS_CSUM` seed. An address of the other family
/// than the packet's is refused (returns false, nothing changed).
pub fn rewrite(eth: &mut [u8], l: &mut IpL4, side: Side, ip: IpAddr, port: u16, partial: bool) -> bool {
    // The parse guaranteed the IP header and (first fragments) the L4 header are present.
    let (old_ip, port_at) = match side {
        Side::Src => (l.src, l.l4_off + tcp::field::SRC_PORT.start),
        Side::Dst => (l.dst, l.l4_off + tcp::field::DST_PORT.start),
    };
    match ip {
        IpAddr::V4(a) if !l.is_v6() => {
            let f = if side == Side::Src { v4::SRC } else { v4::DST };
            eth[L3_OFF + f.start..L3_OFF + f.end].copy_from_slice(&a.octets());
            let at = L3_OFF + v4::CHECKSUM.start;
            let ip_csum = get16(eth, at);
            put16(eth, at, update_addr(ip_csum, &old_ip, &ip));
        }
        IpAddr::V6(a) if l.is_v6() => {
            let f = if side == Side::Src { v6::SRC } else { v6::DST };
            eth[L3_OFF + f.start..L3_OFF + f.end].copy_from_slice(&a.octets());
        }
        _ => return false,
    }
    match side {
        Side::Src => l.src = ip,
        Side::Dst => l.dst = ip,
    }
    if l.later_fragment {
        return true;
    }
    let old_port = get16(eth, port_at);
    put16(eth, port_at, port);
    match side {
        Side::Src => l.sport = port,
        Side::Dst => l.dport = port,
    }
    let at = l.csum_off();
    let csum = get16(eth, at);
    let next = if partial {
        update_seed_addr(csum, &old_ip, &ip)
    } else if l.proto == PROTO_UDP && csum == 0 && !l.is_v6() {
        0 // IPv4 UDP without a checksum stays without one
    } else {
        let c = update16(update_addr(csum, &old_ip, &ip), old_port, port);
        if l.proto == PROTO_UDP && c == 0 {
            0xffff
        } else {
            c
        }
    };
    put16(eth, at, next);
    true
}

/// Sets the Ethernet addresses of the frame and its meta.
pub fn set_macs(eth: &mut [u8], meta: &mut FrameMeta, dst: &Mac, src: &Mac) {
    if let Ok(mut e) = EthernetFrame::new_checked(eth) {
        e.set_macs(dst, src);
        (meta.dst, meta.src) = (*dst, *src);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use std::net::Ipv4Addr;

    use super::*;
    use crate::wire::checksum::{fold, pseudo, sum};
    use crate::wire::frame::IpL4;
    use crate::wire::ip::PROTO_TCP;

    fn packet(tcp: bool, src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
        let b =
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
        let mut out = Vec::new();
        if tcp {
            b.tcp(sp, dp, 12345, 1000).ack(99).write(&mut out, payload).unwrap();
        } else {
            b.udp(sp, dp).write(&mut out, payload).unwrap();
        }
        out
    }

    /// Full verification: IP header checksum and L4 checksum over pseudo-header + segment.
    fn valid(eth: &[u8]) -> bool {
        let ip = &eth[14..34];
        if fold(sum(ip, 0)) != 0xffff {
            return false;
        }
        let l4 = &eth[34..];
        let p = pseudo(&ip[12..16], &ip[16..20], ip[9], l4.len() as u32);
        fold(sum(l4, p)) == 0xffff
    }

    /// Rewrites one side of the valid frame `f` to `nip:nport` and checks that the frame stays
    /// valid (by `valid`) and now reads that address on that side; returns the frame's new
    /// parse, for more checks.
    fn rewrite_checked(
        f: &mut [u8],
        valid: fn(&[u8]) -> bool,
        src_side: bool,
        nip: IpAddr,
        nport: u16,
    ) -> Result<IpL4, TestCaseError> {
        prop_assert!(valid(f));
        let mut l = IpL4::parse(f).unwrap();
        let side = if src_side { Side::Src } else { Side::Dst };
        prop_assert!(rewrite(f, &mut l, side, nip, nport, false));
        prop_assert!(valid(f));
        let l2 = IpL4::parse(f).unwrap();
        prop_assert_eq!(l, l2, "the meta follows the rewrite");
        let got = if src_side { (l2.src, l2.sport) } else { (l2.dst, l2.dport) };
        prop_assert_eq!(got, (nip, nport));
        Ok(l2)
    }

    proptest! {
        #[test]
        fn rewrite_keeps_checksums_valid(
            tcp in any::<bool>(),
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            sp in any::<u16>(), dp in any::<u16>(),
            nip in any::<[u8; 4]>(), nport in any::<u16>(),
            src_side in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut f = packet(tcp, src, dst, sp, dp, &payload);
            let l2 = rewrite_checked(&mut f, valid, src_side, Ipv4Addr::from(nip).into(), nport)?;
            // And back: the reverse NAT restores the original bytes' meaning and validity.
            let (oip, oport) = if src_side { (src, sp) } else { (dst, dp) };
            let side = if src_side { Side::Src } else { Side::Dst };
            rewrite(&mut f, &mut l2.clone(), side, Ipv4Addr::from(oip).into(), oport, false);
            prop_assert!(valid(&f));
        }

        #[test]
        fn partial_seed_follows_the_addresses(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            nip in any::<[u8; 4]>(), nport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut f = packet(true, src, dst, 1000, 80, &payload);
            // As a NEEDS_CSUM sender leaves it: the field holds the pseudo-header seed.
            let len = (f.len() - 34) as u16;
            let seed = fold(pseudo(&src, &dst, PROTO_TCP, u32::from(len)));
            f[50..52].copy_from_slice(&seed.to_be_bytes());
            let mut l = IpL4::parse(&f).unwrap();
            rewrite(&mut f, &mut l, Side::Dst, Ipv4Addr::from(nip).into(), nport, true);
            let want = fold(pseudo(&src, &nip, PROTO_TCP, u32::from(len)));
            let got = u16::from_be_bytes([f[50], f[51]]);
            prop_assert!(got == want || (got == 0xffff && want == 0) || (got == 0 && want == 0xffff));
            // Completing it as the kernel would gives a valid segment.
            f[50..52].fill(0);
            let full = !fold(sum(&f[34..], u64::from(got)));
            f[50..52].copy_from_slice(&full.to_be_bytes());
            prop_assert!(valid(&f));
        }
    }

    fn packet6(tcp: bool, src: [u8; 16], dst: [u8; 16], sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
        let b =
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv6(src, dst, 64);
        let mut out = Vec::new();
        if tcp {
            b.tcp(sp, dp, 12345, 1000).ack(99).write(&mut out, payload).unwrap();
        } else {
            b.udp(sp, dp).write(&mut out, payload).unwrap();
        }
        out
    }

    fn valid6(eth: &[u8]) -> bool {
        let ip = &eth[14..54];
        let l4 = &eth[54..];
        let p = pseudo(&ip[8..24], &ip[24..40], ip[6], l4.len() as u32);
        fold(sum(l4, p)) == 0xffff
    }

    proptest! {
        #[test]
        fn v6_rewrite_keeps_checksums_valid(
            tcp in any::<bool>(),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
            sp in any::<u16>(), dp in any::<u16>(),
            nip in any::<[u8; 16]>(), nport in any::<u16>(),
            src_side in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut f = packet6(tcp, src, dst, sp, dp, &payload);
            let l2 = rewrite_checked(&mut f, valid6, src_side, IpAddr::from(nip), nport)?;
            let side = if src_side { Side::Src } else { Side::Dst };
            prop_assert!(!rewrite(&mut f, &mut l2.clone(), side, IpAddr::from([1, 2, 3, 4]), 1, false), "family mismatch refused");
        }
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut f = packet(false, [1, 1, 1, 1], [2, 2, 2, 2], 5, 53, b"q");
        f[40..42].fill(0);
        let mut l = IpL4::parse(&f).unwrap();
        rewrite(&mut f, &mut l, Side::Dst, Ipv4Addr::new(3, 3, 3, 3).into(), 5353, false);
        assert_eq!(&f[40..42], &[0, 0]);
        assert_eq!(fold(sum(&f[14..34], 0)), 0xffff);
    }
}
