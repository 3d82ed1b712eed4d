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
use tapway_kube::watch::Watch;
use tapway_switch::config::{Args, DaemonConfig};
use tapway_switch::control::server::{self, Server, Slots};
use tapway_switch::control::state::{self, Saved};
use tapway_switch::control::uplink::OpenUplink;
use tapway_switch::control::watch::{pod_range_pending, waiting_handler};
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

fn run(mut cfg: DaemonConfig, saved: Saved) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("installing signal handler: {e}"))?;
    }
    // The watch starts first: without --pod-cidr the pod range is the Node's, and the host
    // port, the gateway and the attaches all follow from it.
    let watch = match cfg.kube.clone() {
        Some(k) => Some(start_watch(&k)?),
        None => None,
    };
    // Bound first, so the probes answer during the wait for the pod range too: alive, not
    // ready, and why.
    let metrics = match cfg.metrics_address {
        Some(addr) => {
            let w = watch.clone();
            let waiting: tapway_switch::metrics::http::Waiting = Arc::new(move || match &w {
                Some(w) => pod_range_pending(w).0,
                None => "starting: the switch is being set up".to_string(),
            });
            let m = MetricsServer::start_waiting(addr, waiting).map_err(|e| e.to_string())?;
            tracing::info!(address = %m.local_addr(), "serving /metrics, /healthz and /readyz");
            Some(m)
        }
        None => None,
    };
    let mut standin = None;
    if let Some(w) = &watch {
        if !wait_pod_range(w, &mut cfg, &stop, &mut standin)? {
            return Ok(());
        }
    }
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    let result = serve(cfg, saved, &stop, watch, metrics, &mut standin);
    // On a failed start: the stand-in goes, and its socket file with it.
    if let Some(s) = standin.take() {
        s.stop();
    }
    result
}

/// Sets the switch up and serves it until `stop`; `standin`, the socket's stand-in server
/// of the wait for the pod range, gives the socket up just before the real server binds it.
fn serve(
    cfg: DaemonConfig,
    saved: Saved,
    stop: &AtomicBool,
    watch: Option<Arc<Watch>>,
    metrics: Option<MetricsServer>,
    standin: &mut Option<Server>,
) -> Result<(), String> {
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
    // From here /healthz reads the workers' heartbeats while pods are restored, and /readyz
    // says not ready until the control socket does.
    if let Some(m) = &metrics {
        m.serve_control(ctl.clone(), cfg.socket.clone());
    }
    if let Err(e) = ctl.setup_host_port() {
        running.stop();
        return Err(format!("host port {}: {e}", cfg.host_port));
    }
    ctl.restore(saved);
    if let Some(w) = &watch {
        ctl.attach_watch(w.clone());
    }
    if let Some(up) = uplink {
        let ifname = cfg.uplink.as_ref().map(|u| u.ifname.clone()).unwrap_or_default();
        if let Err(e) = ctl.attach_uplink(up) {
            running.stop();
            return Err(format!("uplink {ifname}: {e}"));
        }
    }
    if let Some(s) = standin.take() {
        s.stop();
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
    if let Some(w) = &watch {
        w.stop();
    }
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

/// Starts following the Kubernetes API.
fn start_watch(k: &tapway_switch::config::KubeConfig) -> Result<Arc<Watch>, String> {
    let opts = tapway_kube::watch::WatchOptions {
        kubeconfig: k.kubeconfig.clone(),
        node_name: k.node_name.clone(),
        window: tapway_kube::watch::DEFAULT_WINDOW,
    };
    Watch::start(opts).map_err(|e| e.to_string())
}

/// With a node name and no `--pod-cidr`, waits for the Node's pod ranges into `cfg`. The
/// control socket is served meanwhile by a stand-in (left in `standin`) so that `status`
/// says why tapwayd is not ready and attaches get a clear refusal instead of no socket.
/// False when `stop` was raised first.
fn wait_pod_range(
    watch: &Arc<Watch>,
    cfg: &mut DaemonConfig,
    stop: &AtomicBool,
    standin: &mut Option<Server>,
) -> Result<bool, String> {
    if !cfg.pod_cidrs.is_empty() {
        return Ok(true);
    }
    if cfg.kube.as_ref().is_none_or(|k| k.node_name.is_none()) {
        tracing::warn!("no --pod-cidr and no --node-name (NODE_NAME): pods get no gateway");
        return Ok(true);
    }
    let slots = Slots::new(server::MAX_CONNECTIONS);
    let handler = waiting_handler(watch.clone(), slots.clone(), cfg);
    let s = Server::serve(&cfg.socket, cfg.allow_uids.clone(), slots, handler).map_err(|e| e.to_string())?;
    let Some(cidrs) = watch.wait_pod_cidrs(stop) else {
        s.stop();
        return Ok(false);
    };
    if let Err(e) = tapway_switch::config::check_pod_cidrs(&cidrs, &cfg.service_cidrs) {
        s.stop();
        return Err(format!("the Node's spec.podCIDRs: {e}"));
    }
    *standin = Some(s);
    cfg.pod_cidrs = cidrs;
    Ok(true)
}
