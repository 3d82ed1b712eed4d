//! tapway-bench: packet generator, sink, and side-by-side scenario runs (see `--help`).

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tapway_bench::frame::SizeMix;
use tapway_bench::pktgen::{self, Bypass, PktgenConfig, DEFAULT_PORT};
use tapway_bench::progress::Progress;
use tapway_bench::report::{Report, READABLE};
use tapway_bench::scenario::{self, RunConfig};
use tapway_bench::sink::{self, Sink, SinkConfig};
use tapway_bench::topo::Kind;
use tapway_bench::{cpus, iface, netns, svg};

#[derive(Parser, Debug)]
#[command(
    name = "tapway-bench",
    version,
    about = "Packet generator, sink and side-by-side benchmarks for tapway"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send Ethernet/IPv4/UDP probe frames (AF_PACKET TX ring, qdisc bypass) at a rate or flat out
    Pktgen(PktgenArgs),
    /// Receive probe frames (AF_PACKET RX ring): rate, loss, reordering, one-way latency
    Sink(SinkArgs),
    /// Build topologies in fresh namespaces and run scenarios: tapway, the generator alone over a
    /// veth pair, and (with --baseline bridge) the reference bridge CNI, interleaved
    Run(RunArgs),
    /// Re-render a JSON report written by `run --json`: the table, and optionally Markdown and SVG
    Report(ReportArgs),
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// The JSON report
    json: std::path::PathBuf,
    /// Write the tables as Markdown
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// Write plots as SVG
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Scenarios: pod-pod, pod-vip, cross-node, rfc2544
    #[arg(required = true, num_args = 1..)]
    scenarios: Vec<String>,
    /// Also run the reference CNI (Debian's bridge + host-local), interleaved with tapway
    #[arg(long, value_parser = ["bridge"])]
    baseline: Option<String>,
    /// Runs per figure; medians with min/max are reported
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Seconds per measurement (pktgen trial, iperf3 run, ping-pong)
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Frame sizes of the pod-pod frame-rate figures (64..=9000 or imix)
    #[arg(long, value_delimiter = ',', default_value = "64,512,1518")]
    sizes: Vec<SizeMix>,
    /// Flows per pktgen trial
    #[arg(long, default_value_t = 4)]
    flows: u16,
    /// pktgen sender threads
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// tapwayd --cores ("" = one unpinned worker); the floor's thread takes the first
    #[arg(long, default_value = "")]
    tapwayd_cores: String,
    /// tapwayd's (and the floor's) --poll-mode; `adaptive,busy`: pod-pod builds tapway and the
    /// floor in each mode and reports them side by side
    #[arg(long, default_value = "adaptive", value_delimiter = ',', value_parser = ["adaptive", "busy"])]
    poll_mode: Vec<String>,
    /// pod-pod's topologies: veth (the generator alone), tapway, floor (TAPs as tapwayd makes
    /// them, one thread copying between them: the design's limit); `--baseline bridge` adds the
    /// bridge
    #[arg(long, value_delimiter = ',', default_value = "veth,tapway,floor", value_parser = ["veth", "tapway", "floor"])]
    topologies: Vec<String>,
    /// UDP ping-pong request rates (requests/s), one request outstanding
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    rtt_rates: Vec<f64>,
    /// pod-pod: seconds per repeat over which the datapaths' CPU is measured with no traffic
    /// (0: not measured)
    #[arg(long, default_value_t = 10.0)]
    idle: f64,
    /// Keep the load off the datapath's CPUs, as a lab would: tapwayd's workers and the
    /// floor's thread on --tapwayd-cores (default: the last CPU), everything else (generators,
    /// sinks, ping-pong, iperf3, tapwayd's control thread, this tool) on the other CPUs
    #[arg(long)]
    isolate: bool,
    /// cross-node: tapwayd --xdp-mode of both uplinks (on veths generic is faster than native)
    #[arg(long, default_value = "native", value_parser = ["native", "generic", "auto"])]
    xdp_mode: String,
    /// cross-node: MTU of the uplink veths and the fabric, in both topologies; the pods keep
    /// 1500 (above 3822, AF_XDP multi-buffer)
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1500..=9216))]
    uplink_mtu: u32,
    /// Directory holding tapwayd, tapwayctl and the tapway CNI plugin (default: next to this
    /// binary, else target/release, else target/debug)
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
    /// Skip the iperf3 figures
    #[arg(long)]
    no_tcp: bool,
    /// pktgen's PACKET_QDISC_BYPASS; auto: on, except on TAPs (tapway's pod interfaces)
    #[arg(long, value_enum, default_value = "auto")]
    qdisc_bypass: Bypass,
    /// Seconds per RFC 2544 trial
    #[arg(long, default_value_t = 1.0)]
    trial: f64,
    /// RFC 2544 frame sizes
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,512,1024,1280,1518")]
    rfc2544_sizes: Vec<usize>,
    /// RFC 2544 search resolution, as a share of the flat-out rate
    #[arg(long, default_value_t = 0.02)]
    resolution: f64,
    /// Loss (%) allowed at the PDR
    #[arg(long, default_value_t = 0.5)]
    pdr_loss: f64,
    /// Most trials per NDR or PDR search
    #[arg(long, default_value_t = 10)]
    max_trials: usize,
    /// Write the report as JSON
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write the tables as Markdown
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// Write plots as SVG
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct PktgenArgs {
    /// Network namespace to send from: a name under /run/netns or a path
    #[arg(long)]
    netns: Option<String>,
    /// Sending interface
    #[arg(long, default_value = "eth0")]
    dev: String,
    /// Destination IPv4 address (the sink's)
    #[arg(long)]
    dst: Ipv4Addr,
    /// Destination MAC (default: resolved with ARP, of the destination or its gateway)
    #[arg(long)]
    dst_mac: Option<String>,
    /// Source IPv4 address (default: the interface's)
    #[arg(long)]
    src: Option<Ipv4Addr>,
    /// UDP destination port
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// UDP source port of flow 0 (flow i uses PORT+i)
    #[arg(long, default_value_t = 10000)]
    src_port: u16,
    /// Frame size on the wire, FCS included (64..=9000), or `imix` (7:4:1 of 64/576/1518)
    #[arg(long, default_value = "64")]
    size: SizeMix,
    /// Number of flows (distinct UDP source ports)
    #[arg(long, default_value_t = 1)]
    flows: u16,
    /// Frames per second in total (default: as fast as possible)
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to send (default 10 unless --count is given)
    #[arg(long)]
    duration: Option<f64>,
    /// Frames to send in total
    #[arg(long)]
    count: Option<u64>,
    /// Cores to pin one sender thread each to, e.g. `0,1`
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Unpinned sender threads when --cores is not given
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Hand frames straight to the driver (PACKET_QDISC_BYPASS); auto: on, except on TAPs
    #[arg(long, value_enum, default_value = "auto")]
    qdisc_bypass: Bypass,
    /// Generator: `af-packet` (this tool's AF_PACKET TX ring) or `kpktgen` (drive the kernel's
    /// pktgen through /proc/net/pktgen; needs `modprobe pktgen`; the sink counts its frames and
    /// measures their latency, loss comes from the sent count)
    #[arg(long, value_enum, default_value = "af-packet")]
    engine: Engine,
    /// Print the result as JSON instead of text
    #[arg(long)]
    json: bool,
}

