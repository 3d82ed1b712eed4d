//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! NAT changes a few 16-bit words of a packet; recomputing the checksum over a 64 KiB
//! super-frame for that would cost more than everything else the switch does with it. RFC 1624
//! eqn. 3, `HC' = ~(~HC + ~m + m')`, updates a checksum from the old and new value of each
//! changed word, and is correct around the ±0 corner cases that eqn. 2 gets wrong.
//!
//! Two kinds of fields are updated:
//! - a **complemented checksum** as it sits in a finished header ([`update16`], [`update32`]);
//! - a **partial checksum seed**, which a packet with a `NEEDS_CSUM` vnet header carries in its
//!   L4 checksum field: the folded, *uncomplemented* pseudo-header sum that the receiving
//!   device (or the kernel) will add the L4 bytes to ([`update_seed32`]).

/// Adds the big-endian 16-bit words of `data` to `acc` (odd trailing byte padded with zero),
/// eight bytes at a time: segmentation and GRO sum whole 64 KiB super-frames with it.
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_be_bytes(w);
        // Four words of at most 0xffff each: 2^46 of these fit before `acc` could overflow.
        acc += (v >> 48) + ((v >> 32) & 0xffff) + ((v >> 16) & 0xffff) + (v & 0xffff);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a 64-bit one's-complement accumulator to 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum of `data` as it is stored in a header: `!fold(sum)`.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// RFC 1624 eqn. 3 for one changed 16-bit word.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!hc) + u64::from(!old) + u64::from(new))
}

/// RFC 1624 for a changed 32-bit field (an IPv4 address), as two words.
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let hc = update16(hc, (old >> 16) as u16, (new >> 16) as u16);
    update16(hc, old as u16, new as u16)
}

/// Updates a partial-checksum seed (uncomplemented) for a changed 32-bit pseudo-header field.
#[inline]
pub fn update_seed32(seed: u16, old: u32, new: u32) -> u16 {
    !update32(!seed, old, new)
}

/// RFC 1624 for a changed address of either family (IPv6: eight words). Addresses of
/// different families leave the checksum as it is.
pub fn update_addr(hc: u16, old: &std::net::IpAddr, new: &std::net::IpAddr) -> u16 {
    use std::net::IpAddr::{V4, V6};
    match (old, new) {
        (V4(a), V4(b)) => update32(hc, u32::from(*a), u32::from(*b)),
        (V6(a), V6(b)) => {
            let (a, b) = (a.segments(), b.segments());
            a.iter().zip(b.iter()).fold(hc, |c, (o, n)| update16(c, *o, *n))
        }
        _ => hc,
    }
}

/// Updates a partial-checksum seed (uncomplemented) for a changed pseudo-header address.
pub fn update_seed_addr(seed: u16, old: &std::net::IpAddr, new: &std::net::IpAddr) -> u16 {
    !update_addr(!seed, old, new)
}

/// The TCP/UDP/ICMPv6 pseudo-header sum (not folded, not complemented) of either family:
/// `src` and `dst` are the 4 or 16 address bytes as they sit in the IP header, `len` the
/// length of the transport segment. The IPv4 (RFC 793) and IPv6 (RFC 8200 §8.1) layouts
/// differ in order and widths but sum to the same words.
pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u64 {
    let acc = sum(src, 0);
    let acc = sum(dst, acc);
    acc + u64::from(len >> 16) + u64::from(len & 0xffff) + u64::from(proto)
}

/// [`pseudo`] of two addresses of one family (an IPv4 one paired with an IPv6 one is taken
/// IPv4-mapped, as [`crate::wire::ip::emit_header`] writes it).
pub fn pseudo_ip(src: &std::net::IpAddr, dst: &std::net::IpAddr, proto: u8, len: u32) -> u64 {
    use std::net::IpAddr::{V4, V6};
    match (src, dst) {
        (V4(s), V4(d)) => pseudo(&s.octets(), &d.octets(), proto, len),
        (s, d) => {
            let six = |a: &std::net::IpAddr| match a {
                V6(a) => a.octets(),
                V4(a) => a.to_ipv6_mapped().octets(),
            };
            pseudo(&six(s), &six(d), proto, len)
        }
    }
}

