//! The state files, written atomically (temp file, rename) after every change:
//! - `<state-dir>/state.json`: every pod port with its netns, ifname, MAC, addresses and owner.
//!   A restarted tapwayd re-opens the pods' persistent TAPs from it ([`Control::restore`]), so
//!   pods keep their interfaces, addresses and traffic across a daemon restart without being
//!   recreated.
//! - `<state-dir>/services.json`: every service port, re-programmed at start. A file of its
//!   own, because it can be megabytes (10,000 services) and must not be rewritten on every pod
//!   attach.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tapway_api::PortInfo;

use super::{port_info, Control};
use crate::netlink::Netlink;
use crate::netns;
use crate::port::tap::TapPort;
use crate::stats::PortCounters;
use crate::table::{PortEntry, PortKind, PortMeta, SpoofGuard};

/// Format version of the state file.
pub const STATE_VERSION: u32 = 1;

/// What the state file holds.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Pod ports.
    pub ports: Vec<PortInfo>,
}

/// What the services file holds.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServicesFile {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Service ports.
    pub services: Vec<tapway_api::ServiceSpec>,
}

/// Writes `bytes` to `path` atomically: a reader (a restarted tapwayd) sees the old or the new
/// file, never a mix, whenever this process dies.
///
/// No fsync: the file describes TAPs and netns that live in the running kernel, so it only
/// has to survive a tapwayd restart, which the page cache does; after a power loss or a
/// reboot there is nothing left to restore, and a truncated file is then ignored (logged) by
/// [`Control::restore`]. The two fsyncs cost 3-12 ms per attach and detach on a loaded VM,
/// more than the rest of the attach.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    File::create(&tmp)?.write_all(bytes)?;
    fs::rename(&tmp, path)
}

impl Control {
    /// Saves the pod ports. Failure is logged, not fatal: forwarding does not depend on it.
    pub fn save_state(&self) {
        let _one_writer = self.save_lock.lock().unwrap_or_else(|p| p.into_inner());
        let state = State {
            version: STATE_VERSION,
            ports: self
                .switch
                .ports()
                .iter()
                .filter(|p| p.kind == PortKind::Pod)
                .map(|p| port_info(p))
                .collect(),
        };
        self.write_state_file("state.json", &state);
    }

    /// Saves the service ports (the caller holds the service lock, so writes are ordered).
    pub fn save_services(&self, services: Vec<tapway_api::ServiceSpec>) {
        self.write_state_file("services.json", &ServicesFile { version: STATE_VERSION, services });
    }

    fn write_state_file<T: Serialize>(&self, name: &str, value: &T) {
        let path = self.state_dir.join(name);
        // Compact: the services file is megabytes with 10,000 services.
        let res = serde_json::to_vec(value)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomic(&path, &bytes));
        if let Err(e) = res {
            tracing::error!(path = %path.display(), error = %e, "cannot write the state file");
        }
    }

    fn read_state_file<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        let path = self.state_dir.join(name);
        let bytes = fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "unreadable state file; ignored");
                None
            }
        }
    }
}

impl Control {
    /// Re-opens the pod ports recorded in the state file. A port whose netns or interface is
    /// gone is dropped (and logged); the others are published as before the restart, with the
    /// same port numbers. Returns how many were restored.
    pub fn restore(&self) -> usize {
        if let Some(f) = self.read_state_file::<ServicesFile>("services.json") {
            let services = self.restore_services(f.services);
            if services > 0 {
                tracing::info!(services, "service ports restored from the state file");
            }
        }
        let Some(state) = self.read_state_file::<State>("state.json") else { return 0 };
        let mut restored = 0;
        for info in state.ports {
            match self.restore_port(&info) {
                Ok(()) => restored += 1,
                Err(e) => {
                    tracing::warn!(netns = %info.netns, ifname = %info.ifname, error = %e, "pod port not restored")
                }
            }
        }
        if restored > 0 {
            tracing::info!(restored, "pod ports re-opened from the state file");
        }
        self.save_state();
        restored
    }

    fn restore_port(&self, info: &PortInfo) -> Result<(), tapway_api::ApiError> {
        use tapway_api::{validate, ErrorCode};
        let bad = |m: String| tapway_api::ApiError::new(ErrorCode::InvalidArgument, m);
        let mac = validate::mac(&info.mac).map_err(|e| bad(e.0))?;
        let ips = info
            .ips
            .iter()
            .map(|i| validate::cidr(i).map_err(|e| bad(e.0)))
            .collect::<Result<Vec<_>, _>>()?;
        let netns = Path::new(&info.netns);
        // TUNSETIFF finds the device by name in the netns of the thread that opened the fd.
        let (tap, link) = netns::run_in(netns, || {
            let link = Netlink::new()?
                .link_by_name(&info.ifname)?
                .ok_or_else(|| tapway_api::ApiError::new(ErrorCode::NotFound, "interface is gone"))?;
            if link.mac != Some(mac) {
                return Err(tapway_api::ApiError::new(ErrorCode::Mismatch, "interface MAC changed"));
            }
            Ok((TapPort::open(&info.ifname, true, false)?, link))
        })?;
        let tap = std::sync::Arc::new(tap);
        let entry = std::sync::Arc::new(PortEntry {
            id: info.id,
            kind: PortKind::Pod,
            io: tap.clone(),
            mac,
            guard: Some(SpoofGuard::new(mac, &ips)),
            worker: self.switch.least_loaded_worker(),
            counters: PortCounters::default(),
            police: crate::datapath::police::PortPolice::new(info.bandwidth)
                .with_storm(&self.switch.config.storm),
            meta: PortMeta {
                name: info.name.clone(),
                netns: info.netns.clone(),
                ifname: info.ifname.clone(),
                ifindex: link.index,
                mtu: info.mtu,
                ips,
                owner: info.owner.clone(),
            },
        });
        if self.switch.ports().get(info.id).is_some() {
            return Err(tapway_api::ApiError::new(
                ErrorCode::Exists,
                format!("port number {} is taken", info.id),
            ));
        }
        self.switch.update(|t| (t.with(entry), ()));
        self.pods.lock().unwrap_or_else(|p| p.into_inner()).insert(info.id, tap);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces() {
        let dir = std::env::temp_dir().join(format!("tapway-state-{}", std::process::id()));
        let p = dir.join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!p.with_extension("tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