/// Which packet generator `pktgen` drives.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// AF_PACKET TX ring (PACKET_MMAP), one sender thread per core.
    AfPacket,
    /// The kernel's pktgen module.
    Kpktgen,
}

#[derive(Args, Debug)]
struct SinkArgs {
    /// Network namespace to receive in: a name under /run/netns or a path
    #[arg(long)]
    netns: Option<String>,
    /// Receiving interface
    #[arg(long, default_value = "eth0")]
    dev: String,
    /// UDP destination port of the probes
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Stop after this many seconds
    #[arg(long)]
    duration: Option<f64>,
    /// Stop after this many probes
    #[arg(long)]
    count: Option<u64>,
    /// Stop when no probe came for this many seconds, once one has
    #[arg(long, default_value_t = 2.0)]
    idle: f64,
    /// Print the result as JSON instead of text
    #[arg(long)]
    json: bool,
}

fn secs(v: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("{what} must be a non-negative number of seconds"))
}

/// SIGINT/SIGTERM set the returned flag instead of killing the process, so every loop stops
/// cleanly and every guard (namespaces, daemons) is dropped.
fn stop_flag() -> Arc<AtomicBool> {
    let f = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, f.clone());
    }
    f
}

fn cmd_pktgen(a: PktgenArgs) -> Result<(), String> {
    let dst_mac = match &a.dst_mac {
        Some(s) => Some(iface::parse_mac(s).ok_or_else(|| format!("--dst-mac `{s}` is not a MAC address"))?),
        None => None,
    };
    let duration = match (a.duration, a.count) {
        (Some(d), _) => Some(secs(d, "--duration")?),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    if a.engine == Engine::Kpktgen {
        return cmd_kpktgen(&a, dst_mac, duration);
    }
    let cfg = PktgenConfig {
        ifname: a.dev,
        dst_ip: a.dst,
        dst_mac,
        src_ip: a.src,
        dst_port: a.port,
        src_port: a.src_port,
        sizes: a.size,
        flows: a.flows,
        rate_pps: a.rate,
        duration,
        count: a.count,
        cores: a.cores,
        threads: a.threads,
        qdisc_bypass: a.qdisc_bypass,
    };
    let stop = stop_flag();
    let live = Arc::new(pktgen::Live::default());
    let l2 = live.clone();
    let progress = Progress::start("pktgen", move || {
        (l2.sent.load(Ordering::Relaxed), l2.bytes.load(Ordering::Relaxed))
    });
    let c2 = cfg.clone();
    let res = netns::in_netns(a.netns.as_deref(), move || pktgen::run(&c2, &stop, &live))
        .map_err(|e| e.to_string())?;
    drop(progress);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&res).map_err(|e| e.to_string())?);
    } else {
        println!("{}", res.line(&cfg.sizes));
    }
    Ok(())
}

