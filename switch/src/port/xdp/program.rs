//! The XDP program, when tapwayd loads it itself: libxdp's default AF_XDP program (redirect
//! each queue's frames to the socket in `xsks_map`), but with frags support.
//!
//! libxdp loads that program on its own when a socket is bound, without frags support. In
//! generic mode that is enough for multi-buffer frames (the kernel hands the program a linear
//! skb), but in native and zero-copy mode a driver refuses a program without frags on an MTU
//! beyond one page ("Peer MTU is too large to set XDP" on a veth). So for multi-buffer in those
//! modes tapwayd loads the same program with `BPF_F_XDP_HAS_FRAGS`, attaches it, binds the
//! sockets with `XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD` and puts them in the program's map itself.

use std::ffi::CString;
use std::os::fd::RawFd;

use super::XdpMode;

/// libxdp's default AF_XDP program, embedded in libxdp.
const PROGRAM: &str = "xsk_def_xdp_prog.o";
/// Its map of sockets, by queue.
const MAP: &str = "xsks_map";

/// The program, attached to the NIC; detached and closed on drop.
pub(super) struct FragsProgram {
    prog: *mut libxdp_sys::xdp_program,
    map_fd: RawFd,
    ifindex: i32,
    mode: libxdp_sys::xdp_attach_mode,
}

// SAFETY: the program handle is only used by the port that owns it, under `&mut self` or at
// set-up; libxdp does not tie it to a thread.
unsafe impl Send for FragsProgram {}
// SAFETY: as above; `&self` methods only update the kernel map by fd.
unsafe impl Sync for FragsProgram {}

impl FragsProgram {
    /// Loads the program with frags support and attaches it to `ifindex` in `mode`'s way.
    pub fn attach(ifindex: u32, mode: XdpMode) -> Result<FragsProgram, String> {
        let ifindex = i32::try_from(ifindex).map_err(|_| format!("interface index {ifindex}"))?;
        let attach_mode = match mode {
            XdpMode::Generic => libxdp_sys::xdp_attach_mode_XDP_MODE_SKB,
            _ => libxdp_sys::xdp_attach_mode_XDP_MODE_NATIVE,
        };
        let file = CString::new(PROGRAM).map_err(|e| e.to_string())?;
        // SAFETY: plain libxdp call with a valid C string; null section and options.
        let prog = unsafe {
            libxdp_sys::xdp_program__find_file(file.as_ptr(), std::ptr::null(), std::ptr::null_mut())
        };
        // SAFETY: libxdp's error check of a returned pointer.
        let err = unsafe { libxdp_sys::libxdp_get_error(prog.cast()) };
        if err != 0 || prog.is_null() {
            return Err(format!(
                "loading libxdp's {PROGRAM}: {}",
                std::io::Error::from_raw_os_error(-err as i32)
            ));
        }
        // From here on, dropping `this` closes (and, once attached, detaches) the program.
        let mut this = FragsProgram { prog, map_fd: -1, ifindex: -1, mode: attach_mode };
        // SAFETY: `prog` is a valid, not yet loaded program.
        let rc = unsafe { libxdp_sys::xdp_program__set_xdp_frags_support(prog, true) };
        if rc != 0 {
            return Err(format!(
                "frags support for the XDP program: {}",
                std::io::Error::from_raw_os_error(-rc)
            ));
        }
        // SAFETY: as above; attaching loads it.
        let rc = unsafe { libxdp_sys::xdp_program__attach(prog, ifindex, attach_mode, 0) };
        if rc != 0 {
            return Err(format!(
                "attaching the XDP program with frags support: {} (the driver may not support \
                 multi-buffer XDP; use --xdp-mode generic or an MTU that fits one UMEM frame)",
                std::io::Error::from_raw_os_error(-rc)
            ));
        }
        this.ifindex = ifindex;
        let map = CString::new(MAP).map_err(|e| e.to_string())?;
        // SAFETY: the program is loaded, so its object and maps exist.
        let fd = unsafe {
            libxdp_sys::bpf_object__find_map_fd_by_name(libxdp_sys::xdp_program__bpf_obj(prog), map.as_ptr())
        };
        if fd < 0 {
            return Err(format!("no {MAP} in {PROGRAM}"));
        }
        this.map_fd = fd;
        Ok(this)
    }

    /// Redirects `queue`'s frames to the socket `fd`.
    pub fn add_socket(&self, queue: u32, fd: RawFd) -> Result<(), String> {
        let key = queue;
        let value: i32 = fd;
        // SAFETY: key and value are a u32 and an i32, the map's key and value sizes; both
        // outlive the call.
        let rc = unsafe {
            libxdp_sys::bpf_map_update_elem(
                self.map_fd,
                std::ptr::from_ref(&key).cast(),
                std::ptr::from_ref(&value).cast(),
                0,
            )
        };
        if rc != 0 {
            return Err(format!(
                "adding queue {queue}'s socket to {MAP}: {}",
                std::io::Error::from_raw_os_error(-rc)
            ));
        }
        Ok(())
    }
}

impl Drop for FragsProgram {
    fn drop(&mut self) {
        // SAFETY: `prog` came from libxdp and is closed only here; detaching a program that
        // is not attached just fails.
        unsafe {
            if self.ifindex >= 0 {
                let _ = libxdp_sys::xdp_program__detach(self.prog, self.ifindex, self.mode, 0);
            }
            libxdp_sys::xdp_program__close(self.prog);
        }
    }
}
