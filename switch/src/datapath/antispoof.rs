//! Anti-spoofing: a pod port may only send frames with its own MAC as source, and IPv4, IPv6
//! and ARP packets from its own addresses. There is no DHCP exception (pods get their addresses
//! from IPAM). The unspecified source of duplicate address detection is allowed, and so is ARP
//! with sender 0.0.0.0 (an ARP probe); of the link-local addresses only the pod's own (the
//! EUI-64 one of its MAC). Anything but IPv4, IPv6 and ARP (VLAN tags included) is refused.
//!
//! Neighbour discovery is checked like ARP, as Cilium, Calico and OVS port security do: a
//! pod's advertisement may only announce its own addresses with its own MAC, its solicitations
//! carry its own MAC, duplicate address detection probes (from `::`) carry none (RFC 4861
//! §7.2.2) and ask only for its own addresses; router advertisements and redirects are the
//! gateway's alone. An NDP message behind extension headers is refused rather than let
//! through unchecked.

use crate::stats::DropReason;
use crate::table::SpoofGuard;
use crate::wire::ndp::{NdpError, NdpRepr, NdpScan};
use crate::wire::{FrameMeta, L3Src};

/// Checks a frame from a pod against the pod's guard, from its meta (neighbour discovery
/// included, as the parse stage found it).
#[inline]
pub fn check(guard: &SpoofGuard, meta: &FrameMeta) -> Result<(), DropReason> {
    if meta.src != guard.mac {
        return Err(DropReason::SpoofedMac);
    }
    match meta.l3 {
        L3Src::Ipv4(ip) if guard.v4.contains(&ip) => Ok(()),
        L3Src::Ipv4(_) => Err(DropReason::SpoofedIp),
        L3Src::Ipv6(ip) if ip.is_unspecified() || guard.owns_v6(&ip) => {
            check_ndp(guard, ip.is_unspecified(), &meta.ndp)
        }
        L3Src::Ipv6(_) => Err(DropReason::SpoofedIp),
        L3Src::Arp { sender_mac, .. } if sender_mac != guard.mac => Err(DropReason::SpoofedMac),
        L3Src::Arp { sender_ip, .. } if sender_ip.is_unspecified() || guard.v4.contains(&sender_ip) => Ok(()),
        L3Src::Arp { .. } => Err(DropReason::SpoofedIp),
        L3Src::Vlan | L3Src::Other => Err(DropReason::EthertypeDenied),
    }
}

