//! The multi-worker datapath: two workers pinned to cores 0 and 1 in busy-poll mode, with
//! pods on different workers so every frame between them crosses a worker ring. Needs root;
//! skips (passes) without it. Kept in its own test binary so its two spinning workers do not
//! share the CPUs with the other tests. Pod range 10.231.41.0/24.

mod common;

use common::*;

#[test]
fn two_pinned_busy_workers_forward_across_rings() {
    if skip() {
        return;
    }
    let node = Node::start_with("wk", 41, &["--cores", "0,1", "--poll-mode", "busy"]);
    let st = node.status();
    assert_eq!(st.poll_mode, "busy");
    let workers: Vec<(usize, Option<usize>)> = st.workers.iter().map(|w| (w.id, w.core)).collect();
    assert_eq!(workers, vec![(0, Some(0)), (1, Some(1))], "{st:?}");
    assert_eq!(st.workers[0].ports, vec![0], "the host port is on worker 0");

    // Ports go to the least-loaded worker: the first pod to worker 1, the second to worker 0.
    let a = node.pod("wa");
    let b = node.pod("wb");
    assert_eq!((a.port.worker, b.port.worker), (1, 0), "{:?} {:?}", a.port, b.port);
    let st = node.status();
    assert!(st.workers[1].ports.contains(&a.port.id) && st.workers[0].ports.contains(&b.port.id), "{st:?}");

    let handoffs = |n: &Node| n.stats().switch.get("ring_handoffs").copied().unwrap_or(0);
    let before = handoffs(&node);
    a.ns.ping(&b.ip.to_string());
    b.ns.ping(&a.ip.to_string());
    a.ns.ping(&node.gateway());
    let mid = handoffs(&node);
    assert!(mid > before, "no frame crossed a ring: {before} → {mid}");

    // Super-frames cross the ring intact too.
    assert_eq!(tcp_transfer(&a.ns, &b.ns, &b.ip.to_string(), 5101, 32, 0x2c0e), 32 << 20);
    assert_eq!(tcp_transfer(&b.ns, &a.ns, &a.ip.to_string(), 5102, 16, 0x2c0f), 16 << 20);
    let stats = node.stats();
    assert!(port_of(&stats, a.port.id).rx_gso_packets > 0, "{stats:?}");
    assert!(stats.switch.get("ring_handoffs").copied().unwrap_or(0) > mid, "{stats:?}");
    for p in &stats.ports {
        assert!(p.drops.is_empty(), "port {} dropped frames: {:?}", p.id, p.drops);
    }
}
