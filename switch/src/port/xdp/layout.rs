//! The uplink's layout, computed from its settings alone: how many UMEM frames, where the
//! frame pool's buffers sit in the UMEM, the ring sizes, each queue's share of the transmit
//! chunks and which worker serves which queue. Pure arithmetic with typed errors (never a
//! panic, whatever the settings); [`XdpPort::open`](super::XdpPort::open) only carries it out.
//!
//! The UMEM, in frames of `frame_size` bytes:
//!
//! ```text
//! | datapath buffers (pool_frames, each per_buffer frames) | receive buffers (fill × queues) | transmit chunks (umem_frames) |
//! ```
//!
//! A datapath buffer spans whole UMEM frames and starts `head` bytes into its first one, so
//! its Ethernet frame (after the vnet header) sits at `headroom`, where the kernel puts a
//! received one: a frame read from a TAP can go on the tx ring as it is. The receive buffers
//! (one UMEM frame each) are what the fill rings are kept topped up with. The transmit chunks
//! are split evenly over the queues (the remainder of the division stays unused).

use std::ops::Range;

use super::{L2_OVERHEAD, VETH_NATIVE_MAX_MTU};
use crate::pool::{BufferLayout, Class, FRAME_CAPACITY};
use crate::wire::VNET_HDR_LEN;

/// Smallest UMEM frame the kernel takes (`XDP_UMEM_MIN_CHUNK_SIZE`).
pub const MIN_FRAME_SIZE: u32 = 2048;

/// Fewest datapath buffers the pool is given, whatever was asked.
pub const MIN_POOL_BUFFERS: usize = 64;

/// Why the settings cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// No queue to bind.
    #[error("no queue to bind")]
    NoQueue,
    /// A size that must be a power of two is not.
    #[error("the {what} ({value}) must be a power of two")]
    NotPowerOfTwo {
        /// Which size.
        what: &'static str,
        /// Its value.
        value: u32,
    },
    /// UMEM frames smaller than the kernel takes.
    #[error("UMEM frames of {0} bytes are too small: at least {MIN_FRAME_SIZE}")]
    FrameTooSmall(u32),
    /// The kernel's headroom leaves no room for a frame, or none for the vnet header.
    #[error(
        "a UMEM headroom of {headroom} bytes does not fit {frame_size}-byte UMEM frames with a vnet header"
    )]
    Headroom {
        /// Headroom before a received frame's data.
        headroom: u32,
        /// Bytes per UMEM frame.
        frame_size: u32,
    },
    /// More UMEM frames than a UMEM can have (or than this machine can count).
    #[error("the UMEM would need more than {} frames", u32::MAX)]
    TooManyFrames,
    /// Fewer transmit chunks than queues: some queue would get none.
    #[error("{chunks} UMEM frames for transmit copies are fewer than the {queues} queues")]
    TooFewChunks {
        /// Transmit chunks asked for.
        chunks: u32,
        /// Queues to share them.
        queues: usize,
    },
}

/// Where everything of the uplink goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Bytes per UMEM frame.
    pub frame_size: usize,
    /// Bytes before a received frame's data in a UMEM frame (the kernel's headroom).
    pub headroom: usize,
    /// Data room of one UMEM frame: the largest Ethernet frame one descriptor holds.
    pub room: usize,
    /// Whether frames may span several UMEM frames (`XDP_USE_SG`): the MTU (with an Ethernet
    /// header and one VLAN tag) exceeds one UMEM frame's room.
    pub multi_buffer: bool,
    /// Size of each socket's rx and tx rings.
    pub ring_size: u32,
    /// Size of each fill ring, kept full with receive buffers.
    pub fill_size: u32,
    /// Size of each completion ring: it must take a full tx ring and the fill ring's worth of
    /// zero-copy transmissions.
    pub comp_size: u32,
    /// The datapath buffers.
    pub buffers: Class,
    /// UMEM frames each datapath buffer spans.
    pub per_buffer: usize,
    /// The small receive buffers of the fill rings (one UMEM frame each).
    pub receive: Class,
    /// Transmit chunks each queue gets.
    pub chunks_per_queue: usize,
    /// UMEM frames in all.
    pub umem_frames: u32,
    /// Queues bound.
    pub queues: usize,
    /// The queues (indexes into the configured list) each worker serves: queue `i` goes to
    /// worker `i % workers`; a worker's first queue is the one it transmits on.
    pub serve: Vec<Vec<usize>>,
    /// The pods' MTU, at most the uplink's: received TCP segments are handed to pods with a GSO
    /// size that fits it.
    pub pod_mtu: usize,
    /// Frames taken from an rx ring at once.
    pub batch: usize,
}

