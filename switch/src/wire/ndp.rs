//! IPv6 neighbour discovery (RFC 4861), smoltcp style: a checked view over the bytes of an
//! ICMPv6 message ([`NdpPacket`]), the parts of it the switch decides on ([`NdpRepr`], which
//! also builds NS and NA frames), and where such a message sits in an Ethernet frame
//! ([`parse_ndp`]).
//!
//! Anti-spoofing reads it to check what a pod claims in its solicitations and advertisements,
//! and neighbour learning to know who answers to what. Everything is checked before use: a
//! truncated message, an option of length zero, an option running past the message, a
//! link-layer address option that is not one Ethernet address or a repeated one are errors,
//! never panics. The ICMPv6 checksum is not verified: receivers drop a bad one themselves.

use std::net::Ipv6Addr;

use etherparse::{IpNumber, Ipv6ExtensionSlice, Ipv6ExtensionsSlice};

use super::checksum::{fold, pseudo, sum};
use super::ethernet::{ethertype, EthernetFrame, HEADER_LEN as ETH_LEN};
use super::ip::{emit_header, Ipv6Packet, IPV6_HDR_LEN, PROTO_ICMPV6 as NEXT_ICMPV6};
use super::Mac;

/// ICMPv6 type of a router solicitation.
pub const ROUTER_SOLICIT: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ROUTER_ADVERT: u8 = 134;
/// ICMPv6 type of a neighbour solicitation.
pub const NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type of a neighbour advertisement.
pub const NEIGHBOR_ADVERT: u8 = 136;
/// ICMPv6 type of a redirect.
pub const REDIRECT: u8 = 137;

/// Option type: source link-layer address.
pub const OPT_SOURCE_LLADDR: u8 = 1;
/// Option type: target link-layer address.
pub const OPT_TARGET_LLADDR: u8 = 2;

/// Flags of a neighbour advertisement (RFC 4861 §4.4).
pub mod na_flags {
    /// The sender is a router.
    pub const ROUTER: u8 = 0x80;
    /// Sent in answer to a solicitation.
    pub const SOLICITED: u8 = 0x40;
    /// Replace a cached link-layer address.
    pub const OVERRIDE: u8 = 0x20;
}

mod field {
    use std::ops::Range;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    /// NA: the R, S and O bits.
    pub const NA_FLAGS: usize = 4;
    /// NS, NA and redirect: the target address.
    pub const TARGET: Range<usize> = 8..24;
    /// Where the options start, by message type.
    pub const RS_OPTIONS: usize = 8;
    pub const RA_OPTIONS: usize = 16;
    pub const NS_NA_OPTIONS: usize = 24;
    pub const REDIRECT_OPTIONS: usize = 40;
    /// Inside an option: type, length in units of 8 bytes, and a link-layer address.
    pub const OPT_TYPE: usize = 0;
    pub const OPT_LEN: usize = 1;
    pub const OPT_LLADDR: Range<usize> = 2..8;
}

/// Why an NDP message is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NdpError {
    /// Not one of the five NDP message types.
    #[error("not a neighbour discovery message")]
    NotNdp,
    /// Shorter than the fixed part of its type, or than the IPv6 payload length says.
    #[error("truncated neighbour discovery message")]
    Truncated,
    /// An option of length zero (RFC 4861 §4.6: the message must be discarded).
    #[error("neighbour discovery option of length zero")]
    ZeroLengthOption,
    /// An option that runs past the end of the message.
    #[error("neighbour discovery option runs past the message")]
    OptionOverrun,
    /// A link-layer address option that is not one Ethernet address (length 1).
    #[error("link-layer address option of the wrong length")]
    BadLinkLayerOption,
    /// The same link-layer address option twice (receivers would believe only one).
    #[error("repeated link-layer address option")]
    DuplicateOption,
    /// An NDP message behind IPv6 extension headers (or in a fragment): receivers ignore
    /// these (RFC 6980), so only a forger sends one, hoping a checker looks no further.
    #[error("neighbour discovery message behind extension headers")]
    BehindExtensionHeaders,
    /// An IPv6 extension header chain that is truncated or invalid.
    #[error("bad IPv6 extension header")]
    ExtensionHeader,
}

/// True for the ICMPv6 types of neighbour discovery.
pub fn is_ndp_type(ty: u8) -> bool {
    (ROUTER_SOLICIT..=REDIRECT).contains(&ty)
}

