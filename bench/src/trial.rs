//! One measurement: a sink in the receiving namespace, the generator in the sending one, and
//! the loss counted against what was sent per flow (so tail loss counts too).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::netns::{self, NetnsError};
use crate::pktgen::{self, PktgenConfig, PktgenError, PktgenResult};
use crate::sink::{self, Sink, SinkConfig, SinkError, SinkResult};

/// Why a trial failed.
#[derive(Debug, Error)]
pub enum TrialError {
    /// Generator.
    #[error("pktgen: {0}")]
    Pktgen(#[from] PktgenError),
    /// Sink.
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    /// Namespace.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The sink thread died.
    #[error("the sink thread ended early")]
    SinkGone,
}

/// Where the two ends run.
#[derive(Debug, Clone)]
pub struct TrialSpec {
    /// Netns of the generator (`None`: this one).
    pub tx_netns: Option<String>,
    /// Netns of the sink (`None`: this one).
    pub rx_netns: Option<String>,
    /// Receiving interface.
    pub rx_ifname: String,
    /// The generator's parameters (the sink listens on its `dst_port`).
    pub pktgen: PktgenConfig,
    /// How long the sink keeps listening after the generator stopped.
    pub grace: Duration,
}

/// Both ends' view of a trial.
#[derive(Debug, Clone, Serialize)]
pub struct TrialResult {
    /// The generator's counters.
    pub pktgen: PktgenResult,
    /// The sink's counters.
    pub sink: SinkResult,
    /// Frames sent but not received.
    pub lost: u64,
    /// `lost` over sent, in %.
    pub loss_pct: f64,
}

/// Runs one trial; `stop` ends it early (Ctrl-C).
pub fn run(spec: &TrialSpec, stop: &Arc<AtomicBool>) -> Result<TrialResult, TrialError> {
    let sink_stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), SinkError>>();
    let rx_ns = spec.rx_netns.clone();
    let scfg = SinkConfig {
        ifname: spec.rx_ifname.clone(),
        port: spec.pktgen.dst_port,
        duration: None,
        count: None,
        idle: None,
    };
    let ss = sink_stop.clone();
    let sink_thread = std::thread::spawn(move || -> Option<SinkResult> {
        let opened = (|| {
            if let Some(n) = &rx_ns {
                netns::enter(n)?;
            }
            Sink::open(scfg)
        })();
        match opened {
            Ok(s) => {
                let _ = ready_tx.send(Ok(()));
                Some(s.run(&ss, &sink::Live::default()))
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                None
            }
        }
    });
    let ready = ready_rx.recv().map_err(|_| TrialError::SinkGone)?;
    if let Err(e) = ready {
        let _ = sink_thread.join();
        return Err(e.into());
    }
    let cfg = spec.pktgen.clone();
    let st = stop.clone();
    let tx = netns::in_netns(spec.tx_netns.as_deref(), move || {
        pktgen::run(&cfg, &st, &pktgen::Live::default()).map_err(TrialError::from)
    });
    if tx.is_ok() {
        std::thread::sleep(spec.grace);
    }
    sink_stop.store(true, Ordering::Relaxed);
    let rx = sink_thread.join().ok().flatten();
    let tx = tx?;
    let rx = rx.ok_or(TrialError::SinkGone)?;
    let lost = rx.lost_vs_sent(&tx.per_flow);
    let loss_pct = if tx.sent > 0 { 100.0 * lost as f64 / tx.sent as f64 } else { 0.0 };
    Ok(TrialResult { pktgen: tx, sink: rx, lost, loss_pct })
}
