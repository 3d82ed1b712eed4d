//! A live progress line on a terminal (carriage return, once a second); nothing when stdout is
//! not a TTY, so logs and pipes get only the final lines.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running progress printer; stops and clears its line when dropped.
#[derive(Debug)]
pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Prints `label: N frames, X pps, Y Mb/s` every second from the two counters, when stdout
    /// is a terminal.
    /// `read` returns the running totals (frames, bytes).
    pub fn start(label: &'static str, read: impl Fn() -> (u64, u64) + Send + 'static) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stdout().is_terminal() {
            return Progress { stop, handle: None };
        }
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut pf, mut pb, mut pt) = (0u64, 0u64, Instant::now());
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if pt.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let (f, b) = read();
                let dt = pt.elapsed().as_secs_f64();
                let mut out = std::io::stdout().lock();
                let _ = write!(
                    out,
                    "\r{label}: {f} frames, {:.0} pps, {:.1} Mb/s   ",
                    f.saturating_sub(pf) as f64 / dt,
                    b.saturating_sub(pb) as f64 * 8.0 / dt / 1e6
                );
                let _ = out.flush();
                (pf, pb, pt) = (f, b, Instant::now());
            }
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r{:60}\r", "");
            let _ = out.flush();
        });
        Progress { stop, handle: Some(handle) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
