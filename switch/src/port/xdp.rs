//! The AF_XDP uplink: the port through which frames for pods on other nodes leave the node and
//! theirs come in, without the kernel's stack (xsk-rs over libxdp).
//!
//! One AF_XDP socket per receive queue in use shares one UMEM. Each socket has its own fill and
//! completion rings; libxdp loads its default XDP program, which redirects every frame of those
//! queues to the sockets. Sockets are bound with `XDP_USE_NEED_WAKEUP`, so the kernel is only
//! kicked (`sendto`, `poll`) when it asks to be.
//!
//! Modes ([`XdpMode`]): zero-copy (the driver DMAs into the UMEM), native copy (the driver runs
//! the XDP program, the kernel copies into the UMEM), generic (the program runs after the skb
//! is built; works on any device). `auto` tries them in that order and the mode obtained is
//! reported. Binding is retried for ~2 s on `EBUSY`, as the kernel releases a previous socket
//! on the same queue asynchronously.
//!
//! UMEM frames are accounted in four places: the user-space free list, the kernel's receive
//! side (fill ring + frames not yet read from the rx ring), the transmit side (tx ring +
//! completion ring) and frames read from the rx ring but not yet copied out. Their sum is the
//! UMEM size at all times, and [`XdpPort::stats`] shows all four (`tapwayctl stats`).
//! Receive frames go back to the fill ring after each burst; completions are reaped before each
//! transmit and whenever stats are read.
//!
//! Known weakness: the UMEM is not the switch's [`FramePool`](crate::pool::FramePool). A frame
//! is copied once between a pool buffer and a UMEM frame in each direction. For TCP super-frames
//! that copy is the segmentation itself (each segment is written once into its UMEM frame);
//! for small frames it is an extra copy of at most one MTU.
//!
//! Locking: the port's state sits behind one mutex. The worker that owns the port is the only
//! one that receives and transmits on it (frames from other workers come through its ring), so
//! the lock is uncontended except for the rare `stats` read by the control thread.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{PortError, PortIo};
use crate::wire::gro::Merge;
use crate::wire::segment::{complete_csum, needs_segmentation, SegmentPlan};
use crate::wire::vnet::{VnetHdr, F_NEEDS_CSUM};
use crate::wire::VNET_HDR_LEN;

/// Bytes of Ethernet header (with one VLAN tag) allowed on top of the MTU.
const L2_OVERHEAD: usize = 18;
/// How many descriptors one `sendto` kick makes the kernel transmit in copy mode
/// (`TX_BATCH_SIZE` in net/xdp/xsk.c).
const KICK_BATCH: usize = 32;
/// Largest MTU for native XDP on a veth: one page minus XDP headroom, `skb_shared_info` and
/// the Ethernet header (the kernel checks the peer's MTU: "Peer MTU is too large to set XDP").
pub const VETH_NATIVE_MAX_MTU: u32 = 3506;
/// How long a bind is retried while the kernel still holds the queue (`EBUSY`).
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// How the AF_XDP sockets attach to the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    /// Zero-copy, else native copy, else generic.
    #[default]
    Auto,
    /// Zero-copy: the driver receives into and transmits from the UMEM.
    ZeroCopy,
    /// Native (driver) XDP, copy mode.
    Native,
    /// Generic (SKB) XDP: any device, slowest.
    Generic,
}

impl XdpMode {
    /// `auto`, `zero-copy`, `native` or `generic`.
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::ZeroCopy => "zero-copy",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }

    fn flags(self) -> (XdpFlags, BindFlags) {
        match self {
            XdpMode::ZeroCopy => (XdpFlags::XDP_FLAGS_DRV_MODE, BindFlags::XDP_ZEROCOPY),
            XdpMode::Native => (XdpFlags::XDP_FLAGS_DRV_MODE, BindFlags::XDP_COPY),
            XdpMode::Generic | XdpMode::Auto => (XdpFlags::XDP_FLAGS_SKB_MODE, BindFlags::XDP_COPY),
        }
    }
}

