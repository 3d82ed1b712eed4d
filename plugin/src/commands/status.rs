//! STATUS (spec 1.1.0): can an ADD succeed now? tapwayd must answer, the IPAM plugin must be
//! there, and its own STATUS (when it has one) must pass.

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

/// STATUS.
pub fn cmd_status(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    if loaded.version < Version::V1_1_0 {
        return Err(CniError::IncompatibleVersion(format!(
            "config version {} does not allow STATUS",
            loaded.version
        )));
    }
    let daemon = Daemon::new(loaded.socket()).with_timeout(STATUS_TIMEOUT);
    let info =
        daemon.status().map_err(|e| CniError::Unavailable(format!("tapwayd is not available: {e}")))?;
    log_debug!("tapwayd {} up {} s, {} ports", info.version, info.uptime_secs, info.ports);
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