/// Completes a partial checksum as a device does for `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the field
/// at `start + offset` holds the folded pseudo-header sum; everything from `start` to the end
/// of `frame` is added to it and the complement stored. False (nothing changed) when the
/// field is outside `frame`.
pub fn complete(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let at = start.saturating_add(offset);
    let Some(field) = frame.get(at..at.saturating_add(2)) else { return false };
    let partial = u64::from(u16::from_be_bytes([field[0], field[1]]));
    frame[at..at + 2].fill(0);
    let c = !fold(sum(&frame[start..], partial));
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is ddf2 (folded), checksum 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    /// The word-by-word sum of RFC 1071 §4.1, the reference the fast sum is checked against.
    fn reference_sum(data: &[u8]) -> u64 {
        data.chunks(2).map(|c| u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0))).sum()
    }

    #[test]
    fn pseudo_headers_match_their_layouts() {
        // IPv4 (RFC 793): src, dst, zero, protocol, TCP length.
        let v4 = [10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0x05, 0xdc];
        assert_eq!(fold(pseudo(&[10, 0, 0, 1], &[10, 0, 0, 2], 6, 1500)), fold(reference_sum(&v4)));
        // IPv6 (RFC 8200 §8.1): src, dst, 32-bit length, three zeros, next header.
        let (s, d) = ([0xfd; 16], [0xfe; 16]);
        let mut v6 = [s, d].concat();
        v6.extend_from_slice(&[0, 1, 0, 0x10, 0, 0, 0, 58]);
        assert_eq!(fold(pseudo(&s, &d, 58, 0x1_0010)), fold(reference_sum(&v6)));
    }

    #[test]
    fn completes_a_partial_checksum() {
        let mut seg = vec![0u8; 41];
        seg[..8].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0x29, 0, 0]);
        let seed = fold(pseudo(&[1, 2, 3, 4], &[5, 6, 7, 8], 17, 41));
        seg[6..8].copy_from_slice(&seed.to_be_bytes());
        assert!(complete(&mut seg, 0, 6));
        assert_eq!(fold(sum(&seg, pseudo(&[1, 2, 3, 4], &[5, 6, 7, 8], 17, 41))), 0xffff);
        assert!(!complete(&mut seg, 40, 0), "field past the end");
        assert!(!complete(&mut seg, usize::MAX, 1));
    }

    #[test]
    fn rfc1624_negative_zero_case() {
        // RFC 1624 section 4: HC = 0xdd2f, m = 0x5555 → m' = 0x3285; eqn. 3 gives 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    proptest::proptest! {
        #[test]
        fn fast_sum_matches_the_reference(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            proptest::prop_assert_eq!(fold(sum(&data, 0)), fold(reference_sum(&data)));
        }

        #[test]
        fn update_matches_recompute(
            mut words in proptest::collection::vec(proptest::prelude::any::<u16>(), 2..64),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            new in proptest::prelude::any::<u32>(),
        ) {
            let bytes = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
            let before = checksum(&bytes(&words));
            let i = at.index(words.len() - 1);
            let old = (u32::from(words[i]) << 16) | u32::from(words[i + 1]);
            words[i] = (new >> 16) as u16;
            words[i + 1] = new as u16;
            let after = checksum(&bytes(&words));
            // Both are valid encodings of the same one's-complement value (0x0000 ≡ 0xffff).
            let upd = update32(before, old, new);
            proptest::prop_assert!(same(upd, after), "{upd:#x} vs {after:#x}");
        }

        #[test]
        fn seed_update_matches_recompute(
            src in proptest::prelude::any::<[u8; 4]>(),
            dst in proptest::prelude::any::<[u8; 4]>(),
            new in proptest::prelude::any::<[u8; 4]>(),
            len in proptest::prelude::any::<u16>(),
        ) {
            let seed = fold(pseudo(&src, &dst, 6, u32::from(len)));
            let want = fold(pseudo(&src, &new, 6, u32::from(len)));
            let got = update_seed32(seed, u32::from_be_bytes(dst), u32::from_be_bytes(new));
            proptest::prop_assert!(same(got, want), "{got:#x} vs {want:#x}");
        }
    }

    proptest::proptest! {
        #[test]
        fn v6_address_update_matches_recompute(
            src in proptest::prelude::any::<[u8; 16]>(),
            dst in proptest::prelude::any::<[u8; 16]>(),
            new in proptest::prelude::any::<[u8; 16]>(),
            len in proptest::prelude::any::<u32>(),
        ) {
            let seed = fold(pseudo(&src, &dst, 6, len));
            let want = fold(pseudo(&src, &new, 6, len));
            let (o, n) = (std::net::IpAddr::from(dst), std::net::IpAddr::from(new));
            let got = update_seed_addr(seed, &o, &n);
            proptest::prop_assert!(same(got, want), "{got:#x} vs {want:#x}");
            let full = update_addr(!seed, &o, &n);
            proptest::prop_assert!(same(full, !want));
        }
    }

    /// Equal as one's-complement values (0x0000 and 0xffff are both zero).
    fn same(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
    }
}
