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
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{PortError, PortIo};
use crate::pool::{BufferLayout, Frame, FramePool, LocalPool, FRAME_CAPACITY};
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
    /// UMEM frames (of `frame_size` bytes) for transmit copies: the segments of super-frames
    /// and flooded frames (power of two). The frame pool's buffers come on top.
    pub umem_frames: u32,
    /// Bytes per UMEM frame (power of two, 2048 or 4096).
    pub frame_size: u32,
    /// Size of each socket's rx and tx rings (power of two).
    pub ring_size: u32,
    /// Size of each socket's fill ring (power of two), kept full with pool buffers: the frame
    /// pool grows by this many buffers per queue.
    pub fill_size: u32,
    /// The pods' MTU (`--mtu`). TCP super-frames are cut into segments as large as the
    /// uplink's MTU allows, in whole multiples of the sender's MSS; received ones are handed to
    /// pods with a GSO size that fits this MTU.
    pub pod_mtu: u32,
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
            umem_frames: 4096,
            frame_size: 4096,
            ring_size: 2048,
            fill_size: 1024,
            pod_mtu: 1500,
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
    /// Fill-ring top-ups cut short because the frame pool was empty.
    pub rx_fill_short: AtomicU64,
    /// Received descriptors that pointed at no buffer lent to the kernel (dropped).
    pub rx_bad_desc: AtomicU64,
    /// Frames handed to the datapath in the buffer the kernel received them into.
    pub rx_zero_copy: AtomicU64,
    /// Frames put on the tx ring in the pool buffer they were read into, without a copy.
    pub tx_zero_copy: AtomicU64,
}

/// One socket (one receive queue).
struct Queue {
    id: u32,
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
    /// Pool buffers in the fill ring or rx ring (the kernel's receive side).
    in_rx: usize,
    /// Descriptors in the tx or completion ring (pool buffers and transmit chunks).
    in_tx: usize,
}

struct Inner {
    umem: Umem,
    queues: Vec<Queue>,
    /// Pool buffers lent to the kernel (fill/rx or tx/completion rings) or received and not yet
    /// handed out, by pool index.
    lent: Vec<Option<Frame>>,
    /// Descriptor of each pool buffer's first UMEM frame, by pool index.
    pool_desc: Vec<FrameDesc>,
    /// Pool buffers on the tx or completion rings.
    tx_lent: usize,
    /// Free transmit chunks (for segments and copies).
    free: Vec<FrameDesc>,
    /// Transmit chunks in all.
    chunks: usize,
    /// Frames read from an rx ring and not yet handed out, with their queue index.
    held: VecDeque<(usize, FrameDesc)>,
    /// Pool buffers whose transmission completed, to go back to a worker's pool.
    released: Vec<Frame>,
    /// Scratch for ring operations.
    scratch: Vec<FrameDesc>,
    /// Descriptors on their way to a fill ring.
    fill_buf: Vec<FrameDesc>,
    /// Where the next rx burst is taken from.
    next_rx: usize,
    /// Descriptors produced on queue 0's tx ring since the last kick.
    unkicked: usize,
    /// Transmit chunks to be produced on the tx ring by the current send.
    pending_tx: Vec<FrameDesc>,
    /// How the pool's buffers sit in the UMEM.
    layout: BufferLayout,
    /// Bytes of the UMEM taken by the pool (transmit chunks follow).
    pool_bytes: usize,
    /// Data room of one UMEM frame.
    room: usize,
    /// The pods' MTU: received TCP segments larger than its MSS get a GSO header cutting them
    /// to it.
    pod_mtu: usize,
    /// Pool buffers each fill ring is kept topped up with.
    fill_target: usize,
    batch: usize,
    ring_size: usize,
}

/// The uplink port.
pub struct XdpPort {
    inner: Mutex<Inner>,
    /// The frame pool carved from the UMEM.
    pool: Arc<FramePool>,
    /// The socket fd (one queue) or an epoll fd over all sockets (several).
    ready_fd: RawFd,
    _epoll: Option<OwnedFd>,
    mode: XdpMode,
    ifname: String,
    ifindex: u32,
    mtu: u32,
    umem_frames: usize,
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
    /// UMEM frames (of `frame_size` bytes), the frame pool's included.
    pub umem_frames: usize,
}

