//! Helpers for the persistence and control-socket tests (`hostile_control.rs`): a small tmpfs
//! over a test's state dir, a pod netns taken away and put back, and clients that trickle.
//!
//! Every guard undoes what it did in `Drop`, so a failing test leaves no mount behind.

#![allow(dead_code)] // not every test uses every helper

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::*;

/// A tmpfs of `size` bytes mounted on a directory in a daemon's mount namespace (`ip netns
/// exec` gives it one of its own, so a mount made in the test's after the daemon started
/// would not be seen by it), unmounted on drop. The test sees it through [`Tmpfs::view`].
pub struct Tmpfs {
    pid: u32,
    /// The mount point, as the daemon names it.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts one on `path` (created if needed) for the process `pid`.
    pub fn mount_for(pid: u32, path: &Path, size: usize) -> Tmpfs {
        let pid_s = pid.to_string();
        let opts = format!("size={size},mode=0700");
        let target = path.to_str().expect("a UTF-8 path");
        run_ok("nsenter", &["-t", &pid_s, "-m", "--", "mkdir", "-p", target]);
        run_ok("nsenter", &["-t", &pid_s, "-m", "--", "mount", "-t", "tmpfs", "-o", &opts, "tmpfs", target]);
        Tmpfs { pid, path: path.to_path_buf() }
    }

    /// Remounts it with `opts` (e.g. `ro`, `rw`).
    pub fn remount(&self, opts: &str) {
        let pid = self.pid.to_string();
        let target = self.path.to_str().expect("a UTF-8 path");
        let opts = format!("remount,{opts}");
        run_ok("nsenter", &["-t", &pid, "-m", "--", "mount", "-o", &opts, target]);
    }

    /// The mounted directory as this process reaches it.
    pub fn view(&self) -> PathBuf {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(rel)
    }

    /// Fills it: writes `name` until the disk is full. Returns the file's path.
    pub fn fill(&self, name: &str) -> PathBuf {
        let p = self.view().join(name);
        let mut f = File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        let block = vec![0x55u8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling {}: {e}", p.display());
                    break;
                }
            }
        }
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let pid = self.pid.to_string();
        let target = self.path.display().to_string();
        let out = run("nsenter", &["-t", &pid, "-m", "--", "umount", "-l", &target]);
        if !out.status.success() {
            eprintln!("cleanup: umount {target}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// A pod netns made unusable under its path: the namespace lives on (this guard holds it),
/// but `/run/netns/NAME` is unmounted, so the path is the empty file `ip netns add` left.
/// [`NetnsOutage::end`] (or drop) mounts it back.
pub struct NetnsOutage {
    path: String,
    ns: Option<File>,
}

impl NetnsOutage {
    /// Takes `ns` away.
    pub fn begin(ns: &Netns) -> NetnsOutage {
        let path = ns.path();
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        umount2(path.as_str(), MntFlags::MNT_DETACH).unwrap_or_else(|e| panic!("umount {path}: {e}"));
        NetnsOutage { path, ns: Some(file) }
    }

    /// Puts it back under its path.
    pub fn end(&mut self) {
        let Some(file) = self.ns.take() else { return };
        let src = format!("/proc/self/fd/{}", file.as_raw_fd());
        mount(Some(src.as_str()), self.path.as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .unwrap_or_else(|e| panic!("bind {src} on {}: {e}", self.path));
    }
}

impl Drop for NetnsOutage {
    fn drop(&mut self) {
        if let Some(file) = self.ns.take() {
            let src = format!("/proc/self/fd/{}", file.as_raw_fd());
            let res =
                mount(Some(src.as_str()), self.path.as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>);
            if let Err(e) = res {
                eprintln!("cleanup: bind {src} on {}: {e}", self.path);
            }
        }
    }
}

/// Clients that each connect and send a request one byte at a time, never finishing a line,
/// reconnecting whenever the daemon closes them, until dropped.
pub struct Tricklers {
    stop: Arc<AtomicBool>,
    /// Connections the daemon closed.
    pub cut: Arc<AtomicU64>,
    /// Connections made.
    pub connected: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Tricklers {
    /// Starts `n` of them on `socket`, each writing a byte every `every`.
    pub fn start(socket: &Path, n: usize, every: Duration) -> Tricklers {
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|_| {
                let (socket, stop, cut, connected) =
                    (socket.to_path_buf(), stop.clone(), cut.clone(), connected.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let Ok(mut conn) = UnixStream::connect(&socket) else {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        };
                        connected.fetch_add(1, Ordering::SeqCst);
                        if trickle(&mut conn, every, &stop) {
                            cut.fetch_add(1, Ordering::SeqCst);
                        }
                        // A refused or cut client tries again a little later.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
            })
            .collect();
        Tricklers { stop, cut, connected, threads }
    }
}

impl Drop for Tricklers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends `{"v":1,"op":"status"` a byte at a time, forever, on `conn`; returns true when the
/// daemon closed the connection (a write failed, or it answered and closed), false when told
/// to stop.
pub fn trickle(conn: &mut UnixStream, every: Duration, stop: &AtomicBool) -> bool {
    let _ = conn.set_nonblocking(true);
    let line = br#"{"v":1,"op":"status","pad":""#;
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let byte = if i < line.len() { line[i] } else { b'x' };
        i += 1;
        if conn.write_all(&[byte]).is_err() {
            return true;
        }
        // The daemon closing shows as EOF (or an answer, for a refusal) on the read side.
        let mut buf = [0u8; 512];
        match conn.read(&mut buf) {
            Ok(_) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
        std::thread::sleep(every);
    }
    false
}

/// Waits until `f` holds, polling; panics with `what` after `within`.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port numbers `state.json` in the state dir `dir` lists (it must exist).
pub fn state_ids_at(dir: &Path) -> Vec<u64> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("the state file is JSON");
    v["ports"].as_array().expect("a ports list").iter().filter_map(|p| p["id"].as_u64()).collect()
}

/// The port numbers the node's state file lists.
pub fn state_ids(node: &Node) -> Vec<u64> {
    state_ids_at(&node.dir.join("state"))
}

/// Permission bits of `path`.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}
