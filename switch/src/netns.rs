//! Network namespaces: validating a netns path and running code inside one.
//!
//! `setns(2)` changes the namespace of the calling thread only, so [`run_in`] does the work on
//! a short-lived thread of its own: the control thread and the workers never leave the
//! daemon's namespace.
//!
//! A netns path comes from the caller (CNI `CNI_NETNS`, `tapwayctl attach --netns`), so
//! [`open`] never blocks on it and accepts nothing but a namespace file: it opens with
//! `O_NONBLOCK` (a FIFO would otherwise wait for a writer forever, holding a control slot and
//! the attach lock) and checks with `fstatfs` that the file lives on nsfs before anyone
//! `setns`es into it.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::OFlag;
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
    #[error("{path} is {what}, not a network namespace")]
    NotNetns {
        /// The path.
        path: String,
        /// What it is instead ("a FIFO", "a regular file"...).
        what: &'static str,
    },
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

/// What a file that is not a namespace is, for the error message.
fn kind_of(file: &File) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let Ok(t) = file.metadata().map(|m| m.file_type()) else { return "not a namespace file" };
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a file of another kind"
    }
}

/// Opens `path` without blocking and checks that it is a namespace file (nsfs: a bind mount
/// under /run/netns or /proc/PID/ns/net). FIFOs, devices, directories and regular files are
/// refused with [`NetnsError::NotNetns`] at once.
///
/// Symlinks are followed (no `O_NOFOLLOW`): /proc/PID/ns/net, which runtimes pass, is one, and
/// whatever a link points to still has to pass the nsfs check.
pub fn open(path: &Path) -> Result<File, NetnsError> {
    let shown = path.display().to_string();
    // std adds O_CLOEXEC; O_NOCTTY keeps a terminal path from becoming ours.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(|source| NetnsError::Open { path: shown.clone(), source })?;
    let fs = nix::sys::statfs::fstatfs(&file)
        .map_err(|e| NetnsError::Open { path: shown.clone(), source: e.into() })?;
    #[allow(clippy::unnecessary_cast)]
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(NetnsError::NotNetns { what: kind_of(&file), path: shown });
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

    fn what(path: &Path) -> &'static str {
        match open(path) {
            Err(NetnsError::NotNetns { what, .. }) => what,
            other => panic!("{}: {other:?}", path.display()),
        }
    }

    #[test]
    fn rejects_non_netns() {
        assert!(matches!(open(Path::new("/nonexistent/ns")), Err(NetnsError::Open { .. })));
        assert_eq!(what(Path::new("/etc/hostname")), "a regular file");
        assert_eq!(what(Path::new("/dev/zero")), "a character device");
        assert_eq!(what(Path::new("/tmp")), "a directory");
        let e = open(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(e, "/dev/zero is a character device, not a network namespace");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("tapway-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A blocking open would wait here for a writer that never comes.
        assert_eq!(what(&fifo), "a FIFO");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn own_netns_is_a_netns() {
        // /proc/self/ns/net is on nsfs whenever /proc is mounted.
        assert!(open(Path::new("/proc/self/ns/net")).is_ok());
        // So is a thread's, through the symlinks /proc/thread-self and ns/net.
        assert!(open(Path::new("/proc/thread-self/ns/net")).is_ok());
    }

    #[test]
    fn a_new_netns_is_a_netns() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // A thread in a netns of its own; its ns file is opened from outside.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare");
            tx.send(nix::unistd::gettid()).expect("send");
            let _ = done_rx.recv();
        });
        let tid = rx.recv().expect("tid");
        let path = format!("/proc/self/task/{tid}/ns/net");
        let theirs = open(Path::new(&path)).expect("a new netns opens");
        let ours = open(Path::new("/proc/self/ns/net")).expect("ours");
        use std::os::unix::fs::MetadataExt;
        assert_ne!(theirs.metadata().unwrap().ino(), ours.metadata().unwrap().ino());
        done_tx.send(()).expect("send");
        t.join().expect("thread");
    }

    #[test]
    fn run_in_own_netns() {
        let r: Result<u32, NetnsError> = run_in(Path::new("/proc/self/ns/net"), || Ok(7));
        match r {
            Ok(v) => assert_eq!(v, 7),
            // Without CAP_SYS_ADMIN setns is refused; the path was still accepted.
            Err(e) => assert!(matches!(e, NetnsError::Enter { .. }), "{e}"),
        }
    }
}
