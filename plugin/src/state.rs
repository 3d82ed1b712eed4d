//! The plugin's own state, shared by every invocation on the node: ports whose detach is
//! pending because tapwayd was down when DEL ran.
//!
//! Layout under the state directory (default `/var/lib/tapway/cni`, mode 0700):
//! * `lock`: every read-modify-write of the state holds an exclusive `flock` on it;
//! * `pending.json`: a JSON array of [`PendingDetach`], replaced atomically (write to a
//!   temporary file, fsync, rename).
//!
//! Invocations that reach tapwayd drain the entries of their socket: ADD before it attaches
//! (so a container that comes back under the same ID cannot lose its new port to an old
//! entry), DEL, and GC.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::CniError;

/// A port to detach once tapwayd answers again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDetach {
    /// tapwayd socket the port belongs to.
    pub socket: String,
    /// `CNI_CONTAINERID` of the DEL.
    pub container_id: String,
    /// `CNI_IFNAME` of the DEL.
    pub ifname: String,
    /// Network name of the DEL's netconf.
    #[serde(default)]
    pub network: String,
    /// When the DEL recorded it (seconds since the epoch).
    #[serde(default)]
    pub since: u64,
    /// The DEL got no answer and kept the addresses: once the detach is done (the port is
    /// known gone), an invocation of the same network releases them (IPAM DEL).
    #[serde(default)]
    pub release_ip: bool,
}

/// What to do with a pending entry after trying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Done (detached, or nothing to detach): forget it.
    Done,
    /// Keep it and try the next one.
    Keep,
    /// Keep it and stop (tapwayd went away).
    Stop,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// An exclusive lock on the state; released on drop (closing the file drops the flock).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::Io(format!("{what} {}: {e}", path.display()))
}

impl StateDir {
    /// The state directory at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    fn pending_path(&self) -> PathBuf {
        self.dir.join("pending.json")
    }

    /// Takes the exclusive lock, creating the directory and lock file if needed.
    pub fn lock(&self) -> Result<StateLock, CniError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| io_err("creating", &self.dir, e))?;
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err("opening", &path, e))?;
        loop {
            // SAFETY: flock on a file descriptor this function owns (`file` is alive for the
            // call); it takes no pointers.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(io_err("locking", &path, e));
            }
        }
        Ok(StateLock { _file: file })
    }

    /// Reads the pending entries (caller holds the lock). A corrupt file is reported and
    /// treated as empty so it cannot wedge every later invocation.
    fn read(&self, _lock: &StateLock) -> Result<Vec<PendingDetach>, CniError> {
        let path = self.pending_path();
        match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Vec::new()),
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(list) => Ok(list),
                Err(e) => {
                    crate::log_error!("ignoring corrupt {}: {e}", path.display());
                    Ok(Vec::new())
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("reading", &path, e)),
        }
    }

    /// Replaces the pending entries atomically (caller holds the lock).
    fn write(&self, _lock: &StateLock, list: &[PendingDetach]) -> Result<(), CniError> {
        let path = self.pending_path();
        if list.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err("removing", &path, e)),
                _ => Ok(()),
            };
        }
        let tmp = self.dir.join(format!(".pending.json.{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(list).map_err(|e| CniError::Io(e.to_string()))?;
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err("creating", &tmp, e))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| io_err("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err("renaming", &tmp, e))
    }

    /// Records a port to detach later. Recording the same port twice keeps one entry (which
    /// releases the addresses if either recording asked for it).
    pub fn record(&self, mut entry: PendingDetach) -> Result<(), CniError> {
        let lock = self.lock()?;
        let mut list = self.read(&lock)?;
        if let Some(p) = list.iter_mut().find(|p| same_port(p, &entry)) {
            if entry.release_ip && !p.release_ip {
                p.release_ip = true;
                return self.write(&lock, &list);
            }
            return Ok(());
        }
        if entry.since == 0 {
            entry.since = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        }
        list.push(entry);
        self.write(&lock, &list)
    }

    /// All pending entries (takes the lock).
    pub fn pending(&self) -> Result<Vec<PendingDetach>, CniError> {
        if !self.pending_path().exists() {
            return Ok(Vec::new());
        }
        let lock = self.lock()?;
        self.read(&lock)
    }

    /// Offers every entry of `socket` to `detach` under the lock and forgets those it
    /// reports done. Returns the entries forgotten. Costs one `stat` when nothing is pending.
    pub fn drain(
        &self,
        socket: &str,
        mut detach: impl FnMut(&PendingDetach) -> Drained,
    ) -> Result<Vec<PendingDetach>, CniError> {
        if !self.pending_path().exists() {
            return Ok(Vec::new());
        }
        let lock = self.lock()?;
        let list = self.read(&lock)?;
        let (mut keep, mut done) = (Vec::new(), Vec::new());
        let mut stopped = false;
        for entry in list {
            if stopped || entry.socket != socket {
                keep.push(entry);
                continue;
            }
            match detach(&entry) {
                Drained::Done => done.push(entry),
                Drained::Keep => keep.push(entry),
                Drained::Stop => {
                    stopped = true;
                    keep.push(entry);
                }
            }
        }
        if !done.is_empty() {
            self.write(&lock, &keep)?;
        }
        Ok(done)
    }
}

