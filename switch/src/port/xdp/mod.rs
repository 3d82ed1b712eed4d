//! The AF_XDP uplink: the port through which frames for pods on other nodes leave the node and
//! theirs come in, without the kernel's stack (xsk-rs over libxdp).
//!
//! One AF_XDP socket per NIC queue in use ([`queue`]), all on one UMEM. libxdp loads its default
//! XDP program, which redirects every frame of those queues to the sockets. Sockets are bound
//! with `XDP_USE_NEED_WAKEUP`, so the kernel is only kicked (`sendto`, `poll`) when it asks to be.
//!
//! **The UMEM is the switch's frame pool.** [`XdpPort::open`] lays the
//! [`FramePool`](crate::pool::FramePool) out in the UMEM (each buffer spans whole UMEM frames
//! and puts its Ethernet frame where the kernel puts a received one), followed by a few
//! transmit chunks. So:
//! - the fill rings are kept topped up with the pool's small receive buffers (one UMEM frame
//!   each), and a received frame is handed to the datapath in the buffer the kernel wrote it
//!   into; a TCP segment that GRO may coalesce with the next ones moves to a datapath buffer
//!   first, which the following segments are appended to;
//! - a frame read from a TAP into a pool buffer is put on the tx ring as it is (its checksum
//!   completed in place if partial), and the buffer goes back to the pool when the completion
//!   ring returns it;
//! - only TCP/UDP super-frames are copied: segmenting them writes each segment into a transmit
//!   chunk. Flooded frames (one buffer, several ports) and jumbo frames are copied too.
//!
//! **Queues and workers.** Queue `i` is served by worker `i % workers`: that worker polls its
//! rx ring and transmits on it, so with as many queues as workers every worker receives from
//! and sends to the NIC itself, without a hand-off. A worker with several queues polls them
//! in turn and transmits on its first; a worker with none hands its frames to the owner of
//! queue 0, like any port owned by another worker. Each queue's state sits behind its own
//! mutex, taken only by its worker (and by `stats`), once per burst: [`rx`] drains the burst
//! in hand and pulls the worker's next queues, [`tx`] sends a whole burst under one lock. Each
//! queue keeps its own [`XdpCounters`], summed when read.
//!
//! **Layout** ([`layout`]): the UMEM's frames, the pool's buffer classes, the ring sizes, each
//! queue's transmit chunks and the queue-to-worker spread are pure arithmetic on the settings,
//! unit-tested; [`XdpPort::open`] binds what it says.
//!
//! **Modes** ([`XdpMode`]): zero-copy (the driver DMAs into the UMEM), native copy (the driver
//! runs the XDP program, the kernel copies into the UMEM), generic (the program runs after the
//! skb is built; works on any device). `auto` tries them in that order and the mode obtained is
//! reported. Binding is retried for ~2 s on `EBUSY` ([`setup`]).
//!
//! **TCP on a larger-MTU fabric**: super-frames are cut into segments as large as the uplink's
//! MTU allows, in whole multiples of the sender's MSS, and the receiving node hands them to its
//! pods with a GSO size that fits the pods' MTU
//! ([`SegmentPlan::pack_to_mtu`](crate::wire::segment::SegmentPlan::pack_to_mtu),
//! [`Merge::finish`](crate::wire::gro::Merge::finish)).
//!
//! **Jumbo frames** (an MTU beyond one UMEM frame, up to 9216): the sockets are bound with
//! `XDP_USE_SG`; received pieces are gathered into a datapath buffer and large frames
//! written over several transmit chunks ([`queue`]). In native and zero-copy mode the XDP
//! program must support frags, so tapwayd loads it itself ([`program`]).

mod layout;
mod program;
mod queue;
mod rx;
mod setup;
mod tx;

use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::Umem;

pub use layout::LayoutError;
use layout::{Layout, Settings};
use program::FragsProgram;
pub use queue::Accounting;
use queue::{Queue, Shared};
use setup::{
    attached_prog, bind_err, bind_retry, check_sizes, detach_all, epoll_over, if_index, is_veth,
    rx_queue_count,
};
pub use setup::{check_config, quiet_bpf_libraries};

use super::{PortError, PortIo, TxTally};
use crate::pool::{Frame, FramePool, LocalPool};
use crate::stats::Counter;

