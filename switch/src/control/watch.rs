//! The Kubernetes watch's side of the control plane: its updates go into the service table
//! ([`Control::watch_apply`]), and while it owns the table the other writers (`service_set`,
//! `service_delete`, `service_sync`) are refused unless forced, since two writers would undo
//! each other's changes.

use std::sync::{Arc, Weak};

use tapway_api::{ApiError, ErrorCode, KubeStatus, Op, Request};
use tapway_kube::store::Update;
use tapway_kube::watch::{ServiceSink, Watch};

use super::{api_err, Control};
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
