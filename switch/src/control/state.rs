//! The state file (`<state-dir>/state.json`): every pod port with its netns, ifname, MAC,
//! addresses and owner, written atomically (temp file, fsync, rename, fsync of the directory)
//! after every change. Operators and the CNI plugin's GC can read it; a restarted tapwayd will
//! use it to re-open the pods' persistent TAPs.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tapway_api::PortInfo;

use super::{port_info, Control};
use crate::table::PortKind;

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

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

impl Control {
    /// Saves the pod ports. Failure is logged, not fatal: forwarding does not depend on it.
    pub fn save_state(&self) {
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
        let path = self.state_dir.join("state.json");
        let res = serde_json::to_vec_pretty(&state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomic(&path, &bytes));
        if let Err(e) = res {
            tracing::error!(path = %path.display(), error = %e, "cannot write the state file");
        }
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
