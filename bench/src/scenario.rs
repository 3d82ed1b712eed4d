//! `tapway-bench run`: builds the topologies, runs the scenarios interleaved between them, and
//! fills a [`Report`].
//!
//! Interleaving: within each repeat, every figure is measured on every topology back to back,
//! in an order that alternates between repeats (tapway first on odd repeats, the baseline first
//! on even ones), so that slow drifts of a noisy machine hit both alike. While one topology is
//! measured, the others' datapaths are paused ([`Topology::pause`]): a busy-polling tapwayd or
//! floor would otherwise spin on the CPU the measured one needs.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::frame::SizeMix;
use crate::machine::{self, Machine};
use crate::pktgen::{Bypass, PktgenConfig, DEFAULT_PORT};
use crate::report::{
    Collector, Isolation, Params, Report, Rfc2544Row, ScenarioReport, Status, TopologyInfo, TrialPoint,
    Versions, SCHEMA,
};
use crate::rfc2544::{self, Outcome};
use crate::rtt;
use crate::tcp;
use crate::topo::{Env, Kind, Mode, TopoError, Topology};
use crate::trial::{self, TrialError, TrialSpec};

/// Largest nominal frame on a pod interface (MTU 1500 + Ethernet header + FCS).
pub const POD_MAX_FRAME: usize = 1518;

/// Scenario names `run` knows.
pub const SCENARIOS: [&str; 4] = ["pod-pod", "pod-vip", "cross-node", "rfc2544"];

/// Why a run stopped.
#[derive(Debug, Error)]
pub enum RunError {
    /// A topology could not be built.
    #[error("building the {0} topology: {1}")]
    Topo(&'static str, TopoError),
    /// A measurement failed.
    #[error("{0}")]
    Measure(String),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Scenarios, in order.
    pub scenarios: Vec<String>,
    /// Also run the reference bridge CNI.
    pub baseline_bridge: bool,
    /// Repeats per figure.
    pub repeat: u32,
    /// Per measurement.
    pub duration: Duration,
    /// Frame sizes of the frame-rate figures.
    pub sizes: Vec<SizeMix>,
    /// Flows per trial.
    pub flows: u16,
    /// pktgen sender threads.
    pub pktgen_threads: usize,
    /// tapwayd `--cores` (with `isolate`: its datapath CPUs); the floor's thread takes the first.
    pub tapwayd_cores: String,
    /// tapwayd's (and the floor's) `--poll-mode`s: one, or two to measure pod-pod in both;
    /// the first is the one of pod-vip and cross-node.
    pub poll_modes: Vec<String>,
    /// pod-pod's topologies besides the bridge (`baseline_bridge`): veth, tapway, floor.
    pub topologies: Vec<Kind>,
    /// UDP ping-pong request rates, requests/s.
    pub rtt_rates: Vec<f64>,
    /// pod-pod: how long the datapaths' idle CPU is measured per repeat (zero: not).
    pub idle: Duration,
    /// `--isolate`: already applied to this thread by the caller; recorded in the report.
    pub isolate: Option<Isolation>,
    /// cross-node: tapwayd `--xdp-mode`.
    pub xdp_mode: String,
    /// cross-node: MTU of the uplinks and the fabric.
    pub uplink_mtu: u32,
    /// Directory of tapwayd, tapwayctl, tapway.
    pub bin_dir: PathBuf,
    /// Seconds per RFC 2544 trial.
    pub rfc2544_trial: Duration,
    /// Search resolution.
    pub rfc2544_resolution: f64,
    /// PDR loss threshold, %.
    pub rfc2544_pdr_loss_pct: f64,
    /// Most trials per search.
    pub rfc2544_max_trials: usize,
    /// RFC 2544 frame sizes.
    pub rfc2544_sizes: Vec<usize>,
    /// Skip iperf3 even when installed.
    pub no_tcp: bool,
    /// pktgen's qdisc bypass.
    pub qdisc_bypass: Bypass,
    /// The command line, for the report.
    pub command: Vec<String>,
}

fn log(msg: &str) {
    eprintln!("==> {msg}");
}

/// Whether `pod-vip` can run: tapwayctl must have `sync` (Service VIPs), and the bridge
/// baseline needs `nft`.
fn vip_available(env: &Env, baseline: bool) -> Result<(), String> {
    let ctl = env.bin_dir.join("tapwayctl");
    let ok = Command::new(&ctl).args(["sync", "--help"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        return Err(format!("`{} sync --help` fails: Service VIPs are not built yet", ctl.display()));
    }
    if baseline && !Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Err("the bridge baseline of pod-vip needs nftables (`nft`): apt-get install nftables".into());
    }
    Ok(())
}

/// Whether `cross-node` can run: tapwayd must have `--uplink`.
fn cross_node_available(env: &Env) -> Result<(), String> {
    let d = env.bin_dir.join("tapwayd");
    let help = Command::new(&d)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if help.contains("--uplink") {
        Ok(())
    } else {
        Err(format!("`{} --help` has no --uplink: AF_XDP uplinks are not built yet", d.display()))
    }
}

/// CPU time (user + system) in a `/proc/…/stat` line, in clock ticks.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat, i.e. 12 and 13 after "pid (comm) ".
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks of a topology's datapath (its daemons, or the floor's thread) together: `None`
/// when it has none or one is gone.
fn datapath_ticks(t: &Topology) -> Option<u64> {
    let stats = t.cpu_stats();
    if stats.is_empty() {
        return None;
    }
    stats.iter().map(|p| std::fs::read_to_string(p).ok().as_deref().and_then(stat_ticks)).sum()
}

