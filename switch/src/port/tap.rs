//! TAP ports with a vnet header.
//!
//! The TAP is opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, non-blocking and close-on-exec,
//! with a 12-byte little-endian `virtio_net_hdr` and the offloads a virtio NIC would offer
//! (`TUNSETOFFLOAD`: checksum, TSO4/6 with ECN, USO4/6 where the kernel has them). With those,
//! the pod's kernel hands the switch 64 KiB TCP super-frames with a partial checksum, and the
//! switch writes them to the peer's TAP unchanged: one read and one write per 64 KiB instead of
//! per 1.5 KiB, which is what makes TCP through a TAP switch fast.
//!
//! Pod TAPs are created directly inside the pod's netns (the fd is opened by a thread that has
//! entered it), which avoids moving a device between namespaces, the slowest step of a veth
//! CNI. They are persistent (`TUNSETPERSIST`): they outlive the daemon, so pods keep their
//! interface and addresses across a tapwayd restart.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{read_into_pool, PortError, PortIo};
use crate::pool::{Frame, LocalPool};
use crate::wire::VNET_HDR_LEN;

/// The TUN/TAP clone device every TAP is opened through (the DaemonSet mounts it).
pub const TUN_PATH: &str = "/dev/net/tun";

// From <linux/if_tun.h>.
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_TUN_EXCL: libc::c_short = -0x8000; // 0x8000 as a c_short
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETVNETLE: libc::c_ulong = 0x4004_54dc;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const TUN_F_TSO_ECN: libc::c_ulong = 0x08;
const TUN_F_USO4: libc::c_ulong = 0x20;
const TUN_F_USO6: libc::c_ulong = 0x40;

/// Why a TAP could not be opened or set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name does not fit IFNAMSIZ.
    #[error("TAP name {0:?} is too long")]
    Name(String),
    /// `/dev/net/tun` could not be opened (no tun module, or no permission).
    #[error("opening {TUN_PATH}: {0}")]
    Open(std::io::Error),
    /// An ioctl failed.
    #[error("{what} on TAP {name}: {source}")]
    Ioctl {
        /// Which ioctl.
        what: &'static str,
        /// Device name.
        name: String,
        /// Kernel error.
        source: std::io::Error,
    },
}

/// An open TAP device.
pub struct TapPort {
    file: File,
    name: String,
    offloads: libc::c_ulong,
}

/// `struct ifreq` reduced to what TUNSETIFF reads: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl TapPort {
    /// Creates the TAP `name` in the calling thread's netns. With `exclusive`, fails (EBUSY)
    /// when a device of that name exists; without, attaches to an existing persistent TAP of
    /// that name (the host port and pod ports after a restart).
    pub fn open(name: &str, persistent: bool, exclusive: bool) -> Result<TapPort, TapError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(TapError::Name(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(TapError::Open)?;
        let mut flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if exclusive {
            flags |= IFF_TUN_EXCL;
        }
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags, _pad: [0; 22] };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        let mut tap = TapPort { file, name: name.to_string(), offloads: 0 };
        // SAFETY: TUNSETIFF reads a struct ifreq; `req` is a live, correctly sized and
        // NUL-terminated ifreq prefix, and the kernel copies at most sizeof(struct ifreq).
        tap.check("TUNSETIFF", unsafe { libc::ioctl(tap.fd(), TUNSETIFF, &mut req as *mut IfReq) })?;
        // The kernel may have normalised the name; keep what it reports.
        // SAFETY: `req.name` is NUL-terminated: the kernel writes at most IFNAMSIZ-1 bytes + NUL.
        if let Ok(n) = unsafe { CStr::from_ptr(req.name.as_ptr()) }.to_str() {
            tap.name = n.to_string();
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points to a live int.
        tap.check("TUNSETVNETHDRSZ", unsafe { libc::ioctl(tap.fd(), TUNSETVNETHDRSZ, &hdr_len) })?;
        let le: libc::c_int = 1;
        // SAFETY: TUNSETVNETLE reads one int through the pointer, which points to a live int.
        // Kernels without cross-endian support refuse it on little-endian hosts, where the
        // header is little-endian anyway, so a failure there is harmless.
        let le_ok = unsafe { libc::ioctl(tap.fd(), TUNSETVNETLE, &le) } == 0;
        if !le_ok && cfg!(target_endian = "big") {
            return Err(tap.ioctl_err("TUNSETVNETLE"));
        }
        tap.set_offloads()?;
        // SAFETY: TUNSETPERSIST takes its argument by value.
        tap.check("TUNSETPERSIST", unsafe {
            libc::ioctl(tap.fd(), TUNSETPERSIST, libc::c_ulong::from(persistent))
        })?;
        Ok(tap)
    }

    fn set_offloads(&mut self) -> Result<(), TapError> {
        let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
        for flags in [base | TUN_F_USO4 | TUN_F_USO6, base] {
            // SAFETY: TUNSETOFFLOAD takes its argument by value.
            if unsafe { libc::ioctl(self.fd(), TUNSETOFFLOAD, flags) } == 0 {
                self.offloads = flags;
                return Ok(());
            }
        }
        Err(self.ioctl_err("TUNSETOFFLOAD"))
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn ioctl_err(&self, what: &'static str) -> TapError {
        TapError::Ioctl { what, name: self.name.clone(), source: std::io::Error::last_os_error() }
    }

    fn check(&self, what: &'static str, rc: libc::c_int) -> Result<(), TapError> {
        if rc < 0 {
            Err(self.ioctl_err(what))
        } else {
            Ok(())
        }
    }

    /// The device name the kernel gave the TAP at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel's answer when `exclusive` creation found an existing device.
    pub fn is_busy(e: &TapError) -> bool {
        matches!(e, TapError::Ioctl { what: "TUNSETIFF", source, .. } if source.raw_os_error() == Some(libc::EBUSY))
    }

    /// Whether USO (UDP segmentation offload) is on.
    pub fn has_uso(&self) -> bool {
        self.offloads & TUN_F_USO4 != 0
    }

    /// Makes the device non-persistent, so it disappears when the last fd closes.
    pub fn release(&self) -> Result<(), TapError> {
        // SAFETY: TUNSETPERSIST takes its argument by value.
        self.check("TUNSETPERSIST", unsafe { libc::ioctl(self.fd(), TUNSETPERSIST, 0 as libc::c_ulong) })
    }
}

fn classify(e: std::io::Error) -> PortError {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => PortError::Full,
        // EBADFD: the device was deleted under the fd; ENXIO/ENODEV: same on older kernels.
        Some(libc::EBADFD) | Some(libc::ENXIO) | Some(libc::ENODEV) => PortError::Gone,
        _ => PortError::Io(e),
    }
}

impl PortIo for TapPort {
    fn recv_frame(&self, _worker: usize, pool: &mut LocalPool) -> Result<Option<Frame>, PortError> {
        read_into_pool(pool, |buf| match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) => match classify(e) {
                PortError::Full => Ok(None),
                other => Err(other),
            },
        })
    }

    fn send(&self, _worker: usize, frame: &[u8]) -> Result<(), PortError> {
        match (&self.file).write(frame) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                (&self.file).write(frame).map(|_| ()).map_err(classify)
            }
            Err(e) => Err(classify(e)),
        }
    }

    fn readiness_fd(&self, _worker: usize) -> Option<RawFd> {
        Some(self.fd())
    }
}