fn options_offset(ty: u8) -> Option<usize> {
    match ty {
        ROUTER_SOLICIT => Some(field::RS_OPTIONS),
        ROUTER_ADVERT => Some(field::RA_OPTIONS),
        NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT => Some(field::NS_NA_OPTIONS),
        REDIRECT => Some(field::REDIRECT_OPTIONS),
        _ => None,
    }
}

/// A view over the bytes of one NDP message (the ICMPv6 header and body, exactly as long as
/// the IPv6 payload says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NdpPacket<T> {
    /// A view without checks: accessors may then return `None`/defaults, never panic.
    pub fn new_unchecked(buffer: T) -> NdpPacket<T> {
        NdpPacket { buffer }
    }

    /// A view over a checked message (see [`NdpPacket::check_len`]).
    pub fn new_checked(buffer: T) -> Result<NdpPacket<T>, NdpError> {
        let p = NdpPacket::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the type, the fixed part of the message and every option: none of length
    /// zero, none past the end, link-layer address options of length 1 and not repeated.
    pub fn check_len(&self) -> Result<(), NdpError> {
        let b = self.buffer.as_ref();
        let ty = *b.get(field::TYPE).ok_or(NdpError::Truncated)?;
        let off = options_offset(ty).ok_or(NdpError::NotNdp)?;
        if b.len() < off {
            return Err(NdpError::Truncated);
        }
        let mut rest = &b[off..];
        let (mut source, mut target) = (false, false);
        while !rest.is_empty() {
            let (Some(&kind), Some(&units)) = (rest.get(field::OPT_TYPE), rest.get(field::OPT_LEN)) else {
                return Err(NdpError::OptionOverrun);
            };
            let len = usize::from(units) * 8;
            if len == 0 {
                return Err(NdpError::ZeroLengthOption);
            }
            if len > rest.len() {
                return Err(NdpError::OptionOverrun);
            }
            if kind == OPT_SOURCE_LLADDR || kind == OPT_TARGET_LLADDR {
                if units != 1 {
                    return Err(NdpError::BadLinkLayerOption);
                }
                let seen = if kind == OPT_SOURCE_LLADDR { &mut source } else { &mut target };
                if std::mem::replace(seen, true) {
                    return Err(NdpError::DuplicateOption);
                }
            }
            rest = &rest[len..];
        }
        Ok(())
    }

    /// The ICMPv6 type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref().get(field::TYPE).copied().unwrap_or(0)
    }

    /// The ICMPv6 code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref().get(field::CODE).copied().unwrap_or(0)
    }

    /// The ICMPv6 checksum as sent.
    pub fn checksum(&self) -> u16 {
        self.buffer.as_ref().get(field::CHECKSUM).map_or(0, |c| u16::from_be_bytes([c[0], c[1]]))
    }

    /// A neighbour advertisement's flags ([`na_flags`]); 0 for other types.
    pub fn na_flags(&self) -> u8 {
        if self.msg_type() != NEIGHBOR_ADVERT {
            return 0;
        }
        self.buffer.as_ref().get(field::NA_FLAGS).map_or(0, |f| f & 0xe0)
    }

    /// The target address of a solicitation, advertisement or redirect.
    pub fn target_addr(&self) -> Option<Ipv6Addr> {
        if !matches!(self.msg_type(), NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT | REDIRECT) {
            return None;
        }
        let t: [u8; 16] = self.buffer.as_ref().get(field::TARGET)?.try_into().ok()?;
        Some(Ipv6Addr::from(t))
    }

    /// The options, as (type, whole option bytes), up to the first malformed one.
    pub fn options(&self) -> NdpOptions<'_> {
        let b = self.buffer.as_ref();
        let rest = options_offset(self.msg_type()).and_then(|o| b.get(o..)).unwrap_or(&[]);
        NdpOptions { rest }
    }

    fn lladdr(&self, kind: u8) -> Option<Mac> {
        self.options()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, opt)| opt.get(field::OPT_LLADDR)?.try_into().ok())
    }

    /// The source link-layer address option.
    pub fn source_lladdr(&self) -> Option<Mac> {
        self.lladdr(OPT_SOURCE_LLADDR)
    }

    /// The target link-layer address option.
    pub fn target_lladdr(&self) -> Option<Mac> {
        self.lladdr(OPT_TARGET_LLADDR)
    }
}

