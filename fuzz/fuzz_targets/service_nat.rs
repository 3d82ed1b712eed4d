//! Any frame reaching the service stage's rewriters (DNAT/SNAT, and the RST and ICMP answers
//! `wire` builds) must be
//! rewritten or refused, never panic, whatever its headers claim.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use tapway_switch::datapath::service::nat;
use tapway_switch::wire::{icmp, tcp, IpL4};

fuzz_target!(|data: &[u8]| {
    let mut f = data.to_vec();
    if f.len() > 14 {
        // Steer most inputs past the EtherType check, to IPv4 or IPv6.
        let v6 = f[0] & 1 == 1;
        f[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    }
    let Some(l) = IpL4::parse(&f) else { return };
    let (a1, a2): (IpAddr, IpAddr) = if l.is_v6() {
        (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::UNSPECIFIED.into())
    } else {
        (Ipv4Addr::new(10, 0, 0, 1).into(), Ipv4Addr::new(10, 0, 0, 2).into())
    };
    let mut a = f.clone();
    nat::rewrite(&mut a, &mut l.clone(), nat::Side::Dst, a1, 8080, data.len().is_multiple_of(2));
    nat::rewrite(&mut a, &mut l.clone(), nat::Side::Src, a2, 40000, false);
    nat::rewrite(&mut a, &mut l.clone(), nat::Side::Src, Ipv4Addr::new(1, 2, 3, 4).into(), 1, false);
    let mut b = f.clone();
    let _ = tcp::reset_in_place(&mut b, &l, &[2, 0, 0, 0, 0, 1]);
    let len = f.len();
    let mut c = f;
    c.resize(len + 128, 0);
    let _ = icmp::port_unreachable_in_place(&mut c, len, &l, &[2, 0, 0, 0, 0, 1]);
});
