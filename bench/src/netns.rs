//! Entering a network namespace. `setns(CLONE_NEWNET)` affects only the calling thread (and the
//! threads and processes it creates afterwards), so callers that must stay in their own netns
//! run the work on a dedicated thread with [`in_netns`].

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};
use thiserror::Error;

/// Why a namespace could not be entered.
#[derive(Debug, Error)]
pub enum NetnsError {
    /// The namespace file does not open.
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        /// The path tried.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// setns(2) failed (not root?).
    #[error("setns({path}): {source}")]
    Setns {
        /// The path.
        path: PathBuf,
        /// The error.
        source: nix::Error,
    },
    /// The worker thread died.
    #[error("the thread working in network namespace {0} panicked")]
    Panicked(String),
}

/// `NAME` (under /run/netns) or a path (contains a `/`).
pub fn netns_path(spec: &str) -> PathBuf {
    if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        PathBuf::from("/run/netns").join(spec)
    }
}

/// Moves the calling thread into network namespace `spec` (NAME or PATH).
pub fn enter(spec: &str) -> Result<(), NetnsError> {
    let path = netns_path(spec);
    let f = File::open(&path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Setns { path, source })
}

/// Runs `f` on a new thread inside netns `spec` (`None`: the caller's) and returns its result.
pub fn in_netns<T: Send + 'static, E: From<NetnsError> + Send + 'static>(
    spec: Option<&str>,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    let spec_owned = spec.map(str::to_string);
    let label = spec_owned.clone().unwrap_or_else(|| "(current)".into());
    let h = std::thread::spawn(move || {
        if let Some(s) = &spec_owned {
            enter(s)?;
        }
        f()
    });
    h.join().map_err(|_| E::from(NetnsError::Panicked(label)))?
}
