//! The Kubernetes watch's side of the control plane: its updates go into the service table
//! ([`Control::watch_apply`]), and while it owns the table the other writers (`service_set`,
//! `service_delete`, `service_sync`) are refused unless forced, since two writers would undo
//! each other's changes.

use std::sync::{Arc, Weak};

use tapway_api::{ApiError, ErrorCode, Op, Request};
use tapway_kube::store::Update;
use tapway_kube::watch::{ServiceSink, Watch};

use super::{api_err, Control};

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

impl Control {
    /// Lets `watch` own the service table from now on.
    pub fn attach_watch(self: &Arc<Self>, watch: Arc<Watch>) {
        watch.set_sink(Arc::new(Sink(Arc::downgrade(self))));
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