/// The NDP rules, for a packet whose IPv6 source already passed (`dad`: from `::`).
fn check_ndp(guard: &SpoofGuard, dad: bool, ndp: &NdpScan) -> Result<(), DropReason> {
    let own_mac = |m: &Option<crate::wire::Mac>| m.is_none_or(|m| m == guard.mac);
    let ok = match ndp {
        Ok(None) => true,
        Err(NdpError::BehindExtensionHeaders) => false,
        Err(_) => return Err(DropReason::Malformed),
        Ok(Some(NdpRepr::RouterAdvert | NdpRepr::Redirect)) => return Err(DropReason::NdpRouterOnly),
        Ok(Some(NdpRepr::RouterSolicit { source_lladdr })) => {
            own_mac(source_lladdr) && !(dad && source_lladdr.is_some())
        }
        Ok(Some(NdpRepr::NeighborSolicit { target, source_lladdr })) if dad => {
            source_lladdr.is_none() && guard.owns_v6(target)
        }
        Ok(Some(NdpRepr::NeighborSolicit { source_lladdr, .. })) => own_mac(source_lladdr),
        Ok(Some(NdpRepr::NeighborAdvert { target, target_lladdr, .. })) => {
            !dad && guard.owns_v6(target) && own_mac(target_lladdr)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(DropReason::NdpSpoofed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ndp::na_flags::OVERRIDE;
    use crate::wire::ndp::NdpRepr::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn guard() -> SpoofGuard {
        SpoofGuard::new(MAC, &["10.0.0.2/24".parse().unwrap(), "fd00::2/64".parse().unwrap()])
    }

    fn meta(src: [u8; 6], l3: L3Src) -> FrameMeta {
        with_ndp(src, l3, Ok(None))
    }

    fn with_ndp(src: [u8; 6], l3: L3Src, ndp: NdpScan) -> FrameMeta {
        let vnet = Default::default();
        FrameMeta { vnet, dst: [0xff; 6], src, ethertype: 0, l3, l4: None, ndp }
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// The own link-local address of MAC.
    fn ll() -> Ipv6Addr {
        v6("fe80::ff:fe00:1")
    }

    fn plain(g: &SpoofGuard, m: &FrameMeta) -> Result<(), DropReason> {
        check(g, m)
    }

    #[test]
    fn own_addresses_pass() {
        let g = guard();
        assert_eq!(g.link_local, ll());
        assert_eq!(plain(&g, &meta(MAC, L3Src::Ipv4(Ipv4Addr::new(10, 0, 0, 2)))), Ok(()));
        assert_eq!(plain(&g, &meta(MAC, L3Src::Ipv6(v6("fd00::2")))), Ok(()));
        assert_eq!(plain(&g, &meta(MAC, L3Src::Ipv6(ll()))), Ok(()));
        assert_eq!(plain(&g, &meta(MAC, L3Src::Ipv6(Ipv6Addr::UNSPECIFIED))), Ok(()));
        let arp = L3Src::Arp { sender_mac: MAC, sender_ip: Ipv4Addr::new(10, 0, 0, 2) };
        assert_eq!(plain(&g, &meta(MAC, arp)), Ok(()));
        let probe = L3Src::Arp { sender_mac: MAC, sender_ip: Ipv4Addr::UNSPECIFIED };
        assert_eq!(plain(&g, &meta(MAC, probe)), Ok(()));
    }

    #[test]
    fn spoofs_are_refused() {
        let g = guard();
        let own = L3Src::Ipv4(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(plain(&g, &meta(OTHER, own)), Err(DropReason::SpoofedMac));
        assert_eq!(
            plain(&g, &meta(MAC, L3Src::Ipv4(Ipv4Addr::new(10, 0, 0, 3)))),
            Err(DropReason::SpoofedIp)
        );
        assert_eq!(plain(&g, &meta(MAC, L3Src::Ipv4(Ipv4Addr::UNSPECIFIED))), Err(DropReason::SpoofedIp));
        assert_eq!(plain(&g, &meta(MAC, L3Src::Ipv6(v6("fd00::3")))), Err(DropReason::SpoofedIp));
        // Another link-local address than its own (another pod's, the gateway's).
        assert_eq!(plain(&g, &meta(MAC, L3Src::Ipv6(v6("fe80::1234")))), Err(DropReason::SpoofedIp));
        assert_eq!(plain(&g, &meta(MAC, L3Src::Ipv6(v6("fe80::ff:fe00:2")))), Err(DropReason::SpoofedIp));
        let arp_mac = L3Src::Arp { sender_mac: OTHER, sender_ip: Ipv4Addr::new(10, 0, 0, 2) };
        assert_eq!(plain(&g, &meta(MAC, arp_mac)), Err(DropReason::SpoofedMac));
        let arp_ip = L3Src::Arp { sender_mac: MAC, sender_ip: Ipv4Addr::new(10, 0, 0, 1) };
        assert_eq!(plain(&g, &meta(MAC, arp_ip)), Err(DropReason::SpoofedIp));
        assert_eq!(plain(&g, &meta(MAC, L3Src::Vlan)), Err(DropReason::EthertypeDenied));
        assert_eq!(plain(&g, &meta(MAC, L3Src::Other)), Err(DropReason::EthertypeDenied));
    }

    /// `ndp` from `src` (with the pod's MAC) through the check.
    fn ndp(src: &str, repr: NdpRepr) -> Result<(), DropReason> {
        check(&guard(), &with_ndp(MAC, L3Src::Ipv6(v6(src)), Ok(Some(repr))))
    }

    #[test]
    fn neighbour_advertisements() {
        let na = |target: &str, tll: Option<[u8; 6]>| NeighborAdvert {
            flags: OVERRIDE,
            target: v6(target),
            target_lladdr: tll,
        };
        assert_eq!(ndp("fd00::2", na("fd00::2", Some(MAC))), Ok(()));
        assert_eq!(ndp("fe80::ff:fe00:1", na("fe80::ff:fe00:1", None)), Ok(()));
        assert_eq!(ndp("fd00::2", na("fd00::2", None)), Ok(()));
        // Another pod's or the gateway's address, or its own address with another MAC.
        assert_eq!(ndp("fd00::2", na("fd00::3", Some(MAC))), Err(DropReason::NdpSpoofed));
        assert_eq!(ndp("fd00::2", na("fd00::1", None)), Err(DropReason::NdpSpoofed));
        assert_eq!(ndp("fe80::ff:fe00:1", na("fe80::1", Some(MAC))), Err(DropReason::NdpSpoofed));
        assert_eq!(ndp("fd00::2", na("fd00::2", Some(OTHER))), Err(DropReason::NdpSpoofed));
        // An advertisement from `::` claims nothing it may claim.
        assert_eq!(ndp("::", na("fd00::2", Some(MAC))), Err(DropReason::NdpSpoofed));
    }

    #[test]
    fn neighbour_solicitations() {
        let ns =
            |target: &str, sll: Option<[u8; 6]>| NeighborSolicit { target: v6(target), source_lladdr: sll };
        // Resolving anyone is fine, with its own MAC.
        assert_eq!(ndp("fd00::2", ns("fd00::3", Some(MAC))), Ok(()));
        assert_eq!(ndp("fe80::ff:fe00:1", ns("fe80::1", None)), Ok(()));
        assert_eq!(ndp("fd00::2", ns("fd00::3", Some(OTHER))), Err(DropReason::NdpSpoofed));
        // Duplicate address detection: from `::`, for its own address, without an option.
        assert_eq!(ndp("::", ns("fd00::2", None)), Ok(()));
        assert_eq!(ndp("::", ns("fe80::ff:fe00:1", None)), Ok(()));
        assert_eq!(ndp("::", ns("fd00::2", Some(MAC))), Err(DropReason::NdpSpoofed), "RFC 4861 7.2.2");
        assert_eq!(
            ndp("::", ns("fd00::3", None)),
            Err(DropReason::NdpSpoofed),
            "a probe for another's address"
        );
    }

    #[test]
    fn routers_only() {
        assert_eq!(ndp("fe80::ff:fe00:1", RouterAdvert), Err(DropReason::NdpRouterOnly));
        assert_eq!(ndp("fe80::ff:fe00:1", Redirect), Err(DropReason::NdpRouterOnly));
        assert_eq!(ndp("fe80::ff:fe00:1", RouterSolicit { source_lladdr: Some(MAC) }), Ok(()));
        assert_eq!(ndp("::", RouterSolicit { source_lladdr: None }), Ok(()));
        assert_eq!(ndp("::", RouterSolicit { source_lladdr: Some(MAC) }), Err(DropReason::NdpSpoofed));
        assert_eq!(ndp("fd00::2", RouterSolicit { source_lladdr: Some(OTHER) }), Err(DropReason::NdpSpoofed));
    }

    #[test]
    fn hidden_or_malformed_ndp() {
        let g = guard();
        let m = |e| with_ndp(MAC, L3Src::Ipv6(v6("fd00::2")), Err(e));
        assert_eq!(check(&g, &m(NdpError::BehindExtensionHeaders)), Err(DropReason::NdpSpoofed));
        assert_eq!(check(&g, &m(NdpError::ZeroLengthOption)), Err(DropReason::Malformed));
        assert_eq!(check(&g, &m(NdpError::ExtensionHeader)), Err(DropReason::Malformed));
        // The source address is checked first.
        let other = with_ndp(MAC, L3Src::Ipv6(v6("fd00::9")), Ok(Some(RouterAdvert)));
        assert_eq!(check(&g, &other), Err(DropReason::SpoofedIp));
    }
}
