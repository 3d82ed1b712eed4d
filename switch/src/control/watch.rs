//! The Kubernetes watch's side of the control plane: its updates go into the service table
//! ([`Control::watch_apply`]), and while it owns the table the other writers (`service_set`,
//! `service_delete`, `service_sync`) are refused unless forced, since two writers would undo
//! each other's changes.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tapway_api::{ApiError, ErrorCode, KubeStatus, Op, Request, StatusInfo};
use tapway_kube::store::Update;
use tapway_kube::watch::{ServiceSink, Watch};

use super::server::{Handler, Slots};
use super::{api_err, Control};
use crate::config::DaemonConfig;
use crate::metrics::{WatchKind, WatchReport};

/// Hands the watch's updates to the control plane.
struct Sink(Weak<Control>);

impl ServiceSink for Sink {
    fn apply(&self, update: Update) -> Result<(), String> {
        let ctl = self.0.upgrade().ok_or("tapwayd is stopping")?;
        let r = ctl.watch_apply(update);
        tracing::debug!(
            added = r.added,
            updated = r.updated,
            removed = r.removed,
            us = r.elapsed_us,
            "watch sync"
        );
        Ok(())
    }
}

/// The watch state as the metrics serve it.
fn watch_report(k: &KubeStatus) -> WatchReport {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let kinds = k
        .objects
        .keys()
        .chain(k.events.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|kind| WatchKind {
            kind: kind.clone(),
            objects: k.objects.get(kind).copied().unwrap_or(0),
            // `relists` counts the lists after the first.
            lists: k.relists.get(kind).copied().unwrap_or(0) + 1,
            events: k
                .event_types
                .get(kind)
                .map(|t| t.iter().map(|(ty, n)| (ty.clone(), *n)).collect())
                .unwrap_or_default(),
        })
        .collect();
    WatchReport {
        connected: k.connected,
        state_age_seconds: now.saturating_sub(k.since_unix_secs) as f64,
        last_event_age_seconds: k.last_event_age_secs,
        errors: k.errors,
        kinds,
    }
}

impl Control {
    /// Lets `watch` own the service table from now on.
    pub fn attach_watch(self: &Arc<Self>, watch: Arc<Watch>) {
        watch.set_sink(Arc::new(Sink(Arc::downgrade(self))));
        let w = Arc::downgrade(&watch);
        // Read at each scrape: `status()` takes only the watch's short state lock.
        self.metrics.set_watch(move || w.upgrade().map(|w| watch_report(&w.status())).unwrap_or_default());
        let _ = self.kube.set(watch);
    }

    /// Runs one request, refusing service writes while the watch owns the table and the
    /// request is not forced.
    pub fn handle_request(&self, req: Request) -> Result<serde_json::Value, ApiError> {
        if !req.force {
            self.refuse_if_watched(&req.op)?;
        }
        self.handle(req.op)
    }

    fn refuse_if_watched(&self, op: &Op) -> Result<(), ApiError> {
        let what = match op {
            Op::ServiceSet(_) => "service set",
            Op::ServiceDelete(_) => "service delete",
            Op::ServiceSync(_) => "sync",
            _ => return Ok(()),
        };
        match self.kube.get() {
            Some(w) if w.owns_services() => Err(api_err(
                ErrorCode::FailedPrecondition,
                format!(
                    "{what} refused: tapwayd follows the Kubernetes API ({}), which owns the service \
                     table; two writers would undo each other's changes. Change the Services and \
                     EndpointSlices in the cluster instead, or pass --force (the watch puts its own \
                     state back at its next change to those services or its next relist)",
                    w.status().server
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Why tapwayd cannot serve yet while it has no pod range: the watch's own reason while it
/// waits for the Node, or that the switch is still being set up once the range is known.
pub fn pod_range_pending(watch: &Watch) -> (String, KubeStatus) {
    let k = watch.status();
    let why = match &k.waiting {
        Some(_) => format!(
            "waiting for the pod range: Node {} has no spec.podCIDRs",
            k.node.as_deref().unwrap_or_default()
        ),
        None => "starting: the pod range is known, the switch is being set up".to_string(),
    };
    (why, k)
}

/// The control socket's handler while tapwayd waits for the Node's pod range (it has no
/// switch and no [`Control`] yet): `status` says not ready and why, so `tapwayctl status`
/// and the CNI plugin's STATUS can tell a waiting daemon from a dead one; every other op is
/// refused with `failed_precondition`, which the plugin turns into "try again later".
pub fn waiting_handler(watch: Arc<Watch>, slots: Arc<Slots>, cfg: &DaemonConfig) -> Handler {
    let started = Instant::now();
    let base = StatusInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        poll_mode: cfg.switch.poll_mode.name().to_string(),
        host_port: cfg.host_port.clone(),
        control_max: slots.max(),
        ..StatusInfo::default()
    };
    Arc::new(move |req: Request| {
        let (why, kube) = pod_range_pending(&watch);
        match req.op {
            Op::Status => {
                let info = StatusInfo {
                    uptime_secs: started.elapsed().as_secs(),
                    not_ready: vec![why],
                    control_connections: slots.in_use(),
                    kube: Some(kube),
                    ..base.clone()
                };
                serde_json::to_value(info).map_err(|e| api_err(ErrorCode::System, e.to_string()))
            }
            _ => Err(api_err(ErrorCode::FailedPrecondition, format!("tapwayd is not serving yet: {why}"))),
        }
    })
}
