//! AF_PACKET sockets with a memory-mapped ring (PACKET_MMAP, TPACKET_V2): a TX ring with qdisc
//! bypass for the generator, an RX ring for the sink. All of the crate's `unsafe` for sockets
//! lives here.
//!
//! The ring is shared with the kernel: each slot starts with a `tpacket2_hdr` whose `tp_status`
//! hands the slot back and forth. We read and write that word as an atomic (acquire/release),
//! and touch the frame bytes only while the slot is ours.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;

const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_SENDING: u32 = 2;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// Where a TX frame's bytes start in its slot: TPACKET2_HDRLEN - sizeof(sockaddr_ll).
const TX_DATA_OFF: usize = 32;
/// Offset of the sockaddr_ll after the header of an RX slot (TPACKET_ALIGN(32)).
const RX_SLL_OFF: usize = 32;
/// `sll_pkttype` inside sockaddr_ll.
const SLL_PKTTYPE_OFF: usize = 10;
const PACKET_OUTGOING: u8 = 4;

/// Failures to set up or use a ring.
#[derive(Debug, Error)]
pub enum RingError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// Which call.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The interface does not exist in this network namespace.
    #[error("no interface `{0}` in this network namespace")]
    NoInterface(String),
    /// A frame does not fit the ring's slots.
    #[error("a {0}-byte frame does not fit the ring slots ({1} bytes of data)")]
    TooBig(usize, usize),
}

fn sys(what: &'static str) -> RingError {
    RingError::Sys { what, source: io::Error::last_os_error() }
}

/// Index of `ifname` in the calling thread's network namespace.
pub fn ifindex(ifname: &str) -> Result<i32, RingError> {
    let c = std::ffi::CString::new(ifname).map_err(|_| RingError::NoInterface(ifname.into()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(RingError::NoInterface(ifname.into()));
    }
    i32::try_from(idx).map_err(|_| RingError::NoInterface(ifname.into()))
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
    what: &'static str,
) -> Result<(), RingError> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| RingError::Sys { what, source: io::Error::from(io::ErrorKind::InvalidInput) })?;
    // SAFETY: `val` points to a live `T` of `len` bytes; the fd is open.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (val as *const T).cast(), len) };
    if r < 0 {
        return Err(sys(what));
    }
    Ok(())
}

/// Direction of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Tx,
    Rx,
}

/// A mapped TPACKET_V2 ring on an AF_PACKET socket bound to one interface.
#[derive(Debug)]
struct Ring {
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    frame_size: usize,
    frame_nr: usize,
    cur: usize,
}

// SAFETY: the mapping is owned by this value alone and only accessed through `&mut self`.
unsafe impl Send for Ring {}

