//! The report of a `run`: every figure with its samples, the machine, versions and exact
//! parameters. Rendered as a plain table (stdout), JSON (schema [`SCHEMA`], pinned by a test),
//! and Markdown; [`crate::svg`] draws it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::latency::LatencySummary;
use crate::machine::Machine;

/// Identifies the JSON layout; bumped on any incompatible change. v2 added the `floor`
/// topologies, poll-mode-named topologies (`tapway-busy`), RTT per request rate and
/// `params.{pod_pod_topologies, rtt_rates, idle_s, isolate}`.
pub const SCHEMA: &str = "tapway-bench/report/v2";

/// Older layouts `report` still reads (the fields added since are absent there).
pub const READABLE: [&str; 2] = [SCHEMA, "tapway-bench/report/v1"];

/// Column order of the topologies a scenario can have (see [`topology_order`]).
const ORDER: [&str; 8] =
    ["veth", "tapway", "tapway-busy", "tapway-adaptive", "floor", "floor-busy", "floor-adaptive", "bridge"];

/// Where `name` goes among the columns: the known names in [`ORDER`], then any other.
pub fn topology_order(name: &str) -> usize {
    ORDER.iter().position(|t| *t == name).unwrap_or(ORDER.len())
}

/// The ratio columns a table gets when it has both topologies: (numerator, denominator,
/// header). tapway against the floor (the design's limit) and the bridge (the reference
/// CNI), per poll mode when both modes ran, and tapway's adaptive mode against its busy one.
const RATIOS: [(&str, &str, &str); 9] = [
    ("tapway", "floor", "tapway/floor"),
    ("tapway-busy", "floor-busy", "tapway/floor busy"),
    ("tapway-adaptive", "floor-adaptive", "tapway/floor adaptive"),
    ("tapway", "bridge", "tapway/bridge"),
    ("tapway-busy", "bridge", "tapway busy/bridge"),
    ("tapway-adaptive", "bridge", "tapway adaptive/bridge"),
    ("tapway-adaptive", "tapway-busy", "tapway adaptive/busy"),
    ("floor-adaptive", "floor-busy", "floor adaptive/busy"),
    ("floor", "bridge", "floor/bridge"),
];

/// Figures whose ratio means nothing (loss, what the generator offered).
fn no_ratio(metric: &str) -> bool {
    matches!(metric, "loss_pct" | "sink_drop_pct" | "tx_pps")
}

/// How the datapath was kept apart from the load (`run --isolate`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Isolation {
    /// CPUs of tapwayd's workers (`--cores`) and of the floor's thread.
    pub datapath_cpus: Vec<usize>,
    /// CPUs everything else was confined to: generators, sinks, the ping-pong, iperf3,
    /// tapwayd's control thread, tapway-bench itself (its affinity, inherited).
    pub other_cpus: Vec<usize>,
}

impl Isolation {
    /// One line for reports.
    pub fn line(&self) -> String {
        format!(
            "isolated: datapath (tapwayd workers, floor thread) on CPU {}; generators, sinks, ping-pong, iperf3, tapwayd's control thread and tapway-bench on CPU {}",
            crate::cpus::format_list(&self.datapath_cpus),
            crate::cpus::format_list(&self.other_cpus)
        )
    }
}

/// Median, min and max of samples (median of an even count: mean of the middle two).
pub fn stats(samples: &[f64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (med, v[0], v[n - 1])
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// When the run started (UTC).
    pub generated_utc: String,
    /// The command line, as given.
    pub command: Vec<String>,
    /// The machine.
    pub machine: Machine,
    /// Versions of the tools involved.
    pub versions: Versions,
    /// Parameters after defaults were applied.
    pub params: Params,
    /// The topologies built.
    pub topologies: Vec<TopologyInfo>,
    /// One entry per scenario asked for, available or not.
    pub scenarios: Vec<ScenarioReport>,
    /// RFC 2544 NDR/PDR rows, when the `rfc2544` scenario ran.
    pub rfc2544: Vec<Rfc2544Row>,
    /// Warnings worth reading next to the figures (busy machine, generator limits).
    pub notes: Vec<String>,
}

/// Versions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Versions {
    /// This tool.
    pub tapway_bench: String,
    /// `tapwayd --version`.
    pub tapwayd: Option<String>,
    /// `iperf3 --version`, first line.
    pub iperf3: Option<String>,
    /// Debian's CNI plugins package version.
    pub cni_plugins: Option<String>,
}

