//! `tapway-bench run` end to end with a tiny duration: builds the veth, tapway (tapwayd + the
//! tapway CNI plugin + host-local) and bridge topologies, measures, writes JSON/Markdown/SVG
//! with every field, and leaves no namespace behind. Root only; needs the workspace built
//! (`cargo build --workspace`: tapwayd, tapwayctl and tapway next to tapway-bench) and Debian's
//! CNI plugins in /usr/lib/cni. Figures are checked for presence and sanity, never for speed.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn pod_pod_run_writes_a_complete_report_and_cleans_up() {
    if skip() {
        return;
    }
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
        .args([
            "run",
            "pod-pod",
            "pod-vip",
            "cross-node",
            "--baseline",
            "bridge",
            "--repeat",
            "1",
            "--duration",
            "0.3",
        ])
        .args(["--sizes", "64", "--json"])
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .arg("--svg")
        .arg(&svg)
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let leftovers = netns_with_prefix(&format!("twr{pid}"));
    let report = std::fs::read_to_string(&json);
    let (mdtext, svgtext) = (std::fs::read_to_string(&md), std::fs::read_to_string(&svg));
    std::fs::remove_dir_all(&out_dir).unwrap();
    assert!(out.status.success(), "tapway-bench run failed: {}", out.status);
    assert!(leftovers.is_empty(), "namespaces left behind: {leftovers:?}");
    let r: Value = serde_json::from_str(&report.unwrap()).unwrap();

    assert_eq!(r["schema"], "tapway-bench/report/v1");
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
    assert_eq!(kinds, ["veth", "tapway", "bridge"]);
    assert!(
        r["topologies"][1]["attach"].as_str().unwrap().contains("tapway"),
        "pods attached through the plugin"
    );

    let scen = r["scenarios"].as_array().unwrap();
    assert_eq!(scen.len(), 3);
    assert_eq!(scen[0]["name"], "pod-pod");
    assert_eq!(scen[0]["status"], "ok");
    let metrics = scen[0]["metrics"].as_array().unwrap();
    let find = |m: &str, t: &str| metrics.iter().find(|x| x["metric"] == m && x["topology"] == t);
    for t in ["veth", "tapway", "bridge"] {
        let rx = find("rx_pps", t).unwrap_or_else(|| panic!("no rx_pps for {t}"));
        assert!(rx["median"].as_f64().unwrap() > 0.0, "{t} forwarded nothing: {rx}");
        assert_eq!(rx["samples"].as_array().unwrap().len(), 1);
        for m in ["tx_pps", "rx_mbps", "loss_pct", "sink_drop_pct"] {
            assert!(find(m, t).is_some(), "no {m} for {t}");
        }
    }
    for t in ["tapway", "bridge"] {
        for m in ["rtt_p50_us", "rtt_p99_us", "rtt_p999_us"] {
            let x = find(m, t).unwrap_or_else(|| panic!("no {m} for {t}"));
            assert!(x["median"].as_f64().unwrap() > 0.0);
        }
        if r["versions"]["iperf3"].is_string() {
            let tcp: Vec<_> =
                metrics.iter().filter(|x| x["metric"] == "tcp_gbps" && x["topology"] == t).collect();
            assert_eq!(tcp.len(), 2, "1 and 4 streams for {t}");
        }
    }
    // Features not built on this branch are reported, not faked.
    for s in &scen[1..] {
        assert!(s["status"] == "unavailable" || s["status"] == "ok", "{s}");
        if s["status"] == "unavailable" {
            assert!(s["reason"].as_str().is_some_and(|x| !x.is_empty()));
            assert!(s["metrics"].as_array().unwrap().is_empty());
        }
    }
    let mdtext = mdtext.unwrap();
    assert!(
        mdtext.contains(
            "| figure (median (min–max)) | generator only (veth) | tapway | bridge | tapway/bridge |"
        ),
        "{mdtext}"
    );
    assert!(svgtext.unwrap().starts_with("<svg"));
}