/// Settings of the uplink.
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// The NIC (dedicated to the pod network).
    pub ifname: String,
    /// Requested mode.
    pub mode: XdpMode,
    /// Receive queues to bind a socket to.
    pub queues: Vec<u32>,
    /// UMEM frames in all (power of two).
    pub umem_frames: u32,
    /// Bytes per UMEM frame (power of two, 2048 or 4096).
    pub frame_size: u32,
    /// Size of each socket's rx and tx rings (power of two).
    pub ring_size: u32,
    /// Size of each socket's fill and completion rings (power of two).
    pub fill_size: u32,
    /// Frames taken from the rx ring at once (at least 64, the worker's `--batch` if larger):
    /// GRO coalesces within such a burst, so a longer one makes longer super-frames.
    pub batch: usize,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            ifname: String::new(),
            mode: XdpMode::Auto,
            queues: vec![0],
            umem_frames: 8192,
            frame_size: 4096,
            ring_size: 2048,
            fill_size: 4096,
            batch: 64,
        }
    }
}

/// Why the uplink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// A size is not usable.
    #[error("uplink configuration: {0}")]
    Config(String),
    /// The UMEM could not be created (memory, locked-memory limit).
    #[error("creating the UMEM: {0}")]
    Umem(String),
    /// No socket could be bound in the requested mode.
    #[error("binding AF_XDP on {ifname} queue {queue} in {mode} mode: {reason}")]
    Bind {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// Mode tried.
        mode: &'static str,
        /// What the kernel said, with a hint.
        reason: String,
    },
    /// epoll setup for several queues failed.
    #[error("epoll for the uplink queues: {0}")]
    Epoll(std::io::Error),
}

/// Counters of the uplink, beyond the port's own rx/tx counters.
#[derive(Debug, Default)]
pub struct XdpCounters {
    /// Super-frames cut into segments.
    pub tx_gso_frames: AtomicU64,
    /// Segments produced by the cutting.
    pub tx_segments: AtomicU64,
    /// Frames whose partial checksum was completed.
    pub tx_csum_completed: AtomicU64,
    /// Frames dropped because they exceed the MTU and are not GSO.
    pub tx_too_big: AtomicU64,
    /// Frames dropped because they could not be segmented (unsupported GSO, bad headers).
    pub tx_bad_gso: AtomicU64,
    /// Sends refused because no UMEM frame or tx ring slot was free.
    pub tx_full: AtomicU64,
    /// `sendto` kicks.
    pub tx_kicks: AtomicU64,
    /// Received frames too big for the switch's buffer (dropped).
    pub rx_too_big: AtomicU64,
    /// Super-frames made by coalescing received TCP segments (GRO).
    pub rx_gro_frames: AtomicU64,
    /// Segments that went into them.
    pub rx_gro_segments: AtomicU64,
    /// Fill-ring wake-ups.
    pub rx_fill_wakeups: AtomicU64,
}

/// One socket (one receive queue).
struct Queue {
    id: u32,
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
    /// Frames read from rx and copied out, to go back to the fill ring.
    to_fill: Vec<FrameDesc>,
    /// Frames in the fill ring or rx ring (the kernel's receive side).
    in_rx: usize,
    /// Frames in the tx or completion ring.
    in_tx: usize,
}

struct Inner {
    umem: Umem,
    queues: Vec<Queue>,
    /// Free frames (for transmit).
    free: Vec<FrameDesc>,
    /// Frames read from an rx ring and not yet copied out, with their queue index.
    held: VecDeque<(usize, FrameDesc)>,
    /// Scratch for ring operations.
    scratch: Vec<FrameDesc>,
    /// Where the next rx burst is taken from.
    next_rx: usize,
    /// Descriptors produced on queue 0's tx ring since the last kick.
    unkicked: usize,
    /// Frames to be produced on the tx ring by the current send.
    pending_tx: Vec<FrameDesc>,
    /// Data room of one UMEM frame.
    room: usize,
    batch: usize,
    ring_size: usize,
}

/// The uplink port.
pub struct XdpPort {
    inner: Mutex<Inner>,
    /// The socket fd (one queue) or an epoll fd over all sockets (several).
    ready_fd: RawFd,
    _epoll: Option<OwnedFd>,
    mode: XdpMode,
    ifname: String,
    ifindex: u32,
    mtu: u32,
    total: usize,
    /// Extra counters.
    pub counters: XdpCounters,
}

