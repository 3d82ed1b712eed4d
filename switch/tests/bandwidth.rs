//! Per-port rate limits (the CNI `bandwidth` capability, applied by tapwayd): a real TCP
//! transfer through a limited pod port completes intact, takes at least as long as the limit
//! allows, and the drops are counted. Needs root; skips (passes) without it.
//!
//! Pod ranges 10.231.81.0/24 .. (datapath.rs 1..=10, control.rs 21..=37, services.rs 51..=63).

mod common;

use std::time::Instant;

use common::*;
use tapway_api::{Bandwidth, Op, PortInfo};

/// A pod attached with `bandwidth`.
fn limited_pod(node: &Node, tag: &str, bw: Bandwidth) -> Pod {
    let ns = Netns::new(tag);
    let ip = node.next_ip();
    let mut req = node.attach_request(&ns, ip);
    req.bandwidth = Some(bw);
    let port: PortInfo = node.call(Op::Attach(req));
    Pod { port, ip, ns }
}

#[test]
fn rate_limits_hold_both_ways() {
    if skip() {
        return;
    }
    let node = Node::start("bw", 81);
    let rate = 16_000_000; // 16 Mbit/s = 2 MB/s
    let out_limited = limited_pod(
        &node,
        "bwe",
        Bandwidth { egress_rate: rate, egress_burst: rate / 10, ..Default::default() },
    );
    let in_limited = limited_pod(
        &node,
        "bwi",
        Bandwidth { ingress_rate: rate, ingress_burst: rate / 10, ..Default::default() },
    );
    let free = node.pod("bwf");
    let listed = node.ports().into_iter().find(|p| p.id == out_limited.port.id).expect("listed");
    assert_eq!(listed.bandwidth.map(|b| b.egress_rate), Some(rate), "the limit is shown: {listed:?}");

    // 4 MiB at 2 MB/s takes about 2 s; the lower bound below only fails if the limit does not
    // hold (a slow machine makes the transfer longer, never shorter).
    let mib = 4;
    for (what, from, to) in [("egress", &out_limited, &free), ("ingress", &free, &in_limited)] {
        let start = Instant::now();
        let got = tcp_transfer(&from.ns, &to.ns, &to.ip.to_string(), 7300, mib, 0xb0);
        let took = start.elapsed().as_secs_f64();
        assert_eq!(got, mib << 20, "{what}: every byte arrives");
        assert!(took > 1.0, "{what}: {mib} MiB at 16 Mbit/s took only {took:.2} s");
    }
    let drops = |id| drops(&node.port_stats(id), "rate_limited");
    assert!(drops(out_limited.port.id) > 0, "egress drops are counted on the pod's port");
    assert!(drops(in_limited.port.id) > 0, "ingress drops are counted on the pod's port");
    assert_eq!(drops(free.port.id), 0);

    // The limit survives a restart (state file).
    let mut node = node;
    node.restart(&[]);
    let after = node.ports().into_iter().find(|p| p.id == in_limited.port.id).expect("restored");
    assert_eq!(after.bandwidth.map(|b| b.ingress_rate), Some(rate));
}
