//! tapwayd: starts the switch, the host port and the control socket; stops cleanly on
//! SIGTERM/SIGINT, leaving the pods' persistent TAPs in place.
//!
//! Exit status: 0 after SIGTERM/SIGINT, 2 for bad flags or config, 3 when the state files
//! cannot be used (a newer format version, unreadable), 1 for any other failure to start.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tapway_switch::config::{Args, DaemonConfig};
use tapway_switch::control::server::{self, Server};
use tapway_switch::control::state::{self, Saved};
use tapway_switch::control::uplink::OpenUplink;
use tapway_switch::control::Control;
use tapway_switch::metrics::http::MetricsServer;
use tapway_switch::switch::Switch;

fn main() -> ExitCode {
    let cfg = match DaemonConfig::resolve(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tapwayd: {e}");
            return ExitCode::from(2);
        }
    };
    let filter =
        tracing_subscriber::EnvFilter::try_new(format!("{},netlink_packet_route=error", cfg.log_level))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    // Before anything is touched: a running daemon is left alone, and state files this
    // version cannot read stop the start with the files as they are.
    if let Err(e) = server::ensure_free(&cfg.socket) {
        eprintln!("tapwayd: {e}");
        return ExitCode::FAILURE;
    }
    let saved = match state::load(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tapwayd: {e}");
            return ExitCode::from(3);
        }
    };
    match run(cfg, saved) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tapwayd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: DaemonConfig, saved: Saved) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("installing signal handler: {e}"))?;
    }
    // The uplink is bound first: the switch's frame pool lives in its UMEM.
    tapway_switch::port::xdp::quiet_bpf_libraries(matches!(cfg.log_level.as_str(), "debug" | "trace"));
    let uplink = match &cfg.uplink {
        Some(up) => Some(
            OpenUplink::open(up, cfg.mtu, cfg.switch.pool_frames, cfg.switch.cores.len().max(1))
                .map_err(|e| format!("uplink {}: {e}", up.ifname))?,
        ),
        None => None,
    };
    let running = match &uplink {
        Some(up) => Switch::start_with_pool(cfg.switch.clone(), up.pool()),
        None => Switch::start(cfg.switch.clone()),
    }
    .map_err(|e| e.to_string())?;
    let ctl = Arc::new(Control::new(running.switch.clone(), &cfg));
    // Bound early: /healthz answers while pods are restored, /readyz says not ready until
    // the control socket does.
    let metrics = match cfg.metrics_address {
        Some(addr) => match MetricsServer::start(addr, ctl.clone(), cfg.socket.clone()) {
            Ok(m) => {
                tracing::info!(address = %m.local_addr(), "serving /metrics, /healthz and /readyz");
                Some(m)
            }
            Err(e) => {
                running.stop();
                return Err(e.to_string());
            }
        },
        None => None,
    };
    if let Err(e) = ctl.setup_host_port() {
        running.stop();
        return Err(format!("host port {}: {e}", cfg.host_port));
    }
    ctl.restore(saved);
    if let Some(up) = uplink {
        let ifname = cfg.uplink.as_ref().map(|u| u.ifname.clone()).unwrap_or_default();
        if let Err(e) = ctl.attach_uplink(up) {
            running.stop();
            return Err(format!("uplink {ifname}: {e}"));
        }
    }
    let server = match Server::start(ctl.clone(), &cfg.socket, cfg.allow_uids.clone()) {
        Ok(s) => s,
        Err(e) => {
            ctl.shutdown_uplink();
            running.stop();
            return Err(e.to_string());
        }
    };
    tracing::info!(
        socket = %cfg.socket.display(),
        workers = cfg.switch.cores.len(),
        poll_mode = cfg.switch.poll_mode.name(),
        pod_cidrs = ?cfg.pod_cidrs,
        "tapwayd {} ready",
        env!("CARGO_PKG_VERSION")
    );
    let mut ticks = 0u64;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        ticks += 1;
        ctl.metrics.main_beat(running.switch.now());
        if ticks.is_multiple_of(10) {
            let sw = &running.switch;
            ctl.sweep_services();
            ctl.retry_lost();
            let aged = sw.fdb.sweep(sw.now());
            if aged > 0 {
                tracing::debug!(aged, "FDB entries aged out");
            }
            let neigh = sw.neigh.sweep(sw.now());
            if neigh > 0 {
                tracing::debug!(neigh, "neighbour entries aged out");
            }
        }
    }
    tracing::info!("stopping; pod interfaces stay in place");
    if let Some(m) = metrics {
        m.stop();
    }
    server.stop();
    let sw = running.switch.clone();
    running.stop();
    // After the workers: nothing transmits any more; closing the sockets detaches XDP.
    ctl.shutdown_uplink();
    let pool = &sw.pool;
    tracing::info!(
        total = pool.total(),
        free = pool.free_global(),
        outstanding = pool.outstanding(),
        "frame pool at shutdown"
    );
    Ok(())
}
