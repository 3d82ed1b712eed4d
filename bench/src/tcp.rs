//! TCP throughput with iperf3 (when installed): a server in pod b, a client in pod a, run
//! through `ip netns exec` exactly as bench/tcp.sh does, JSON output parsed.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::topo::{stop_child, Pod};

/// Why an iperf3 run failed.
#[derive(Debug, Error)]
pub enum TcpError {
    /// iperf3 did not start.
    #[error("cannot run iperf3: {0}")]
    Spawn(std::io::Error),
    /// iperf3 failed or printed no result.
    #[error("iperf3 {0}")]
    Failed(String),
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

/// True when `iperf3` runs.
pub fn available() -> bool {
    Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An iperf3 server in a pod; stopped when dropped.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
}

impl Server {
    /// Starts `iperf3 -s -B IP` in `pod` and waits until it listens.
    pub fn start(pod: &Pod) -> Result<Server, TcpError> {
        let ip = pod.ip.to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &pod.netns, "iperf3", "-s", "-B", &ip])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(TcpError::Spawn)?;
        let server = Server { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let out = Command::new("ip")
                .args(["netns", "exec", &pod.netns, "ss", "-ltnH", "sport = :5201"])
                .output();
            if out.is_ok_and(|o| !o.stdout.is_empty()) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(TcpError::Failed(format!("server in {} did not listen", pod.netns)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            stop_child(c);
        }
    }
}

/// Runs the client in `a` against `dst` (pod b's address, or a Service VIP forwarded to its
/// port 5201) for `secs` (after 1 s of warm-up left out) with `streams` parallel streams;
/// Gbit/s received. One retry: the server may still be closing the previous test.
pub fn client(a: &Pod, dst: Ipv4Addr, secs: u64, streams: u32, stop: &AtomicBool) -> Result<f64, TcpError> {
    match client_once(a, dst, secs, streams, stop) {
        Err(TcpError::Failed(_)) if !stop.load(Ordering::Relaxed) => {
            std::thread::sleep(Duration::from_secs(1));
            client_once(a, dst, secs, streams, stop)
        }
        r => r,
    }
}

fn client_once(a: &Pod, dst: Ipv4Addr, secs: u64, streams: u32, stop: &AtomicBool) -> Result<f64, TcpError> {
    let (ip, t, p) = (dst.to_string(), secs.to_string(), streams.to_string());
    let mut child = Command::new("ip")
        .args(["netns", "exec", &a.netns, "iperf3", "-c", &ip, "-t", &t, "-O", "1", "-P", &p, "-J"])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(TcpError::Spawn)?;
    let mut stdout = child.stdout.take();
    // Read stdout on a thread so a chatty iperf3 never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _ = std::io::Read::read_to_string(o, &mut s);
        }
        s
    });
    let deadline = Instant::now() + Duration::from_secs(secs + 30);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            stop_child(child);
            let _ = reader.join();
            return Err(if stop.load(Ordering::Relaxed) {
                TcpError::Interrupted
            } else {
                TcpError::Failed("timed out".into())
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = reader.join().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|_| {
        TcpError::Failed(format!("printed no JSON: {}", out.chars().take(300).collect::<String>()))
    })?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(TcpError::Failed(e.to_string()));
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .map(|b| b / 1e9)
        .ok_or_else(|| TcpError::Failed("result has no end.sum_received.bits_per_second".into()))
}
