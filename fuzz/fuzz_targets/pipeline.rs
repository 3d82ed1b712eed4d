//! The whole datapath on untrusted frames: random frames with random vnet headers from random
//! ports (the host, anti-spoofed pods, the trusted uplink) through parse, anti-spoof, policing,
//! learn, service (NAT, conntrack, affinity, rejects, neighbour answers) and forward, then
//! delivered, and what leaves the uplink cut into segments (`wire/segment.rs`). Nothing may
//! panic, and every pool buffer handed out must come back after each input.
//!
//! The input is decoded two ways, picked by its first byte: structure-aware (`arbitrary`,
//! [`tapway_fuzz::frames::FrameSpec`]: valid skeletons with fuzzed fields, mostly the node's
//! own addresses), or raw records `[port][clock step][len u16 le][vnet header + frame]`, which
//! is how the seed corpus carries frames the unit tests build.
#![no_main]
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Once;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tapway_fuzz::frames::FrameSpec;
use tapway_fuzz::node::{self, Node, BATCH, FRAMES, INPUTS};
use tapway_switch::pool::LocalPool;

/// One burst: frames received together on one port.
#[derive(Arbitrary, Debug)]
struct Burst {
    port: u8,
    step: u8,
    frames: Vec<FrameSpec>,
}

/// A structured input: the uplink's MTU and up to 8 bursts.
#[derive(Arbitrary, Debug)]
struct Input {
    uplink_mtu: u16,
    bursts: Vec<Burst>,
}

/// Bursts to run: (ingress port, clock step, frames).
type Bursts = Vec<(u8, u8, Vec<Vec<u8>>)>;

/// Raw records: consecutive frames of one port with clock step 0 share a burst.
fn raw_bursts(mut data: &[u8]) -> (u16, Bursts) {
    let mut out: Bursts = Vec::new();
    while let [port, step, lo, hi, rest @ ..] = data {
        let n = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
        let frame = rest[..n].to_vec();
        data = &rest[n..];
        match out.last_mut() {
            Some((p, _, frames)) if p == port && *step == 0 && frames.len() < BATCH => frames.push(frame),
            _ => out.push((*port, *step, vec![frame])),
        }
    }
    (1500, out)
}

extern "C" fn at_exit() {
    node::report();
}

fuzz_target!(|data: &[u8]| {
    static REPORT: Once = Once::new();
    // SAFETY: registers a plain function with no arguments to run at exit.
    REPORT.call_once(|| unsafe {
        libc::atexit(at_exit);
    });
    let Some((&mode, rest)) = data.split_first() else { return };
    let (mtu, bursts) = if mode % 4 == 0 {
        raw_bursts(rest)
    } else {
        let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(rest)) else { return };
        let mut buf = Vec::new();
        let bursts = input
            .bursts
            .iter()
            .take(8)
            .map(|b| {
                let frames = b
                    .frames
                    .iter()
                    .take(BATCH)
                    .map(|f| {
                        f.build(&mut buf);
                        buf.clone()
                    })
                    .collect();
                (b.port, b.step, frames)
            })
            .collect();
        (input.uplink_mtu, bursts)
    };
    let pool = node::pool();
    let mut local = LocalPool::new(pool.clone(), 8);
    let mut node = Node::new();
    node.uplink.mtu.store(usize::from(mtu).clamp(576, 9216), Relaxed);
    for (port, step, frames) in &bursts {
        node.advance(*step);
        node.burst(u16::from(*port), frames, &mut local);
    }
    drop(local);
    assert_eq!(pool.outstanding(), 0, "frame pool buffers not returned");
    INPUTS.fetch_add(1, Relaxed);
    static MILLIONS: AtomicU64 = AtomicU64::new(0);
    let m = FRAMES.load(Relaxed) / 1_000_000;
    if m > MILLIONS.load(Relaxed) {
        MILLIONS.store(m, Relaxed);
        node::report();
    }
});
