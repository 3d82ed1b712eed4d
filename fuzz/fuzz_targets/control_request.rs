//! Any control-socket line must decode to a request or a clear error, never panic; and the
//! address allocator must take any IPAM request a line can carry (ranges, requested
//! addresses) without panicking, handing out only addresses of its ranges.
#![no_main]
use std::collections::{BTreeMap, HashSet};

use libfuzzer_sys::fuzz_target;
use tapway_api::{IpamRequest, Op};
use tapway_switch::control::server::parse_request;
use tapway_switch::ipam::{allocate, Range, RangeSet};

fn allocate_from(req: &IpamRequest) {
    let mut sets = Vec::new();
    for set in &req.ranges {
        let Ok(ranges) = set.iter().map(Range::parse).collect::<Result<Vec<_>, _>>() else { return };
        let Ok(set) = RangeSet::new(ranges) else { return };
        sets.push(set);
    }
    let wanted: Vec<std::net::IpAddr> = req.requested.iter().filter_map(|s| s.parse().ok()).collect();
    let mut last = BTreeMap::new();
    let mut in_use = HashSet::new();
    // Twice: the second allocation runs with the first's addresses in use and its position.
    for _ in 0..2 {
        let Ok(got) = allocate(&sets, &in_use, &mut last, &wanted) else { return };
        assert_eq!(got.len(), sets.len(), "one address per set");
        for (a, set) in got.iter().zip(&sets) {
            let r = set.range_of(a.address.addr()).expect("an address of its set");
            assert_ne!(a.address.addr(), r.gateway, "never the gateway");
            assert!(in_use.insert(a.address.addr()), "never an address in use");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_request(data) else { return };
    match &req.op {
        Op::IpamAllocate(a) => allocate_from(&a.request),
        Op::Attach(a) => {
            if let Some(ipam) = &a.ipam {
                allocate_from(ipam);
            }
        }
        _ => {}
    }
});