/// What `tapwayctl status` shows about the uplink.
#[derive(Debug, Clone)]
pub struct XdpInfo {
    /// Interface.
    pub ifname: String,
    /// Mode obtained.
    pub mode: XdpMode,
    /// Queues bound.
    pub queues: Vec<u32>,
    /// MTU of the interface.
    pub mtu: u32,
    /// UMEM frames.
    pub umem_frames: usize,
}

impl XdpPort {
    /// Binds the uplink on `cfg.ifname`, whose MTU is `mtu`. In `auto` mode, falls back from
    /// zero-copy to native to generic and logs the mode obtained.
    pub fn open(cfg: &XdpConfig, mtu: u32) -> Result<XdpPort, XdpError> {
        check_sizes(cfg, mtu)?;
        let order: &[XdpMode] = match cfg.mode {
            XdpMode::Auto => &[XdpMode::ZeroCopy, XdpMode::Native, XdpMode::Generic],
            XdpMode::ZeroCopy => &[XdpMode::ZeroCopy],
            XdpMode::Native => &[XdpMode::Native],
            XdpMode::Generic => &[XdpMode::Generic],
        };
        // A program left by a tapwayd that did not stop cleanly would be reused by libxdp as
        // it is (whatever its mode) and never removed: the NIC is dedicated, so take it off.
        if let Some(ifindex) = if_index(&cfg.ifname) {
            if let Some(id) = attached_prog(ifindex) {
                tracing::warn!(
                    uplink = cfg.ifname,
                    prog_id = id,
                    "an XDP program is already attached (left by an earlier tapwayd?): detaching it"
                );
                detach_all(ifindex);
            }
        }
        let rxq = rx_queue_count(&cfg.ifname);
        if let Some(n) = rxq.filter(|n| (*n as usize) > cfg.queues.len()) {
            tracing::warn!(
                uplink = cfg.ifname,
                rx_queues = n,
                bound = ?cfg.queues,
                "the NIC has more rx queues than sockets: frames steered to the others go to the \
                 kernel, not the switch (bind them all with --uplink-queues, or ethtool -L)"
            );
        }
        let mut last = None;
        for &mode in order {
            match XdpPort::open_mode(cfg, mtu, mode) {
                Ok(port) => {
                    tracing::info!(
                        uplink = cfg.ifname,
                        requested = cfg.mode.name(),
                        mode = mode.name(),
                        queues = ?cfg.queues,
                        mtu,
                        "AF_XDP uplink bound"
                    );
                    return Ok(port);
                }
                Err(e) => {
                    if cfg.mode == XdpMode::Auto {
                        tracing::info!(uplink = cfg.ifname, mode = mode.name(), error = %e, "AF_XDP mode not available, trying the next");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| XdpError::Config("no mode to try".into())))
    }

    fn open_mode(cfg: &XdpConfig, mtu: u32, mode: XdpMode) -> Result<XdpPort, XdpError> {
        if mode == XdpMode::Native && is_veth(&cfg.ifname) && mtu > VETH_NATIVE_MAX_MTU {
            return Err(bind_err(
                cfg,
                cfg.queues.first().copied().unwrap_or(0),
                mode,
                format!("native XDP on a veth needs MTU <= {VETH_NATIVE_MAX_MTU}, {} has {mtu}", cfg.ifname),
            ));
        }
        let frame_size = FrameSize::new(cfg.frame_size).map_err(|e| XdpError::Config(e.to_string()))?;
        let fill = QueueSize::new(cfg.fill_size).map_err(|e| XdpError::Config(e.to_string()))?;
        let ring = QueueSize::new(cfg.ring_size).map_err(|e| XdpError::Config(e.to_string()))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(fill)
            .comp_queue_size(fill)
            .build()
            .map_err(|e| XdpError::Config(e.to_string()))?;
        let room = umem_cfg.mtu() as usize;
        let frames =
            NonZeroU32::new(cfg.umem_frames).ok_or_else(|| XdpError::Config("no UMEM frames".into()))?;
        let (umem, mut free) =
            Umem::new(umem_cfg, frames, false).map_err(|e| XdpError::Umem(e.to_string()))?;
        let total = free.len();
        let (xdp_flags, bind) = mode.flags();
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .xdp_flags(xdp_flags)
            .bind_flags(bind | BindFlags::XDP_USE_NEED_WAKEUP)
            .libxdp_flags(LibxdpFlags::empty())
            .build();
        let iface: Interface =
            cfg.ifname.parse().map_err(|_| XdpError::Config(format!("interface name {:?}", cfg.ifname)))?;
        // Each queue gets an equal share of the fill ring's worth of frames; the rest stays
        // free for transmit.
        let per_queue = (cfg.fill_size as usize).min(total / (2 * cfg.queues.len()).max(1));
        let mut queues = Vec::new();
        for &qid in &cfg.queues {
            let (tx, rx, rings) = bind_retry(&sock_cfg, &umem, &iface, qid)
                .map_err(|reason| bind_err(cfg, qid, mode, reason))?;
            let Some((mut fill, comp)) = rings else {
                return Err(bind_err(cfg, qid, mode, "queue bound twice".into()));
            };
            let give: Vec<FrameDesc> = free.split_off(free.len().saturating_sub(per_queue));
            // SAFETY: the descriptors come from this UMEM and are not in any ring.
            let n = unsafe { fill.produce(&give) };
            if n != give.len() {
                return Err(XdpError::Config(format!("fill ring took {n} of {} frames", give.len())));
            }
            queues.push(Queue { id: qid, rx, tx, fill, comp, to_fill: Vec::new(), in_rx: n, in_tx: 0 });
        }
        let (ready_fd, epoll) = if queues.len() == 1 {
            (queues[0].rx.fd().as_raw_fd(), None)
        } else {
            let ep = epoll_over(queues.iter().map(|q| q.rx.fd().as_raw_fd())).map_err(XdpError::Epoll)?;
            (ep.as_raw_fd(), Some(ep))
        };
        let batch = cfg.batch.max(1);
        Ok(XdpPort {
            inner: Mutex::new(Inner {
                umem,
                queues,
                free,
                held: VecDeque::with_capacity(batch),
                scratch: vec![FrameDesc::default(); (cfg.fill_size as usize).max(batch)],
                next_rx: 0,
                unkicked: 0,
                pending_tx: Vec::with_capacity(64),
                room,
                batch,
                ring_size: cfg.ring_size as usize,
            }),
            ready_fd,
            _epoll: epoll,
            mode,
            ifname: cfg.ifname.clone(),
            ifindex: if_index(&cfg.ifname).unwrap_or(0),
            mtu,
            total,
            counters: XdpCounters::default(),
        })
    }

    /// The mode obtained.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// What status shows.
    pub fn info(&self) -> XdpInfo {
        let queues = self.lock().queues.iter().map(|q| q.id).collect();
        XdpInfo {
            ifname: self.ifname.clone(),
            mode: self.mode,
            queues,
            mtu: self.mtu,
            umem_frames: self.total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// UMEM accounting and counters by name (reaps completions first, so frames whose
    /// transmission finished are counted free).
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let mut g = self.lock();
        g.reap();
        let a = g.accounting();
        // The kernel's own counters of each socket, summed.
        let mut k = [0u64; 5];
        for q in &g.queues {
            if let Ok(x) = q.rx.fd().xdp_statistics() {
                k[0] += x.rx_dropped();
                k[1] += x.rx_ring_full();
                k[2] += x.rx_fill_ring_empty_descs();
                k[3] += x.rx_invalid_descs();
                k[4] += x.tx_invalid_descs();
            }
        }
        let c = &self.counters;
        vec![
            ("uplink_xdp_rx_dropped", k[0]),
            ("uplink_xdp_rx_ring_full", k[1]),
            ("uplink_xdp_rx_fill_ring_empty", k[2]),
            ("uplink_xdp_rx_invalid_descs", k[3]),
            ("uplink_xdp_tx_invalid_descs", k[4]),
            ("uplink_umem_total", self.total as u64),
            ("uplink_umem_free", a.free as u64),
            ("uplink_umem_rx_kernel", a.rx as u64),
            ("uplink_umem_tx_in_flight", a.tx as u64),
            ("uplink_umem_held", a.held as u64),
            ("uplink_tx_gso_frames", c.tx_gso_frames.load(Relaxed)),
            ("uplink_tx_segments", c.tx_segments.load(Relaxed)),
            ("uplink_tx_csum_completed", c.tx_csum_completed.load(Relaxed)),
            ("uplink_tx_too_big", c.tx_too_big.load(Relaxed)),
            ("uplink_tx_bad_gso", c.tx_bad_gso.load(Relaxed)),
            ("uplink_tx_full", c.tx_full.load(Relaxed)),
            ("uplink_tx_kicks", c.tx_kicks.load(Relaxed)),
            ("uplink_rx_too_big", c.rx_too_big.load(Relaxed)),
            ("uplink_rx_gro_frames", c.rx_gro_frames.load(Relaxed)),
            ("uplink_rx_gro_segments", c.rx_gro_segments.load(Relaxed)),
            ("uplink_rx_fill_wakeups", c.rx_fill_wakeups.load(Relaxed)),
        ]
    }

    /// Where every UMEM frame is right now.
    pub fn accounting(&self) -> Accounting {
        let mut g = self.lock();
        g.reap();
        g.accounting()
    }

    /// Writes one frame (vnet header + Ethernet) into free UMEM frames, segmenting or
    /// completing its checksum as needed; the descriptors wait in `pending_tx`.
    fn stage_tx(&self, g: &mut Inner, frame: &[u8]) -> Result<(), PortError> {
        let bad = || PortError::Io(std::io::Error::from(std::io::ErrorKind::InvalidData));
        let hdr = VnetHdr::parse(frame).map_err(|_| bad())?;
        let eth = &frame[VNET_HDR_LEN..];
        let mtu = self.mtu as usize;
        if needs_segmentation(&hdr) {
            let plan = match SegmentPlan::new(&hdr, eth, mtu) {
                Ok(p) => p,
                Err(_) => {
                    self.counters.tx_bad_gso.fetch_add(1, Relaxed);
                    return Err(bad());
                }
            };
            let n = plan.count();
            if g.free.len() < n {
                self.counters.tx_full.fetch_add(1, Relaxed);
                return Err(PortError::Full);
            }
            for i in 0..n {
                let Some(mut desc) = g.free.pop() else { return Err(PortError::Full) };
                let len = plan.segment_len(i);
                let res = g.write_with(&mut desc, len, |buf| plan.write(eth, i, buf).is_ok());
                g.pending_tx.push(desc);
                if !res {
                    self.counters.tx_bad_gso.fetch_add(1, Relaxed);
                    return Err(bad());
                }
            }
            self.counters.tx_gso_frames.fetch_add(1, Relaxed);
            self.counters.tx_segments.fetch_add(n as u64, Relaxed);
            return Ok(());
        }
        if eth.len() > mtu + L2_OVERHEAD || eth.len() > g.room {
            self.counters.tx_too_big.fetch_add(1, Relaxed);
            return Err(bad());
        }
        let Some(mut desc) = g.free.pop() else {
            self.counters.tx_full.fetch_add(1, Relaxed);
            return Err(PortError::Full);
        };
        let csum = hdr.flags & F_NEEDS_CSUM != 0;
        let ok = g.write_with(&mut desc, eth.len(), |buf| {
            buf.copy_from_slice(eth);
            !csum || complete_csum(buf, hdr.csum_start, hdr.csum_offset).is_ok()
        });
        g.pending_tx.push(desc);
        if !ok {
            return Err(bad());
        }
        if csum {
            self.counters.tx_csum_completed.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    fn kick(&self, q: &Queue) {
        self.counters.tx_kicks.fetch_add(1, Relaxed);
        if let Err(e) = q.tx.wakeup() {
            tracing::debug!(uplink = self.ifname, error = %e, "tx kick failed");
        }
    }
}

/// Where the UMEM frames are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    /// In the user-space free list.
    pub free: usize,
    /// On the kernel's receive side (fill + rx rings).
    pub rx: usize,
    /// On the transmit side (tx + completion rings).
    pub tx: usize,
    /// Read from rx, not yet copied out.
    pub held: usize,
}

impl Accounting {
    /// Frames accounted for (equals the UMEM size unless a frame leaked).
    pub fn sum(&self) -> usize {
        self.free + self.rx + self.tx + self.held
    }
}

impl Inner {
    fn accounting(&self) -> Accounting {
        Accounting {
            free: self.free.len()
                + self.pending_tx.len()
                + self.queues.iter().map(|q| q.to_fill.len()).sum::<usize>(),
            rx: self.queues.iter().map(|q| q.in_rx).sum(),
            tx: self.queues.iter().map(|q| q.in_tx).sum(),
            held: self.held.len(),
        }
    }

    /// Moves completed transmissions back to the free list.
    fn reap(&mut self) {
        let Inner { queues, free, scratch, .. } = self;
        for q in queues.iter_mut() {
            while q.in_tx > 0 {
                // SAFETY: the completion ring only returns descriptors of this UMEM that we
                // produced on the tx ring; the kernel is done with them.
                let n = unsafe { q.comp.consume(scratch) };
                if n == 0 {
                    break;
                }
                q.in_tx -= n;
                free.extend_from_slice(&scratch[..n]);
            }
        }
    }

    /// Gives received frames back to their fill rings (once per burst), waking the driver if
    /// it stopped for want of fill entries.
    fn refill(&mut self, counters: &XdpCounters) {
        for q in self.queues.iter_mut() {
            if q.to_fill.is_empty() {
                continue;
            }
            // SAFETY: these descriptors came from this UMEM's rx ring and were copied out;
            // nothing refers to them any more.
            let n = unsafe { q.fill.produce(&q.to_fill) };
            if n == q.to_fill.len() {
                q.in_rx += n;
                q.to_fill.clear();
                if q.fill.needs_wakeup() {
                    counters.rx_fill_wakeups.fetch_add(1, Relaxed);
                    let _ = q.fill.wakeup(q.rx.fd_mut(), 0);
                }
            }
        }
    }

    /// Takes the next burst from an rx ring into `held`; false when every ring is empty.
    fn pull(&mut self, counters: &XdpCounters) -> bool {
        let nq = self.queues.len();
        for k in 0..nq {
            let qi = (self.next_rx + k) % nq;
            let batch = self.batch.min(self.scratch.len());
            let Inner { queues, scratch, held, .. } = self;
            let q = &mut queues[qi];
            // SAFETY: the rx ring belongs to a socket of this UMEM.
            let n = unsafe { q.rx.consume(&mut scratch[..batch]) };
            if n > 0 {
                q.in_rx -= n;
                held.extend(scratch[..n].iter().map(|d| (qi, *d)));
                self.next_rx = (qi + 1) % nq;
                return true;
            }
            if q.fill.needs_wakeup() {
                counters.rx_fill_wakeups.fetch_add(1, Relaxed);
                let _ = q.fill.wakeup(q.rx.fd_mut(), 0);
            }
        }
        false
    }

    /// Lets `f` fill `len` bytes of the frame `desc` points at; false if it does not fit or
    /// `f` failed.
    fn write_with(&mut self, desc: &mut FrameDesc, len: usize, f: impl FnOnce(&mut [u8]) -> bool) -> bool {
        if len > self.room {
            return false;
        }
        // SAFETY: `desc` was taken from the free list, so neither the kernel nor another
        // descriptor refers to this frame.
        let mut data = unsafe { self.umem.data_mut(desc) };
        data.cursor().set_pos(len);
        let buf = data.contents_mut();
        buf.len() == len && f(buf)
    }

    /// Produces `pending_tx` on queue 0's tx ring; on a full ring, returns them to the free list.
    fn produce_tx(&mut self) -> bool {
        let Inner { queues, pending_tx, free, .. } = self;
        let Some(q) = queues.first_mut() else { return false };
        if pending_tx.is_empty() {
            return true;
        }
        // SAFETY: the descriptors are UMEM frames we just wrote and own.
        let n = unsafe { q.tx.produce(pending_tx) };
        if n == pending_tx.len() {
            q.in_tx += n;
            pending_tx.clear();
            true
        } else {
            free.append(pending_tx);
            false
        }
    }
}

impl PortIo for XdpPort {
    fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, PortError> {
        let mut g = self.lock();
        loop {
            let Inner { umem, held, queues, .. } = &mut *g;
            if let Some((qi, desc)) = held.pop_front() {
                // SAFETY: `desc` came from this UMEM's rx ring and is not given back yet.
                let bytes = unsafe { umem.data(&desc) }.contents();
                let n = VNET_HDR_LEN + bytes.len();
                let fits = n <= buf.len();
                let mut len = 0;
                if fits {
                    buf[VNET_HDR_LEN..n].copy_from_slice(bytes);
                    len = n;
                }
                if let Some(q) = queues.get_mut(qi) {
                    q.to_fill.push(desc);
                }
                if !fits {
                    self.counters.rx_too_big.fetch_add(1, Relaxed);
                    continue;
                }
                let (hdr, frame) = buf.split_at_mut(VNET_HDR_LEN);
                let vnet = match Merge::start(&frame[..n - VNET_HDR_LEN]) {
                    Some(mut m) => {
                        // Coalesce the following segments of the flow already in this burst.
                        while let Some(&(qn, next)) = held.front() {
                            // SAFETY: as above, a received frame not given back yet.
                            let next_bytes = unsafe { umem.data(&next) }.contents();
                            if !m.append(frame, next_bytes) {
                                break;
                            }
                            held.pop_front();
                            if let Some(q) = queues.get_mut(qn) {
                                q.to_fill.push(next);
                            }
                        }
                        if m.count() > 1 {
                            self.counters.rx_gro_frames.fetch_add(1, Relaxed);
                            self.counters.rx_gro_segments.fetch_add(m.count() as u64, Relaxed);
                        }
                        len = VNET_HDR_LEN + m.frame_len();
                        m.finish(frame)
                    }
                    None => VnetHdr::default(),
                };
                vnet.emit(hdr);
                return Ok(Some(len));
            }
            g.refill(&self.counters);
            if !g.pull(&self.counters) {
                return Ok(None);
            }
        }
    }

    fn send(&self, frame: &[u8]) -> Result<(), PortError> {
        let mut g = self.lock();
        let g = &mut *g;
        g.reap();
        if let Err(e) = self.stage_tx(g, frame) {
            let pending = std::mem::take(&mut g.pending_tx);
            g.free.extend(pending);
            return Err(e);
        }
        if !g.produce_tx() {
            // The ring is full: let the kernel drain it, reap, and try once more.
            if let Some(q) = g.queues.first() {
                self.kick(q);
            }
            g.unkicked = 0;
            g.reap();
            if self.stage_tx(g, frame).is_err() || !g.produce_tx() {
                let pending = std::mem::take(&mut g.pending_tx);
                g.free.extend(pending);
                self.counters.tx_full.fetch_add(1, Relaxed);
                return Err(PortError::Full);
            }
        }
        g.unkicked += 1;
        if g.unkicked >= KICK_BATCH {
            if let Some(q) = g.queues.first() {
                self.kick(q);
            }
            g.unkicked = 0;
        }
        Ok(())
    }

    fn flush(&self) {
        let mut g = self.lock();
        let g = &mut *g;
        let size = g.ring_size;
        let Some(q) = g.queues.first_mut() else { return };
        // In copy mode one kick transmits at most KICK_BATCH descriptors: kick until the tx
        // ring is empty (bounded, in case the device is stuck).
        for _ in 0..(size / KICK_BATCH + 1) {
            let queued = size.saturating_sub(q.tx.nb_free_exact() as usize);
            // Nothing left, or a zero-copy driver already working on it.
            if queued == 0 || !q.tx.needs_wakeup() {
                break;
            }
            self.counters.tx_kicks.fetch_add(1, Relaxed);
            if q.tx.wakeup().is_err() {
                break;
            }
            g.unkicked = 0;
        }
        g.unkicked = 0;
        g.reap();
    }

    fn readiness_fd(&self) -> Option<RawFd> {
        Some(self.ready_fd)
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        XdpPort::stats(self)
    }
}

impl Drop for XdpPort {
    fn drop(&mut self) {
        // Close the sockets first; libxdp removes the program it loaded with the last one.
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        inner.queues.clear();
        if self.ifindex != 0 {
            if let Some(id) = attached_prog(self.ifindex) {
                tracing::info!(uplink = self.ifname, prog_id = id, "detaching the XDP program libxdp left");
                detach_all(self.ifindex);
            }
        }
        tracing::info!(uplink = self.ifname, "AF_XDP uplink closed");
    }
}

/// The interface index of `ifname`.
fn if_index(ifname: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(ifname).ok()
}

/// The id of the XDP program attached to `ifindex` (any mode), if there is one.
fn attached_prog(ifindex: u32) -> Option<u32> {
    let ifindex = i32::try_from(ifindex).ok()?;
    let mut id = 0u32;
    // SAFETY: plain libbpf query; `id` outlives the call.
    let rc = unsafe { libxdp_sys::bpf_xdp_query_id(ifindex, 0, &mut id) };
    (rc == 0 && id != 0).then_some(id)
}

/// Detaches whatever XDP program is attached to `ifindex`, in generic and in driver mode.
fn detach_all(ifindex: u32) {
    let Ok(ifindex) = i32::try_from(ifindex) else { return };
    for flags in [XdpFlags::XDP_FLAGS_SKB_MODE, XdpFlags::XDP_FLAGS_DRV_MODE] {
        // SAFETY: plain libbpf call; a null `opts` means no options.
        let rc = unsafe { libxdp_sys::bpf_xdp_detach(ifindex, flags.bits(), std::ptr::null()) };
        if rc != 0 {
            tracing::debug!(ifindex, mode = flags.bits(), rc, "XDP detach");
        }
    }
}

fn bind_err(cfg: &XdpConfig, queue: u32, mode: XdpMode, reason: String) -> XdpError {
    XdpError::Bind { ifname: cfg.ifname.clone(), queue, mode: mode.name(), reason }
}

type Bound = (TxQueue, RxQueue, Option<(FillQueue, CompQueue)>);

/// Creates one socket, retrying while the kernel still holds the queue (`EBUSY`).
fn bind_retry(cfg: &SocketConfig, umem: &Umem, iface: &Interface, queue: u32) -> Result<Bound, String> {
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
    // Half the UMEM is shared out to the fill rings (up to a fill ring each), the rest is for
    // transmit; below 64 frames per queue a burst would starve.
    if (cfg.umem_frames as usize) / (2 * cfg.queues.len()) < 64 {
        return Err(XdpError::Config(format!(
            "{} UMEM frames are too few for {} queue(s): at least {} are needed",
            cfg.umem_frames,
            cfg.queues.len(),
            128 * cfg.queues.len()
        )));
    }
    Ok(())
}

/// Checks the configuration against the interface's MTU.
fn check_sizes(cfg: &XdpConfig, mtu: u32) -> Result<(), XdpError> {
    check_config(cfg)?;
    let room = cfg.frame_size.saturating_sub(256) as usize;
    if mtu as usize + L2_OVERHEAD > room {
        return Err(XdpError::Config(format!(
            "MTU {mtu} of {} does not fit a {}-byte UMEM frame (at most {})",
            cfg.ifname,
            cfg.frame_size,
            room - L2_OVERHEAD
        )));
    }
    Ok(())
}

/// Number of rx queues of `ifname` (from sysfs).
fn rx_queue_count(ifname: &str) -> Option<u32> {
    let dir = std::path::Path::new("/sys/class/net").join(ifname).join("queues");
    let n = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok()
}

/// Whether `ifname` looks like a veth (virtual: no backing device, peer index differs).
fn is_veth(ifname: &str) -> bool {
    let base = std::path::Path::new("/sys/class/net").join(ifname);
    let read = |f: &str| std::fs::read_to_string(base.join(f)).ok().map(|s| s.trim().to_string());
    !base.join("device").exists() && read("iflink").is_some() && read("iflink") != read("ifindex")
}

/// An epoll fd that is readable when any of `fds` is.
fn epoll_over(fds: impl Iterator<Item = RawFd>) -> std::io::Result<OwnedFd> {
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
        let e = check_sizes(&ok, 9000).unwrap_err().to_string();
        assert!(e.contains("MTU 9000") && e.contains("at most 3822"), "{e}");
        let bad = XdpConfig { ring_size: 1000, ..ok.clone() };
        assert!(check_sizes(&bad, 1500).is_err());
        let bad = XdpConfig { umem_frames: 128, queues: vec![0, 1], ..ok.clone() };
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