/// The options of an [`NdpPacket`].
pub struct NdpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for NdpOptions<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let kind = *self.rest.get(field::OPT_TYPE)?;
        let len = usize::from(*self.rest.get(field::OPT_LEN)?) * 8;
        if len == 0 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let (opt, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some((kind, opt))
    }
}

/// What the switch needs of an NDP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpRepr {
    /// A router solicitation (harmless: only the gateway answers).
    RouterSolicit {
        /// Its source link-layer address option.
        source_lladdr: Option<Mac>,
    },
    /// A router advertisement.
    RouterAdvert,
    /// A neighbour solicitation (from `::`: duplicate address detection).
    NeighborSolicit {
        /// The address asked for.
        target: Ipv6Addr,
        /// Its source link-layer address option.
        source_lladdr: Option<Mac>,
    },
    /// A neighbour advertisement.
    NeighborAdvert {
        /// [`na_flags`].
        flags: u8,
        /// The address advertised.
        target: Ipv6Addr,
        /// Its target link-layer address option.
        target_lladdr: Option<Mac>,
    },
    /// A redirect.
    Redirect,
}

/// Bytes of an NS or NA with one link-layer address option.
const NS_NA_LEN: usize = field::NS_NA_OPTIONS + 8;

impl NdpRepr {
    /// Reads a checked message.
    pub fn parse<T: AsRef<[u8]>>(p: &NdpPacket<T>) -> Result<NdpRepr, NdpError> {
        let target = || p.target_addr().ok_or(NdpError::Truncated);
        Ok(match p.msg_type() {
            ROUTER_SOLICIT => NdpRepr::RouterSolicit { source_lladdr: p.source_lladdr() },
            ROUTER_ADVERT => NdpRepr::RouterAdvert,
            NEIGHBOR_SOLICIT => {
                NdpRepr::NeighborSolicit { target: target()?, source_lladdr: p.source_lladdr() }
            }
            NEIGHBOR_ADVERT => NdpRepr::NeighborAdvert {
                flags: p.na_flags(),
                target: target()?,
                target_lladdr: p.target_lladdr(),
            },
            REDIRECT => NdpRepr::Redirect,
            _ => return Err(NdpError::NotNdp),
        })
    }