/// CPU used between two tick counts over `secs`, in % of a core.
pub fn cpu_pct(ticks: u64, tck: f64, secs: f64) -> f64 {
    100.0 * ticks as f64 / tck / secs.max(1e-3)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as f64
    } else {
        100.0
    }
}

struct Runner<'a> {
    cfg: &'a RunConfig,
    stop: Arc<AtomicBool>,
}

impl Runner<'_> {
    fn check_stop(&self) -> Result<(), RunError> {
        if self.stop.load(Ordering::Relaxed) {
            Err(RunError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Resumes `t`'s datapath and pauses every other one of `topos`; a moment to settle.
    fn activate(&self, topos: &[&Topology], t: &Topology) {
        for o in topos {
            if !std::ptr::eq(*o, t) {
                o.pause();
            }
        }
        t.resume();
        std::thread::sleep(Duration::from_millis(100));
    }

    /// The idle CPU of every topology with a datapath of its own (tapwayd, floor), all resumed
    /// and measured over the same `cfg.idle` with no traffic at all.
    fn idle_cpu(&self, topos: &[&Topology], c: &mut Collector, rep: u32) -> Result<(), RunError> {
        let with: Vec<&Topology> = topos.iter().copied().filter(|t| !t.cpu_stats().is_empty()).collect();
        if self.cfg.idle.is_zero() || with.is_empty() {
            return Ok(());
        }
        for t in &with {
            t.resume();
        }
        // Let adaptive loops reach their idle sleep.
        std::thread::sleep(Duration::from_millis(500));
        let t0: Vec<Option<u64>> = with.iter().map(|t| datapath_ticks(t)).collect();
        let start = std::time::Instant::now();
        let deadline = start + self.cfg.idle;
        while std::time::Instant::now() < deadline {
            self.check_stop()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        let secs = start.elapsed().as_secs_f64();
        for (t, c0) in with.iter().zip(t0) {
            if let (Some(c0), Some(c1)) = (c0, datapath_ticks(t)) {
                let pct = cpu_pct(c1.saturating_sub(c0), clk_tck(), secs);
                c.add("idle_cpu_pct", None, &t.name, "% of a core", pct);
                log(&format!(
                    "run {rep}/{} {:<7} idle, no traffic: {pct:.2} % of a core",
                    self.cfg.repeat, t.name
                ));
            }
        }
        Ok(())
    }

    fn trial(
        &self,
        topo: &Topology,
        sizes: &SizeMix,
        rate: Option<f64>,
        d: Duration,
    ) -> Result<trial::TrialResult, RunError> {
        let mut p = PktgenConfig::new(topo.dst);
        p.ifname = topo.a.ifname.clone();
        p.sizes = sizes.clone();
        p.flows = self.cfg.flows;
        p.threads = self.cfg.pktgen_threads;
        p.rate_pps = rate;
        p.duration = Some(d);
        p.dst_port = DEFAULT_PORT;
        p.qdisc_bypass = self.cfg.qdisc_bypass;
        let spec = TrialSpec {
            tx_netns: Some(topo.a.netns.clone()),
            rx_netns: Some(topo.b.netns.clone()),
            rx_ifname: topo.b.ifname.clone(),
            pktgen: p,
            grace: Duration::from_millis(300),
        };
        let r = trial::run(&spec, &self.stop)
            .map_err(|e: TrialError| RunError::Measure(format!("{} trial: {e}", topo.name)))?;
        self.check_stop()?;
        Ok(r)
    }

    /// The order of topologies in repeat `rep` (1-based): the generator-only path first, then
    /// tapway and the baseline alternating.
    fn order<'t>(&self, topos: &'t [Topology], rep: u32) -> Vec<&'t Topology> {
        let mut v: Vec<&Topology> = topos.iter().filter(|t| t.kind == Kind::Veth).collect();
        let mut rest: Vec<&Topology> = topos.iter().filter(|t| t.kind != Kind::Veth).collect();
        if rep.is_multiple_of(2) {
            rest.reverse();
        }
        v.extend(rest);
        v
    }

    /// Measures `name` on `topos` (the generator-only veth pair, if given, for the frame rates
    /// only): the datapaths' idle CPU (with `idle`), frame rate per size flat out, iperf3 with
    /// each of `streams`, UDP ping-pong RTT at each request rate. Every figure on every
    /// topology back to back, the order alternating between repeats.
    fn measure(
        &self,
        name: &str,
        topos: &[Topology],
        streams: &[u32],
        idle: bool,
    ) -> Result<ScenarioReport, RunError> {
        let r = self.measure_all(name, topos, streams, idle);
        for t in topos {
            t.resume();
        }
        r
    }

    fn measure_all(
        &self,
        name: &str,
        topos: &[Topology],
        streams: &[u32],
        idle: bool,
    ) -> Result<ScenarioReport, RunError> {
        let scenario = name;
        let mut c = Collector::default();
        let d = self.cfg.duration;
        let tcp_ok = !self.cfg.no_tcp && tcp::available();
        let all: Vec<&Topology> = topos.iter().collect();
        let switched: Vec<&Topology> = topos.iter().filter(|t| t.kind != Kind::Veth).collect();
        let mut servers = Vec::new();
        if tcp_ok {
            for t in &switched {
                servers.push(
                    tcp::Server::start(&t.b).map_err(|e| RunError::Measure(format!("{}: {e}", t.name)))?,
                );
            }
        }
        let tck = clk_tck();
        for rep in 1..=self.cfg.repeat {
            if idle {
                self.idle_cpu(&all, &mut c, rep)?;
            }
            for size in &self.cfg.sizes {
                let label = size.label();
                for t in self.order(topos, rep) {
                    self.activate(&all, t);
                    let c0 = datapath_ticks(t);
                    let r = self.trial(t, size, None, d)?;
                    let name = t.name.as_str();
                    c.add("tx_pps", Some(&label), name, "frames/s", r.pktgen.pps());
                    c.add("rx_pps", Some(&label), name, "frames/s", r.sink.pps());
                    c.add("rx_mbps", Some(&label), name, "Mb/s", r.sink.mbps());
                    c.add("loss_pct", Some(&label), name, "%", r.loss_pct);
                    // The share of that loss that was the sink's own ring overflowing, not the path.
                    let sent = r.pktgen.sent.max(1) as f64;
                    c.add("sink_drop_pct", Some(&label), name, "%", 100.0 * r.sink.ring_drops as f64 / sent);
                    if let (Some(c0), Some(c1)) = (c0, datapath_ticks(t)) {
                        let pct = cpu_pct(c1.saturating_sub(c0), tck, r.pktgen.elapsed_s);
                        c.add("tapwayd_cpu_pct", Some(&label), name, "% of a core", pct);
                    }
                    log(&format!(
                        "run {rep}/{} {name:<7} {scenario} {label:>5} B flat out: offered {:.0} pps, received {:.0} pps, loss {:.2} %",
                        self.cfg.repeat,
                        r.pktgen.pps(),
                        r.sink.pps(),
                        r.loss_pct
                    ));
                }
            }
            if tcp_ok {
                for &streams in streams {
                    let order = if rep % 2 == 1 {
                        switched.clone()
                    } else {
                        switched.iter().rev().copied().collect()
                    };
                    for t in order {
                        self.activate(&all, t);
                        let secs = d.as_secs().max(1);
                        let g = tcp::client(&t.a, t.dst, secs, streams, &self.stop).map_err(|e| match e {
                            tcp::TcpError::Interrupted => RunError::Interrupted,
                            e => RunError::Measure(format!("{}: {e}", t.name)),
                        })?;
                        c.add("tcp_gbps", Some(&streams.to_string()), &t.name, "Gbit/s", g);
                        log(&format!(
                            "run {rep}/{} {:<7} {scenario} TCP -P {streams}: {g:.2} Gbit/s",
                            self.cfg.repeat, t.name
                        ));
                    }
                }
            }
            for &rate in &self.cfg.rtt_rates {
                let Some(interval) = rtt::interval(rate) else { continue };
                let v = rtt::rate_label(rate);
                let order =
                    if rep % 2 == 1 { switched.clone() } else { switched.iter().rev().copied().collect() };
                for t in order {
                    self.activate(&all, t);
                    let r = rtt::ping_pong_via(
                        &t.a.netns,
                        &t.b.netns,
                        t.b.ip,
                        t.dst,
                        d,
                        interval,
                        u64::MAX,
                        &self.stop,
                    )
                    .map_err(|e| RunError::Measure(format!("{}: {e}", t.name)))?;
                    self.check_stop()?;
                    let n = t.name.as_str();
                    c.add("rtt_rate", Some(&v), n, "round trips/s", r.rate());
                    if let Some(l) = r.rtt {
                        c.add("rtt_p50_us", Some(&v), n, "µs", l.p50_us);
                        c.add("rtt_p99_us", Some(&v), n, "µs", l.p99_us);
                        c.add("rtt_p999_us", Some(&v), n, "µs", l.p999_us);
                        log(&format!(
                            "run {rep}/{} {n:<7} {scenario} UDP ping-pong at {v}/s ({:.0}/s achieved): p50 {:.1} p99 {:.1} p99.9 {:.1} µs ({} answered, {} lost)",
                            self.cfg.repeat, r.rate(), l.p50_us, l.p99_us, l.p999_us, r.answered, r.lost
                        ));
                    }
                }
            }
        }
        drop(servers);
        Ok(ScenarioReport { name: name.into(), status: Status::Ok, reason: None, metrics: c.finish() })
    }

    /// A scenario with topologies of its own (`pod-vip`, `cross-node`): builds tapway's and,
    /// with the baseline, the bridge's, checks them, measures (iperf3 with one stream), and
    /// tears them down before returning. A topology that cannot be built or a measurement that
    /// fails marks the scenario `failed` with the reason; the run goes on. Ctrl-C ends it.
    fn own_topologies(
        &self,
        name: &str,
        env: &Env,
        build: fn(Kind, &Env) -> Result<Topology, TopoError>,
        infos: &mut Vec<TopologyInfo>,
        info: &dyn Fn(&Topology) -> TopologyInfo,
    ) -> Result<ScenarioReport, RunError> {
        let failed = |why: String| {
            log(&format!("{name}: failed: {why}"));
            ScenarioReport {
                name: name.into(),
                status: Status::Failed,
                reason: Some(why),
                metrics: Vec::new(),
            }
        };
        let mut kinds = vec![Kind::Tapway];
        if self.cfg.baseline_bridge {
            kinds.push(Kind::Bridge);
        }
        let mut topos = Vec::new();
        for k in kinds {
            log(&format!("building the {} topology of {name}", k.name()));
            let t = match build(k, env).and_then(|t| t.check().map(|()| t)) {
                Ok(t) => t,
                Err(e) => return Ok(failed(format!("building the {} topology: {e}", k.name()))),
            };
            self.check_stop()?;
            if t.dst != t.b.ip {
                // Through the VIP both ways: only a translated request reaches the echo server
                // (it listens on the backend's address), and only an un-NATed answer reaches
                // the client's connected socket.
                let r = rtt::ping_pong_via(
                    &t.a.netns,
                    &t.b.netns,
                    t.b.ip,
                    t.dst,
                    Duration::from_millis(300),
                    rtt::DEFAULT_INTERVAL,
                    50,
                    &self.stop,
                );
                self.check_stop()?;
                match r {
                    Ok(r) if r.answered > 0 => log(&format!(
                        "{}: {}:{} answered through the VIP from backend {} ({} of {} round trips)",
                        k.name(),
                        t.dst,
                        rtt::PORT,
                        t.b.ip,
                        r.answered,
                        r.answered + r.lost
                    )),
                    Ok(_) => {
                        return Ok(failed(format!(
                            "{}: no UDP answer through VIP {}:{} from backend {}",
                            k.name(),
                            t.dst,
                            rtt::PORT,
                            t.b.ip
                        )))
                    }
                    Err(e) => return Ok(failed(format!("{}: checking the VIP: {e}", k.name()))),
                }
            }
            infos.push(info(&t));
            topos.push(t);
        }
        match self.measure(name, &topos, &[1], false) {
            Err(RunError::Measure(why)) => Ok(failed(why)),
            r => r,
        }
    }

    fn rfc2544(&self, topos: &[Topology]) -> Result<Vec<Rfc2544Row>, RunError> {
        let mut rows = Vec::new();
        let all: Vec<&Topology> = topos.iter().collect();
        let switched: Vec<&Topology> = topos.iter().filter(|t| t.kind != Kind::Veth).collect();
        for (i, &size) in self.cfg.rfc2544_sizes.iter().enumerate() {
            let order: Vec<&Topology> =
                if i.is_multiple_of(2) { switched.clone() } else { switched.iter().rev().copied().collect() };
            for t in order {
                self.activate(&all, t);
                let mix = SizeMix::Fixed(size);
                // The generator's flat-out rate on this path bounds the search.
                let top = self.trial(t, &mix, None, self.cfg.rfc2544_trial)?;
                let max = top.pktgen.pps();
                let trial_log = std::cell::RefCell::new(vec![TrialPoint {
                    offered_pps: None,
                    tx_pps: max,
                    rx_pps: top.sink.pps(),
                    loss_pct: top.loss_pct,
                }]);
                let res = rfc2544::ndr_pdr(
                    max,
                    self.cfg.rfc2544_resolution,
                    self.cfg.rfc2544_max_trials,
                    self.cfg.rfc2544_pdr_loss_pct,
                    |rate| {
                        let r = self.trial(t, &mix, Some(rate), self.cfg.rfc2544_trial)?;
                        trial_log.borrow_mut().push(TrialPoint {
                            offered_pps: Some(rate),
                            tx_pps: r.pktgen.pps(),
                            rx_pps: r.sink.pps(),
                            loss_pct: r.loss_pct,
                        });
                        Ok::<_, RunError>(Outcome {
                            offered_pps: rate,
                            rx_pps: r.sink.pps(),
                            loss_pct: r.loss_pct,
                            latency: r.sink.latency,
                        })
                    },
                )?;
                let mbps = |pps: f64| pps * size as f64 * 8.0 / 1e6;
                let row = Rfc2544Row {
                    topology: t.name.clone(),
                    size,
                    ndr_pps: res.ndr.rate_pps,
                    ndr_mbps: mbps(res.ndr.rate_pps),
                    ndr_latency: res.ndr.at_rate.and_then(|o| o.latency),
                    pdr_pps: res.pdr.rate_pps,
                    pdr_mbps: mbps(res.pdr.rate_pps),
                    pdr_loss_pct: res.pdr.at_rate.map(|o| o.loss_pct),
                    pdr_latency: res.pdr.at_rate.and_then(|o| o.latency),
                    generator_limited: res.ndr.generator_limited,
                    // +1: the flat-out trial that set the bound. A generator-limited NDR is the PDR's trial.
                    trial_log: trial_log.take(),
                    trials: res.pdr.trials.len()
                        + 1
                        + if res.ndr.generator_limited { 0 } else { res.ndr.trials.len() },
                };
                log(&format!(
                    "rfc2544 {:<7} {size:>4} B: NDR {:.0} pps, PDR {:.0} pps ({} trials)",
                    row.topology, row.ndr_pps, row.pdr_pps, row.trials
                ));
                rows.push(row);
            }
        }
        Ok(rows)
    }
}

/// Runs the scenarios and returns the report. `stop` (set by SIGINT/SIGTERM) ends the run
/// early with [`RunError::Interrupted`]; every topology is torn down on every path.
pub fn run(cfg: &RunConfig, stop: Arc<AtomicBool>) -> Result<Report, RunError> {
    for s in &cfg.scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            return Err(RunError::Usage(format!("unknown scenario `{s}` (known: {})", SCENARIOS.join(", "))));
        }
    }
    if cfg.repeat == 0 {
        return Err(RunError::Usage("--repeat must be at least 1".into()));
    }
    // Every topology gives its pods the default MTU of 1500: a 1518-byte frame is the largest.
    let too_big: Vec<String> = cfg
        .sizes
        .iter()
        .map(SizeMix::max_size)
        .chain(cfg.rfc2544_sizes.iter().copied())
        .filter(|&s| s > POD_MAX_FRAME)
        .map(|s| s.to_string())
        .collect();
    if !too_big.is_empty() {
        return Err(RunError::Usage(format!(
            "frame sizes {} do not fit the pods' MTU of 1500 (at most {POD_MAX_FRAME} B); use `tapway-bench pktgen` on links with a larger MTU",
            too_big.join(", ")
        )));
    }
    let machine = Machine::probe();
    let generated_utc = machine::now_utc();
    let pid = std::process::id();
    let work = std::env::temp_dir().join(format!("tapway-bench-run-{pid}"));
    std::fs::create_dir_all(&work).map_err(|e| RunError::Measure(format!("{}: {e}", work.display())))?;
    let _work_guard = WorkDir(work.clone());
    let modes: Vec<Mode> = cfg
        .poll_modes
        .iter()
        .enumerate()
        .map(|(index, m)| Mode { poll: m.clone(), index, named: cfg.poll_modes.len() > 1 })
        .collect();
    let first_mode = modes.first().map_or_else(|| "adaptive".to_string(), |m| m.poll.clone());
    let env = Env {
        bin_dir: cfg.bin_dir.clone(),
        work,
        tag: format!("twr{pid}"),
        tapwayd_cores: cfg.tapwayd_cores.clone(),
        poll_mode: first_mode.clone(),
        xdp_mode: cfg.xdp_mode.clone(),
        uplink_mtu: cfg.uplink_mtu,
    };
    let mut notes = Vec::new();
    if machine.load_avg_start > 1.0 {
        notes.push(format!(
            "the machine was busy (load average {:.2} at start): other work shares the cores and skews every topology",
            machine.load_avg_start
        ));
    }
    let needs_topos = cfg.scenarios.iter().any(|s| s == "pod-pod" || s == "rfc2544");
    let mut topos: Vec<Topology> = Vec::new();
    if needs_topos {
        let mut builds: Vec<(Kind, Mode)> = Vec::new();
        for &k in &cfg.topologies {
            if k.polls() {
                builds.extend(modes.iter().map(|m| (k, m.clone())));
            } else if k != Kind::Bridge {
                builds.push((k, Mode::single(&first_mode)));
            }
        }
        if cfg.baseline_bridge {
            builds.push((Kind::Bridge, Mode::single(&first_mode)));
        }
        for (k, m) in builds {
            log(&format!("building the {} topology", m.name(k)));
            let t = Topology::build(k, &env, &m).map_err(|e| RunError::Topo(k.name(), e))?;
            // A busy-polling datapath built earlier must not take the CPU of this check.
            for o in &topos {
                o.pause();
            }
            t.check().map_err(|e| RunError::Topo(k.name(), e))?;
            topos.push(t);
            if stop.load(Ordering::Relaxed) {
                return Err(RunError::Interrupted);
            }
        }
        for t in &topos {
            t.resume();
        }
    }
    let info = |t: &Topology| TopologyInfo {
        kind: t.name.clone(),
        scenario: t.scenario.into(),
        attach: t.attach.clone(),
        pod_a: t.a.ip.to_string(),
        pod_b: t.b.ip.to_string(),
    };
    let mut topologies: Vec<TopologyInfo> = topos.iter().map(info).collect();
    let runner = Runner { cfg, stop: stop.clone() };
    let mut scenarios = Vec::new();
    let mut rfc_rows = Vec::new();
    for s in &cfg.scenarios {
        let rep = match s.as_str() {
            "pod-pod" => runner.measure("pod-pod", &topos, &[1, 4], true)?,
            "pod-vip" => match vip_available(&env, cfg.baseline_bridge) {
                Ok(()) => runner.own_topologies(s, &env, Topology::build_vip, &mut topologies, &info)?,
                Err(why) => unavailable(s, Err(why)),
            },
            "cross-node" => match cross_node_available(&env) {
                Ok(()) => runner.own_topologies(s, &env, Topology::build_cross, &mut topologies, &info)?,
                Err(why) => unavailable(s, Err(why)),
            },
            "rfc2544" => {
                rfc_rows = runner.rfc2544(&topos)?;
                ScenarioReport { name: s.clone(), status: Status::Ok, reason: None, metrics: Vec::new() }
            }
            _ => unavailable(s, Err("unknown".into())),
        };
        scenarios.push(rep);
    }
    generator_note(&scenarios, &mut notes);
    drop(topos);
    Ok(Report {
        schema: SCHEMA.into(),
        generated_utc,
        command: cfg.command.clone(),
        machine,
        versions: Versions {
            tapway_bench: env!("CARGO_PKG_VERSION").into(),
            tapwayd: machine::version_of(&env.bin_dir.join("tapwayd").display().to_string(), "--version"),
            iperf3: machine::version_of("iperf3", "--version"),
            cni_plugins: dpkg_version("containernetworking-plugins"),
        },
        params: Params {
            scenarios: cfg.scenarios.clone(),
            baseline: cfg.baseline_bridge.then(|| "bridge".into()),
            repeat: cfg.repeat,
            duration_s: cfg.duration.as_secs_f64(),
            sizes: cfg.sizes.iter().map(SizeMix::label).collect(),
            flows: cfg.flows,
            pktgen_threads: cfg.pktgen_threads,
            tapwayd_cores: cfg.tapwayd_cores.clone(),
            poll_mode: cfg.poll_modes.join(","),
            pod_pod_topologies: cfg.topologies.iter().map(|k| k.name().to_string()).collect(),
            rtt_rates: cfg.rtt_rates.clone(),
            idle_s: cfg.idle.as_secs_f64(),
            isolate: cfg.isolate.clone(),
            rfc2544_trial_s: cfg.rfc2544_trial.as_secs_f64(),
            rfc2544_resolution: cfg.rfc2544_resolution,
            rfc2544_pdr_loss_pct: cfg.rfc2544_pdr_loss_pct,
            bin_dir: cfg.bin_dir.display().to_string(),
        },
        topologies,
        scenarios,
        rfc2544: rfc_rows,
        notes,
    })
}