/// What the layout is computed from.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// Bytes per UMEM frame.
    pub frame_size: u32,
    /// Bytes the kernel keeps before a received frame's data (XDP headroom + frame headroom).
    pub headroom: u32,
    /// Size of each rx and tx ring.
    pub ring_size: u32,
    /// Size of each fill ring.
    pub fill_size: u32,
    /// UMEM frames for transmit copies, over all queues.
    pub tx_chunks: u32,
    /// NIC queues bound, in order.
    pub queues: &'a [u32],
    /// Workers the queues are spread over (0 counts as 1).
    pub workers: usize,
    /// Datapath buffers wanted in the pool (at least [`MIN_POOL_BUFFERS`]).
    pub pool_frames: usize,
    /// The uplink's MTU.
    pub mtu: u32,
    /// The pods' MTU.
    pub pod_mtu: u32,
    /// Frames taken from an rx ring at once (0 counts as 1).
    pub batch: usize,
}

impl Layout {
    /// Lays the uplink out, or says why the settings cannot be.
    pub fn new(s: &Settings<'_>) -> Result<Layout, LayoutError> {
        for (what, value) in
            [("UMEM frame size", s.frame_size), ("ring size", s.ring_size), ("fill ring size", s.fill_size)]
        {
            if !value.is_power_of_two() {
                return Err(LayoutError::NotPowerOfTwo { what, value });
            }
        }
        if s.frame_size < MIN_FRAME_SIZE {
            return Err(LayoutError::FrameTooSmall(s.frame_size));
        }
        let nq = s.queues.len();
        if nq == 0 {
            return Err(LayoutError::NoQueue);
        }
        let chunk = s.frame_size as usize;
        let headroom = s.headroom as usize;
        let (Some(room), Some(head)) = (chunk.checked_sub(headroom), headroom.checked_sub(VNET_HDR_LEN))
        else {
            return Err(LayoutError::Headroom { headroom: s.headroom, frame_size: s.frame_size });
        };
        if room == 0 {
            return Err(LayoutError::Headroom { headroom: s.headroom, frame_size: s.frame_size });
        }
        let chunks_per_queue = s.tx_chunks as usize / nq;
        if chunks_per_queue == 0 {
            return Err(LayoutError::TooFewChunks { chunks: s.tx_chunks, queues: nq });
        }
        let too_many = || LayoutError::TooManyFrames;
        // A datapath buffer holds a whole super-frame after its head.
        let per_buffer = (head + FRAME_CAPACITY).div_ceil(chunk);
        let stride = per_buffer * chunk;
        let buffers = Class {
            offset: 0,
            count: s.pool_frames.max(MIN_POOL_BUFFERS),
            layout: BufferLayout { stride, head, capacity: stride - head },
        };
        let buffer_frames = buffers.count.checked_mul(per_buffer).ok_or_else(too_many)?;
        let receive = Class {
            offset: buffer_frames.checked_mul(chunk).ok_or_else(too_many)?,
            count: (s.fill_size as usize).checked_mul(nq).ok_or_else(too_many)?,
            layout: BufferLayout { stride: chunk, head, capacity: chunk - head },
        };
        let total = buffer_frames
            .checked_add(receive.count)
            .and_then(|n| n.checked_add(s.tx_chunks as usize))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(too_many)?;
        let workers = s.workers.max(1);
        let mut serve = vec![Vec::new(); workers];
        for q in 0..nq {
            serve[q % workers].push(q);
        }
        Ok(Layout {
            frame_size: chunk,
            headroom,
            room,
            multi_buffer: s.mtu as usize + L2_OVERHEAD > room,
            ring_size: s.ring_size,
            fill_size: s.fill_size,
            comp_size: s.fill_size.max(s.ring_size),
            buffers,
            per_buffer,
            receive,
            chunks_per_queue,
            umem_frames: total,
            queues: nq,
            serve,
            pod_mtu: s.pod_mtu.min(s.mtu) as usize,
            batch: s.batch.max(1),
        })
    }