    /// Writes an NS or NA as a whole Ethernet frame from `src_mac`/`src` to `dst_mac`/`dst`
    /// (hop limit 255, checksum filled) into `buf`; returns its length, or `None` for other
    /// messages or a `buf` too small.
    pub fn emit_frame(
        &self,
        src_mac: Mac,
        dst_mac: Mac,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        buf: &mut [u8],
    ) -> Option<usize> {
        let (ty, flags, target, opt) = match *self {
            NdpRepr::NeighborSolicit { target, source_lladdr } => {
                (NEIGHBOR_SOLICIT, 0, target, source_lladdr.map(|m| (OPT_SOURCE_LLADDR, m)))
            }
            NdpRepr::NeighborAdvert { flags, target, target_lladdr } => {
                (NEIGHBOR_ADVERT, flags, target, target_lladdr.map(|m| (OPT_TARGET_LLADDR, m)))
            }
            _ => return None,
        };
        let icmp_len = if opt.is_some() { NS_NA_LEN } else { field::NS_NA_OPTIONS };
        let out = buf.get_mut(..ETH_LEN + IPV6_HDR_LEN + icmp_len)?;
        EthernetFrame::new_checked(&mut *out).ok()?.emit(&dst_mac, &src_mac, ethertype::IPV6);
        let plen = u16::try_from(icmp_len).ok()?;
        emit_header(&mut out[ETH_LEN..], plen, NEXT_ICMPV6, src.into(), dst.into(), 255)?;
        let icmp = &mut out[ETH_LEN + IPV6_HDR_LEN..];
        icmp.fill(0);
        icmp[field::TYPE] = ty;
        icmp[field::NA_FLAGS] = flags & 0xe0;
        icmp[field::TARGET].copy_from_slice(&target.octets());
        if let Some((kind, mac)) = opt {
            let o = &mut icmp[field::NS_NA_OPTIONS..];
            o[field::OPT_TYPE] = kind;
            o[field::OPT_LEN] = 1;
            o[field::OPT_LLADDR].copy_from_slice(&mac);
        }
        let c = !fold(sum(icmp, pseudo(&src.octets(), &dst.octets(), NEXT_ICMPV6, u32::from(plen))));
        icmp[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        Some(ETH_LEN + IPV6_HDR_LEN + icmp_len)
    }
}

/// What [`scan`] found in one frame.
pub type NdpScan = Result<Option<NdpRepr>, NdpError>;

/// The NDP message an Ethernet frame carries: `Ok(None)` for anything else. [`scan`] of the
/// IPv6 header, for a caller that has not parsed it (the parse stage has: see
/// [`crate::wire::frame::parse`]).
pub fn parse_ndp(eth: &[u8]) -> NdpScan {
    let ip = match eth.get(12..14) {
        Some(et) if et == ethertype::IPV6.to_be_bytes() => eth.get(ETH_LEN..),
        _ => None,
    };
    // (The version is not checked here: NDP is read from any 40-byte header.)
    match ip.filter(|ip| ip.len() >= IPV6_HDR_LEN) {
        Some(ip) => scan_ipv6(ip[4..6].try_into().map_or(0, u16::from_be_bytes), ip[6], &ip[IPV6_HDR_LEN..]),
        None => Ok(None),
    }
}

/// The NDP message the IPv6 packet `ip` carries: `Ok(None)` for anything else (another
/// ICMPv6 type or protocol, a later fragment). An NDP message behind extension headers is
/// [`NdpError::BehindExtensionHeaders`]; it is bounded by the IPv6 payload length, so trailing
/// bytes are never read as options.
pub fn scan<T: AsRef<[u8]>>(ip: &Ipv6Packet<T>) -> NdpScan {
    scan_ipv6(ip.payload_len(), ip.next_header(), ip.payload())
}

fn scan_ipv6(payload_len: u16, next: u8, payload: &[u8]) -> NdpScan {
    let payload_len = usize::from(payload_len);
    let (icmp, hidden) = if next == NEXT_ICMPV6 {
        (payload, false)
    } else if IpNumber(next).is_ipv6_ext_header_value() {
        let (exts, last, rest) = Ipv6ExtensionsSlice::from_slice(IpNumber(next), payload)
            .map_err(|_| NdpError::ExtensionHeader)?;
        if last.0 != NEXT_ICMPV6 || later_fragment(&exts) {
            return Ok(None);
        }
        (rest, true)
    } else {
        return Ok(None);
    };
    let ty = *icmp.first().ok_or(NdpError::Truncated)?;
    if !is_ndp_type(ty) {
        return Ok(None);
    }
    if hidden {
        return Err(NdpError::BehindExtensionHeaders);
    }
    let msg = icmp.get(..payload_len).ok_or(NdpError::Truncated)?;
    let p = NdpPacket::new_checked(msg)?;
    NdpRepr::parse(&p).map(Some)
}

/// Whether a fragment header says the payload starts in another fragment.
fn later_fragment(exts: &Ipv6ExtensionsSlice<'_>) -> bool {
    exts.clone().into_iter().any(|e| match e {
        Ipv6ExtensionSlice::Fragment(f) => f.fragment_offset().value() != 0,
        _ => false,
    })
}

/// The link-local address the kernel derives from `mac` (modified EUI-64, RFC 4291 App. A),
/// which a pod interface gets since tapwayd sets its `addr_gen_mode` to EUI-64.
pub fn eui64_link_local(mac: &Mac) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];

    /// A neighbour advertisement from fd00::a for fd00::a, flags S+O, with a target
    /// link-layer address option (86 bytes).
    pub static NA: [u8; 86] = [
        0x33, 0x33, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 0x0a, 0x86, 0xdd, // Ethernet
        0x60, 0, 0, 0, 0, 32, 58, 255, // IPv6: payload 32, ICMPv6, hop limit 255
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, // source fd00::a
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // destination ff02::1
        136, 0, 0, 0, 0x60, 0, 0, 0, // NA, checksum (not checked), S+O
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, // target fd00::a
        2, 1, 0x02, 0, 0, 0, 0, 0x0a, // target link-layer address
    ];

    fn with_icmp(icmp: &[u8]) -> Vec<u8> {
        let mut f = NA[..54].to_vec();
        f[18..20].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(icmp);
        f
    }

    #[test]
    fn deconstruct() {
        let p = NdpPacket::new_checked(&NA[54..]).unwrap();
        assert_eq!(p.msg_type(), NEIGHBOR_ADVERT);
        assert_eq!(p.code(), 0);
        assert_eq!(p.na_flags(), na_flags::SOLICITED | na_flags::OVERRIDE);
        assert_eq!(p.target_addr(), Some("fd00::a".parse().unwrap()));
        assert_eq!(p.target_lladdr(), Some(MAC));
        assert_eq!(p.source_lladdr(), None);
        assert_eq!(p.options().count(), 1);
        let want = NdpRepr::NeighborAdvert {
            flags: na_flags::SOLICITED | na_flags::OVERRIDE,
            target: "fd00::a".parse().unwrap(),
            target_lladdr: Some(MAC),
        };
        assert_eq!(parse_ndp(&NA), Ok(Some(want)));
    }

    #[test]
    fn construct_round_trips() {
        let ns = NdpRepr::NeighborSolicit { target: "fd00::b".parse().unwrap(), source_lladdr: Some(MAC) };
        let mut buf = [0u8; 128];
        let n = ns
            .emit_frame(
                MAC,
                [0x33, 0x33, 0xff, 0, 0, 0x0b],
                "fd00::a".parse().unwrap(),
                "ff02::1:ff00:b".parse().unwrap(),
                &mut buf,
            )
            .unwrap();
        assert_eq!(n, 86);
        assert_eq!(parse_ndp(&buf[..n]), Ok(Some(ns)));
        // The checksum verifies (the sum over pseudo-header and message folds to zero).
        let icmp = &buf[54..n];
        let mut src = [0u8; 16];
        src.copy_from_slice(&buf[22..38]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&buf[38..54]);
        assert_eq!(!fold(sum(icmp, pseudo(&src, &dst, 58, 32))), 0);
        let dad = NdpRepr::NeighborSolicit { target: "fd00::b".parse().unwrap(), source_lladdr: None };
        let n = dad
            .emit_frame(MAC, [0x33; 6], Ipv6Addr::UNSPECIFIED, "ff02::1:ff00:b".parse().unwrap(), &mut buf)
            .unwrap();
        assert_eq!(n, 78);
        assert_eq!(parse_ndp(&buf[..n]), Ok(Some(dad)));
        let any = Ipv6Addr::UNSPECIFIED;
        assert_eq!(NdpRepr::RouterAdvert.emit_frame(MAC, MAC, any, any, &mut buf), None);
        assert_eq!(ns.emit_frame(MAC, MAC, any, any, &mut buf[..40]), None, "too small");
    }

    #[test]
    fn every_type() {
        let rs = with_icmp(&[133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1]);
        assert_eq!(
            parse_ndp(&rs),
            Ok(Some(NdpRepr::RouterSolicit { source_lladdr: Some([2, 0, 0, 0, 0, 1]) }))
        );
        let mut ra = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        ra.extend_from_slice(&[3, 4]); // a prefix information option (32 bytes)
        ra.extend_from_slice(&[0; 30]);
        assert_eq!(parse_ndp(&with_icmp(&ra)), Ok(Some(NdpRepr::RouterAdvert)));
        assert_eq!(parse_ndp(&with_icmp(&[137; 48])), Err(NdpError::OptionOverrun), "options of garbage");
        let mut redirect = vec![137, 0, 0, 0];
        redirect.extend_from_slice(&[0; 36]);
        assert_eq!(parse_ndp(&with_icmp(&redirect)), Ok(Some(NdpRepr::Redirect)));
        // Other ICMPv6 and other protocols are not NDP.
        assert_eq!(parse_ndp(&with_icmp(&[128, 0, 0, 0, 0, 1, 0, 1])), Ok(None), "echo request");
        let mut udp = with_icmp(&[0; 8]);
        udp[20] = 17;
        assert_eq!(parse_ndp(&udp), Ok(None));
        let mut arp = NA.to_vec();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_ndp(&arp), Ok(None));
        let p = NdpPacket::new_unchecked(&[128u8, 0, 0, 0][..]);
        assert_eq!(p.check_len(), Err(NdpError::NotNdp));
        assert_eq!((p.na_flags(), p.target_addr()), (0, None));
    }

    #[test]
    fn truncated() {
        for n in 0..NA.len() {
            let r = parse_ndp(&NA[..n]);
            if n < 54 {
                assert_eq!(r, Ok(None), "{n}: not an IPv6 packet yet");
            } else {
                assert!(r.is_err(), "{n} bytes: {r:?}");
            }
        }
        // The payload length bounds the message: 8 bytes less drops the option, 28 less is
        // shorter than an NA.
        let mut short = NA.to_vec();
        short[19] = 24;
        let Ok(Some(NdpRepr::NeighborAdvert { target_lladdr, .. })) = parse_ndp(&short) else { panic!() };
        assert_eq!(target_lladdr, None);
        short[19] = 4;
        assert_eq!(parse_ndp(&short), Err(NdpError::Truncated));
        short[19] = 40;
        assert_eq!(parse_ndp(&short), Err(NdpError::Truncated), "payload longer than the frame");
        // Ethernet padding past the payload is not read as options.
        let mut padded = NA.to_vec();
        padded.extend_from_slice(&[0; 8]);
        assert!(parse_ndp(&padded).unwrap().is_some());
    }

    #[test]
    fn bad_options() {
        let set = |opt: &[u8]| {
            let mut icmp = NA[54..78].to_vec();
            icmp.extend_from_slice(opt);
            parse_ndp(&with_icmp(&icmp))
        };
        assert_eq!(set(&[2, 0, 0, 0, 0, 0, 0, 0]), Err(NdpError::ZeroLengthOption));
        assert_eq!(set(&[2, 2, 0, 0, 0, 0, 0, 0]), Err(NdpError::OptionOverrun));
        assert_eq!(set(&[2, 1, 0, 0, 0, 0]), Err(NdpError::OptionOverrun), "6 bytes left");
        assert_eq!(set(&[2]), Err(NdpError::OptionOverrun), "1 byte left");
        assert_eq!(set(&[2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(NdpError::BadLinkLayerOption));
        assert_eq!(
            set(&[2, 1, 2, 0, 0, 0, 0, 0x0a, 2, 1, 2, 0, 0, 0, 0, 0x0b]),
            Err(NdpError::DuplicateOption),
            "two target addresses"
        );
        // An unknown option is skipped; a source option on an NA is ignored.
        let r = set(&[99, 1, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 0x0b, 2, 1, 2, 0, 0, 0, 0, 0x0c]);
        let Ok(Some(NdpRepr::NeighborAdvert { target_lladdr, .. })) = r else { panic!("{r:?}") };
        assert_eq!(target_lladdr, Some([2, 0, 0, 0, 0, 0x0c]));
        // The unchecked view stops at the first bad option instead of panicking.
        let bad = [136u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 9, 1];
        let p = NdpPacket::new_unchecked(&bad[..]);
        assert_eq!((p.options().count(), p.target_lladdr()), (0, None));
    }

    #[test]
    fn behind_extension_headers() {
        // Hop-by-hop options (8 bytes of padding) in front of the NA.
        let mut f = NA[..54].to_vec();
        f[20] = 0;
        f[18..20].copy_from_slice(&40u16.to_be_bytes());
        f.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0]);
        f.extend_from_slice(&NA[54..]);
        assert_eq!(parse_ndp(&f), Err(NdpError::BehindExtensionHeaders));
        // A first fragment (offset 0, more fragments) carrying an NA.
        let mut frag = NA[..54].to_vec();
        frag[20] = 44;
        frag.extend_from_slice(&[58, 0, 0, 1, 0, 0, 0, 7]);
        frag.extend_from_slice(&NA[54..]);
        assert_eq!(parse_ndp(&frag), Err(NdpError::BehindExtensionHeaders));
        // A later fragment has no ICMPv6 header: its bytes are data, whatever they look like.
        let mut later = frag.clone();
        later[56..58].copy_from_slice(&[0, 0x10]);
        assert_eq!(parse_ndp(&later), Ok(None));
        // MLD reports come behind hop-by-hop (router alert): not NDP, fine.
        let mut mld = f.clone();
        mld[62] = 143;
        assert_eq!(parse_ndp(&mld), Ok(None));
        // A truncated extension header.
        assert_eq!(parse_ndp(&f[..58]), Err(NdpError::ExtensionHeader));
    }

    #[test]
    fn link_local_of_a_mac() {
        let ll = eui64_link_local(&[0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(ll, "fe80::42:acff:fe11:2".parse::<Ipv6Addr>().unwrap());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160)) {
            let _ = parse_ndp(&bytes);
            let mut f = NA[..54].to_vec();
            f.extend_from_slice(&bytes);
            let _ = parse_ndp(&f);
            let p = NdpPacket::new_unchecked(&bytes[..]);
            let _ = (p.options().count(), p.source_lladdr(), p.target_lladdr(), p.target_addr(), p.checksum());
        }
    }
}