/// Says, per switched path and frame size, whether the generator out-ran it: either it offered
/// clearly more than the path delivered (the path dropped the rest), or over a bare veth pair it
/// reached clearly more than the path forwarded. Otherwise the figure may be generator-bound.
fn generator_note(scenarios: &[ScenarioReport], notes: &mut Vec<String>) {
    let Some(s) = scenarios.iter().find(|s| s.name == "pod-pod") else { return };
    let get = |metric: &str, topo: &str, variant: &Option<String>| {
        s.metrics
            .iter()
            .find(|x| x.metric == metric && x.topology == topo && &x.variant == variant)
            .map(|m| m.median)
    };
    for m in s.metrics.iter().filter(|m| m.metric == "rx_pps" && m.topology != "veth") {
        let size = m.variant.as_deref().unwrap_or("?");
        let rx = m.median;
        let offered = get("tx_pps", &m.topology, &m.variant).unwrap_or(0.0);
        let alone = get("rx_pps", "veth", &m.variant).unwrap_or(0.0);
        let note = if offered > 1.1 * rx {
            format!(
                "{size} B, {}: the generator offered {offered:.0} frames/s and {rx:.0} arrived: the path, not the generator, is the limit",
                m.topology
            )
        } else if alone > 1.1 * rx {
            format!(
                "{size} B, {}: {rx:.0} frames/s arrived; the generator alone reaches {alone:.0} over a bare veth pair: the path (which runs in the sender's context and back-pressures it) is the limit",
                m.topology
            )
        } else {
            format!(
                "{size} B, {}: {rx:.0} frames/s arrived, about what the generator reaches alone over a veth pair ({alone:.0}): this figure may be generator-bound",
                m.topology
            )
        };
        notes.push(note);
    }
}

fn unavailable(name: &str, r: Result<(), String>) -> ScenarioReport {
    let reason = r.err();
    if let Some(why) = &reason {
        log(&format!("{name}: unavailable: {why}"));
    }
    ScenarioReport { name: name.into(), status: Status::Unavailable, reason, metrics: Vec::new() }
}

fn dpkg_version(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query").args(["-W", "-f", "${Version}", pkg]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Removes the run's work directory.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("TAPWAY_BENCH_KEEP_WORK").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_utime_plus_stime_even_with_an_odd_comm() {
        // pid (comm) state ppid … utime stime: fields 14 and 15; the comm may hold ") ".
        let stat = "4242 (tapway-w0) x) S 1 2 3 4 5 6 7 8 9 10 123 45 0 0 20 0 1 0";
        assert_eq!(stat_ticks(stat), Some(168));
        assert_eq!(stat_ticks("4242 (short) S 1 2"), None);
        assert_eq!(stat_ticks("garbage"), None);
        assert_eq!(cpu_pct(50, 100.0, 1.0), 50.0);
        assert_eq!(cpu_pct(10, 100.0, 0.0), 10.0 / 100.0 / 1e-3 * 100.0, "no division by zero");
    }
}
