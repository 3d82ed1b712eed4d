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
/// ID and interface name. Both halves always run; the first error is returned.
pub fn cmd_del(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    let daemon = Daemon::new(loaded.socket());
    let state = StateDir::new(loaded.state_dir());
    daemon.drain_pending(&state);
    let mut first: Option<CniError> = None;

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
            if let Err(rec) = state.record(entry) {
                first = Some(CniError::TryAgainLater(format!("{e}; and recording the pending detach failed: {rec}")));
            }
        }
        Err(e) => first = Some(CniError::from_client(e, CniError::TryAgainLater)),
    }

    let ipam = Ipam::open(loaded, &env.path).and_then(|ipam| match ipam {
        Some(ipam) => ipam.del(None).map(|()| log_info!("IPAM {} released the addresses", ipam.name())),
        None => Ok(()),
    });
    if let Err(e) = ipam {
        first.get_or_insert(e);
    }
    first.map_or(Ok(()), Err)
}
