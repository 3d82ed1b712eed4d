//! Network namespaces: validating a netns path and running code inside one.
//!
//! `setns(2)` changes the namespace of the calling thread only, so [`run_in`] does the work on
//! a short-lived thread of its own: the control thread and the workers never leave the
//! daemon's namespace.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

/// `NSFS_MAGIC` from <linux/magic.h>: the filesystem of /proc/PID/ns/* and their bind mounts.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Why a netns could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path does not exist or cannot be opened.
    #[error("netns {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The path exists but is not a network namespace.
    #[error("{0} is not a network namespace")]
    NotNetns(String),
    /// `setns` failed.
    #[error("entering netns {path}: {source}")]
    Enter {
        /// The path.
        path: String,
        /// Why.
        source: nix::Error,
    },
    /// The helper thread panicked.
    #[error("netns helper thread failed")]
    Thread,
}

/// Opens `path` and checks that it is a network namespace.
pub fn open(path: &Path) -> Result<File, NetnsError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| NetnsError::Open { path: shown.clone(), source })?;
    let fs = nix::sys::statfs::fstatfs(&file)
        .map_err(|e| NetnsError::Open { path: shown.clone(), source: e.into() })?;
    #[allow(clippy::unnecessary_cast)]
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(NetnsError::NotNetns(shown));
    }
    Ok(file)
}

/// Runs `f` in the network namespace at `path` and returns its result.
pub fn run_in<T, E, F>(path: &Path, f: F) -> Result<T, E>
where
    T: Send,
    E: Send + From<NetnsError>,
    F: FnOnce() -> Result<T, E> + Send,
{
    let ns = open(path)?;
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetnsError::Enter { path: path.display().to_string(), source })?;
            f()
        });
        handle.join().unwrap_or_else(|_| Err(NetnsError::Thread.into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_netns() {
        assert!(matches!(open(Path::new("/nonexistent/ns")), Err(NetnsError::Open { .. })));
        assert!(matches!(open(Path::new("/etc/hostname")), Err(NetnsError::NotNetns(_))));
    }

    #[test]
    fn own_netns_is_a_netns() {
        // /proc/self/ns/net is on nsfs whenever /proc is mounted.
        assert!(open(Path::new("/proc/self/ns/net")).is_ok());
    }
}
