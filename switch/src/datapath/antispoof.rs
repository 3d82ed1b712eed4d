//! Anti-spoofing: a pod port may only send frames with its own MAC as source, and IPv4, IPv6
//! and ARP packets from its own addresses. There is no DHCP exception (pods get their addresses
//! from IPAM). IPv6 link-local sources and the unspecified source of duplicate address
//! detection are allowed, and so is ARP with sender 0.0.0.0 (an ARP probe). Anything but IPv4,
//! IPv6 and ARP (VLAN tags included) is refused.

use std::net::Ipv6Addr;

use crate::stats::DropReason;
use crate::table::SpoofGuard;
use crate::wire::{FrameMeta, L3Src};

fn link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Checks a frame from a pod against the pod's guard.
#[inline]
pub fn check(guard: &SpoofGuard, meta: &FrameMeta) -> Result<(), DropReason> {
    if meta.src != guard.mac {
        return Err(DropReason::SpoofedMac);
    }
    match meta.l3 {
        L3Src::Ipv4(ip) if guard.v4.contains(&ip) => Ok(()),
        L3Src::Ipv4(_) => Err(DropReason::SpoofedIp),
        L3Src::Ipv6(ip) if ip.is_unspecified() || link_local(&ip) || guard.v6.contains(&ip) => Ok(()),
        L3Src::Ipv6(_) => Err(DropReason::SpoofedIp),
        L3Src::Arp { sender_mac, .. } if sender_mac != guard.mac => Err(DropReason::SpoofedMac),
        L3Src::Arp { sender_ip, .. } if sender_ip.is_unspecified() || guard.v4.contains(&sender_ip) => Ok(()),
        L3Src::Arp { .. } => Err(DropReason::SpoofedIp),
        L3Src::Vlan | L3Src::Other => Err(DropReason::EthertypeDenied),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn guard() -> SpoofGuard {
        SpoofGuard::new(MAC, &["10.0.0.2/24".parse().unwrap(), "fd00::2/64".parse().unwrap()])
    }

    fn meta(src: [u8; 6], l3: L3Src) -> FrameMeta {
        FrameMeta { dst: [0xff; 6], src, ethertype: 0, l3 }
    }

    #[test]
    fn own_addresses_pass() {
        let g = guard();
        assert_eq!(check(&g, &meta(MAC, L3Src::Ipv4(Ipv4Addr::new(10, 0, 0, 2)))), Ok(()));
        assert_eq!(check(&g, &meta(MAC, L3Src::Ipv6("fd00::2".parse().unwrap()))), Ok(()));
        assert_eq!(check(&g, &meta(MAC, L3Src::Ipv6("fe80::1234".parse().unwrap()))), Ok(()));
        assert_eq!(check(&g, &meta(MAC, L3Src::Ipv6(Ipv6Addr::UNSPECIFIED))), Ok(()));
        let arp = L3Src::Arp { sender_mac: MAC, sender_ip: Ipv4Addr::new(10, 0, 0, 2) };
        assert_eq!(check(&g, &meta(MAC, arp)), Ok(()));
        let probe = L3Src::Arp { sender_mac: MAC, sender_ip: Ipv4Addr::UNSPECIFIED };
        assert_eq!(check(&g, &meta(MAC, probe)), Ok(()));
    }

    #[test]
    fn spoofs_are_refused() {
        let g = guard();
        let own = L3Src::Ipv4(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(check(&g, &meta(OTHER, own)), Err(DropReason::SpoofedMac));
        assert_eq!(
            check(&g, &meta(MAC, L3Src::Ipv4(Ipv4Addr::new(10, 0, 0, 3)))),
            Err(DropReason::SpoofedIp)
        );
        assert_eq!(check(&g, &meta(MAC, L3Src::Ipv4(Ipv4Addr::UNSPECIFIED))), Err(DropReason::SpoofedIp));
        assert_eq!(
            check(&g, &meta(MAC, L3Src::Ipv6("fd00::3".parse().unwrap()))),
            Err(DropReason::SpoofedIp)
        );
        let arp_mac = L3Src::Arp { sender_mac: OTHER, sender_ip: Ipv4Addr::new(10, 0, 0, 2) };
        assert_eq!(check(&g, &meta(MAC, arp_mac)), Err(DropReason::SpoofedMac));
        let arp_ip = L3Src::Arp { sender_mac: MAC, sender_ip: Ipv4Addr::new(10, 0, 0, 1) };
        assert_eq!(check(&g, &meta(MAC, arp_ip)), Err(DropReason::SpoofedIp));
        assert_eq!(check(&g, &meta(MAC, L3Src::Vlan)), Err(DropReason::EthertypeDenied));
        assert_eq!(check(&g, &meta(MAC, L3Src::Other)), Err(DropReason::EthertypeDenied));
    }
}
