//! Setting the uplink up: binding sockets (with the retry the kernel needs), checking sizes
//! and MTUs, and what sysfs and libbpf tell about the interface and its XDP program.

use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

use xsk_rs::config::{BindFlags, Interface, SocketConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, RxQueue, Socket, TxQueue, Umem};

use super::{XdpConfig, XdpError, XdpMode, L2_OVERHEAD};

/// Largest uplink MTU: a 9216-byte jumbo frame, in three UMEM frames with multi-buffer.
pub const MAX_MTU: u32 = 9216;

/// How long a bind is retried while the kernel still holds the queue (`EBUSY`).
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// The interface index of `ifname`.
pub(super) fn if_index(ifname: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(ifname).ok()
}

/// The id of the XDP program attached to `ifindex` (any mode), if there is one.
pub(super) fn attached_prog(ifindex: u32) -> Option<u32> {
    let ifindex = i32::try_from(ifindex).ok()?;
    let mut id = 0u32;
    // SAFETY: plain libbpf query; `id` outlives the call.
    let rc = unsafe { libxdp_sys::bpf_xdp_query_id(ifindex, 0, &mut id) };
    (rc == 0 && id != 0).then_some(id)
}

/// Detaches whatever XDP program is attached to `ifindex`, in generic and in driver mode.
pub(super) fn detach_all(ifindex: u32) {
    let Ok(ifindex) = i32::try_from(ifindex) else { return };
    for flags in [XdpFlags::XDP_FLAGS_SKB_MODE, XdpFlags::XDP_FLAGS_DRV_MODE] {
        // SAFETY: plain libbpf call; a null `opts` means no options.
        let rc = unsafe { libxdp_sys::bpf_xdp_detach(ifindex, flags.bits(), std::ptr::null()) };
        if rc != 0 {
            tracing::debug!(ifindex, mode = flags.bits(), rc, "XDP detach");
        }
    }
}

pub(super) fn bind_err(cfg: &XdpConfig, queue: u32, mode: XdpMode, reason: String) -> XdpError {
    XdpError::Bind { ifname: cfg.ifname.clone(), queue, mode: mode.name(), reason }
}

pub(super) type Bound = (TxQueue, RxQueue, Option<(FillQueue, CompQueue)>);

/// Creates one socket, retrying while the kernel still holds the queue (`EBUSY`).
pub(super) fn bind_retry(
    cfg: &SocketConfig,
    umem: &Umem,
    iface: &Interface,
    queue: u32,
) -> Result<Bound, String> {
    let deadline = Instant::now() + BUSY_RETRY;
    loop {
        // SAFETY: the UMEM is not shared with a socket already bound to this queue, so
        // libxdp may load (and later remove) its default program.
        match unsafe { Socket::new(*cfg, umem, iface, queue) } {
            Ok(b) => return Ok(b),
            Err(e) => {
                let errno = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .and_then(|io| io.raw_os_error());
                if errno == Some(libc::EBUSY) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let hint = match errno {
                    Some(libc::EOPNOTSUPP) => {
                        " (the driver does not support this mode; zero-copy needs driver support, \
                         which veth lacks: use --xdp-mode auto, native or generic)"
                    }
                    Some(libc::EBUSY) => " (the queue is still held by another AF_XDP socket)",
                    Some(libc::ENOMEM) | Some(libc::ENOBUFS) => {
                        " (raise the locked-memory limit, or lower --uplink-umem-frames)"
                    }
                    Some(libc::EINVAL) if cfg_sg(cfg) => {
                        " (an MTU beyond one UMEM frame needs multi-buffer AF_XDP: kernel >= 6.6, and in \
                         native or zero-copy mode a driver with multi-buffer support and an XDP program \
                         with frags, which libxdp's default one lacks; use --xdp-mode generic or MTU <= 3822)"
                    }
                    Some(libc::EINVAL) => {
                        " (check the queue exists and the MTU suits native XDP: veth <= 3506, many NICs ~3000)"
                    }
                    Some(libc::ERANGE) => {
                        " (the MTU is too large for native XDP: a veth whose peer has an MTU above 3506, \
                         or a NIC's own limit, often ~3000; lower the MTU or use --xdp-mode generic)"
                    }
                    _ => "",
                };
                let detail = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                return Err(format!("{e}{detail}{hint}"));
            }
        }
    }
}

/// The C library's formatted print, for libbpf's and libxdp's messages.
mod cprint {
    use std::os::raw::{c_char, c_int, c_uint};

    use libxdp_sys::__va_list_tag;

    unsafe extern "C" {
        static mut stderr: *mut libc::FILE;
        fn vfprintf(stream: *mut libc::FILE, format: *const c_char, ap: *mut __va_list_tag) -> c_int;
        fn libbpf_set_print(
            f: Option<unsafe extern "C" fn(c_uint, *const c_char, *mut __va_list_tag) -> c_int>,
        ) -> Option<unsafe extern "C" fn(c_uint, *const c_char, *mut __va_list_tag) -> c_int>;
    }

    /// Prints warnings (level 0 in both libraries) to stderr, drops info and debug.
    unsafe extern "C" fn warnings_only(
        level: c_uint,
        format: *const c_char,
        ap: *mut __va_list_tag,
    ) -> c_int {
        if level != 0 {
            return 0;
        }
        // SAFETY: `format` and `ap` are what the library passed for this message; stderr is
        // the C library's own stream.
        unsafe { vfprintf(stderr, format, ap) }
    }

