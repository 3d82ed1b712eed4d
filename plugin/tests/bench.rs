//! ADD/DEL latency of tapway against the reference `bridge` plugin, both with host-local, in
//! the same run and invoked the same way (from a thread inside the node namespace, so both
//! plugins see the node as their host). Ignored by default; run it with
//!
//! ```text
//! cargo build --workspace --release
//! cargo test -p tapway-cni --release --test bench -- --ignored --nocapture
//! ```
//!
//! `TAPWAY_BENCH_PODS` sets the number of pods (default 100). Prints a Markdown table.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

struct Sample {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

/// ADD then DEL every pod, one at a time, timing each invocation as the runtime sees it.
fn run(bin: &std::path::Path, conf: &Value, pods: &[Netns], tag: &str) -> Sample {
    let mut s = Sample { add: Vec::new(), del: Vec::new() };
    let mut results = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let cid = format!("bench-{tag}-{i}");
        let mut c = Call::new("ADD", &cid, &pod.path(), "eth0");
        c.bin = bin.to_path_buf();
        let t = Instant::now();
        let out = c.run(conf);
        s.add.push(t.elapsed());
        results.push((cid, out.ok()));
    }
    for (pod, (cid, res)) in pods.iter().zip(&results) {
        let mut c = Call::new("DEL", cid, &pod.path(), "eth0");
        c.bin = bin.to_path_buf();
        let mut conf = conf.clone();
        conf["prevResult"] = res.clone();
        let t = Instant::now();
        c.run(&conf).ok();
        s.del.push(t.elapsed());
    }
    s.add.sort();
    s.del.sort();
    s
}

/// A stand-in for tapwayd that answers at once without touching the kernel, so the plugin's
/// own cost (exec, IPAM, JSON) can be told apart from the daemon's.
fn stub_daemon(path: &std::path::Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let result = match req["op"].as_str() {
                Some("attach") => {
                    json!({"id": 1, "kind": "pod", "netns": req["netns"], "ifname": req["ifname"],
                    "mac": "02:00:00:00:00:01", "mtu": 1500})
                }
                Some("detach") => json!({"detached": true}),
                Some("ports") => json!([]),
                _ => json!({}),
            };
            let mut w = stream;
            let _ = writeln!(w, "{}", json!({"v": 1, "ok": true, "result": result}));
        }
    });
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn add_del_latency_vs_bridge() {
    let Some(r) = ready() else { return };
    let n: usize = std::env::var("TAPWAY_BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let node = Node::start(&r);
    let pods: Vec<Netns> = (0..n).map(|_| Netns::new("bench")).collect();
    let tapway_conf = {
        let mut c = node.conf("1.0.0", "bench-tapway");
        c.as_object_mut().unwrap().remove("logFile");
        c["logLevel"] = json!("warn");
        c
    };
    let bridge_conf = json!({
        "cniVersion": "1.0.0",
        "name": "bench-bridge",
        "type": "bridge",
        "bridge": "twbench0",
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "dataDir": node.dir.join("ipam"),
            "ranges": [[{"subnet": "10.89.0.0/16"}]]
        }
    });
    let bridge_bin = std::path::Path::new(REF_PLUGINS).join("bridge");
    let stub_sock = node.dir.join("run/stub.sock");
    stub_daemon(&stub_sock);
    let mut stub_conf = tapway_conf.clone();
    stub_conf["socket"] = json!(stub_sock);
    stub_conf["name"] = json!("bench-stub");
    let (tapway, bridge, stub) = node.ns.run(|| {
        // Warm the page cache and host-local's files for both, then measure.
        let warm: Vec<Netns> = (0..3).map(|_| Netns::new("warm")).collect();
        run(&plugin_bin(), &tapway_conf, &warm, "warm-t");
        run(&bridge_bin, &bridge_conf, &warm, "warm-b");
        (
            run(&plugin_bin(), &tapway_conf, &pods, "t"),
            run(&bridge_bin, &bridge_conf, &pods, "b"),
            run(&plugin_bin(), &stub_conf, &pods, "s"),
        )
    });
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("\nADD/DEL latency over {n} pods, sequential, {profile} build of tapway (ms):\n");
    println!("| plugin | ADD p50 | ADD p99 | DEL p50 | DEL p99 |");
    println!("|---|---|---|---|---|");
    for (name, s) in [("tapway", &tapway), ("bridge", &bridge), ("tapway, stub daemon", &stub)] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(percentile(&s.add, 0.5)),
            ms(percentile(&s.add, 0.99)),
            ms(percentile(&s.del, 0.5)),
            ms(percentile(&s.del, 0.99))
        );
    }
    let ratio = percentile(&tapway.add, 0.5).as_secs_f64() / percentile(&bridge.add, 0.5).as_secs_f64();
    println!("\ntapway ADD p50 / bridge ADD p50 = {ratio:.2} (goal ≤ 0.5)");
    println!("(\"stub daemon\": the plugin and host-local alone, tapwayd replaced by an instant answer)");
    assert!(node.pod_ports().is_empty());
}
