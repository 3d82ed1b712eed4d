//! tapwayd, as the plugin uses it: typed calls over `tapway_api::Client`.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tapway_api::{
    AttachRequest, Attachment, CheckRequest, Client, ClientError, DetachResult, ErrorCode, GcRequest,
    GcResult, IpamAllocateRequest, IpamAllocation, IpamGcResult, IpamKey, IpamReleaseResult, Op, PortInfo,
    PortSelector, StatusInfo,
};

use crate::error::is_unreachable;
use crate::log_debug;
use crate::state::{Drained, PendingDetach, StateDir};

/// A tapwayd control socket.
#[derive(Debug, Clone)]
pub struct Daemon {
    client: Client,
}

impl Daemon {
    /// tapwayd at `socket`.
    pub fn new(socket: &str) -> Daemon {
        Daemon { client: Client::new(socket) }
    }

    /// tapwayd as the netconf names it: its socket, and its `daemonTimeoutSeconds` if set.
    pub fn for_conf(loaded: &crate::netconf::Loaded) -> Daemon {
        let d = Daemon::new(loaded.socket());
        match loaded.daemon_timeout() {
            Some(t) => d.with_timeout(t),
            None => d,
        }
    }

    /// The same socket with a shorter per-call timeout (STATUS must answer quickly).
    pub fn with_timeout(self, timeout: Duration) -> Daemon {
        Daemon { client: self.client.with_timeout(timeout) }
    }

    /// The socket path.
    pub fn socket(&self) -> String {
        self.client.path().display().to_string()
    }

    fn call<T: DeserializeOwned>(&self, what: &str, op: Op) -> Result<T, ClientError> {
        let started = Instant::now();
        let r = self.client.call(op);
        log_debug!(
            "tapwayd {what}: {} in {:.1} ms",
            match &r {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            },
            started.elapsed().as_secs_f64() * 1000.0
        );
        r
    }

    /// Creates and configures the pod port.
    pub fn attach(&self, req: AttachRequest) -> Result<PortInfo, ClientError> {
        self.call("attach", Op::Attach(req))
    }

    /// Removes the port of `container_id`/`ifname`; `Ok(false)` when there was none.
    pub fn detach(&self, container_id: &str, ifname: &str) -> Result<bool, ClientError> {
        let sel = PortSelector {
            netns: None,
            container_id: Some(container_id.to_string()),
            ifname: ifname.to_string(),
        };
        match self.call::<DetachResult>("detach", Op::Detach(sel)) {
            Ok(r) => Ok(r.detached),
            Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Verifies a port against what ADD set up.
    pub fn check(&self, req: CheckRequest) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("check", Op::Check(req)).map(drop)
    }

    /// Daemon status.
    pub fn status(&self) -> Result<StatusInfo, ClientError> {
        self.call("status", Op::Status)
    }

    /// Every port.
    pub fn ports(&self) -> Result<Vec<PortInfo>, ClientError> {
        self.call("ports", Op::Ports)
    }

    /// `tapway-ipam` ADD: the owner's allocation.
    pub fn ipam_allocate(&self, req: IpamAllocateRequest) -> Result<IpamAllocation, ClientError> {
        self.call("ipam_allocate", Op::IpamAllocate(req))
    }

    /// `tapway-ipam` DEL: `Ok(false)` when the owner held nothing.
    pub fn ipam_release(&self, key: IpamKey) -> Result<bool, ClientError> {
        self.call::<IpamReleaseResult>("ipam_release", Op::IpamRelease(key)).map(|r| r.released)
    }

    /// `tapway-ipam` CHECK: the owner's allocation (`not_found` when none).
    pub fn ipam_check(&self, key: IpamKey) -> Result<IpamAllocation, ClientError> {
        self.call("ipam_check", Op::IpamCheck(key))
    }

    /// `tapway-ipam` GC: releases the network's allocations not in `valid`.
    pub fn ipam_gc(&self, network: &str, valid: Vec<Attachment>) -> Result<IpamGcResult, ClientError> {
        self.call("ipam_gc", Op::IpamGc(GcRequest { network: network.to_string(), valid }))
    }

    /// Detaches every port of `network` not in `valid`.
    pub fn gc(&self, network: &str, valid: Vec<Attachment>) -> Result<GcResult, ClientError> {
        self.call("gc", Op::Gc(GcRequest { network: network.to_string(), valid }))
    }

    /// Detaches what earlier DELs could not, for this socket. Best effort: failures are
    /// logged and left for the next invocation. Entries whose addresses are still held are
    /// left to invocations of their own `network`, which can release them.
    pub fn drain_pending(&self, state: &StateDir, network: &str) -> Vec<PendingDetach> {
        let socket = self.socket();
        let drained = state.drain(&socket, |p| {
            if p.release_ip && p.network != network {
                return Drained::Keep;
            }
            self.drain_one(p)
        });
        match drained {
            Ok(done) => done,
            Err(e) => {
                crate::log_warn!("cannot process pending detaches: {e}");
                Vec::new()
            }
        }
    }

    fn drain_one(&self, p: &PendingDetach) -> Drained {
        match self.detach(&p.container_id, &p.ifname) {
            Ok(detached) => {
                crate::log_info!(
                    "pending detach of {}/{} done (port {})",
                    p.container_id,
                    p.ifname,
                    if detached { "removed" } else { "was already gone" }
                );
                Drained::Done
            }
            Err(e) if is_unreachable(&e) => Drained::Stop,
            Err(e) => {
                crate::log_warn!("pending detach of {}/{} failed: {e}", p.container_id, p.ifname);
                Drained::Keep
            }
        }
    }
}
