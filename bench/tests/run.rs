//! `tapway-bench run` end to end with a tiny duration: builds the veth, tapway (tapwayd + the
//! tapway CNI plugin + host-local), floor (tapwayd's TAPs, one copying thread) and bridge
//! topologies, measures, writes JSON/Markdown/SVG
//! with every field, and leaves nothing behind (namespaces, work directory, daemons). A second
//! run does the same for `pod-vip` (a Service VIP: `tapwayctl sync` against kube-proxy-shaped
//! nftables) and `cross-node` (two nodes: AF_XDP uplinks against bridges joined by their
//! uplink veths). Root only; needs the workspace built (`cargo build --workspace`: tapwayd,
//! tapwayctl and tapway next to tapway-bench), Debian's CNI plugins in /usr/lib/cni, and `nft`.
//! Figures are checked for presence and sanity, never for speed.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// What a `tapway-bench run` left: its exit status, the JSON, Markdown and SVG it wrote, and
/// anything of its own still there afterwards (namespaces `twr<pid>…`, its work directory,
/// processes started from it).
struct Outcome {
    ok: bool,
    status: String,
    json: Option<String>,
    md: Option<String>,
    svg: Option<String>,
    leftovers: Vec<String>,
}

/// Runs `tapway-bench run ARGS… --repeat 1 --duration 0.3 --sizes 64 --idle 0.3` with every
/// output.
fn run_bench(args: &[&str]) -> Outcome {
    let bin = Path::new(env!("CARGO_BIN_EXE_tapway-bench"));
    let dir = bin.parent().unwrap();
    for b in ["tapwayd", "tapwayctl", "tapway"] {
        assert!(
            dir.join(b).is_file(),
            "{} missing: run `cargo build --workspace` first",
            dir.join(b).display()
        );
    }
    assert!(
        Path::new("/usr/lib/cni/bridge").is_file(),
        "needs containernetworking-plugins (scripts/deps.sh)"
    );
    let out_dir = std::env::temp_dir().join(unique());
    std::fs::create_dir_all(&out_dir).unwrap();
    let (json, md, svg) = (out_dir.join("r.json"), out_dir.join("r.md"), out_dir.join("r.svg"));
    let child = Command::new(bin)
        .arg("run")
        .args(args)
        .args(["--repeat", "1", "--duration", "0.3", "--sizes", "64", "--idle", "0.3", "--json"])
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .arg("--svg")
        .arg(&svg)
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let mut leftovers = netns_with_prefix(&format!("twr{pid}"));
    let work = std::env::temp_dir().join(format!("tapway-bench-run-{pid}"));
    if work.exists() {
        leftovers.push(work.display().to_string());
    }
    // Daemons and servers it started (tapwayd's command line names the work directory).
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&format!("tapway-bench-run-{pid}")) || cmdline.contains(&format!("twr{pid}")) {
            leftovers.push(format!("process {}: {cmdline}", p.file_name().to_string_lossy()));
        }
    }
    let r = Outcome {
        ok: out.status.success(),
        status: out.status.to_string(),
        json: std::fs::read_to_string(&json).ok(),
        md: std::fs::read_to_string(&md).ok(),
        svg: std::fs::read_to_string(&svg).ok(),
        leftovers,
    };
    std::fs::remove_dir_all(&out_dir).unwrap();
    r
}

