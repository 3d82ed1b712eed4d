//! DEL: best effort and idempotent. Detach the port (recording it as pending when tapwayd is
//! down), always run IPAM DEL, succeed when there was nothing to remove.

use crate::daemon::Daemon;
use crate::env::CniEnv;
use crate::error::{is_unreachable, CniError};
use crate::ipam::Ipam;
use crate::netconf::Loaded;
use crate::state::{PendingDetach, StateDir};
use crate::{log_info, log_warn};

/// DEL. CNI_NETNS may be empty or name a netns that is gone: the port is found by container
/// ID and interface name. Both halves always run, side by side (they are independent, so DEL
/// takes as long as the slower one; the reference `bridge` plugin even releases the addresses
/// before it deletes the link). The detach's error wins over IPAM's.
pub fn cmd_del(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    let (detached, released) = std::thread::scope(|s| {
        let ipam = s.spawn(|| release(env, loaded));
        let detached = detach(env, loaded);
        let released = ipam.join().unwrap_or_else(|_| {
            Err(CniError::Ipam {
                plugin: loaded.ipam_type().unwrap_or("?").into(),
                msg: "IPAM DEL panicked".into(),
            })
        });
        (detached, released)
    });
    detached.and(released)
}

/// tapwayd's half: detach, or record the detach as pending when tapwayd is down.
fn detach(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    let daemon = Daemon::new(loaded.socket());
    let state = StateDir::new(loaded.state_dir());
    daemon.drain_pending(&state);
    match daemon.detach(&env.container_id, &env.ifname) {
        Ok(true) => log_info!("port detached"),
        Ok(false) => log_info!("no port to detach"),
        Err(e) if is_unreachable(&e) => {
            log_warn!("tapwayd unreachable ({e}); the detach is recorded and done when it is back");
            let entry = PendingDetach {
                socket: daemon.socket(),
                container_id: env.container_id.clone(),
                ifname: env.ifname.clone(),
                network: loaded.conf.name.clone(),
                since: 0,
            };
            state.record(entry).map_err(|rec| {
                CniError::TryAgainLater(format!("{e}; and recording the pending detach failed: {rec}"))
            })?;
        }
        Err(e) => return Err(CniError::from_client(e, CniError::TryAgainLater)),
    }
    Ok(())
}

/// The IPAM half: always runs.
fn release(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    match Ipam::open(loaded, &env.path)? {
        Some(ipam) => ipam.del(None).map(|()| log_info!("IPAM {} released the addresses", ipam.name())),
        None => Ok(()),
    }
}