impl Ring {
    fn open(
        ifname: &str,
        dir: Dir,
        bypass: bool,
        frame_size: usize,
        frame_nr: usize,
    ) -> Result<Ring, RingError> {
        let idx = ifindex(ifname)?;
        // ETH_P_ALL for RX; protocol 0 for TX so that the socket receives nothing.
        let proto: u16 = if dir == Dir::Rx { (libc::ETH_P_ALL as u16).to_be() } else { 0 };
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
        if raw < 0 {
            return Err(sys("socket(AF_PACKET)"));
        }
        // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2, "PACKET_VERSION")?;
        if dir == Dir::Tx {
            if bypass {
                // Straight to the driver: no qdisc in the generator's path (kernel ≥ 3.14).
                setsockopt(
                    &fd,
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    &1 as &libc::c_int,
                    "PACKET_QDISC_BYPASS",
                )?;
            }
        } else {
            // Best effort (kernel ≥ 4.20): our own outgoing frames are filtered by type anyway.
            let _ = setsockopt(
                &fd,
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                &1 as &libc::c_int,
                "PACKET_IGNORE_OUTGOING",
            );
        }
        let block_size = (frame_size * 8).max(1 << 16);
        let frames_per_block = block_size / frame_size;
        let block_nr = frame_nr.div_ceil(frames_per_block);
        let frame_nr = block_nr * frames_per_block;
        let to_u32 = |v: usize| u32::try_from(v).map_err(|_| RingError::TooBig(v, 0));
        let req = libc::tpacket_req {
            tp_block_size: to_u32(block_size)?,
            tp_block_nr: to_u32(block_nr)?,
            tp_frame_size: to_u32(frame_size)?,
            tp_frame_nr: to_u32(frame_nr)?,
        };
        let opt = if dir == Dir::Tx { libc::PACKET_TX_RING } else { libc::PACKET_RX_RING };
        setsockopt(&fd, libc::SOL_PACKET, opt, &req, "PACKET_{TX,RX}_RING")?;
        let map_len = block_size * block_nr;
        // SAFETY: mapping the ring the kernel just allocated for this fd; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(sys("mmap(packet ring)"));
        }
        let map = NonNull::new(p.cast::<u8>()).ok_or_else(|| sys("mmap(packet ring)"))?;
        let ring = Ring { fd, map, map_len, frame_size, frame_nr, cur: 0 };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = idx;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(sys("bind(AF_PACKET)"));
        }
        Ok(ring)
    }

    /// Pointer to the start of slot `i` (block-aligned layout: slots never straddle blocks
    /// because the block size is a multiple of the frame size).
    fn slot(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.frame_nr);
        // SAFETY: i < frame_nr, so the offset stays inside the mapping of map_len bytes.
        unsafe { self.map.as_ptr().add(i * self.frame_size) }
    }

    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: every slot starts with a 4-byte aligned tp_status word (slots are at least
        // 16-byte aligned in a page-aligned mapping) that the kernel accesses atomically; the
        // reference does not outlive `self`, which keeps the mapping alive.
        unsafe { AtomicU32::from_ptr(self.slot(i).cast::<u32>()) }
    }

    fn poll(&self, events: libc::c_short, timeout_ms: libc::c_int) {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events, revents: 0 };
        // SAFETY: one valid pollfd; the result only decides whether we look at the ring again.
        unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mapped in `open`; no reference into it survives
        // (slot accessors borrow `self`).
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// Counters of a TX ring.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxCounters {
    /// Frames the kernel rejected (TP_STATUS_WRONG_FORMAT).
    pub wrong_format: u64,
    /// `send` calls that failed other than with EAGAIN/ENOBUFS.
    pub send_errors: u64,
}

/// What [`TxRing::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// The frame is queued.
    Queued,
    /// No slot came free in time; nothing queued.
    Full,
    /// The frame does not fit a slot; nothing queued.
    Refused,
}

/// The generator's socket: fill slots, then [`TxRing::flush`] hands them to the kernel.
#[derive(Debug)]
pub struct TxRing {
    ring: Ring,
    pending: usize,
    /// Error counters.
    pub counters: TxCounters,
}

impl TxRing {
    /// Opens a TX ring on `ifname` (in the calling thread's netns) for frames of up to
    /// `max_frame` bytes; `qdisc_bypass` hands frames straight to the driver
    /// (PACKET_QDISC_BYPASS).
    pub fn open(
        ifname: &str,
        qdisc_bypass: bool,
        max_frame: usize,
        frame_nr: usize,
    ) -> Result<TxRing, RingError> {
        let frame_size = (max_frame + TX_DATA_OFF).next_power_of_two().max(2048);
        Ok(TxRing {
            ring: Ring::open(ifname, Dir::Tx, qdisc_bypass, frame_size, frame_nr)?,
            pending: 0,
            counters: TxCounters::default(),
        })
    }

    /// Largest frame a slot holds.
    pub fn max_frame(&self) -> usize {
        self.ring.frame_size - TX_DATA_OFF
    }

