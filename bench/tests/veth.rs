//! pktgen → sink across a plain veth pair (no tapway): the generator and the sink work, at a
//! low rate nothing is lost, and the rate measured is above zero. Root only (see common).
//! Timings never decide the outcome: only counts do.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tapway_bench::frame::SizeMix;
use tapway_bench::pktgen::PktgenConfig;
use tapway_bench::trial::{self, TrialSpec};

#[test]
fn low_rate_trial_loses_nothing_and_measures_a_rate() {
    if skip() {
        return;
    }
    let pair = VethPair::new();
    let mut p = PktgenConfig::new(Ipv4Addr::new(10, 213, 9, 2));
    p.rate_pps = Some(2000.0);
    p.duration = Some(Duration::from_secs(1));
    p.flows = 4;
    p.sizes = SizeMix::Imix;
    let spec = TrialSpec {
        tx_netns: Some(pair.a.clone()),
        rx_netns: Some(pair.b.clone()),
        rx_ifname: "eth0".into(),
        pktgen: p,
        grace: Duration::from_millis(500),
    };
    let r = trial::run(&spec, &Arc::new(AtomicBool::new(false))).unwrap();
    assert!(r.pktgen.sent > 0, "{r:?}");
    assert_eq!(r.pktgen.errors, 0, "{r:?}");
    assert_eq!(r.lost, 0, "a veth pair at 2000 frames/s loses nothing: {r:?}");
    assert_eq!(r.sink.frames, r.pktgen.sent, "{r:?}");
    assert_eq!(r.sink.seq.lost, 0);
    assert_eq!(r.sink.seq.flows, 4, "every flow arrived");
    assert_eq!(r.sink.per_flow.iter().sum::<u64>(), r.pktgen.sent);
    assert!(r.pktgen.pps() > 0.0 && r.sink.pps() > 0.0, "{r:?}");
    let lat = r.sink.latency.expect("one-way latency measured");
    assert_eq!(lat.samples, r.sink.frames);
    assert!(lat.p50_us <= lat.p99_us && lat.p99_us <= lat.max_us);
}

#[test]
fn cli_pktgen_and_sink_agree() {
    if skip() {
        return;
    }
    let pair = VethPair::new();
    let bin = env!("CARGO_BIN_EXE_tapway-bench");
    let sink = Command::new(bin)
        .args(["sink", "--netns", &pair.b, "--count", "500", "--duration", "30", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The sink's ring must be open before the first frame: it is, once it binds its UDP port.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &pair.b, "ss", "-lunH", "sport = :9009"])
            .output()
            .unwrap();
        if !out.stdout.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let gen = Command::new(bin)
        .args([
            "pktgen",
            "--netns",
            &pair.a,
            "--dst",
            "10.213.9.2",
            "--count",
            "500",
            "--rate",
            "1000",
            "--size",
            "128",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(gen.status.success(), "pktgen: {}", String::from_utf8_lossy(&gen.stderr));
    let g: Value = serde_json::from_slice(&gen.stdout).unwrap();
    assert_eq!(g["sent"], 500);
    assert_eq!(g["bytes"], 500 * 128);
    let out = sink.wait_with_output().unwrap();
    assert!(out.status.success());
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["frames"], 500, "{s}");
    assert_eq!(s["seq"]["lost"], 0, "{s}");
    assert_eq!(s["seq"]["reordered"], 0, "{s}");
    assert_eq!(s["bytes"], 500 * 128, "{s}");
}