#[test]
fn pod_pod_run_writes_a_complete_report_and_cleans_up() {
    if skip() {
        return;
    }
    let o = run_bench(&["pod-pod", "--baseline", "bridge"]);
    assert!(o.ok, "tapway-bench run failed: {}", o.status);
    assert!(o.leftovers.is_empty(), "left behind: {:?}", o.leftovers);
    let r: Value = serde_json::from_str(&o.json.unwrap()).unwrap();

    assert_eq!(r["schema"], "tapway-bench/report/v2");
    for k in [
        "generated_utc",
        "command",
        "machine",
        "versions",
        "params",
        "topologies",
        "scenarios",
        "rfc2544",
        "notes",
    ] {
        assert!(r.get(k).is_some(), "report lacks {k}");
    }
    assert!(r["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert!(!r["machine"]["kernel"].as_str().unwrap().is_empty());
    assert_eq!(r["versions"]["tapway_bench"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["params"]["repeat"], 1);
    assert_eq!(r["params"]["baseline"], "bridge");
    let kinds: Vec<&str> =
        r["topologies"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["veth", "tapway", "floor", "bridge"]);
    assert!(r["topologies"].as_array().unwrap().iter().all(|t| t["scenario"] == "pod-pod"));
    assert!(
        r["topologies"][1]["attach"].as_str().unwrap().contains("tapway"),
        "pods attached through the plugin"
    );

    let scen = r["scenarios"].as_array().unwrap();
    assert_eq!(scen.len(), 1);
    assert_eq!(scen[0]["name"], "pod-pod");
    assert_eq!(scen[0]["status"], "ok");
    let metrics = scen[0]["metrics"].as_array().unwrap();
    let find = |m: &str, t: &str| metrics.iter().find(|x| x["metric"] == m && x["topology"] == t);
    for t in ["veth", "tapway", "floor", "bridge"] {
        let rx = find("rx_pps", t).unwrap_or_else(|| panic!("no rx_pps for {t}"));
        assert!(rx["median"].as_f64().unwrap() > 0.0, "{t} forwarded nothing: {rx}");
        assert_eq!(rx["samples"].as_array().unwrap().len(), 1);
        for m in ["tx_pps", "rx_mbps", "loss_pct", "sink_drop_pct"] {
            assert!(find(m, t).is_some(), "no {m} for {t}");
        }
    }
    for t in ["tapway", "floor"] {
        assert!(find("idle_cpu_pct", t).is_some(), "no idle CPU for {t}");
        assert!(find("tapwayd_cpu_pct", t).is_some(), "no datapath CPU for {t}");
    }
    for t in ["tapway", "floor", "bridge"] {
        for m in ["rtt_p50_us", "rtt_p99_us", "rtt_p999_us", "rtt_rate"] {
            let x: Vec<_> = metrics.iter().filter(|x| x["metric"] == m && x["topology"] == t).collect();
            let rates: Vec<&str> = x.iter().map(|x| x["variant"].as_str().unwrap()).collect();
            assert_eq!(rates, ["1k", "10k", "100k"], "{m} for {t}");
            assert!(x.iter().all(|x| x["median"].as_f64().unwrap() > 0.0), "{m} for {t}");
        }
        if r["versions"]["iperf3"].is_string() {
            let tcp: Vec<_> =
                metrics.iter().filter(|x| x["metric"] == "tcp_gbps" && x["topology"] == t).collect();
            assert_eq!(tcp.len(), 2, "1 and 4 streams for {t}");
        }
    }
    let mdtext = o.md.unwrap();
    assert!(
        mdtext.contains(
            "| figure (median (min–max)) | generator only (veth) | tapway | floor | bridge | tapway/floor | tapway/bridge | floor/bridge |"
        ),
        "{mdtext}"
    );
    assert!(o.svg.unwrap().starts_with("<svg"));
}

#[test]
fn vip_and_cross_node_runs_measure_both_topologies_and_clean_up() {
    if skip() {
        return;
    }
    assert!(
        Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success()),
        "the bridge baseline of pod-vip needs nftables (`apt-get install nftables`)"
    );
    let o = run_bench(&["pod-vip", "cross-node", "--baseline", "bridge"]);
    assert!(o.ok, "tapway-bench run failed: {}", o.status);
    assert!(o.leftovers.is_empty(), "left behind: {:?}", o.leftovers);
    let r: Value = serde_json::from_str(&o.json.unwrap()).unwrap();
    assert_eq!(r["schema"], "tapway-bench/report/v2");

    // Each scenario built its own tapway and bridge topologies.
    let topos: Vec<(&str, &str)> = r["topologies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["scenario"].as_str().unwrap(), t["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        topos,
        [("pod-vip", "tapway"), ("pod-vip", "bridge"), ("cross-node", "tapway"), ("cross-node", "bridge")]
    );
    let attach = |i: usize| r["topologies"][i]["attach"].as_str().unwrap().to_string();
    assert!(attach(0).contains("tapwayctl sync"), "{}", attach(0));
    assert!(attach(1).contains("nftables"), "{}", attach(1));
    assert!(attach(2).contains("--uplink up0"), "{}", attach(2));
    // Cross-node pods are on different nodes' ranges of one flat network.
    assert_ne!(
        r["topologies"][2]["pod_a"].as_str().unwrap().split('.').nth(2),
        r["topologies"][2]["pod_b"].as_str().unwrap().split('.').nth(2)
    );

    let scen = r["scenarios"].as_array().unwrap();
    assert_eq!(scen.len(), 2);
    for (s, name) in scen.iter().zip(["pod-vip", "cross-node"]) {
        assert_eq!(s["name"], name);
        assert_eq!(s["status"], "ok", "{name}: {}", s["reason"]);
        let metrics = s["metrics"].as_array().unwrap();
        let find = |m: &str, t: &str| metrics.iter().find(|x| x["metric"] == m && x["topology"] == t);
        assert!(metrics.iter().all(|m| m["topology"] != "veth"), "{name}: no generator-only rows");
        for t in ["tapway", "bridge"] {
            let rx = find("rx_pps", t).unwrap_or_else(|| panic!("{name}: no rx_pps for {t}"));
            assert!(rx["median"].as_f64().unwrap() > 0.0, "{name}: {t} delivered nothing: {rx}");
            assert_eq!(rx["variant"], "64");
            assert_eq!(rx["samples"].as_array().unwrap().len(), 1);
            for m in
                ["tx_pps", "rx_mbps", "loss_pct", "sink_drop_pct", "rtt_p50_us", "rtt_p99_us", "rtt_p999_us"]
            {
                let x = find(m, t).unwrap_or_else(|| panic!("{name}: no {m} for {t}"));
                assert!(x["median"].as_f64().unwrap().is_finite(), "{name} {m} {t}: {x}");
            }
            assert!(find("rtt_p50_us", t).unwrap()["median"].as_f64().unwrap() > 0.0);
            if r["versions"]["iperf3"].is_string() {
                let tcp: Vec<_> =
                    metrics.iter().filter(|x| x["metric"] == "tcp_gbps" && x["topology"] == t).collect();
                assert_eq!(tcp.len(), 1, "{name}: one single-stream iperf3 figure for {t}");
                assert_eq!(tcp[0]["variant"], "1");
                assert!(tcp[0]["median"].as_f64().unwrap() > 0.0, "{name}: {t} TCP");
            }
        }
        assert!(find("tapwayd_cpu_pct", "tapway").is_some(), "{name}: tapwayd CPU");
    }
    let md = o.md.unwrap();
    for h in
        ["#### pod-vip", "#### cross-node", "| figure (median (min–max)) | tapway | bridge | tapway/bridge |"]
    {
        assert!(md.contains(h), "{h} not in {md}");
    }
    assert!(!md.contains("Unavailable"), "{md}");
    assert!(o.svg.unwrap().starts_with("<svg"));
}