/// An error message from inside a namespace thread.
struct Msg(String);

impl Msg {
    fn of(e: impl std::fmt::Display) -> Msg {
        Msg(e.to_string())
    }
}

impl From<netns::NetnsError> for Msg {
    fn from(e: netns::NetnsError) -> Msg {
        Msg(e.to_string())
    }
}

/// `pktgen --engine kpktgen`: the same scenario on the kernel's generator.
fn cmd_kpktgen(a: &PktgenArgs, dst_mac: Option<[u8; 6]>, duration: Option<Duration>) -> Result<(), String> {
    use tapway_bench::kpktgen::{Kpktgen, KpktgenConfig};
    let SizeMix::Fixed(size) = a.size else {
        return Err("--engine kpktgen sends one frame size; IMIX needs --engine af-packet".into());
    };
    let size = u16::try_from(size).map_err(|_| format!("frame size {size} is too large"))?;
    let (dev, dst, netns) = (a.dev.clone(), a.dst, a.netns.clone());
    let mut cfg = KpktgenConfig::new(&dev, dst, dst_mac.unwrap_or_default());
    cfg.cores = a.cores.clone();
    cfg.threads = a.threads;
    cfg.size = size;
    cfg.count = a.count.unwrap_or(0);
    cfg.rate_pps = a.rate.map(|r| r.max(0.0).round() as u64);
    cfg.duration = duration;
    cfg.src_ip = a.src.map(|s| (s, s));
    cfg.dst_port = a.port;
    cfg.src_port = a.src_port;
    cfg.flows = a.flows;
    let stop = stop_flag();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = sent.clone();
    let progress = Progress::start("kpktgen", move || (s2.load(Ordering::Relaxed), 0));
    let res = netns::in_netns(netns.as_deref(), move || -> Result<_, Msg> {
        // pktgen does no ARP: resolve the next hop first, as the AF_PACKET engine does.
        if cfg.dst_mac == [0; 6] {
            cfg.dst_mac =
                iface::resolve_dst_mac(&cfg.dev, cfg.dst_ip, Duration::from_secs(3)).map_err(Msg::of)?;
        }
        let mut k = Kpktgen::default();
        Kpktgen::available(k.root()).map_err(Msg::of)?;
        k.run(&cfg, &stop, &sent).map_err(Msg::of)
    })
    .map_err(|e| e.0)?;
    drop(progress);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&res).map_err(|e| e.to_string())?);
    } else {
        println!("{}", res.line());
    }
    Ok(())
}

fn cmd_sink(a: SinkArgs) -> Result<(), String> {
    let cfg = SinkConfig {
        ifname: a.dev,
        port: a.port,
        duration: a.duration.map(|d| secs(d, "--duration")).transpose()?,
        count: a.count,
        idle: Some(secs(a.idle, "--idle")?),
    };
    let stop = stop_flag();
    let live = Arc::new(sink::Live::default());
    let l2 = live.clone();
    let progress = Progress::start("sink", move || {
        (l2.frames.load(Ordering::Relaxed), l2.bytes.load(Ordering::Relaxed))
    });
    let res = netns::in_netns(a.netns.as_deref(), move || {
        let s = Sink::open(cfg)?;
        Ok::<_, sink::SinkError>(s.run(&stop, &live))
    })
    .map_err(|e| e.to_string())?;
    drop(progress);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&res).map_err(|e| e.to_string())?);
    } else {
        for l in res.lines() {
            println!("{l}");
        }
    }
    Ok(())
}