/// The exact parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// Scenarios asked for.
    pub scenarios: Vec<String>,
    /// `bridge` or none.
    pub baseline: Option<String>,
    /// Repeats per figure.
    pub repeat: u32,
    /// Seconds per measurement.
    pub duration_s: f64,
    /// Frame sizes of the frame-rate figures.
    pub sizes: Vec<String>,
    /// Flows per pktgen trial.
    pub flows: u16,
    /// pktgen sender threads.
    pub pktgen_threads: usize,
    /// tapwayd `--cores` ("" = one unpinned worker).
    pub tapwayd_cores: String,
    /// tapwayd `--poll-mode`; two modes (`adaptive,busy`): the pod-pod figures of both, side
    /// by side.
    pub poll_mode: String,
    /// pod-pod's own topologies (`veth`, `tapway`, `floor`; `bridge` comes with `baseline`).
    #[serde(default)]
    pub pod_pod_topologies: Vec<String>,
    /// UDP ping-pong request rates, requests/s.
    #[serde(default)]
    pub rtt_rates: Vec<f64>,
    /// Seconds of the idle-CPU measurement per repeat (0: none).
    #[serde(default)]
    pub idle_s: f64,
    /// `--isolate`: where the datapath and everything else ran.
    #[serde(default)]
    pub isolate: Option<Isolation>,
    /// Seconds per RFC 2544 trial.
    pub rfc2544_trial_s: f64,
    /// RFC 2544 search resolution (share of the flat-out rate).
    pub rfc2544_resolution: f64,
    /// Loss (%) allowed at the PDR.
    pub rfc2544_pdr_loss_pct: f64,
    /// Directory of tapwayd, tapwayctl and tapway.
    pub bin_dir: String,
}

/// A topology as built.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopologyInfo {
    /// `veth`, `tapway` or `bridge`.
    pub kind: String,
    /// The scenario it was built for: `pod-pod` (whose topologies `rfc2544` also uses),
    /// `pod-vip` or `cross-node`. Empty in reports written before the field existed.
    #[serde(default)]
    pub scenario: String,
    /// How the pods were attached.
    pub attach: String,
    /// Sender pod address.
    pub pod_a: String,
    /// Receiver pod address.
    pub pod_b: String,
}

/// Whether a scenario ran.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ran; its metrics are in the report.
    Ok,
    /// The feature it needs is not built (see `reason`); nothing was measured.
    Unavailable,
    /// It failed (see `reason`).
    Failed,
}

/// One scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioReport {
    /// `pod-pod`, `pod-vip`, `cross-node`, `rfc2544`.
    pub name: String,
    /// Ran or why not.
    pub status: Status,
    /// Why unavailable or failed.
    pub reason: Option<String>,
    /// Every figure.
    pub metrics: Vec<Metric>,
}

/// One figure of one topology, over the repeats.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metric {
    /// Stable identifier: `rx_pps`, `tx_pps`, `rx_mbps`, `loss_pct`, `tcp_gbps`, `rtt_p50_us`…
    pub metric: String,
    /// Frame size (`64`, `imix`) or stream count (`1`, `4`), where it applies.
    pub variant: Option<String>,
    /// `veth`, `tapway` or `bridge`.
    pub topology: String,
    /// Unit.
    pub unit: String,
    /// Every sample, in run order.
    pub samples: Vec<f64>,
    /// Median of the samples.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// RFC 2544 result of one topology and frame size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rfc2544Row {
    /// `tapway`, `bridge`, `veth`.
    pub topology: String,
    /// Nominal frame size.
    pub size: usize,
    /// No-drop rate, frames/s.
    pub ndr_pps: f64,
    /// No-drop rate, Mb/s of frames.
    pub ndr_mbps: f64,
    /// One-way latency at the NDR.
    pub ndr_latency: Option<LatencySummary>,
    /// Partial-drop rate, frames/s.
    pub pdr_pps: f64,
    /// Partial-drop rate, Mb/s.
    pub pdr_mbps: f64,
    /// Loss measured at the PDR, % (`null` when no rate passed).
    pub pdr_loss_pct: Option<f64>,
    /// One-way latency at the PDR.
    pub pdr_latency: Option<LatencySummary>,
    /// The generator's flat-out rate passed: the path is at least this fast.
    pub generator_limited: bool,
    /// Trials run for NDR and PDR together.
    pub trials: usize,
    /// Every trial in the order run: the flat-out one, then the PDR search, then the NDR search.
    pub trial_log: Vec<TrialPoint>,
}

