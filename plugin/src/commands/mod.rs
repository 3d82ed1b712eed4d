//! One module per CNI command, as in containernetworking/plugins (`cmdAdd`, `cmdDel`, ...).

mod add;
mod check;
mod del;
mod gc;
mod status;
mod version;

use std::ffi::CString;

pub use add::cmd_add;
pub use check::cmd_check;
pub use del::cmd_del;
pub use gc::cmd_gc;
pub use status::{cmd_status, daemon_ready};
pub use version::cmd_version;

use crate::daemon::Daemon;
use crate::error::CniError;
use crate::ipam::Ipam;
use crate::netconf::Loaded;
use crate::state::StateDir;
use crate::{log_error, log_info};

/// Does the pending detaches of this socket (ADD, DEL and GC start with it), then releases the
/// addresses that the DELs of those ports kept because tapwayd's answer was unknown: the
/// detach is now done, so no port forwards with them any more. A failed release is logged;
/// the address then stays reserved until the IPAM plugin's own GC.
pub fn drain_pending(daemon: &Daemon, loaded: &Loaded, cni_path: &str) {
    let done = daemon.drain_pending(&StateDir::new(loaded.state_dir()), &loaded.conf.name);
    let held: Vec<_> = done.iter().filter(|p| p.release_ip).collect();
    if held.is_empty() {
        return;
    }
    let ipam = match Ipam::open(loaded, cni_path) {
        Ok(Some(ipam)) => ipam,
        Ok(None) => return,
        Err(e) => {
            log_error!("cannot release the addresses of {} detached port(s): {e}", held.len());
            return;
        }
    };
    for p in held {
        match ipam.del(Some((&p.container_id, &p.ifname))) {
            Ok(()) => {
                log_info!("port of {}/{} is gone: IPAM released its addresses", p.container_id, p.ifname)
            }
            Err(e) => log_error!("IPAM DEL for {}/{} failed: {e}", p.container_id, p.ifname),
        }
    }
}

/// `NSFS_MAGIC`: what `statfs` reports for a netns file (a bind mount under /run/netns, or
/// /proc/PID/ns/net).
const NSFS_MAGIC: u64 = 0x6e73_6673;
/// `PROC_SUPER_MAGIC`: what kernels before 3.19 reported for the same.
const PROC_SUPER_MAGIC: u64 = 0x9fa0;

/// Checks that `path` is a network namespace, before anything is allocated for it.
pub fn check_netns(path: &str) -> Result<(), CniError> {
    let c =
        CString::new(path).map_err(|_| CniError::InvalidEnv(format!("CNI_NETNS {path:?} contains a NUL")))?;
    // SAFETY: statfs is plain old data; all-zero is a valid value of it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string and `st` a writable statfs, both alive for the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(CniError::Netns(format!("netns {path}: {e}")));
    }
    let magic = st.f_type as u64;
    if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
        return Err(CniError::Netns(format!("{path} is not a network namespace")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_checks() {
        assert_eq!(check_netns("/nonexistent/netns").map_err(|e| e.code()), Err(105));
        assert_eq!(check_netns("/").map_err(|e| e.code()), Err(105));
        assert_eq!(check_netns("a\0b").map_err(|e| e.code()), Err(4));
        // Our own netns, as every process can see it.
        assert!(check_netns("/proc/self/ns/net").is_ok());
    }
}
