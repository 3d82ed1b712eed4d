//! DEL: idempotent. Detach the port, then release the addresses (IPAM DEL) once the port is
//! known to be gone; succeed when there was nothing to remove.
//!
//! What tapwayd's answer means for the addresses:
//! - an answer (detached, or no such port): the port is gone; release them;
//! - tapwayd not running (no socket, connection refused): the detach is recorded as pending and
//!   the addresses are released. No port forwards now, and the pods' TAPs that a restarted
//!   tapwayd re-opens cannot reach a new pod's address: every ADD does the pending detaches
//!   before it attaches, and tapwayd refuses an address another port has (`address_conflict`);
//! - no answer (timeout, connection reset mid-request, an unreadable answer), or an error
//!   answer: the port may still exist and forward with the addresses, so they stay reserved.
//!   DEL fails with code 11 (try again later) so the runtime retries; the detach is also
//!   recorded as pending with `release_ip`, so whichever invocation later sees the port gone
//!   (the retried DEL, or any ADD, DEL or GC of this network) releases them.

use tapway_api::ClientError;

use crate::daemon::Daemon;
use crate::env::CniEnv;
use crate::error::CniError;
use crate::ipam::Ipam;
use crate::netconf::Loaded;
use crate::state::{PendingDetach, StateDir};
use crate::{log_error, log_info, log_warn};

/// DEL. CNI_NETNS may be empty or name a netns that is gone: the port is found by container
/// ID and interface name.
pub fn cmd_del(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    detach(env, loaded)?;
    release(env, loaded)
}

/// What a failed detach says about the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// tapwayd is not running: nothing forwards now.
    NotRunning,
    /// No usable answer: the port may still be there.
    Unknown,
    /// tapwayd answered with an error: the port may still be there.
    Refused,
}

fn outcome(e: &ClientError) -> Outcome {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    match e {
        ClientError::Connect { source, .. } if matches!(source.kind(), NotFound | ConnectionRefused) => {
            Outcome::NotRunning
        }
        ClientError::Api(_) => Outcome::Refused,
        ClientError::Connect { .. } | ClientError::Io(_) | ClientError::NoAnswer | ClientError::Decode(_) => {
            Outcome::Unknown
        }
    }
}

/// tapwayd's half: `Ok` once the port is known gone (or tapwayd is down and the detach is
/// recorded), an error when the addresses must stay reserved.
fn detach(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    let daemon = Daemon::for_conf(loaded);
    let e = match daemon.detach(&env.container_id, &env.ifname) {
        Ok(detached) => {
            log_info!("{}", if detached { "port detached" } else { "no port to detach" });
            // Only once tapwayd answers: a silent one would cost a second timeout here. This
            // port's own pending entry, if an earlier DEL left one, goes too.
            super::drain_pending(&daemon, loaded, &env.path);
            return Ok(());
        }
        Err(e) => e,
    };
    let state = StateDir::new(loaded.state_dir());
    let how = outcome(&e);
    let entry = PendingDetach {
        socket: daemon.socket(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        network: loaded.conf.name.clone(),
        since: 0,
        release_ip: how != Outcome::NotRunning,
    };
    match how {
        Outcome::NotRunning => {
            log_warn!("tapwayd is not running ({e}); the detach is recorded and done when it is back");
            state.record(entry).map_err(|rec| {
                CniError::TryAgainLater(format!("{e}; and recording the pending detach failed: {rec}"))
            })
        }
        Outcome::Unknown => {
            if let Err(rec) = state.record(entry) {
                log_error!("cannot record the pending detach: {rec}");
            }
            Err(CniError::TryAgainLater(format!(
                "{e}; the port may still exist, so its addresses stay reserved until a DEL or GC \
                 finds it gone"
            )))
        }
        Outcome::Refused => Err(CniError::from_client(e, CniError::TryAgainLater)),
    }
}

/// The IPAM half, once the port is gone.
fn release(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    match Ipam::open(loaded, &env.path)? {
        Some(ipam) => ipam.del(None).map(|()| log_info!("IPAM {} released the addresses", ipam.name())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapway_api::{ApiError, ErrorCode};

    #[test]
    fn what_a_failed_detach_says() {
        let connect =
            |kind: std::io::ErrorKind| ClientError::Connect { path: "/s".into(), source: kind.into() };
        assert_eq!(outcome(&connect(std::io::ErrorKind::NotFound)), Outcome::NotRunning);
        assert_eq!(outcome(&connect(std::io::ErrorKind::ConnectionRefused)), Outcome::NotRunning);
        assert_eq!(outcome(&connect(std::io::ErrorKind::PermissionDenied)), Outcome::Unknown);
        assert_eq!(outcome(&ClientError::Io(std::io::ErrorKind::WouldBlock.into())), Outcome::Unknown);
        assert_eq!(outcome(&ClientError::Io(std::io::ErrorKind::ConnectionReset.into())), Outcome::Unknown);
        assert_eq!(outcome(&ClientError::NoAnswer), Outcome::Unknown);
        let decode = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(outcome(&ClientError::Decode(decode)), Outcome::Unknown);
        let refused = ClientError::Api(ApiError::new(ErrorCode::System, "netlink"));
        assert_eq!(outcome(&refused), Outcome::Refused);
    }
}