/// One RFC 2544 trial.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct TrialPoint {
    /// Offered rate, frames/s (`null` for the flat-out trial).
    pub offered_pps: Option<f64>,
    /// Frames/s the generator achieved.
    pub tx_pps: f64,
    /// Frames/s received.
    pub rx_pps: f64,
    /// Loss, % of sent.
    pub loss_pct: f64,
}

/// Collects samples keyed by (metric, variant, topology) in first-seen order.
#[derive(Debug, Default)]
pub struct Collector {
    order: Vec<(String, Option<String>, String, String)>,
    samples: BTreeMap<(String, Option<String>, String), Vec<f64>>,
}

impl Collector {
    /// Adds one sample.
    pub fn add(&mut self, metric: &str, variant: Option<&str>, topology: &str, unit: &str, v: f64) {
        let key = (metric.to_string(), variant.map(str::to_string), topology.to_string());
        if !self.samples.contains_key(&key) {
            self.order.push((key.0.clone(), key.1.clone(), key.2.clone(), unit.to_string()));
        }
        self.samples.entry(key).or_default().push(v);
    }

    /// The metrics with their statistics.
    pub fn finish(self) -> Vec<Metric> {
        self.order
            .into_iter()
            .map(|(metric, variant, topology, unit)| {
                let samples = self
                    .samples
                    .get(&(metric.clone(), variant.clone(), topology.clone()))
                    .cloned()
                    .unwrap_or_default();
                let (median, min, max) = stats(&samples);
                Metric { metric, variant, topology, unit, samples, median, min, max }
            })
            .collect()
    }
}

