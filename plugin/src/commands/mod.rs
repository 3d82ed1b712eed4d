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
pub use status::cmd_status;
pub use version::cmd_version;

use crate::error::CniError;

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