fn same_port(a: &PendingDetach, b: &PendingDetach) -> bool {
    a.socket == b.socket && a.container_id == b.container_id && a.ifname == b.ifname
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A scratch state directory (one level below a fresh directory, so `lock` has to create
    /// it), removed on drop.
    struct Scratch {
        root: PathBuf,
        state: StateDir,
    }

    impl std::ops::Deref for Scratch {
        type Target = StateDir;
        fn deref(&self) -> &StateDir {
            &self.state
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn scratch(tag: &str) -> Scratch {
        let root = std::env::temp_dir().join(format!(
            "tapway-state-test-{}-{tag}-{}",
            std::process::id(),
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
        ));
        Scratch { state: StateDir::new(root.join("nested")), root }
    }

    fn entry(socket: &str, cid: &str) -> PendingDetach {
        PendingDetach {
            socket: socket.into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            network: "n".into(),
            since: 0,
            release_ip: false,
        }
    }

    #[test]
    fn record_and_drain() {
        let s = scratch("rd");
        assert!(s.pending().unwrap().is_empty());
        assert!(s.drain("/a", |_| Drained::Done).unwrap().is_empty());
        s.record(entry("/a", "c1")).unwrap();
        s.record(entry("/a", "c1")).unwrap();
        s.record(entry("/a", "c2")).unwrap();
        s.record(entry("/b", "c3")).unwrap();
        assert_eq!(s.pending().unwrap().len(), 3);
        assert!(s.pending().unwrap()[0].since > 0);

        // c1 done, c2 kept.
        let done =
            s.drain("/a", |p| if p.container_id == "c1" { Drained::Done } else { Drained::Keep }).unwrap();
        assert_eq!(done.len(), 1);
        let left: Vec<String> = s.pending().unwrap().into_iter().map(|p| p.container_id).collect();
        assert_eq!(left, vec!["c2", "c3"]);

        // Stop keeps the rest untouched.
        let mut seen = 0;
        s.record(entry("/a", "c4")).unwrap();
        assert!(s
            .drain("/a", |_| {
                seen += 1;
                Drained::Stop
            })
            .unwrap()
            .is_empty());
        assert_eq!(seen, 1);
        assert_eq!(s.drain("/a", |_| Drained::Done).unwrap().len(), 2);
        assert_eq!(s.drain("/b", |_| Drained::Done).unwrap().len(), 1);
        assert!(!s.pending_path().exists(), "empty list removes the file");
    }

    #[test]
    fn a_kept_address_survives_a_second_record() {
        let s = scratch("hold");
        s.record(entry("/a", "c1")).unwrap();
        s.record(PendingDetach { release_ip: true, ..entry("/a", "c1") }).unwrap();
        s.record(entry("/a", "c1")).unwrap();
        let p = s.pending().unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0].release_ip, "the DEL that kept the address is not forgotten");
        // Files written before the field existed read as "released already".
        let old: PendingDetach =
            serde_json::from_str(r#"{"socket":"/a","container_id":"c","ifname":"eth0"}"#).unwrap();
        assert!(!old.release_ip);
    }

    #[test]
    fn corrupt_file_is_ignored() {
        let s = scratch("corrupt");
        drop(s.lock().unwrap());
        std::fs::write(s.pending_path(), b"{garbage").unwrap();
        assert!(s.pending().unwrap().is_empty());
        s.record(entry("/a", "c1")).unwrap();
        assert_eq!(s.pending().unwrap().len(), 1);
    }

    #[test]
    fn concurrent_records_are_not_lost() {
        let s = scratch("conc");
        std::thread::scope(|scope| {
            for i in 0..16 {
                let s = &s;
                scope.spawn(move || s.record(entry("/a", &format!("c{i}"))).unwrap());
            }
        });
        assert_eq!(s.pending().unwrap().len(), 16);
    }
}