/// A human label for a metric row.
fn row_label(metric: &str, variant: Option<&str>, unit: &str) -> String {
    let v = variant.unwrap_or("");
    let rtt = |p: &str| match variant {
        Some(r) => format!("UDP RTT {p} µs (64 B), {r} req/s offered"),
        None => format!("UDP RTT {p} µs (64 B)"),
    };
    match metric {
        "rx_pps" => format!("frames received/s, {v} B"),
        "tx_pps" => format!("frames offered/s, {v} B"),
        "rx_mbps" => format!("Mb/s received, {v} B"),
        "loss_pct" => format!("loss %, {v} B (flat out)"),
        "sink_drop_pct" => format!("of which the sink's ring, %, {v} B"),
        "tcp_gbps" => format!("TCP Gbit/s, {v} stream(s)"),
        "rtt_p50_us" => rtt("p50"),
        "rtt_p99_us" => rtt("p99"),
        "rtt_p999_us" => rtt("p99.9"),
        "rtt_rate" => format!("UDP ping-pong round trips/s achieved, {v} req/s offered"),
        "tapwayd_cpu_pct" => format!("datapath CPU % of a core (tapwayd; floor: its thread), {v} B"),
        "idle_cpu_pct" => "idle CPU % of a core, no traffic (tapwayd; floor: its thread)".into(),
        m => format!("{m} {v} ({unit})"),
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 100_000.0 {
        format!("{:.3}M", v / 1e6)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `median (min–max)`, or just the value when there is one sample.
fn cell(m: &Metric) -> String {
    if m.samples.len() <= 1 {
        fmt_num(m.median)
    } else {
        format!("{} ({}–{})", fmt_num(m.median), fmt_num(m.min), fmt_num(m.max))
    }
}

/// The ratio columns of a table with `topos`.
fn ratios(topos: &[&str]) -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)> {
    let has: Vec<String> = topos.iter().map(|t| t.to_string()).collect();
    RATIOS.iter().filter(move |(n, d, _)| has.iter().any(|t| t == n) && has.iter().any(|t| t == d))
}

/// Rows of one scenario: label, then one cell per topology column, then the ratios.
fn rows(s: &ScenarioReport, topos: &[&str]) -> Vec<Vec<String>> {
    let mut keys: Vec<(String, Option<String>, String)> = Vec::new();
    for m in &s.metrics {
        let k = (m.metric.clone(), m.variant.clone(), m.unit.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(metric, variant, unit)| {
            let find = |t: &str| {
                s.metrics.iter().find(|m| m.metric == metric && m.variant == variant && m.topology == t)
            };
            let mut r = vec![row_label(&metric, variant.as_deref(), &unit)];
            for t in topos {
                r.push(find(t).map_or_else(|| "".into(), cell));
            }
            for (num, den, _) in ratios(topos) {
                r.push(match (find(num), find(den)) {
                    (Some(a), Some(b)) if b.median != 0.0 && !no_ratio(&metric) => {
                        format!("{:.2}×", a.median / b.median)
                    }
                    _ => "".into(),
                });
            }
            r
        })
        .collect()
}

/// The columns of one scenario's table: the topologies it has figures for (pod-vip and
/// cross-node have no generator-only column).
fn columns(s: &ScenarioReport) -> (Vec<&str>, Vec<String>) {
    let mut topos: Vec<&str> = Vec::new();
    for m in &s.metrics {
        if !topos.contains(&m.topology.as_str()) {
            topos.push(&m.topology);
        }
    }
    topos.sort_by_key(|t| topology_order(t));
    let mut hdr = vec!["figure (median (min–max))".to_string()];
    for t in &topos {
        hdr.push(match *t {
            "veth" => "generator only (veth)".into(),
            t => t.to_string(),
        });
    }
    hdr.extend(ratios(&topos).map(|(_, _, h)| h.to_string()));
    (topos, hdr)
}

fn rfc_rows(r: &Report) -> Vec<Vec<String>> {
    let lat =
        |l: &Option<LatencySummary>| l.map_or("-".into(), |l| format!("{:.1} / {:.1}", l.p50_us, l.p99_us));
    r.rfc2544
        .iter()
        .map(|x| {
            vec![
                x.topology.clone(),
                x.size.to_string(),
                format!("{}{}", fmt_num(x.ndr_pps), if x.generator_limited { " ≥" } else { "" }),
                fmt_num(x.ndr_mbps),
                lat(&x.ndr_latency),
                fmt_num(x.pdr_pps),
                x.pdr_loss_pct.map_or("-".into(), |l| format!("{l:.3}")),
                lat(&x.pdr_latency),
                x.trials.to_string(),
            ]
        })
        .collect()
}

const RFC_HDR: [&str; 9] = [
    "topology",
    "size B",
    "NDR frames/s",
    "NDR Mb/s",
    "NDR lat p50/p99 µs",
    "PDR frames/s",
    "PDR loss %",
    "PDR lat p50/p99 µs",
    "trials",
];

fn plain_table(out: &mut String, hdr: &[String], rows: &[Vec<String>]) {
    let n = hdr.len();
    let w: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(hdr[i].chars().count())
        })
        .collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i].saturating_sub(c.chars().count());
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s
    };
    let _ = writeln!(out, "{}", line(hdr));
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}

fn md_table(out: &mut String, hdr: &[String], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", hdr.join(" | "));
    let _ = writeln!(out, "|{}|", vec!["---"; hdr.len()].join("|"));
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
}