    /// The UMEM frames (descriptor indexes) of the datapath buffers.
    pub fn buffer_frames(&self) -> Range<usize> {
        0..self.buffers.count * self.per_buffer
    }

    /// The UMEM frames of the receive buffers.
    pub fn receive_frames(&self) -> Range<usize> {
        let start = self.buffer_frames().end;
        start..start + self.receive.count
    }

    /// The UMEM frames of queue `queue`'s transmit chunks (empty for a queue that is not bound).
    pub fn chunk_frames(&self, queue: usize) -> Range<usize> {
        if queue >= self.queues {
            return 0..0;
        }
        let start = self.receive_frames().end + queue * self.chunks_per_queue;
        start..start + self.chunks_per_queue
    }

    /// The first UMEM frame of each pool slot: every datapath buffer's, then every receive
    /// buffer's (the slot numbering of the queues' bookkeeping).
    pub fn slot_frames(&self) -> impl Iterator<Item = usize> + '_ {
        self.buffer_frames().step_by(self.per_buffer.max(1)).chain(self.receive_frames())
    }

    /// Bytes at the start of the UMEM that belong to the frame pool.
    pub fn pool_bytes(&self) -> usize {
        self.buffers.bytes() + self.receive.bytes()
    }

    /// The worker that owns the port: the one serving the first queue.
    pub fn owner(&self) -> usize {
        self.serve.iter().position(|qs| qs.contains(&0)).unwrap_or(0)
    }

    /// The queue `worker` transmits on: its first, or the first queue when it serves none.
    pub fn tx_queue(&self, worker: usize) -> usize {
        self.serve.get(worker).and_then(|qs| qs.first()).copied().unwrap_or(0)
    }

    /// The worker serving each queue, in queue order.
    pub fn queue_workers(&self) -> Vec<usize> {
        let mut out = vec![0; self.queues];
        for (w, qs) in self.serve.iter().enumerate() {
            for &q in qs {
                if let Some(slot) = out.get_mut(q) {
                    *slot = w;
                }
            }
        }
        out
    }

    /// Whether a veth refuses native XDP at `mtu` with libxdp's program, which lacks frags
    /// support (with multi-buffer tapwayd loads one that has it).
    pub fn veth_native_refused(&self, mtu: u32) -> bool {
        !self.multi_buffer && mtu > VETH_NATIVE_MAX_MTU
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's XDP headroom (xsk-rs's UMEM default, no frame headroom).
    const HEADROOM: u32 = 256;

    fn settings(queues: &[u32]) -> Settings<'_> {
        Settings {
            frame_size: 4096,
            headroom: HEADROOM,
            ring_size: 1024,
            fill_size: 2048,
            tx_chunks: 4096,
            queues,
            workers: 1,
            pool_frames: 2048,
            mtu: 1500,
            pod_mtu: 1500,
            batch: 64,
        }
    }

    #[test]
    fn the_default_uplink() {
        let l = Layout::new(&settings(&[0])).unwrap();
        assert_eq!(l.room, 4096 - 256);
        assert!(!l.multi_buffer);
        assert_eq!((l.ring_size, l.fill_size, l.comp_size), (1024, 2048, 2048));
        // A buffer's Ethernet frame sits where the kernel puts a received one.
        assert_eq!(l.buffers.layout.head + VNET_HDR_LEN, 256);
        assert!(l.buffers.layout.capacity >= FRAME_CAPACITY);
        assert_eq!(l.buffers.layout.stride % 4096, 0);
        // 12 + 65536 + 64 bytes after a 244-byte head: 17 UMEM frames.
        assert_eq!(l.per_buffer, 17);
        assert_eq!(l.buffers.count, 2048);
        assert_eq!(l.receive.count, 2048);
        assert_eq!(l.receive.layout, BufferLayout { stride: 4096, head: 244, capacity: 4096 - 244 });
        assert_eq!(l.receive.offset, 2048 * 17 * 4096);
        assert_eq!(l.umem_frames, 2048 * 17 + 2048 + 4096);
        assert_eq!(l.pool_bytes_from_frames(), l.pool_bytes());
        assert_eq!(l.chunks_per_queue, 4096);
        assert_eq!(l.serve, vec![vec![0]]);
        assert_eq!((l.owner(), l.tx_queue(0), l.tx_queue(5)), (0, 0, 0));
    }

    impl Layout {
        /// The pool's bytes, from the frame ranges.
        fn pool_bytes_from_frames(&self) -> usize {
            self.receive_frames().end * self.frame_size
        }
    }

    #[test]
    fn frame_ranges_tile_the_umem_without_overlap() {
        let qs = [0, 1, 2];
        let l = Layout::new(&Settings { tx_chunks: 1000, pool_frames: 100, fill_size: 64, ..settings(&qs) })
            .unwrap();
        let mut ranges = vec![l.buffer_frames(), l.receive_frames()];
        ranges.extend((0..3).map(|q| l.chunk_frames(q)));
        for w in ranges.windows(2) {
            assert_eq!(w[0].end, w[1].start, "{ranges:?}");
        }
        assert_eq!(l.chunks_per_queue, 333, "1000 chunks over 3 queues");
        // The remainder of the division stays unused at the end.
        assert_eq!(l.umem_frames as usize - ranges[4].end, 1);
        assert_eq!(l.chunk_frames(3), 0..0, "no such queue");
        assert_eq!(l.receive.count, 64 * 3);
        let slots: Vec<usize> = l.slot_frames().collect();
        assert_eq!(slots.len(), l.buffers.count + l.receive.count);
        assert_eq!(&slots[..3], &[0, l.per_buffer, 2 * l.per_buffer]);
        assert_eq!(slots[l.buffers.count], l.receive_frames().start);
    }

    #[test]
    fn queues_go_round_robin_over_workers() {
        let qs = [4, 5, 6, 7, 8];
        let l = Layout::new(&Settings { workers: 2, ..settings(&qs) }).unwrap();
        assert_eq!(l.serve, vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(l.queue_workers(), vec![0, 1, 0, 1, 0]);
        assert_eq!((l.tx_queue(0), l.tx_queue(1)), (0, 1));
        assert_eq!(l.owner(), 0);
        // More workers than queues: the others serve none and transmit through queue 0's owner.
        let l = Layout::new(&Settings { workers: 4, ..settings(&qs[..2]) }).unwrap();
        assert_eq!(l.serve, vec![vec![0], vec![1], vec![], vec![]]);
        assert_eq!(l.tx_queue(3), 0);
        // No worker counts as one.
        let l = Layout::new(&Settings { workers: 0, ..settings(&qs[..2]) }).unwrap();
        assert_eq!(l.serve, vec![vec![0, 1]]);
    }

    #[test]
    fn multi_buffer_beyond_one_umem_frame() {
        let q = [0];
        // 3822 bytes of room in a 4 KiB frame: MTU 3822 - 18 fits, one more does not.
        let fits = Layout::new(&Settings { mtu: 3822, ..settings(&q) }).unwrap();
        assert_eq!(fits.room - L2_OVERHEAD, 3822);
        assert!(!fits.multi_buffer);
        let jumbo = Layout::new(&Settings { mtu: 3823, ..settings(&q) }).unwrap();
        assert!(jumbo.multi_buffer);
        let small = Layout::new(&Settings { frame_size: 2048, ..settings(&q) }).unwrap();
        assert_eq!(small.room, 2048 - 256);
        assert!(!small.multi_buffer, "1500 + 18 fits 1792");
        assert!(Layout::new(&Settings { frame_size: 2048, mtu: 1800, ..settings(&q) }).unwrap().multi_buffer);
        assert_eq!(small.per_buffer, 33);
    }

    #[test]
    fn veth_native_limit() {
        let q = [0];
        let l = Layout::new(&Settings { mtu: 3506, ..settings(&q) }).unwrap();
        assert!(!l.veth_native_refused(3506));
        assert!(l.veth_native_refused(3507));
        let jumbo = Layout::new(&Settings { mtu: 9000, ..settings(&q) }).unwrap();
        assert!(!jumbo.veth_native_refused(9000), "multi-buffer loads a program with frags");
    }

    #[test]
    fn small_values_are_raised() {
        let q = [0];
        let l = Layout::new(&Settings { pool_frames: 0, batch: 0, pod_mtu: 9000, ..settings(&q) }).unwrap();
        assert_eq!(l.buffers.count, MIN_POOL_BUFFERS);
        assert_eq!(l.batch, 1);
        assert_eq!(l.pod_mtu, 1500, "never more than the uplink's MTU");
        // The completion ring takes whichever is larger.
        let l = Layout::new(&Settings { ring_size: 4096, ..settings(&q) }).unwrap();
        assert_eq!(l.comp_size, 4096);
    }

    #[test]
    fn bad_settings_are_errors() {
        let q = [0];
        let e = |s: Settings<'_>| Layout::new(&s).unwrap_err();
        assert_eq!(e(settings(&[])), LayoutError::NoQueue);
        assert_eq!(
            e(Settings { ring_size: 1000, ..settings(&q) }),
            LayoutError::NotPowerOfTwo { what: "ring size", value: 1000 }
        );
        assert!(matches!(e(Settings { fill_size: 0, ..settings(&q) }), LayoutError::NotPowerOfTwo { .. }));
        assert!(matches!(
            e(Settings { frame_size: 3000, ..settings(&q) }),
            LayoutError::NotPowerOfTwo { .. }
        ));
        assert_eq!(e(Settings { frame_size: 1024, ..settings(&q) }), LayoutError::FrameTooSmall(1024));
        assert!(matches!(e(Settings { headroom: 4096, ..settings(&q) }), LayoutError::Headroom { .. }));
        assert!(matches!(e(Settings { headroom: 8192, ..settings(&q) }), LayoutError::Headroom { .. }));
        assert!(matches!(e(Settings { headroom: 4, ..settings(&q) }), LayoutError::Headroom { .. }));
        let many = [0, 1, 2, 3];
        assert_eq!(
            e(Settings { tx_chunks: 3, ..settings(&many) }),
            LayoutError::TooFewChunks { chunks: 3, queues: 4 }
        );
        assert_eq!(e(Settings { pool_frames: usize::MAX, ..settings(&q) }), LayoutError::TooManyFrames);
        assert_eq!(e(Settings { pool_frames: 1 << 28, ..settings(&q) }), LayoutError::TooManyFrames);
        assert_eq!(
            e(Settings { fill_size: 1 << 31, ..settings(&many) }),
            LayoutError::TooManyFrames,
            "fill rings × queues beyond a UMEM"
        );
        assert!(e(settings(&[])).to_string().contains("no queue"));
    }

    #[test]
    fn never_panics() {
        // Every combination of awkward values gives a layout or an error.
        let qs = [0u32; 8];
        for frame_size in [0, 1, 2048, 4096, 1 << 31] {
            for headroom in [0, 11, 12, 256, 4095, u32::MAX] {
                for n in [0, 1, 8] {
                    for big in [0, 1, u32::MAX] {
                        let s = Settings {
                            frame_size,
                            headroom,
                            ring_size: if big == 0 { 0 } else { 1 << 31 },
                            fill_size: big.clamp(1, 1 << 31),
                            tx_chunks: big,
                            queues: &qs[..n],
                            workers: n,
                            pool_frames: big as usize,
                            mtu: big,
                            pod_mtu: big,
                            batch: big as usize,
                        };
                        let _ = Layout::new(&s);
                    }
                }
            }
        }
    }
}
