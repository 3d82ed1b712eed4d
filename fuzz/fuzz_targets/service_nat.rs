//! Any frame reaching the service stage's rewriters (DNAT/SNAT, RST and ICMP answers) must be
//! rewritten or refused, never panic, whatever its headers claim.
#![no_main]
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use tapway_switch::datapath::service::{nat, reject};
use tapway_switch::wire::l4::parse_ipv4_l4;

fuzz_target!(|data: &[u8]| {
    let mut f = data.to_vec();
    if f.len() > 14 {
        f[12] = 0x08; // steer most inputs past the EtherType check
        f[13] = 0x00;
    }
    let Some(l) = parse_ipv4_l4(&f) else { return };
    let mut a = f.clone();
    nat::rewrite(&mut a, &l, nat::Side::Dst, Ipv4Addr::new(10, 0, 0, 1), 8080, data.len() % 2 == 0);
    nat::rewrite(&mut a, &l, nat::Side::Src, Ipv4Addr::new(10, 0, 0, 2), 40000, false);
    let mut b = f.clone();
    let _ = reject::tcp_reset(&mut b, &l, &[2, 0, 0, 0, 0, 1]);
    let len = f.len();
    let mut c = f;
    c.resize(len + 128, 0);
    let _ = reject::icmp_port_unreachable(&mut c, len, &l, &[2, 0, 0, 0, 0, 1]);
});