/// Where tapwayd, tapwayctl and tapway are: next to this binary (target/*/), else the repo's
/// target/release, else target/debug.
fn default_bin_dir() -> std::path::PathBuf {
    let has = |d: &std::path::Path| {
        d.join("tapwayd").is_file() && d.join("tapwayctl").is_file() && d.join("tapway").is_file()
    };
    if let Some(d) = std::env::current_exe().ok().and_then(|e| e.parent().map(std::path::Path::to_path_buf)) {
        if has(&d) {
            return d;
        }
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for p in ["target/release", "target/debug"] {
        let d = repo.join(p);
        if has(&d) {
            return d.canonicalize().unwrap_or(d);
        }
    }
    std::path::PathBuf::from("target/release")
}

fn cmd_run(a: RunArgs) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("`run` builds network namespaces: run it as root".into());
    }
    if !(0.0..1.0).contains(&a.resolution) || a.resolution == 0.0 {
        return Err("--resolution must be in (0, 1)".into());
    }
    for &s in &a.rfc2544_sizes {
        if !(64..=9000).contains(&s) {
            return Err(format!("RFC 2544 size {s} is outside 64..=9000"));
        }
    }
    let bin_dir = a.bin_dir.clone().unwrap_or_else(default_bin_dir);
    if a.rtt_rates.iter().any(|&r| !(r.is_finite() && r > 0.0)) {
        return Err("--rtt-rates must be positive numbers of requests per second".into());
    }
    let mut tapwayd_cores = a.tapwayd_cores.clone();
    let isolate = if a.isolate {
        let asked = cpus::parse_list(&a.tapwayd_cores).map_err(|e| format!("--tapwayd-cores: {e}"))?;
        let plan = cpus::plan(&cpus::allowed(), &asked)?;
        // Before anything is started: every thread and process from here on inherits it.
        cpus::confine(&plan.other_cpus)?;
        tapwayd_cores = cpus::format_list(&plan.datapath_cpus);
        eprintln!("==> CPUs {}", plan.line());
        Some(plan)
    } else {
        None
    };
    let topologies = a.topologies.iter().filter_map(|t| Kind::parse(t)).collect();
    let cfg = RunConfig {
        scenarios: a.scenarios,
        baseline_bridge: a.baseline.is_some(),
        repeat: a.repeat,
        duration: secs(a.duration, "--duration")?,
        sizes: a.sizes,
        flows: a.flows,
        pktgen_threads: a.threads,
        tapwayd_cores,
        poll_modes: dedup(a.poll_mode),
        topologies,
        rtt_rates: a.rtt_rates,
        idle: secs(a.idle, "--idle")?,
        isolate,
        xdp_mode: a.xdp_mode,
        uplink_mtu: a.uplink_mtu,
        bin_dir,
        rfc2544_trial: secs(a.trial, "--trial")?,
        rfc2544_resolution: a.resolution,
        rfc2544_pdr_loss_pct: a.pdr_loss,
        rfc2544_max_trials: a.max_trials,
        rfc2544_sizes: a.rfc2544_sizes,
        no_tcp: a.no_tcp,
        qdisc_bypass: a.qdisc_bypass,
        command: std::env::args().collect(),
    };
    let report = scenario::run(&cfg, stop_flag()).map_err(|e| e.to_string())?;
    write_outputs(&report, a.json.as_deref(), a.markdown.as_deref(), a.svg.as_deref())
}

/// `v` without repeats, in order.
fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn cmd_report(a: ReportArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&a.json).map_err(|e| format!("{}: {e}", a.json.display()))?;
    let report: Report = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a tapway-bench report: {e}", a.json.display()))?;
    if !READABLE.contains(&report.schema.as_str()) {
        return Err(format!(
            "{}: schema `{}`, this tool reads {}",
            a.json.display(),
            report.schema,
            READABLE.join(", ")
        ));
    }
    write_outputs(&report, None, a.markdown.as_deref(), a.svg.as_deref())
}

/// Prints the table and writes the files asked for.
fn write_outputs(
    report: &Report,
    json: Option<&std::path::Path>,
    markdown: Option<&std::path::Path>,
    svg_path: Option<&std::path::Path>,
) -> Result<(), String> {
    print!("{}", report.to_text());
    if let Some(p) = json {
        let j = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(p, j + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("==> JSON report written to {}", p.display());
    }
    if let Some(p) = markdown {
        std::fs::write(p, report.to_markdown()).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("==> Markdown written to {}", p.display());
    }
    if let Some(p) = svg_path {
        svg::write(report, p)?;
        eprintln!("==> SVG written to {}", p.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Pktgen(a) => cmd_pktgen(a),
        Cmd::Sink(a) => cmd_sink(a),
        Cmd::Run(a) => cmd_run(a),
        Cmd::Report(a) => cmd_report(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapway-bench: {e}");
            // Stopped by SIGINT/SIGTERM after a clean teardown: the shell's convention.
            if e == "interrupted" {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