impl XdpPort {
    /// Binds the uplink on `cfg.ifname`, whose MTU is `mtu`, over a UMEM that also holds the
    /// switch's frame pool: `pool_frames` buffers for the datapath plus a fill ring's worth per
    /// queue. Returns the port and that pool, which the switch must be started with. In `auto`
    /// mode, falls back from zero-copy to native to generic and logs the mode obtained.
    pub fn open(
        cfg: &XdpConfig,
        mtu: u32,
        pool_frames: usize,
    ) -> Result<(XdpPort, Arc<FramePool>), XdpError> {
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
            match XdpPort::open_mode(cfg, mtu, pool_frames, mode) {
                Ok(opened) => {
                    tracing::info!(
                        uplink = cfg.ifname,
                        requested = cfg.mode.name(),
                        mode = mode.name(),
                        queues = ?cfg.queues,
                        mtu,
                        pool_frames = opened.1.total(),
                        umem_mib = (opened.0.umem_frames * cfg.frame_size as usize) >> 20,
                        "AF_XDP uplink bound; the frame pool lives in its UMEM"
                    );
                    return Ok(opened);
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

    /// One attempt in one mode, on a UMEM of its own: a socket that failed to bind leaves its
    /// rings set on the UMEM's socket, so the next mode needs a fresh UMEM.
    fn open_mode(
        cfg: &XdpConfig,
        mtu: u32,
        pool_frames: usize,
        mode: XdpMode,
    ) -> Result<(XdpPort, Arc<FramePool>), XdpError> {
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
        let comp =
            QueueSize::new(cfg.fill_size.max(cfg.ring_size)).map_err(|e| XdpError::Config(e.to_string()))?;
        let ring = QueueSize::new(cfg.ring_size).map_err(|e| XdpError::Config(e.to_string()))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(fill)
            .comp_queue_size(comp)
            .build()
            .map_err(|e| XdpError::Config(e.to_string()))?;
        let room = umem_cfg.mtu() as usize;
        let data_offset = (umem_cfg.xdp_headroom() + umem_cfg.frame_headroom()) as usize;
        let chunk = cfg.frame_size as usize;
        // A pool buffer spans whole UMEM frames and starts so that its Ethernet frame sits
        // where the kernel puts a received one: `data_offset` into its first UMEM frame.
        let head = data_offset - VNET_HDR_LEN;
        let stride = (head + FRAME_CAPACITY).div_ceil(chunk) * chunk;
        let layout = BufferLayout { stride, head, capacity: stride - head };
        let per_chunk = stride / chunk;
        let fill_target = cfg.fill_size as usize;
        let pool_count = pool_frames.max(64) + fill_target * cfg.queues.len();
        let umem_frames = pool_count * per_chunk + cfg.umem_frames as usize;
        let frames = u32::try_from(umem_frames)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| XdpError::Config(format!("{umem_frames} UMEM frames")))?;
        let (umem, mut descs) =
            Umem::new(umem_cfg, frames, false).map_err(|e| XdpError::Umem(e.to_string()))?;
        let Some(first) = descs.first().copied() else { return Err(XdpError::Umem("no frames".into())) };
        // SAFETY: `first` is a frame of this UMEM that nothing else uses yet; only its address
        // is taken.
        let data0 = unsafe { umem.data(&first) }.contents().as_ptr();
        let base = data0.wrapping_sub(first.addr()).cast_mut();
        let base = NonNull::new(base).ok_or_else(|| XdpError::Umem("null UMEM".into()))?;
        let pool_bytes = pool_count * stride;
        let chunks_desc = descs.split_off(pool_count * per_chunk);
        let pool_desc: Vec<FrameDesc> = descs.iter().step_by(per_chunk).copied().collect();
        // SAFETY: the first `pool_bytes` of the UMEM hold only the pool's buffers (the
        // transmit chunks follow); the UMEM handle keeps the mapping alive; the kernel only
        // writes into a buffer once the port lends it (fill ring) and until it comes back.
        let pool = unsafe { FramePool::over(base, pool_bytes, Box::new(umem.clone()), pool_count, layout) }
            .map_err(|e| XdpError::Umem(e.to_string()))?;
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
        let mut queues = Vec::new();
        for &qid in &cfg.queues {
            let (tx, rx, rings) = bind_retry(&sock_cfg, &umem, &iface, qid)
                .map_err(|reason| bind_err(cfg, qid, mode, reason))?;
            let Some((fill, comp)) = rings else {
                return Err(bind_err(cfg, qid, mode, "queue bound twice".into()));
            };
            queues.push(Queue { id: qid, rx, tx, fill, comp, in_rx: 0, in_tx: 0 });
        }
        let (ready_fd, epoll) = if queues.len() == 1 {
            (queues[0].rx.fd().as_raw_fd(), None)
        } else {
            let ep = epoll_over(queues.iter().map(|q| q.rx.fd().as_raw_fd())).map_err(XdpError::Epoll)?;
            (ep.as_raw_fd(), Some(ep))
        };
        let batch = cfg.batch.max(1);
        let chunks = chunks_desc.len();
        let port = XdpPort {
            inner: Mutex::new(Inner {
                umem,
                queues,
                lent: std::iter::repeat_with(|| None).take(pool_count).collect(),
                pool_desc,
                tx_lent: 0,
                free: chunks_desc,
                chunks,
                held: VecDeque::with_capacity(batch),
                released: Vec::new(),
                scratch: vec![FrameDesc::default(); (cfg.fill_size.max(cfg.ring_size) as usize).max(batch)],
                fill_buf: Vec::with_capacity(cfg.fill_size as usize),
                next_rx: 0,
                unkicked: 0,
                pending_tx: Vec::with_capacity(64),
                layout,
                pool_bytes,
                room,
                pod_mtu: (cfg.pod_mtu as usize).min(mtu as usize),
                fill_target,
                batch,
                ring_size: cfg.ring_size as usize,
            }),
            pool: pool.clone(),
            ready_fd,
            _epoll: epoll,
            mode,
            ifname: cfg.ifname.clone(),
            ifindex: if_index(&cfg.ifname).unwrap_or(0),
            mtu,
            umem_frames,
            counters: XdpCounters::default(),
        };
        // The fill rings get their buffers before any traffic.
        {
            let mut local = LocalPool::new(pool.clone(), 64);
            port.lock().refill(&mut local, &port.counters);
        }
        Ok((port, pool))
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
            umem_frames: self.umem_frames,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// UMEM accounting and counters by name (reaps completions first, so frames whose
    /// transmission finished are counted back).
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
        let n = |v: usize| v as u64;
        vec![
            ("uplink_xdp_rx_dropped", k[0]),
            ("uplink_xdp_rx_ring_full", k[1]),
            ("uplink_xdp_rx_fill_ring_empty", k[2]),
            ("uplink_xdp_rx_invalid_descs", k[3]),
            ("uplink_xdp_tx_invalid_descs", k[4]),
            ("uplink_umem_frames", n(self.umem_frames)),
            ("uplink_pool_rx_lent", n(a.rx_lent)),
            ("uplink_pool_tx_lent", n(a.tx_lent)),
            ("uplink_pool_held", n(a.held)),
            ("uplink_pool_lost", n(a.lost)),
            ("uplink_chunks_total", n(a.chunks_total)),
            ("uplink_chunks_free", n(a.chunks_free)),
            ("uplink_chunks_in_flight", n(a.chunks_in_flight)),
            ("uplink_tx_zero_copy", c.tx_zero_copy.load(Relaxed)),
            ("uplink_rx_zero_copy", c.rx_zero_copy.load(Relaxed)),
            ("uplink_tx_gso_frames", c.tx_gso_frames.load(Relaxed)),
            ("uplink_tx_segments", c.tx_segments.load(Relaxed)),
            ("uplink_tx_csum_completed", c.tx_csum_completed.load(Relaxed)),
            ("uplink_tx_too_big", c.tx_too_big.load(Relaxed)),
            ("uplink_tx_bad_gso", c.tx_bad_gso.load(Relaxed)),
            ("uplink_tx_full", c.tx_full.load(Relaxed)),
            ("uplink_tx_kicks", c.tx_kicks.load(Relaxed)),
            ("uplink_rx_too_big", c.rx_too_big.load(Relaxed)),
            ("uplink_rx_bad_desc", c.rx_bad_desc.load(Relaxed)),
            ("uplink_rx_gro_frames", c.rx_gro_frames.load(Relaxed)),
            ("uplink_rx_gro_segments", c.rx_gro_segments.load(Relaxed)),
            ("uplink_rx_fill_wakeups", c.rx_fill_wakeups.load(Relaxed)),
            ("uplink_rx_fill_short", c.rx_fill_short.load(Relaxed)),
        ]
    }

    /// Where the UMEM's buffers are right now.
    pub fn accounting(&self) -> Accounting {
        let mut g = self.lock();
        g.reap();
        g.accounting()
    }

    /// Writes one frame (vnet header + Ethernet) into free transmit chunks, segmenting or
    /// completing its checksum as needed; the descriptors wait in `pending_tx`.
    fn stage_tx(&self, g: &mut Inner, frame: &[u8]) -> Result<(), PortError> {
        let bad = || PortError::Io(std::io::Error::from(std::io::ErrorKind::InvalidData));
        let hdr = VnetHdr::parse(frame).map_err(|_| bad())?;
        let eth = &frame[VNET_HDR_LEN..];
        let mtu = self.mtu as usize;
        if needs_segmentation(&hdr) {
            let plan = match SegmentPlan::new(&hdr, eth, mtu) {
                Ok(p) => p.pack_to_mtu(mtu),
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

    /// Copies `frame` into transmit chunks and puts them on the tx ring.
    fn send_copy(&self, g: &mut Inner, frame: &[u8]) -> Result<(), PortError> {
        if let Err(e) = self.stage_tx(g, frame) {
            let pending = std::mem::take(&mut g.pending_tx);
            g.free.extend(pending);
            return Err(e);
        }
        if !g.produce_tx() {
            // The ring is full: let the kernel drain it, reap, and try once more.
            self.kick_now(g);
            if self.stage_tx(g, frame).is_err() || !g.produce_tx() {
                let pending = std::mem::take(&mut g.pending_tx);
                g.free.extend(pending);
                self.counters.tx_full.fetch_add(1, Relaxed);
                return Err(PortError::Full);
            }
        }
        self.kicked_maybe(g);
        Ok(())
    }

    /// Puts the pool buffer `frame` itself on the tx ring (no copy), when it can go as it is:
    /// a frame of this UMEM's pool, not a super-frame, fitting one UMEM frame. Gives the frame
    /// back otherwise.
    fn send_in_place(&self, g: &mut Inner, mut frame: Frame) -> Result<Result<(), PortError>, Frame> {
        let Ok(hdr) = VnetHdr::parse(frame.bytes()) else { return Err(frame) };
        let len = frame.ethernet().len();
        if !frame.is_from(&self.pool)
            || needs_segmentation(&hdr)
            || len == 0
            || len > self.mtu as usize + L2_OVERHEAD
            || len > g.room
        {
            return Err(frame);
        }
        if hdr.flags & F_NEEDS_CSUM != 0 {
            let eth = &mut frame.bytes_mut()[VNET_HDR_LEN..];
            if complete_csum(eth, hdr.csum_start, hdr.csum_offset).is_err() {
                g.released.push(frame);
                return Ok(Err(PortError::Io(std::io::Error::from(std::io::ErrorKind::InvalidData))));
            }
            self.counters.tx_csum_completed.fetch_add(1, Relaxed);
        }
        let idx = frame.index();
        let Some(mut desc) = g.pool_desc.get(idx).copied() else { return Err(frame) };
        // Only the descriptor's length is set: the bytes are already in place.
        // SAFETY: `desc` is this pool buffer's first UMEM frame, owned by `frame`, which is
        // not borrowed now.
        unsafe { g.umem.data_mut(&mut desc) }.cursor().set_pos(len);
        let mut produced = g.produce_one(&desc);
        if !produced {
            self.kick_now(g);
            produced = g.produce_one(&desc);
        }
        if !produced {
            self.counters.tx_full.fetch_add(1, Relaxed);
            g.released.push(frame);
            return Ok(Err(PortError::Full));
        }
        g.lent[idx] = Some(frame);
        g.tx_lent += 1;
        self.counters.tx_zero_copy.fetch_add(1, Relaxed);
        self.kicked_maybe(g);
        Ok(Ok(()))
    }

    /// Kicks the tx ring now (it is full) and reaps what completed.
    fn kick_now(&self, g: &mut Inner) {
        if let Some(q) = g.queues.first() {
            self.kick(q);
        }
        g.unkicked = 0;
        g.reap();
    }

    /// Counts one more descriptor on the tx ring and kicks once a kick's worth is waiting.
    fn kicked_maybe(&self, g: &mut Inner) {
        g.unkicked += 1;
        if g.unkicked >= KICK_BATCH {
            if let Some(q) = g.queues.first() {
                self.kick(q);
            }
            g.unkicked = 0;
        }
    }

    fn kick(&self, q: &Queue) {
        self.counters.tx_kicks.fetch_add(1, Relaxed);
        if let Err(e) = q.tx.wakeup() {
            tracing::debug!(uplink = self.ifname, error = %e, "tx kick failed");
        }
    }
}

/// Where the uplink's buffers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    /// Pool buffers on the kernel's receive side (fill + rx rings).
    pub rx_lent: usize,
    /// Pool buffers on the transmit side (tx + completion rings), sent without a copy.
    pub tx_lent: usize,
    /// Pool buffers received and not yet handed out (0 between bursts), or transmitted and
    /// waiting to go back to a worker's pool.
    pub held: usize,
    /// Pool buffers the port holds beyond those: a bookkeeping fault (always 0).
    pub lost: usize,
    /// Transmit chunks (UMEM frames for segments and copies) in all.
    pub chunks_total: usize,
    /// Transmit chunks free.
    pub chunks_free: usize,
    /// Transmit chunks on the tx + completion rings.
    pub chunks_in_flight: usize,
}

impl Accounting {
    /// Whether every buffer is where the counts say: no transmit chunk lost, and the pool
    /// buffers the port holds all accounted for.
    pub fn balanced(&self) -> bool {
        self.lost == 0 && self.chunks_free + self.chunks_in_flight == self.chunks_total
    }
}

impl Inner {
    fn accounting(&self) -> Accounting {
        let rx_lent: usize = self.queues.iter().map(|q| q.in_rx).sum();
        let in_tx: usize = self.queues.iter().map(|q| q.in_tx).sum();
        let held = self.held.len() + self.released.len();
        let holding = self.lent.iter().filter(|f| f.is_some()).count() + self.released.len();
        Accounting {
            rx_lent,
            tx_lent: self.tx_lent,
            held,
            lost: holding.abs_diff(rx_lent + self.tx_lent + held),
            chunks_total: self.chunks,
            chunks_free: self.free.len() + self.pending_tx.len(),
            chunks_in_flight: in_tx.saturating_sub(self.tx_lent),
        }
    }

    /// The pool index of the buffer `addr` (a UMEM address) falls in, if it is a pool buffer.
    fn pool_index(&self, addr: usize) -> Option<usize> {
        (addr < self.pool_bytes).then(|| addr / self.layout.stride)
    }

    /// Moves completed transmissions back: transmit chunks to the free list, pool buffers to
    /// `released`.
    fn reap(&mut self) {
        let mut qi = 0;
        while qi < self.queues.len() {
            while self.queues[qi].in_tx > 0 {
                let Inner { queues, scratch, .. } = self;
                // SAFETY: the completion ring only returns descriptors of this UMEM that we
                // produced on the tx ring; the kernel is done with them.
                let n = unsafe { queues[qi].comp.consume(scratch) };
                if n == 0 {
                    break;
                }
                self.queues[qi].in_tx -= n;
                for i in 0..n {
                    let desc = self.scratch[i];
                    match self.pool_index(desc.addr()) {
                        Some(idx) => {
                            if let Some(f) = self.lent.get_mut(idx).and_then(Option::take) {
                                self.tx_lent -= 1;
                                self.released.push(f);
                            }
                        }
                        None => self.free.push(desc),
                    }
                }
            }
            qi += 1;
        }
    }

    /// Hands the buffers whose transmission completed back to `pool`.
    fn give_back(&mut self, pool: &mut LocalPool) {
        for f in self.released.drain(..) {
            pool.put(f);
        }
    }

    /// Tops every fill ring up with buffers from `pool`, waking the driver if it stopped for
    /// want of fill entries.
    fn refill(&mut self, pool: &mut LocalPool, counters: &XdpCounters) {
        let mut qi = 0;
        while qi < self.queues.len() {
            let want = self.fill_target.saturating_sub(self.queues[qi].in_rx);
            if want >= self.batch.min(self.fill_target) {
                self.fill_buf.clear();
                let mut short = false;
                while self.fill_buf.len() < want {
                    let Some(f) = pool.get() else {
                        short = true;
                        break;
                    };
                    let idx = f.index();
                    match self.pool_desc.get(idx) {
                        Some(d) => {
                            self.fill_buf.push(*d);
                            self.lent[idx] = Some(f);
                        }
                        None => pool.put(f),
                    }
                }
                if short {
                    counters.rx_fill_short.fetch_add(1, Relaxed);
                }
                let Inner { queues, fill_buf, .. } = self;
                let q = &mut queues[qi];
                // SAFETY: the descriptors are pool buffers of this UMEM, now owned by `lent`
                // and touched by nothing else until the rx ring returns them. The ring has room
                // for them: at most `fill_target` (its size) are on the receive side.
                let n = unsafe { q.fill.produce(fill_buf) };
                if n == fill_buf.len() {
                    q.in_rx += n;
                } else {
                    for d in fill_buf.iter() {
                        if let Some(f) =
                            self.lent.get_mut(d.addr() / self.layout.stride).and_then(Option::take)
                        {
                            pool.put(f);
                        }
                    }
                }
                let q = &mut self.queues[qi];
                if q.fill.needs_wakeup() {
                    counters.rx_fill_wakeups.fetch_add(1, Relaxed);
                    let _ = q.fill.wakeup(q.rx.fd_mut(), 0);
                }
            }
            qi += 1;
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

    /// Takes the pool buffer a received descriptor points into, with its Ethernet frame moved
    /// to where the datapath expects it (right after the vnet header) and its length set to
    /// vnet header + frame. None if the descriptor is not one of ours.
    fn take_received(&mut self, desc: &FrameDesc) -> Option<Frame> {
        let idx = self.pool_index(desc.addr())?;
        let mut f = self.lent.get_mut(idx)?.take()?;
        let len = desc.lengths().data();
        // Where the frame starts in the buffer: normally right after the vnet header.
        let at = (desc.addr() - idx * self.layout.stride).checked_sub(self.layout.head);
        match at {
            Some(at) if at >= VNET_HDR_LEN && at + len <= self.layout.capacity => {
                if at != VNET_HDR_LEN {
                    f.buffer_mut().copy_within(at..at + len, VNET_HDR_LEN);
                }
                f.set_len(VNET_HDR_LEN + len);
                Some(f)
            }
            _ => {
                // Not where a received frame can be: give the buffer back, drop the frame.
                self.released.push(f);
                None
            }
        }
    }

    /// Lets `f` fill `len` bytes of the transmit chunk `desc` points at; false if it does not
    /// fit or `f` failed.
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

    /// Produces one descriptor on queue 0's tx ring; false when the ring is full.
    fn produce_one(&mut self, desc: &FrameDesc) -> bool {
        let Some(q) = self.queues.first_mut() else { return false };
        // SAFETY: `desc` is a pool buffer of this UMEM whose frame the caller hands over.
        let n = unsafe { q.tx.produce_one(desc) };
        q.in_tx += n;
        n == 1
    }
}

impl PortIo for XdpPort {
    fn recv_frame(&self, pool: &mut LocalPool) -> Result<Option<Frame>, PortError> {
        if !Arc::ptr_eq(pool.global(), &self.pool) {
            return Err(PortError::Io(std::io::Error::other(
                "the switch does not use the uplink's frame pool",
            )));
        }
        let mut g = self.lock();
        let g = &mut *g;
        g.give_back(pool);
        loop {
            let Some((_, desc)) = g.held.pop_front() else {
                g.refill(pool, &self.counters);
                if !g.pull(&self.counters) {
                    return Ok(None);
                }
                continue;
            };
            let Some(mut frame) = g.take_received(&desc) else {
                self.counters.rx_bad_desc.fetch_add(1, Relaxed);
                g.give_back(pool);
                continue;
            };
            // Coalesce the following segments of the flow already in this burst into the
            // first one's buffer (which has room for a super-frame); theirs go back.
            let eth_len = frame.ethernet().len();
            let vnet = match Merge::start(frame.ethernet()) {
                Some(mut m) => {
                    let buf = &mut frame.buffer_mut()[VNET_HDR_LEN..];
                    while let Some(&(_, next)) = g.held.front() {
                        let Some(idx) = g.pool_index(next.addr()) else { break };
                        let Some(Some(nf)) = g.lent.get(idx) else { break };
                        let off = next.addr() - idx * g.layout.stride - g.layout.head;
                        let Some(next_bytes) = nf.buffer().get(off..off + next.lengths().data()) else {
                            break;
                        };
                        if !m.append(buf, next_bytes) {
                            break;
                        }
                        g.held.pop_front();
                        if let Some(nf) = g.lent[idx].take() {
                            pool.put(nf);
                        }
                    }
                    if m.count() > 1 {
                        self.counters.rx_gro_frames.fetch_add(1, Relaxed);
                        self.counters.rx_gro_segments.fetch_add(m.count() as u64, Relaxed);
                    }
                    let vnet = m.finish(buf, g.pod_mtu);
                    frame.set_len(VNET_HDR_LEN + m.frame_len());
                    vnet
                }
                None => {
                    frame.set_len(VNET_HDR_LEN + eth_len);
                    VnetHdr::default()
                }
            };
            vnet.emit(&mut frame.buffer_mut()[..VNET_HDR_LEN]);
            self.counters.rx_zero_copy.fetch_add(1, Relaxed);
            return Ok(Some(frame));
        }
    }

    fn send(&self, frame: &[u8]) -> Result<(), PortError> {
        let mut g = self.lock();
        let g = &mut *g;
        g.reap();
        self.send_copy(g, frame)
    }

    fn send_frame(&self, frame: Frame, pool: &mut LocalPool) -> Result<(), PortError> {
        let mut g = self.lock();
        let g = &mut *g;
        g.reap();
        let res = match self.send_in_place(g, frame) {
            Ok(res) => res,
            Err(frame) => {
                let res = self.send_copy(g, frame.bytes());
                pool.put(frame);
                res
            }
        };
        g.give_back(pool);
        res
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
        // Only then is the kernel done with the buffers lent to it, which go back to the pool.
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        inner.queues.clear();
        let mut local = LocalPool::new(self.pool.clone(), 64);
        for f in inner.lent.iter_mut().filter_map(Option::take) {
            local.put(f);
        }
        inner.give_back(&mut local);
        inner.held.clear();
        inner.tx_lent = 0;
        drop(local);
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
