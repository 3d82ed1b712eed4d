//! tapway-bench: packet generator, sink, and side-by-side scenario runs (see `--help`).

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tapway_bench::frame::SizeMix;
use tapway_bench::pktgen::{self, PktgenConfig, DEFAULT_PORT};
use tapway_bench::progress::Progress;
use tapway_bench::sink::{self, Sink, SinkConfig};
use tapway_bench::{iface, netns};

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
    /// Print the result as JSON instead of text
    #[arg(long)]
    json: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Pktgen(a) => cmd_pktgen(a),
        Cmd::Sink(a) => cmd_sink(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapway-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