/// Bytes of Ethernet header (with one VLAN tag) allowed on top of the MTU.
const L2_OVERHEAD: usize = 18;
/// How many descriptors one `sendto` kick makes the kernel transmit in copy mode
/// (`TX_BATCH_SIZE` in net/xdp/xsk.c).
const KICK_BATCH: usize = 32;
/// Largest MTU for native XDP on a veth: one page minus XDP headroom, `skb_shared_info` and
/// the Ethernet header (the kernel checks the peer's MTU: "Peer MTU is too large to set XDP").
pub const VETH_NATIVE_MAX_MTU: u32 = 3506;

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
    /// NIC queues to bind a socket to; queue `i` of this list is served by worker
    /// `i % workers`.
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
            ring_size: 1024,
            fill_size: 2048,
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
    /// The sizes cannot be laid out in a UMEM.
    #[error("uplink configuration: {0}")]
    Layout(#[from] LayoutError),
    /// epoll setup for several queues failed.
    #[error("epoll for the uplink queues: {0}")]
    Epoll(std::io::Error),
}

/// Counters of one uplink queue, beyond the port's own rx/tx counters: each queue has its own,
/// written by the worker serving it (under the queue's lock), summed over queues when read.
#[derive(Debug, Default)]
pub struct XdpCounters {
    /// Super-frames cut into segments.
    pub tx_gso_frames: Counter,
    /// Segments produced by the cutting.
    pub tx_segments: Counter,
    /// Frames whose partial checksum was completed.
    pub tx_csum_completed: Counter,
    /// Frames dropped because they exceed the MTU and are not GSO.
    pub tx_too_big: Counter,
    /// Frames dropped because they could not be segmented (unsupported GSO, bad headers).
    pub tx_bad_gso: Counter,
    /// Sends refused because no UMEM frame or tx ring slot was free.
    pub tx_full: Counter,
    /// `sendto` kicks.
    pub tx_kicks: Counter,
    /// Super-frames made by coalescing received TCP segments (GRO).
    pub rx_gro_frames: Counter,
    /// Segments that went into them.
    pub rx_gro_segments: Counter,
    /// Fill-ring wake-ups.
    pub rx_fill_wakeups: Counter,
    /// Fill-ring top-ups cut short because the frame pool was empty.
    pub rx_fill_short: Counter,
    /// Received descriptors that pointed at no buffer lent to the kernel (dropped).
    pub rx_bad_desc: Counter,
    /// Received jumbo frames dropped for want of a datapath buffer to gather them in.
    pub rx_pool_empty: Counter,
    /// Frames handed to the datapath in the buffer the kernel received them into.
    pub rx_zero_copy: Counter,
    /// Frames put on the tx ring in the pool buffer they were read into, without a copy.
    pub tx_zero_copy: Counter,
    /// Frames larger than a UMEM frame sent over several descriptors (multi-buffer).
    pub tx_multi_buffer: Counter,
    /// Frames larger than a UMEM frame gathered from several descriptors (multi-buffer).
    pub rx_multi_buffer: Counter,
}