    /// Keeps only the libraries' warnings.
    pub fn warnings() {
        // SAFETY: both setters only store the function pointer, which lives forever.
        unsafe {
            libbpf_set_print(Some(warnings_only));
            libxdp_sys::libxdp_set_print(Some(warnings_only));
        }
    }
}

/// libbpf and libxdp print to stderr, info included: a line per unknown ELF section at every
/// program load. Unless `verbose`, keep only their warnings (such as libxdp's "No bpffs found
/// ... Falling back to loading single prog without dispatcher").
pub fn quiet_bpf_libraries(verbose: bool) {
    if !verbose {
        cprint::warnings();
    }
}

/// Whether a socket configuration asks for multi-buffer.
fn cfg_sg(cfg: &SocketConfig) -> bool {
    cfg.bind_flags().contains(BindFlags::XDP_USE_SG)
}

/// Checks the sizes that do not depend on the interface (done when the config is read).
pub fn check_config(cfg: &XdpConfig) -> Result<(), XdpError> {
    let pow2 = |v: u32| v.is_power_of_two();
    if !pow2(cfg.umem_frames) || !pow2(cfg.ring_size) || !pow2(cfg.fill_size) || !pow2(cfg.frame_size) {
        return Err(XdpError::Config(
            "umem-frames, frame size, ring and fill sizes must be powers of two".into(),
        ));
    }
    if cfg.queues.is_empty() {
        return Err(XdpError::Config("no queue to bind".into()));
    }
    // Transmit chunks: a 64 KiB super-frame takes up to 45 of them until its segments are sent.
    if cfg.umem_frames < 128 {
        return Err(XdpError::Config(format!(
            "{} UMEM frames for transmit copies are too few: at least 128 are needed",
            cfg.umem_frames
        )));
    }
    if cfg.fill_size < 64 {
        return Err(XdpError::Config(format!("a fill ring of {} is too small: at least 64", cfg.fill_size)));
    }
    Ok(())
}

/// Checks the configuration against the interface's MTU.
pub(super) fn check_sizes(cfg: &XdpConfig, mtu: u32) -> Result<(), XdpError> {
    check_config(cfg)?;
    if mtu > MAX_MTU {
        let room = cfg.frame_size.saturating_sub(256) as usize;
        return Err(XdpError::Config(format!(
            "MTU {mtu} of {} is too large: a frame takes at most one {}-byte UMEM frame (MTU {}), \
             or several with multi-buffer up to MTU {MAX_MTU}",
            cfg.ifname,
            cfg.frame_size,
            room - L2_OVERHEAD
        )));
    }
    Ok(())
}

/// Number of rx queues of `ifname` (from sysfs).
pub(super) fn rx_queue_count(ifname: &str) -> Option<u32> {
    let dir = std::path::Path::new("/sys/class/net").join(ifname).join("queues");
    let n = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok()
}

/// Whether `ifname` looks like a veth (virtual: no backing device, peer index differs).
pub(super) fn is_veth(ifname: &str) -> bool {
    let base = std::path::Path::new("/sys/class/net").join(ifname);
    let read = |f: &str| std::fs::read_to_string(base.join(f)).ok().map(|s| s.trim().to_string());
    !base.join("device").exists() && read("iflink").is_some() && read("iflink") != read("ifindex")
}

/// An epoll fd that is readable when any of `fds` is.
pub(super) fn epoll_over(fds: impl Iterator<Item = RawFd>) -> std::io::Result<OwnedFd> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(std::io::Error::from)?;
    for fd in fds {
        // SAFETY: the fd belongs to a socket that lives as long as the port owning this epoll.
        let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        ep.add(bfd, EpollEvent::new(EpollFlags::EPOLLIN, fd as u64)).map_err(std::io::Error::from)?;
    }
    Ok(ep.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        let ok = XdpConfig { ifname: "up0".into(), ..Default::default() };
        assert!(check_sizes(&ok, 1500).is_ok());
        assert!(check_sizes(&ok, 3800).is_ok());
        // Beyond one UMEM frame, multi-buffer, up to a 9216-byte jumbo frame.
        assert!(check_sizes(&ok, 9000).is_ok());
        let e = check_sizes(&ok, 9300).unwrap_err().to_string();
        assert!(e.contains("MTU 9300") && e.contains("3822") && e.contains("9216"), "{e}");
        let bad = XdpConfig { ring_size: 1000, ..ok.clone() };
        assert!(check_sizes(&bad, 1500).is_err());
        let bad = XdpConfig { umem_frames: 64, ..ok.clone() };
        assert!(check_sizes(&bad, 1500).is_err());
        let bad = XdpConfig { fill_size: 32, ..ok.clone() };
        assert!(check_sizes(&bad, 1500).is_err());
        let bad = XdpConfig { queues: vec![], ..ok };
        assert!(check_sizes(&bad, 1500).is_err());
    }

    #[test]
    fn modes_have_names_and_flags() {
        assert_eq!(XdpMode::ZeroCopy.name(), "zero-copy");
        assert!(XdpMode::ZeroCopy.flags().1.contains(BindFlags::XDP_ZEROCOPY));
        assert!(XdpMode::Generic.flags().0.contains(XdpFlags::XDP_FLAGS_SKB_MODE));
        assert!(XdpMode::Native.flags().0.contains(XdpFlags::XDP_FLAGS_DRV_MODE));
    }
}
