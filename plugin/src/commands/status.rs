//! STATUS (spec 1.1.0): can an ADD succeed now? tapwayd must answer and report itself ready
//! (its `status` has no `not_ready` reasons), the IPAM plugin must be there, and its own STATUS
//! (when it has one) must pass.

use std::time::Duration;

use crate::daemon::Daemon;
use crate::env::CniEnv;
use crate::error::CniError;
use crate::ipam::Ipam;
use crate::log_debug;
use crate::netconf::Loaded;
use crate::version::Version;

/// How long STATUS waits for tapwayd: runtimes call it often and expect a quick answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// STATUS's question to tapwayd (also `tapway-ipam`'s): it answers within [`STATUS_TIMEOUT`]
/// (or 1.1.0's config says STATUS is not allowed) and reports no `not_ready` reason.
pub fn daemon_ready(loaded: &Loaded, daemon: &Daemon) -> Result<(), CniError> {
    if loaded.version < Version::V1_1_0 {
        return Err(CniError::IncompatibleVersion(format!(
            "config version {} does not allow STATUS",
            loaded.version
        )));
    }
    let daemon = daemon.clone().with_timeout(STATUS_TIMEOUT);
    let info =
        daemon.status().map_err(|e| CniError::Unavailable(format!("tapwayd is not available: {e}")))?;
    log_debug!("tapwayd {} up {} s, {} ports", info.version, info.uptime_secs, info.ports);
    if !info.not_ready.is_empty() {
        return Err(CniError::Unavailable(format!("tapwayd is not ready: {}", info.not_ready.join("; "))));
    }
    Ok(())
}

/// STATUS.
pub fn cmd_status(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    daemon_ready(loaded, &Daemon::new(loaded.socket()))?;
    let ipam = match Ipam::open(loaded, &env.path) {
        Ok(ipam) => ipam,
        // No IPAM plugin, no ADD.
        Err(e @ (CniError::Ipam { .. } | CniError::IpamFailed { .. })) => {
            return Err(CniError::Unavailable(e.to_string()))
        }
        Err(e) => return Err(e),
    };
    if let Some(ipam) = ipam {
        if !ipam.status()? {
            log_debug!("IPAM {} has no STATUS (speaks up to {})", ipam.name(), ipam.version());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Command;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A one-shot tapwayd stand-in: answers one request with `result` as `status`.
    fn stub_daemon(dir: &std::path::Path, result: serde_json::Value) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(dir.join("s.sock")).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            assert!(line.contains("\"status\""), "{line}");
            let answer = serde_json::json!({"v": 1, "ok": true, "result": result});
            (&stream).write_all(format!("{answer}\n").as_bytes()).unwrap();
        })
    }

    fn status_with(result: serde_json::Value) -> Result<(), CniError> {
        let dir = std::env::temp_dir().join(format!(
            "tapway-status-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let stub = stub_daemon(&dir, result);
        // No ipam: only tapwayd's answer decides.
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"n","type":"tapway","socket":"{}","stateDir":"{}"}}"#,
            dir.join("s.sock").display(),
            dir.join("state").display()
        );
        let loaded = Loaded::parse(conf.as_bytes(), Command::Status).unwrap();
        let env = CniEnv::load(|k: &str| match k {
            "CNI_COMMAND" => Some("STATUS".to_string()),
            "CNI_PATH" => Some("/nonexistent".to_string()),
            _ => None,
        })
        .unwrap();
        let r = cmd_status(&env, &loaded);
        stub.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn status_follows_the_daemon_readiness() {
        let base = serde_json::json!({"version": "0.1.0", "uptime_secs": 5, "ports": 1});
        assert!(status_with(base.clone()).is_ok(), "an answer without not_ready (older tapwayd) is ready");
        let mut busy = base.clone();
        busy["not_ready"] = serde_json::json!(["no free port: all 4096 are in use"]);
        let e = status_with(busy).unwrap_err();
        assert_eq!(e.code(), 50);
        assert!(e.to_string().contains("no free port"), "{e}");
        let mut empty = base;
        empty["not_ready"] = serde_json::json!([]);
        assert!(status_with(empty).is_ok());
    }
}
