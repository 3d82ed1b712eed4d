//! Helpers of `hostile.rs`: a fake tapwayd socket that accepts and never answers, for the DEL
//! whose outcome is unknown.

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How the fake treats a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fake {
    /// Accepts, reads nothing, answers nothing, keeps the connection open (the client times
    /// out).
    Silent,
    /// Reads the request line, then closes without answering (a daemon that died mid-call).
    Hangup,
}

/// A fake daemon listening at a tapwayd socket path; removed on drop.
pub struct FakeDaemon {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    /// Listens at `path` (which must be free) and serves every connection as `mode` says.
    pub fn start(path: &Path, mode: Fake) -> FakeDaemon {
        let listener = UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<UnixStream> = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => match mode {
                        Fake::Silent => held.push(s),
                        Fake::Hangup => {
                            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            let mut line = String::new();
                            let _ = BufReader::new(&s).read_line(&mut line);
                        }
                    },
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeDaemon { path: path.to_path_buf(), stop, thread: Some(thread) }
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