impl Report {
    /// The table printed on stdout.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in self.scenarios.iter().filter(|s| s.name != "rfc2544" || s.status != Status::Ok) {
            let (topos, hdr) = columns(s);
            let _ = writeln!(out, "\n== {} ==", s.name);
            match s.status {
                Status::Ok if !s.metrics.is_empty() => plain_table(&mut out, &hdr, &rows(s, &topos)),
                Status::Ok => {}
                _ => {
                    let _ = writeln!(out, "{:?}: {}", s.status, s.reason.as_deref().unwrap_or(""));
                }
            }
        }
        if !self.rfc2544.is_empty() {
            let _ = writeln!(
                out,
                "\n== RFC 2544 (NDR: zero loss; PDR: loss ≤ {} %) ==",
                self.params.rfc2544_pdr_loss_pct
            );
            let hdr: Vec<String> = RFC_HDR.iter().map(|s| s.to_string()).collect();
            plain_table(&mut out, &hdr, &rfc_rows(self));
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        if let Some(i) = &self.params.isolate {
            let _ = writeln!(out, "CPUs {}", i.line());
        }
        let _ = writeln!(out, "\nmachine: {}", self.machine.line());
        out
    }

    /// The Markdown version, ready for docs.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Measured {} on {}.", self.generated_utc, self.machine.line());
        let _ = writeln!(out, "Command: `{}`.", self.command.join(" "));
        let _ = writeln!(
            out,
            "Versions: tapway-bench {}; {}; {}; CNI plugins {}. {} run(s) per figure, {} s each, interleaved between topologies; \
             cells are median (min–max).",
            self.versions.tapway_bench,
            self.versions.tapwayd.as_deref().unwrap_or("tapwayd ?"),
            self.versions.iperf3.as_deref().unwrap_or("iperf3 not installed"),
            self.versions.cni_plugins.as_deref().unwrap_or("?"),
            self.params.repeat,
            self.params.duration_s
        );
        if let Some(i) = &self.params.isolate {
            let _ = writeln!(out, "CPUs {}.", i.line());
        }
        for t in &self.topologies {
            let for_ = if t.scenario.is_empty() { String::new() } else { format!(" ({})", t.scenario) };
            let _ = writeln!(out, "- `{}`{for_}: {} ({} → {})", t.kind, t.attach, t.pod_a, t.pod_b);
        }
        for s in self.scenarios.iter().filter(|s| s.name != "rfc2544" || s.status != Status::Ok) {
            let (topos, hdr) = columns(s);
            let _ = writeln!(out, "\n#### {}\n", s.name);
            match s.status {
                Status::Ok if !s.metrics.is_empty() => md_table(&mut out, &hdr, &rows(s, &topos)),
                Status::Ok => {}
                Status::Unavailable => {
                    let _ = writeln!(out, "Unavailable: {}", s.reason.as_deref().unwrap_or(""));
                }
                Status::Failed => {
                    let _ = writeln!(out, "Failed: {}", s.reason.as_deref().unwrap_or(""));
                }
            }
        }
        if !self.rfc2544.is_empty() {
            let _ = writeln!(
                out,
                "\n#### RFC 2544\n\nNDR: highest rate without loss; PDR: highest rate with loss ≤ {} %; {} s per trial; \
                 `≥`: the generator's flat-out rate passed, the path is at least that fast.\n",
                self.params.rfc2544_pdr_loss_pct, self.params.rfc2544_trial_s
            );
            let hdr: Vec<String> = RFC_HDR.iter().map(|s| s.to_string()).collect();
            md_table(&mut out, &hdr, &rfc_rows(self));
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out);
            for n in &self.notes {
                let _ = writeln!(out, "- Note: {n}");
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::Value;

    pub fn sample() -> Report {
        let mut c = Collector::default();
        for (t, v) in [("veth", 3e6), ("tapway", 1e6), ("bridge", 2e6)] {
            for k in 0..3 {
                c.add("rx_pps", Some("64"), t, "frames/s", v + f64::from(k));
            }
        }
        c.add("tcp_gbps", Some("1"), "tapway", "Gbit/s", 10.0);
        c.add("tcp_gbps", Some("1"), "bridge", "Gbit/s", 20.0);
        let lat = LatencySummary {
            samples: 10,
            min_us: 1.0,
            p50_us: 2.0,
            p90_us: 3.0,
            p99_us: 4.0,
            p999_us: 5.0,
            max_us: 6.0,
            mean_us: 2.5,
        };
        Report {
            schema: SCHEMA.into(),
            generated_utc: "2026-01-01T00:00:00Z".into(),
            command: vec!["tapway-bench".into(), "run".into(), "pod-pod".into()],
            machine: Machine {
                cpu_model: "cpu".into(),
                cpus: 2,
                kernel: "6.18".into(),
                load_avg_start: 0.5,
                hostname: "h".into(),
            },
            versions: Versions {
                tapway_bench: "0.1.0".into(),
                tapwayd: Some("tapwayd 0.1.0".into()),
                iperf3: None,
                cni_plugins: None,
            },
            params: Params {
                scenarios: vec!["pod-pod".into()],
                baseline: Some("bridge".into()),
                repeat: 3,
                duration_s: 1.0,
                sizes: vec!["64".into()],
                flows: 1,
                pktgen_threads: 1,
                tapwayd_cores: "".into(),
                poll_mode: "adaptive".into(),
                pod_pod_topologies: vec!["veth".into(), "tapway".into(), "floor".into()],
                rtt_rates: vec![1000.0, 10000.0],
                idle_s: 10.0,
                isolate: Some(Isolation { datapath_cpus: vec![1], other_cpus: vec![0] }),
                rfc2544_trial_s: 1.0,
                rfc2544_resolution: 0.02,
                rfc2544_pdr_loss_pct: 0.5,
                bin_dir: "target/release".into(),
            },
            topologies: vec![TopologyInfo {
                kind: "tapway".into(),
                scenario: "pod-pod".into(),
                attach: "plugin".into(),
                pod_a: "10.0.0.2".into(),
                pod_b: "10.0.0.3".into(),
            }],
            scenarios: vec![
                ScenarioReport {
                    name: "pod-pod".into(),
                    status: Status::Ok,
                    reason: None,
                    metrics: c.finish(),
                },
                ScenarioReport {
                    name: "pod-vip".into(),
                    status: Status::Unavailable,
                    reason: Some("no sync".into()),
                    metrics: vec![],
                },
            ],
            rfc2544: vec![Rfc2544Row {
                topology: "tapway".into(),
                size: 64,
                ndr_pps: 1e5,
                ndr_mbps: 51.2,
                ndr_latency: Some(lat),
                pdr_pps: 1.1e5,
                pdr_mbps: 56.3,
                pdr_loss_pct: Some(0.2),
                pdr_latency: None,
                generator_limited: false,
                trials: 9,
                trial_log: vec![TrialPoint { offered_pps: None, tx_pps: 2e5, rx_pps: 1.2e5, loss_pct: 40.0 }],
            }],
            notes: vec!["busy".into()],
        }
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    /// Pins the JSON layout: consumers (plots, dashboards) rely on these names. Changing them
    /// means bumping SCHEMA.
    #[test]
    fn json_schema_is_stable() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["schema"], "tapway-bench/report/v2");
        assert_eq!(
            keys(&v),
            [
                "command",
                "generated_utc",
                "machine",
                "notes",
                "params",
                "rfc2544",
                "scenarios",
                "schema",
                "topologies",
                "versions"
            ]
        );
        assert_eq!(keys(&v["machine"]), ["cpu_model", "cpus", "hostname", "kernel", "load_avg_start"]);
        assert_eq!(keys(&v["versions"]), ["cni_plugins", "iperf3", "tapway_bench", "tapwayd"]);
        assert_eq!(
            keys(&v["params"]),
            [
                "baseline",
                "bin_dir",
                "duration_s",
                "flows",
                "idle_s",
                "isolate",
                "pktgen_threads",
                "pod_pod_topologies",
                "poll_mode",
                "repeat",
                "rfc2544_pdr_loss_pct",
                "rfc2544_resolution",
                "rfc2544_trial_s",
                "rtt_rates",
                "scenarios",
                "sizes",
                "tapwayd_cores"
            ]
        );
        assert_eq!(keys(&v["params"]["isolate"]), ["datapath_cpus", "other_cpus"]);
        assert_eq!(keys(&v["topologies"][0]), ["attach", "kind", "pod_a", "pod_b", "scenario"]);
        assert_eq!(keys(&v["scenarios"][0]), ["metrics", "name", "reason", "status"]);
        assert_eq!(v["scenarios"][0]["status"], "ok");
        assert_eq!(v["scenarios"][1]["status"], "unavailable");
        assert_eq!(
            keys(&v["scenarios"][0]["metrics"][0]),
            ["max", "median", "metric", "min", "samples", "topology", "unit", "variant"]
        );
        assert_eq!(
            keys(&v["rfc2544"][0]),
            [
                "generator_limited",
                "ndr_latency",
                "ndr_mbps",
                "ndr_pps",
                "pdr_latency",
                "pdr_loss_pct",
                "pdr_mbps",
                "pdr_pps",
                "size",
                "topology",
                "trial_log",
                "trials"
            ]
        );
        assert_eq!(keys(&v["rfc2544"][0]["trial_log"][0]), ["loss_pct", "offered_pps", "rx_pps", "tx_pps"]);
        assert_eq!(
            keys(&v["rfc2544"][0]["ndr_latency"]),
            ["max_us", "mean_us", "min_us", "p50_us", "p90_us", "p999_us", "p99_us", "samples"]
        );
        // And it reads back to the same report.
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn each_scenario_has_the_columns_of_its_own_topologies() {
        let mut r = sample();
        let mut c = Collector::default();
        c.add("rx_pps", Some("64"), "tapway", "frames/s", 2e5);
        c.add("rx_pps", Some("64"), "bridge", "frames/s", 1e5);
        r.scenarios.push(ScenarioReport {
            name: "cross-node".into(),
            status: Status::Ok,
            reason: None,
            metrics: c.finish(),
        });
        let md = r.to_markdown();
        let (_, cross) = md.split_once("#### cross-node").unwrap();
        assert!(cross.contains("| figure (median (min–max)) | tapway | bridge | tapway/bridge |\n"), "{md}");
        assert!(cross.contains("| frames received/s, 64 B | 0.200M | 0.100M | 2.00× |"), "{md}");
        let (pod_pod, _) = md.split_once("#### cross-node").unwrap();
        assert!(pod_pod.contains("| generator only (veth) |"), "{md}");
    }

    /// A v1 report (before the floor, the rates and isolation) still reads, with the new
    /// parameters empty.
    #[test]
    fn a_v1_report_still_reads() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["schema"] = "tapway-bench/report/v1".into();
        for k in ["pod_pod_topologies", "rtt_rates", "idle_s", "isolate"] {
            v["params"].as_object_mut().unwrap().remove(k);
        }
        let r: Report = serde_json::from_value(v).unwrap();
        assert!(READABLE.contains(&r.schema.as_str()));
        assert!(r.params.isolate.is_none() && r.params.rtt_rates.is_empty());
    }

    fn scenario(samples: &[(&str, &str, Option<&str>, f64)]) -> ScenarioReport {
        let mut c = Collector::default();
        for (metric, topo, variant, v) in samples {
            c.add(metric, *variant, topo, "u", *v);
        }
        ScenarioReport { name: "pod-pod".into(), status: Status::Ok, reason: None, metrics: c.finish() }
    }

    #[test]
    fn the_floor_is_a_column_with_a_ratio_for_every_figure() {
        let s = scenario(&[
            ("rx_pps", "bridge", Some("64"), 2e5),
            ("rx_pps", "floor", Some("64"), 4e5),
            ("rx_pps", "tapway", Some("64"), 3e5),
            ("rx_pps", "veth", Some("64"), 5e5),
            ("loss_pct", "tapway", Some("64"), 10.0),
            ("loss_pct", "floor", Some("64"), 5.0),
            ("rtt_p50_us", "tapway", Some("10k"), 30.0),
            ("rtt_p50_us", "floor", Some("10k"), 20.0),
            ("rtt_p50_us", "bridge", Some("10k"), 15.0),
            ("tcp_gbps", "tapway", Some("1"), 9.0),
            ("tcp_gbps", "floor", Some("1"), 10.0),
        ]);
        let (topos, hdr) = columns(&s);
        assert_eq!(topos, ["veth", "tapway", "floor", "bridge"], "known order, not arrival order");
        assert_eq!(
            hdr[1..],
            [
                "generator only (veth)",
                "tapway",
                "floor",
                "bridge",
                "tapway/floor",
                "tapway/bridge",
                "floor/bridge"
            ]
        );
        let r = rows(&s, &topos);
        let row = |label: &str| r.iter().find(|r| r[0] == label).unwrap_or_else(|| panic!("{label}: {r:?}"));
        assert_eq!(row("frames received/s, 64 B")[5..], ["0.75×", "1.50×", "2.00×"]);
        assert_eq!(row("loss %, 64 B (flat out)")[5..], ["", "", ""], "no ratio of losses");
        assert_eq!(row("UDP RTT p50 µs (64 B), 10k req/s offered")[5..], ["1.50×", "2.00×", "1.33×"]);
        assert_eq!(row("TCP Gbit/s, 1 stream(s)")[5..], ["0.90×", "", ""], "no bridge TCP figure");
    }

    #[test]
    fn two_poll_modes_get_their_own_columns_and_ratios() {
        let s = scenario(&[
            ("rtt_p50_us", "tapway-adaptive", Some("10k"), 45.0),
            ("rtt_p50_us", "tapway-busy", Some("10k"), 30.0),
            ("rtt_p50_us", "floor-adaptive", Some("10k"), 40.0),
            ("rtt_p50_us", "floor-busy", Some("10k"), 25.0),
        ]);
        let (topos, hdr) = columns(&s);
        assert_eq!(topos, ["tapway-busy", "tapway-adaptive", "floor-busy", "floor-adaptive"]);
        assert_eq!(
            hdr[5..],
            ["tapway/floor busy", "tapway/floor adaptive", "tapway adaptive/busy", "floor adaptive/busy"]
        );
        let r = rows(&s, &topos);
        assert_eq!(r[0][5..], ["1.20×", "1.12×", "1.50×", "1.60×"]);
        // Unknown topology names go last, in order of appearance.
        assert_eq!(topology_order("other"), ORDER.len());
    }

    #[test]
    fn isolation_is_written_down() {
        let r = sample();
        let line = "CPUs isolated: datapath (tapwayd workers, floor thread) on CPU 1; generators";
        assert!(r.to_markdown().contains(line), "{}", r.to_markdown());
        assert!(r.to_text().contains(line), "{}", r.to_text());
    }

    #[test]
    fn stats_median_min_max() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert!(stats(&[]).0.is_nan());
    }

    #[test]
    fn collector_keeps_order_and_samples() {
        let m = sample().scenarios[0].metrics.clone();
        assert_eq!(m[0].topology, "veth");
        assert_eq!(m[1].topology, "tapway");
        assert_eq!(m[1].samples, vec![1e6, 1e6 + 1.0, 1e6 + 2.0]);
        assert_eq!(m[1].median, 1e6 + 1.0);
    }

    #[test]
    fn text_and_markdown_show_side_by_side() {
        let r = sample();
        let t = r.to_text();
        assert!(t.contains("generator only (veth)"), "{t}");
        assert!(t.contains("frames received/s, 64 B"), "{t}");
        assert!(t.contains("1.000M (1.000M–1.000M)"), "{t}");
        assert!(t.contains("0.50×"), "tcp ratio 10/20: {t}");
        assert!(t.contains("Unavailable: no sync"), "{t}");
        let md = r.to_markdown();
        assert!(
            md.contains(
                "| figure (median (min–max)) | generator only (veth) | tapway | bridge | tapway/bridge |"
            ),
            "{md}"
        );
        assert!(md.contains("| TCP Gbit/s, 1 stream(s) |  | 10.0 | 20.0 | 0.50× |"), "{md}");
        assert!(md.contains("#### RFC 2544"), "{md}");
        assert!(md.contains("tapway-bench run pod-pod"), "{md}");
    }
}
