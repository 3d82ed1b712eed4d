//! GC (spec 1.1.0): tapwayd detaches every port of this network that is not in
//! `cni.dev/valid-attachments`; the IPAM plugin runs its own GC or, when it has none (host-local
//! up to 1.1.x), an IPAM DEL for each port removed.

use crate::daemon::Daemon;
use crate::env::CniEnv;
use crate::error::CniError;
use crate::ipam::Ipam;
use crate::netconf::Loaded;
use crate::version::Version;
use crate::{log_info, log_warn};

/// GC.
pub fn cmd_gc(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    if loaded.version < Version::V1_1_0 {
        return Err(CniError::IncompatibleVersion(format!(
            "config version {} does not allow GC",
            loaded.version
        )));
    }
    let valid = loaded.conf.valid_attachments.clone().unwrap_or_default();
    let daemon = Daemon::for_conf(loaded);
    super::drain_pending(&daemon, loaded, &env.path);
    let removed = daemon
        .gc(&loaded.conf.name, valid)
        .map_err(|e| CniError::from_client(e, CniError::TryAgainLater))?
        .removed;
    for p in &removed {
        log_info!(
            "gc: detached port {} ({}/{}) in {}",
            p.id,
            p.owner.container_id.as_deref().unwrap_or("?"),
            p.ifname,
            p.netns
        );
    }
    let Some(ipam) = Ipam::open(loaded, &env.path)? else {
        return Ok(());
    };
    if ipam.gc()? {
        return Ok(());
    }
    let mut first: Option<CniError> = None;
    for p in &removed {
        let Some(cid) = p.owner.container_id.as_deref() else {
            continue;
        };
        match ipam.del(Some((cid, &p.ifname))) {
            Ok(()) => log_info!("gc: IPAM {} released {cid}/{}", ipam.name(), p.ifname),
            Err(e) => {
                log_warn!("gc: IPAM DEL for {cid}/{} failed: {e}", p.ifname);
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}