impl XdpCounters {
    /// Each counter with its stable name in `tapwayctl stats`.
    fn named(&self) -> [(&'static str, &Counter); 17] {
        [
            ("uplink_tx_gso_frames", &self.tx_gso_frames),
            ("uplink_tx_segments", &self.tx_segments),
            ("uplink_tx_csum_completed", &self.tx_csum_completed),
            ("uplink_tx_too_big", &self.tx_too_big),
            ("uplink_tx_bad_gso", &self.tx_bad_gso),
            ("uplink_tx_full", &self.tx_full),
            ("uplink_tx_kicks", &self.tx_kicks),
            ("uplink_rx_gro_frames", &self.rx_gro_frames),
            ("uplink_rx_gro_segments", &self.rx_gro_segments),
            ("uplink_rx_fill_wakeups", &self.rx_fill_wakeups),
            ("uplink_rx_fill_short", &self.rx_fill_short),
            ("uplink_rx_bad_desc", &self.rx_bad_desc),
            ("uplink_rx_pool_empty", &self.rx_pool_empty),
            ("uplink_rx_zero_copy", &self.rx_zero_copy),
            ("uplink_tx_zero_copy", &self.tx_zero_copy),
            ("uplink_tx_multi_buffer", &self.tx_multi_buffer),
            ("uplink_rx_multi_buffer", &self.rx_multi_buffer),
        ]
    }
}

/// The uplink port.
pub struct XdpPort {
    shared: Shared,
    queues: Vec<Mutex<Queue>>,
    /// Per worker: the fd that is readable when its queues have frames (a socket, or an epoll
    /// fd over several).
    ready: Vec<Option<RawFd>>,
    _epolls: Vec<OwnedFd>,
    /// Per worker: the queue whose burst it is draining.
    draining: Vec<AtomicUsize>,
    /// The frame pool carved from the UMEM.
    pool: Arc<FramePool>,
    mode: XdpMode,
    ifname: String,
    ifindex: u32,
    mtu: u32,
    /// Sizes, and the queues each worker serves.
    layout: Layout,
    /// The XDP program, when tapwayd loaded it (multi-buffer in native or zero-copy mode).
    program: Option<FragsProgram>,
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
    /// The worker serving each of them.
    pub queue_workers: Vec<usize>,
    /// MTU of the interface.
    pub mtu: u32,
    /// UMEM frames (of `frame_size` bytes), the frame pool's included.
    pub umem_frames: usize,
}

impl XdpPort {
    /// Binds the uplink on `cfg.ifname`, whose MTU is `mtu`, over a UMEM that also holds the
    /// switch's frame pool: `pool_frames` buffers for the datapath plus a fill ring's worth per
    /// queue. Its queues are spread over `workers` workers. Returns the port and that pool,
    /// which the switch must be started with. In `auto` mode, falls back from zero-copy to
    /// native to generic and logs the mode obtained.
    pub fn open(
        cfg: &XdpConfig,
        mtu: u32,
        pool_frames: usize,
        workers: usize,
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
        let workers = workers.max(1);
        let mut last = None;
        for &mode in order {
            match XdpPort::open_mode(cfg, mtu, pool_frames, workers, mode) {
                Ok(opened) => {
                    tracing::info!(
                        uplink = cfg.ifname,
                        requested = cfg.mode.name(),
                        mode = mode.name(),
                        queues = ?cfg.queues,
                        queue_workers = ?opened.0.info().queue_workers,
                        mtu,
                        pool_frames = opened.1.total(),
                        umem_mib = (opened.0.layout.umem_frames as usize * cfg.frame_size as usize) >> 20,
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
    /// rings set on the UMEM's socket, so the next mode needs a fresh UMEM. The sizes come
    /// from [`Layout`]; this binds what it says.
    fn open_mode(
        cfg: &XdpConfig,
        mtu: u32,
        pool_frames: usize,
        workers: usize,
        mode: XdpMode,
    ) -> Result<(XdpPort, Arc<FramePool>), XdpError> {
        let config = |e: &dyn std::fmt::Display| XdpError::Config(e.to_string());
        let layout = Layout::new(&Settings {
            frame_size: cfg.frame_size,
            headroom: UmemConfig::default().xdp_headroom(),
            ring_size: cfg.ring_size,
            fill_size: cfg.fill_size,
            tx_chunks: cfg.umem_frames,
            queues: &cfg.queues,
            workers,
            pool_frames,
            mtu,
            pod_mtu: cfg.pod_mtu,
            batch: cfg.batch,
        })?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(cfg.frame_size).map_err(|e| config(&e))?)
            .fill_queue_size(QueueSize::new(layout.fill_size).map_err(|e| config(&e))?)
            .comp_queue_size(QueueSize::new(layout.comp_size).map_err(|e| config(&e))?)
            .build()
            .map_err(|e| config(&e))?;
        if umem_cfg.mtu() as usize != layout.room {
            return Err(XdpError::Config(format!(
                "UMEM frames hold {} bytes, the layout expected {}",
                umem_cfg.mtu(),
                layout.room
            )));
        }
        let ring = QueueSize::new(layout.ring_size).map_err(|e| config(&e))?;
        let q0 = cfg.queues.first().copied().unwrap_or(0);
        if mode == XdpMode::Native && is_veth(&cfg.ifname) && layout.veth_native_refused(mtu) {
            return Err(bind_err(
                cfg,
                q0,
                mode,
                format!("native XDP on a veth needs MTU <= {VETH_NATIVE_MAX_MTU}, {} has {mtu}", cfg.ifname),
            ));
        }
        let frames = NonZeroU32::new(layout.umem_frames)
            .ok_or_else(|| XdpError::Config(format!("{} UMEM frames", layout.umem_frames)))?;
        let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| XdpError::Umem(e.to_string()))?;
        let Some(first) = descs.first().copied() else { return Err(XdpError::Umem("no frames".into())) };
        // SAFETY: `first` is a frame of this UMEM that nothing uses yet; only its address is
        // taken.
        let data0 = unsafe { umem.data(&first) }.contents().as_ptr();
        let base = NonNull::new(data0.wrapping_sub(first.addr()).cast_mut())
            .ok_or_else(|| XdpError::Umem("null UMEM".into()))?;
        let missing = || XdpError::Umem(format!("fewer than {} UMEM frames", layout.umem_frames));
        let slot_desc = layout
            .slot_frames()
            .map(|i| descs.get(i).copied())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(missing)?;
        // SAFETY: the first `pool_bytes` of the UMEM hold only the pool's buffers (the
        // transmit chunks follow); the UMEM handle keeps the mapping alive; the kernel only
        // writes into a buffer while a queue has it lent to the fill ring.
        let pool = unsafe {
            FramePool::over(
                base,
                layout.pool_bytes(),
                Box::new(umem.clone()),
                layout.buffers,
                Some(layout.receive),
            )
        }
        .map_err(|e| XdpError::Umem(e.to_string()))?;
        let shared = Shared {
            umem,
            buffers: layout.buffers,
            receive: layout.receive,
            slot_desc,
            room: layout.room,
            pod_mtu: layout.pod_mtu,
            fill_target: layout.fill_size as usize,
            multi_buffer: layout.multi_buffer,
            batch: layout.batch,
            ring_size: layout.ring_size as usize,
        };
        let (xdp_flags, mut bind) = mode.flags();
        if layout.multi_buffer {
            bind |= BindFlags::XDP_USE_SG;
        }
        // Multi-buffer in native or zero-copy mode needs the program with frags support,
        // which tapwayd then loads itself (see `program`).
        let program = match layout.multi_buffer && mode != XdpMode::Generic {
            true => Some(
                FragsProgram::attach(if_index(&cfg.ifname).unwrap_or(0), mode)
                    .map_err(|reason| bind_err(cfg, q0, mode, reason))?,
            ),
            false => None,
        };
        let libxdp_flags = match program {
            Some(_) => LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
            None => LibxdpFlags::empty(),
        };
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .xdp_flags(xdp_flags)
            .bind_flags(bind | BindFlags::XDP_USE_NEED_WAKEUP)
            .libxdp_flags(libxdp_flags)
            .build();
        let iface: Interface =
            cfg.ifname.parse().map_err(|_| XdpError::Config(format!("interface name {:?}", cfg.ifname)))?;
        let mut queues = Vec::new();
        for (i, &qid) in cfg.queues.iter().enumerate() {
            let (tx, rx, rings) = bind_retry(&sock_cfg, &shared.umem, &iface, qid)
                .map_err(|reason| bind_err(cfg, qid, mode, reason))?;
            let Some((fill, comp)) = rings else {
                return Err(bind_err(cfg, qid, mode, "queue bound twice".into()));
            };
            if let Some(p) = &program {
                p.add_socket(qid, rx.fd().as_raw_fd()).map_err(|reason| bind_err(cfg, qid, mode, reason))?;
            }
            let mine = descs.get(layout.chunk_frames(i)).ok_or_else(missing)?.to_vec();
            queues.push(Queue::new(qid, (rx, tx, fill, comp), mine, &shared));
        }
        // Each worker polls one fd for all of its queues.
        let mut ready = Vec::with_capacity(layout.serve.len());
        let mut epolls = Vec::new();
        for qs in &layout.serve {
            ready.push(match qs.as_slice() {
                [] => None,
                [one] => queues.get(*one).map(|q| q.rx.fd().as_raw_fd()),
                many => {
                    let ep =
                        epoll_over(many.iter().filter_map(|&i| queues.get(i)).map(|q| q.rx.fd().as_raw_fd()))
                            .map_err(XdpError::Epoll)?;
                    let fd = ep.as_raw_fd();
                    epolls.push(ep);
                    Some(fd)
                }
            });
        }
        let port = XdpPort {
            shared,
            queues: queues.into_iter().map(Mutex::new).collect(),
            ready,
            _epolls: epolls,
            draining: (0..layout.serve.len()).map(|_| AtomicUsize::new(0)).collect(),
            pool: pool.clone(),
            mode,
            ifname: cfg.ifname.clone(),
            ifindex: if_index(&cfg.ifname).unwrap_or(0),
            mtu,
            layout,
            program,
        };
        // The fill rings get their buffers before any traffic.
        let mut local = LocalPool::new(pool.clone(), 64);
        for q in &port.queues {
            lock(q).refill(&port.shared, &mut local);
        }
        drop(local);
        Ok((port, pool))
    }

    /// The mode obtained.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The worker that owns the port: the one serving the first queue.
    pub fn owner(&self) -> usize {
        self.layout.owner()
    }

    /// What status shows.
    pub fn info(&self) -> XdpInfo {
        let queues = self.queues.iter().map(|q| lock(q).id).collect();
        let queue_workers = self.layout.queue_workers();
        XdpInfo {
            ifname: self.ifname.clone(),
            mode: self.mode,
            queues,
            queue_workers,
            mtu: self.mtu,
            umem_frames: self.layout.umem_frames as usize,
        }
    }

    /// UMEM accounting and counters by name (reaps completions first, so frames whose
    /// transmission finished are counted back).
    pub fn stats(&self) -> Vec<(String, u64)> {
        let mut a = Accounting::default();
        // The kernel's own counters of each socket, summed.
        let mut k = [0u64; 5];
        let mut per_queue = Vec::new();
        // The queues' own counters, summed by name (every queue has the same names).
        let mut sums: Vec<(&'static str, u64)> = Vec::new();
        for q in &self.queues {
            let mut g = lock(q);
            g.reap(&self.shared);
            a.add(&g.accounting());
            for (i, (name, c)) in g.counters.named().into_iter().enumerate() {
                match sums.get_mut(i) {
                    Some((_, sum)) => *sum += c.get(),
                    None => sums.push((name, c.get())),
                }
            }
            if let Ok(x) = g.rx.fd().xdp_statistics() {
                k[0] += x.rx_dropped();
                k[1] += x.rx_ring_full();
                k[2] += x.rx_fill_ring_empty_descs();
                k[3] += x.rx_invalid_descs();
                k[4] += x.tx_invalid_descs();
            }
            per_queue.push((format!("uplink_q{}_rx_frames", g.id), g.rx_frames));
            per_queue.push((format!("uplink_q{}_tx_frames", g.id), g.tx_frames));
        }
        let n = |v: usize| v as u64;
        let mut out: Vec<(String, u64)> = [
            ("uplink_xdp_rx_dropped", k[0]),
            ("uplink_xdp_rx_ring_full", k[1]),
            ("uplink_xdp_rx_fill_ring_empty", k[2]),
            ("uplink_xdp_rx_invalid_descs", k[3]),
            ("uplink_xdp_tx_invalid_descs", k[4]),
            ("uplink_umem_frames", u64::from(self.layout.umem_frames)),
            ("uplink_pool_rx_lent", n(a.rx_lent)),
            ("uplink_pool_tx_lent", n(a.tx_lent)),
            ("uplink_pool_held", n(a.held)),
            ("uplink_pool_lost", n(a.lost)),
            ("uplink_chunks_total", n(a.chunks_total)),
            ("uplink_chunks_free", n(a.chunks_free)),
            ("uplink_chunks_in_flight", n(a.chunks_in_flight)),
        ]
        .into_iter()
        .chain(sums)
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        out.extend(per_queue);
        out
    }

    /// Where the UMEM's buffers are right now, over all queues.
    pub fn accounting(&self) -> Accounting {
        let mut a = Accounting::default();
        for q in &self.queues {
            let mut g = lock(q);
            g.reap(&self.shared);
            a.add(&g.accounting());
        }
        a
    }
}

fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

impl PortIo for XdpPort {
    fn recv_frame(&self, worker: usize, pool: &mut LocalPool) -> Result<Option<Frame>, PortError> {
        let mut got = None;
        self.receive(worker, pool, 1, |f| got = Some(f))?;
        Ok(got)
    }

    fn recv_burst(
        &self,
        worker: usize,
        pool: &mut LocalPool,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> Result<(), PortError> {
        self.receive(worker, pool, max.saturating_sub(out.len()), |f| out.push(f))
    }

    fn send(&self, worker: usize, frame: &[u8]) -> Result<(), PortError> {
        let mut q = self.tx_queue(worker)?;
        q.reap(&self.shared);
        self.send_copy(&mut q, frame, None)
    }

    fn send_frame(&self, worker: usize, frame: Frame, pool: &mut LocalPool) -> Result<(), PortError> {
        let Ok(mut q) = self.tx_queue(worker) else {
            pool.put(frame);
            return Err(PortError::Gone);
        };
        q.reap(&self.shared);
        let res = self.send_one(&mut q, frame, pool);
        q.give_back(pool);
        res
    }

    fn send_burst(&self, worker: usize, frames: &mut Vec<Frame>, pool: &mut LocalPool, tally: &mut TxTally) {
        let Ok(mut q) = self.tx_queue(worker) else {
            for f in frames.drain(..) {
                tally.count(0, &Err(PortError::Gone));
                pool.put(f);
            }
            return;
        };
        // One lock, one reap and one hand-back for the whole burst.
        q.reap(&self.shared);
        for frame in frames.drain(..) {
            let len = frame.ethernet().len();
            let res = self.send_one(&mut q, frame, pool);
            tally.count(len, &res);
        }
        q.give_back(pool);
    }

    fn flush(&self, worker: usize, pool: &mut LocalPool) {
        let Ok(mut q) = self.tx_queue(worker) else { return };
        let size = self.shared.ring_size;
        // In copy mode one kick transmits at most KICK_BATCH descriptors: kick until the tx
        // ring is empty (bounded, in case the device is stuck).
        for _ in 0..(size / KICK_BATCH + 1) {
            let queued = size.saturating_sub(q.tx.nb_free_exact() as usize);
            // Nothing left, or a zero-copy driver already working on it.
            if queued == 0 || !q.tx.needs_wakeup() {
                break;
            }
            q.counters.tx_kicks.inc();
            if q.tx.wakeup().is_err() {
                break;
            }
        }
        q.unkicked = 0;
        q.reap(&self.shared);
        q.give_back(pool);
    }

    fn reclaim(&self, pool: &mut LocalPool) {
        // Every queue, not only the caller's: buffers are the pool's, whoever returns them. A
        // queue busy with its own worker is skipped; that worker reaps it anyway.
        for q in &self.queues {
            if let Ok(mut q) = q.try_lock() {
                q.reap(&self.shared);
                q.give_back(pool);
            }
        }
    }

    fn readiness_fd(&self, worker: usize) -> Option<RawFd> {
        self.ready.get(worker).copied().flatten()
    }

    fn serves(&self, worker: usize) -> bool {
        self.layout.serve.get(worker).is_some_and(|qs| !qs.is_empty())
    }

    fn stats(&self) -> Vec<(String, u64)> {
        XdpPort::stats(self)
    }
}

impl Drop for XdpPort {
    fn drop(&mut self) {
        // Take the buffers lent to the kernel out of the queues, close the sockets (libxdp
        // removes the program it loaded with the last one), and only then, the kernel being
        // done with them, give the buffers back to the pool.
        let mut frames = Vec::new();
        for q in self.queues.drain(..) {
            let mut q = q.into_inner().unwrap_or_else(|p| p.into_inner());
            frames.append(&mut q.take_all());
            drop(q);
        }
        let mut local = LocalPool::new(self.pool.clone(), 64);
        for f in frames {
            local.put(f);
        }
        drop(local);
        // A program tapwayd loaded itself goes now; libxdp's went with the last socket.
        drop(self.program.take());
        if self.ifindex != 0 {
            if let Some(id) = attached_prog(self.ifindex) {
                tracing::info!(uplink = self.ifname, prog_id = id, "detaching the XDP program libxdp left");
                detach_all(self.ifindex);
            }
        }
        tracing::info!(uplink = self.ifname, "AF_XDP uplink closed");
    }
}

#[cfg(test)]
mod tests {
    use super::XdpCounters;

    #[test]
    fn every_queue_counter_has_a_stable_documented_name() {
        let c = XdpCounters::default();
        let names: Vec<&str> = c.named().iter().map(|(n, _)| *n).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        let doc = include_str!("../../../../docs/uplink.md");
        for n in names {
            assert!(n.starts_with("uplink_"), "{n}");
            assert!(doc.contains(&format!("`{n}`")), "{n} is not in docs/uplink.md");
        }
        c.tx_kicks.add(2);
        assert_eq!(c.named().iter().find(|(n, _)| *n == "uplink_tx_kicks").map(|(_, v)| v.get()), Some(2));
    }
}