    /// Queues one frame written by `fill` (which gets the slot's data area and returns the
    /// length it wrote). While the ring is full it kicks the kernel and waits, at most
    /// `max_wait`: a receiver that stops reading (a TAP whose reader is gone) pins the slots.
    pub fn push(&mut self, max_wait: std::time::Duration, fill: impl FnOnce(&mut [u8]) -> usize) -> Push {
        let i = self.ring.cur;
        let mut deadline = None;
        loop {
            let st = self.ring.status(i).load(Ordering::Acquire);
            if st & TP_STATUS_WRONG_FORMAT != 0 {
                self.counters.wrong_format += 1;
                break;
            }
            if st & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING) == 0 {
                break;
            }
            let now = std::time::Instant::now();
            let d = *deadline.get_or_insert(now + max_wait);
            if now >= d {
                self.flush();
                return Push::Full;
            }
            self.flush();
            self.ring.poll(libc::POLLOUT, 1);
        }
        let cap = self.max_frame();
        // SAFETY: the slot is ours (status AVAILABLE or WRONG_FORMAT), its data area of `cap`
        // bytes lies inside the slot, and no other reference to it exists while `data` lives.
        let data = unsafe { std::slice::from_raw_parts_mut(self.ring.slot(i).add(TX_DATA_OFF), cap) };
        let len = fill(data);
        if len == 0 || len > cap {
            return Push::Refused;
        }
        // SAFETY: the header is at the slot start and the slot is still ours; tp_len is a
        // plain u32 field the kernel reads only after it sees SEND_REQUEST below.
        unsafe {
            let hdr = self.ring.slot(i).cast::<libc::tpacket2_hdr>();
            (*hdr).tp_len = len as u32; // lossless: len <= cap < 2^32
        }
        self.ring.status(i).store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.ring.cur = (i + 1) % self.ring.frame_nr;
        self.pending += 1;
        Push::Queued
    }

    /// Asks the kernel to send every queued slot (non-blocking).
    pub fn flush(&mut self) {
        if self.pending == 0 {
            return;
        }
        // SAFETY: sending with no buffer and no address is how a TX ring is kicked.
        let r = unsafe {
            libc::sendto(
                self.ring.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)) {
                self.counters.send_errors += 1;
            }
        }
        self.pending = 0;
    }

    /// Flushes and waits (bounded) until the kernel has taken every slot.
    pub fn drain(&mut self) {
        self.flush();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let busy = (0..self.ring.frame_nr).any(|i| {
                self.ring.status(i).load(Ordering::Acquire) & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING)
                    != 0
            });
            if !busy {
                return;
            }
            self.pending = 1;
            self.flush();
            self.ring.poll(libc::POLLOUT, 10);
        }
    }
}

/// The sink's socket: an RX ring on one interface.
#[derive(Debug)]
pub struct RxRing {
    ring: Ring,
}

/// Kernel-side drop counters of an RX socket.
#[derive(Debug, Default, Clone, Copy)]
pub struct RxKernelStats {
    /// Frames the socket saw.
    pub packets: u64,
    /// Frames dropped because the ring was full.
    pub drops: u64,
}

impl RxRing {
    /// Opens an RX ring on `ifname`. Slots hold 2 KiB: larger frames are truncated, which is
    /// fine since only the headers and probe are read; the wire length is still reported.
    pub fn open(ifname: &str, frame_nr: usize) -> Result<RxRing, RingError> {
        Ok(RxRing { ring: Ring::open(ifname, Dir::Rx, false, 2048, frame_nr)? })
    }

    /// Calls `f(bytes, wire_len)` for every frame ready (at most `budget`), skipping our own
    /// outgoing frames; waits up to `timeout_ms` when none is ready. Returns frames handled.
    pub fn poll(&mut self, budget: usize, timeout_ms: i32, mut f: impl FnMut(&[u8], usize)) -> usize {
        let mut n = 0;
        while n < budget {
            let i = self.ring.cur;
            if self.ring.status(i).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                if n == 0 && timeout_ms > 0 {
                    self.ring.poll(libc::POLLIN, timeout_ms);
                    if self.ring.status(i).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                        return 0;
                    }
                } else {
                    break;
                }
            }
            let slot = self.ring.slot(i);
            // SAFETY: the slot is ours (TP_STATUS_USER) until we store KERNEL below; the header
            // is at its start and the kernel wrote tp_mac/tp_snaplen inside the slot.
            let (mac, snap, len, pkttype) = unsafe {
                let h = &*slot.cast::<libc::tpacket2_hdr>();
                (
                    usize::from(h.tp_mac),
                    h.tp_snaplen as usize,
                    h.tp_len as usize,
                    *slot.add(RX_SLL_OFF + SLL_PKTTYPE_OFF),
                )
            };
            if pkttype != PACKET_OUTGOING && mac + snap <= self.ring.frame_size {
                // SAFETY: checked just above that [mac, mac+snap) lies inside the slot.
                let bytes = unsafe { std::slice::from_raw_parts(slot.add(mac), snap) };
                f(bytes, len);
            }
            self.ring.status(i).store(TP_STATUS_KERNEL, Ordering::Release);
            self.ring.cur = (i + 1) % self.ring.frame_nr;
            n += 1;
        }
        n
    }

    /// Reads (and resets) the socket's kernel counters.
    pub fn kernel_stats(&self) -> RxKernelStats {
        let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is a valid tpacket_stats and `len` its size.
        let r = unsafe {
            libc::getsockopt(
                self.ring.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return RxKernelStats::default();
        }
        RxKernelStats { packets: u64::from(st.tp_packets), drops: u64::from(st.tp_drops) }
    }
}
