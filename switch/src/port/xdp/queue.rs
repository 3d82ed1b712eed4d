//! One AF_XDP socket (one NIC queue) of the uplink and the bookkeeping of the buffers it lends
//! to the kernel.
//!
//! A queue owns its four rings (rx, tx, fill, completion), its share of the transmit chunks
//! (UMEM frames that segments and copies are written into) and the pool buffers it has lent to
//! the kernel, by pool index. A buffer lent to the fill ring comes back on the same socket's
//! rx ring, one lent to the tx ring on its completion ring, so nothing is shared between
//! queues but the UMEM itself and its layout ([`Shared`]).
//!
//! With multi-buffer (`XDP_USE_SG`, an MTU beyond one UMEM frame) a frame may span several
//! descriptors, all but the last flagged `XDP_PKT_CONTD`. On receive, the pieces are gathered
//! into a datapath buffer (which has room for 64 KiB) as they are pulled, even across bursts; on transmit, a frame larger than a UMEM frame is written over several
//! transmit chunks produced together.

use std::collections::VecDeque;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use super::XdpCounters;

/// `XDP_PKT_CONTD` (linux/if_xdp.h): more descriptors of this frame follow.
const XDP_PKT_CONTD: u32 = 1;
use crate::pool::{Class, Frame, LocalPool, FRAME_CAPACITY};
use crate::wire::VNET_HDR_LEN;

/// What every queue of the uplink shares, fixed once the UMEM is laid out.
pub(super) struct Shared {
    pub umem: Umem,
    /// Where the pool's datapath buffers sit in the UMEM.
    pub buffers: Class,
    /// Where its small receive buffers (one UMEM frame each, for the fill rings) sit.
    pub receive: Class,
    /// Descriptor of each buffer's first UMEM frame, by slot: the datapath buffers first,
    /// then the receive buffers.
    pub slot_desc: Vec<FrameDesc>,
    /// Data room of one UMEM frame.
    pub room: usize,
    /// The pods' MTU: received TCP segments larger than its MSS get a GSO header cutting them
    /// to it.
    pub pod_mtu: usize,
    /// Pool buffers each fill ring is kept topped up with.
    pub fill_target: usize,
    /// Whether frames may span several UMEM frames (`XDP_USE_SG`).
    pub multi_buffer: bool,
    /// Frames taken from an rx ring at once.
    pub batch: usize,
    /// Size of the rx and tx rings.
    pub ring_size: usize,
}

impl Shared {
    /// The pool buffer the UMEM address `addr` falls in, if any: its slot, where its bytes
    /// start in the UMEM (after its head) and how many there are.
    pub fn locate(&self, addr: usize) -> Option<(usize, usize, usize)> {
        for (first, c) in [(0, &self.buffers), (self.buffers.count, &self.receive)] {
            if addr >= c.offset && addr < c.offset + c.bytes() {
                let i = (addr - c.offset) / c.layout.stride;
                return Some((first + i, c.offset + i * c.layout.stride + c.layout.head, c.layout.capacity));
            }
        }
        None
    }

    /// The slot of a pool buffer.
    pub fn slot_of(&self, f: &Frame) -> usize {
        if f.is_small() {
            self.buffers.count + f.index()
        } else {
            f.index()
        }
    }

    /// Slots in all.
    pub fn slots(&self) -> usize {
        self.buffers.count + self.receive.count
    }
}

/// Where one queue's buffers are (summed over queues by the port).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Pool buffers on the kernel's receive side (fill + rx rings).
    pub rx_lent: usize,
    /// Pool buffers on the transmit side (tx + completion rings), sent without a copy.
    pub tx_lent: usize,
    /// Pool buffers received and not yet handed out (0 between bursts), or transmitted and
    /// waiting to go back to a worker's pool.
    pub held: usize,
    /// Pool buffers held beyond those: a bookkeeping fault (always 0).
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
    /// buffers held all accounted for.
    pub fn balanced(&self) -> bool {
        self.lost == 0 && self.chunks_free + self.chunks_in_flight == self.chunks_total
    }

    /// Adds another queue's figures.
    pub fn add(&mut self, o: &Accounting) {
        self.rx_lent += o.rx_lent;
        self.tx_lent += o.tx_lent;
        self.held += o.held;
        self.lost += o.lost;
        self.chunks_total += o.chunks_total;
        self.chunks_free += o.chunks_free;
        self.chunks_in_flight += o.chunks_in_flight;
    }
}

/// One socket and what it has lent to the kernel.
pub(super) struct Queue {
    pub id: u32,
    pub rx: RxQueue,
    pub tx: TxQueue,
    pub fill: FillQueue,
    pub comp: CompQueue,
    /// Pool buffers in the fill ring or rx ring (the kernel's receive side).
    pub in_rx: usize,
    /// Descriptors in the tx or completion ring (pool buffers and transmit chunks).
    pub in_tx: usize,
    /// Pool buffers lent to the kernel, by slot ([`Shared::locate`]).
    pub lent: Vec<Option<Frame>>,
    /// Pool buffers on the tx or completion ring.
    pub tx_lent: usize,
    /// Free transmit chunks.
    pub free: Vec<FrameDesc>,
    /// Transmit chunks in all.
    pub chunks: usize,
    /// Frames read from the rx ring (gathered, in their first pool buffer) and not yet handed
    /// out.
    pub held: VecDeque<Frame>,
    /// A frame whose first descriptors were pulled and whose last is still to come.
    assembling: Option<Frame>,
    /// Continuation descriptors to drop, after a frame that could not be gathered.
    discarding: bool,
    /// Pool buffers whose transmission completed, to go back to a worker's pool.
    pub released: Vec<Frame>,
    /// Transmit chunks to be produced on the tx ring by the current send.
    pub pending_tx: Vec<FrameDesc>,
    /// Descriptors produced on the tx ring since the last kick.
    pub unkicked: usize,
    /// Descriptors received and transmitted on this queue (a frame, or a piece of one).
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// The queue's counters: written by its worker only, summed over queues by `stats`.
    pub counters: XdpCounters,
    /// Scratch for ring operations.
    scratch: Vec<FrameDesc>,
    /// Descriptors on their way to the fill ring.
    fill_buf: Vec<FrameDesc>,
    /// Where a frame larger than a UMEM frame is put together before it is split over
    /// transmit chunks (multi-buffer only; empty otherwise).
    pub big: Vec<u8>,
}

impl Queue {
    /// A bound socket's rings, with its share of the transmit chunks.
    pub fn new(
        id: u32,
        (rx, tx, fill, comp): (RxQueue, TxQueue, FillQueue, CompQueue),
        chunks: Vec<FrameDesc>,
        sh: &Shared,
    ) -> Queue {
        Queue {
            id,
            rx,
            tx,
            fill,
            comp,
            in_rx: 0,
            in_tx: 0,
            lent: std::iter::repeat_with(|| None).take(sh.slots()).collect(),
            tx_lent: 0,
            chunks: chunks.len(),
            free: chunks,
            held: VecDeque::with_capacity(sh.batch),
            assembling: None,
            discarding: false,
            released: Vec::new(),
            pending_tx: Vec::with_capacity(64),
            unkicked: 0,
            rx_frames: 0,
            tx_frames: 0,
            counters: XdpCounters::default(),
            scratch: vec![FrameDesc::default(); sh.fill_target.max(sh.ring_size).max(sh.batch)],
            fill_buf: Vec::with_capacity(sh.fill_target),
            big: if sh.multi_buffer { vec![0; FRAME_CAPACITY] } else { Vec::new() },
        }
    }

    pub fn accounting(&self) -> Accounting {
        let held = self.held.len() + usize::from(self.assembling.is_some()) + self.released.len();
        let lent = self.lent.iter().filter(|f| f.is_some()).count();
        Accounting {
            rx_lent: self.in_rx,
            tx_lent: self.tx_lent,
            held,
            lost: lent.abs_diff(self.in_rx + self.tx_lent),
            chunks_total: self.chunks,
            chunks_free: self.free.len() + self.pending_tx.len(),
            chunks_in_flight: self.in_tx.saturating_sub(self.tx_lent),
        }
    }

    /// Moves completed transmissions back: transmit chunks to the free list, pool buffers to
    /// `released`.
    pub fn reap(&mut self, sh: &Shared) {
        while self.in_tx > 0 {
            // SAFETY: the completion ring only returns descriptors of this UMEM that we
            // produced on the tx ring; the kernel is done with them.
            let n = unsafe { self.comp.consume(&mut self.scratch) };
            if n == 0 {
                break;
            }
            // Saturating: counts the kernel could only break by returning what it was not given.
            self.in_tx = self.in_tx.saturating_sub(n);
            for i in 0..n {
                let desc = self.scratch[i];
                match sh.locate(desc.addr()) {
                    Some((slot, ..)) => {
                        if let Some(f) = self.lent.get_mut(slot).and_then(Option::take) {
                            self.tx_lent = self.tx_lent.saturating_sub(1);
                            self.released.push(f);
                        }
                    }
                    None => self.free.push(desc),
                }
            }
        }
    }

    /// Hands the buffers whose transmission completed back to `pool`.
    pub fn give_back(&mut self, pool: &mut LocalPool) {
        for f in self.released.drain(..) {
            pool.put(f);
        }
    }

    /// Tops the fill ring up with small receive buffers from `pool` once a burst's worth is
    /// missing, waking the driver if it stopped for want of fill entries.
    pub fn refill(&mut self, sh: &Shared, pool: &mut LocalPool) {
        let want = sh.fill_target.saturating_sub(self.in_rx);
        if want < sh.batch.min(sh.fill_target) {
            return;
        }
        self.fill_buf.clear();
        while self.fill_buf.len() < want {
            let Some(f) = pool.get_receive() else {
                self.counters.rx_fill_short.inc();
                break;
            };
            let slot = sh.slot_of(&f);
            match (sh.slot_desc.get(slot), self.lent.get_mut(slot)) {
                (Some(d), Some(slot)) => {
                    self.fill_buf.push(*d);
                    *slot = Some(f);
                }
                _ => pool.put(f),
            }
        }
        // SAFETY: the descriptors are pool buffers of this UMEM, now owned by `lent` and
        // touched by nothing else until the rx ring returns them. The ring has room for them:
        // at most `fill_target` (its size) are on the receive side.
        let n = unsafe { self.fill.produce(&self.fill_buf) };
        if n == self.fill_buf.len() {
            self.in_rx += n;
        } else {
            for d in &self.fill_buf {
                if let Some(f) =
                    sh.locate(d.addr()).and_then(|(i, ..)| self.lent.get_mut(i)).and_then(Option::take)
                {
                    pool.put(f);
                }
            }
        }
        if self.fill.needs_wakeup() {
            self.counters.rx_fill_wakeups.inc();
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
    }

    /// Takes the next burst from the rx ring, gathering multi-descriptor frames into their
    /// first buffer (continuations' buffers go back to `pool`), onto `held`; false when the
    /// ring is empty.
    pub fn pull(&mut self, sh: &Shared, pool: &mut LocalPool) -> bool {
        let batch = sh.batch.min(self.scratch.len());
        // SAFETY: the rx ring belongs to a socket of this UMEM.
        let n = unsafe { self.rx.consume(&mut self.scratch[..batch]) };
        if n == 0 {
            if self.fill.needs_wakeup() {
                self.counters.rx_fill_wakeups.inc();
                let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
            }
            return false;
        }
        self.in_rx = self.in_rx.saturating_sub(n);
        for i in 0..n {
            let desc = self.scratch[i];
            let more = desc.options() & XDP_PKT_CONTD != 0;
            let piece = self.take_lent(sh, &desc);
            if self.discarding {
                // The rest of a frame already dropped.
                if let Some((f, _)) = piece {
                    pool.put(f);
                }
                self.discarding = more;
                continue;
            }
            let Some((mut buf, at)) = piece else {
                self.counters.rx_bad_desc.inc();
                if let Some(f) = self.assembling.take() {
                    pool.put(f);
                }
                self.discarding = more;
                continue;
            };
            let len = desc.lengths().data();
            let frame = match self.assembling.take() {
                None if more => {
                    // The first piece of a jumbo frame: gathered in a datapath buffer, which
                    // has room for it all.
                    let big = pool.get();
                    if let Some(mut big) = big {
                        big.buffer_mut()[VNET_HDR_LEN..VNET_HDR_LEN + len]
                            .copy_from_slice(&buf.buffer()[at..at + len]);
                        big.set_len(VNET_HDR_LEN + len);
                        pool.put(buf);
                        Some(big)
                    } else {
                        self.counters.rx_pool_empty.inc();
                        pool.put(buf);
                        self.discarding = true;
                        None
                    }
                }
                None => {
                    if at != VNET_HDR_LEN {
                        buf.buffer_mut().copy_within(at..at + len, VNET_HDR_LEN);
                    }
                    buf.set_len(VNET_HDR_LEN + len);
                    Some(buf)
                }
                Some(mut first) => {
                    let have = first.bytes().len();
                    let fits = have + len <= first.buffer().len();
                    if fits {
                        first.buffer_mut()[have..have + len].copy_from_slice(&buf.buffer()[at..at + len]);
                        first.set_len(have + len);
                    }
                    pool.put(buf);
                    if fits {
                        Some(first)
                    } else {
                        self.counters.rx_bad_desc.inc();
                        pool.put(first);
                        self.discarding = more;
                        None
                    }
                }
            };
            let Some(frame) = frame else { continue };
            if more {
                self.assembling = Some(frame);
            } else {
                if frame.bytes().len() > VNET_HDR_LEN + sh.room {
                    self.counters.rx_multi_buffer.inc();
                }
                self.held.push_back(frame);
            }
        }
        self.rx_frames += n as u64;
        true
    }

    /// Takes the pool buffer a received descriptor points into, and where in the buffer its
    /// bytes start; None if the descriptor is not one this queue lent, or its bytes lie outside
    /// the buffer (the buffer then goes to `released`).
    fn take_lent(&mut self, sh: &Shared, desc: &FrameDesc) -> Option<(Frame, usize)> {
        let (slot, start, capacity) = sh.locate(desc.addr())?;
        let f = self.lent.get_mut(slot)?.take()?;
        let len = desc.lengths().data();
        match desc.addr().checked_sub(start) {
            Some(at) if at >= VNET_HDR_LEN && at + len <= capacity => Some((f, at)),
            _ => {
                self.released.push(f);
                None
            }
        }
    }

    /// Writes `bytes` (one Ethernet frame larger than a UMEM frame) over as many transmit
    /// chunks as it takes, all but the last flagged as continued, onto `pending_tx`; false if
    /// there are not enough free chunks.
    pub fn stage_split(&mut self, sh: &Shared, bytes: &[u8]) -> bool {
        let pieces = bytes.len().div_ceil(sh.room.max(1));
        if self.free.len() < pieces {
            return false;
        }
        for (i, part) in bytes.chunks(sh.room.max(1)).enumerate() {
            let Some(mut desc) = self.free.pop() else { return false };
            let ok = self.write_with(sh, &mut desc, part.len(), |buf| {
                buf.copy_from_slice(part);
                true
            });
            desc.set_options(if i + 1 < pieces { XDP_PKT_CONTD } else { 0 });
            self.pending_tx.push(desc);
            if !ok {
                return false;
            }
        }
        true
    }

    /// Lets `f` fill `len` bytes of the transmit chunk `desc` points at; false if it does not
    /// fit or `f` failed.
    pub fn write_with(
        &mut self,
        sh: &Shared,
        desc: &mut FrameDesc,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> bool,
    ) -> bool {
        if len > sh.room {
            return false;
        }
        // A chunk last used for part of a larger frame may still say "continued".
        desc.set_options(0);
        // SAFETY: `desc` was taken from the free list, so neither the kernel nor another
        // descriptor refers to this frame.
        let mut data = unsafe { sh.umem.data_mut(desc) };
        data.cursor().set_pos(len);
        let buf = data.contents_mut();
        buf.len() == len && f(buf)
    }

    /// Produces `pending_tx` on the tx ring; on a full ring, returns them to the free list.
    pub fn produce_tx(&mut self) -> bool {
        if self.pending_tx.is_empty() {
            return true;
        }
        // SAFETY: the descriptors are UMEM frames we just wrote and own.
        let n = unsafe { self.tx.produce(&self.pending_tx) };
        if n == self.pending_tx.len() {
            self.in_tx += n;
            self.tx_frames += n as u64;
            self.pending_tx.clear();
            true
        } else {
            self.free.append(&mut self.pending_tx);
            false
        }
    }

    /// Produces one descriptor on the tx ring; false when the ring is full.
    pub fn produce_one(&mut self, desc: &FrameDesc) -> bool {
        // SAFETY: `desc` is a pool buffer of this UMEM whose frame the caller hands over.
        let n = unsafe { self.tx.produce_one(desc) };
        self.in_tx += n;
        self.tx_frames += n as u64;
        n == 1
    }

    /// Takes every pool buffer this queue holds; the caller gives them back to the pool once
    /// the socket is closed.
    pub fn take_all(&mut self) -> Vec<Frame> {
        let mut out: Vec<Frame> = self.lent.iter_mut().filter_map(Option::take).collect();
        out.append(&mut self.released);
        out.extend(self.held.drain(..));
        out.extend(self.assembling.take());
        self.in_rx = 0;
        self.tx_lent = 0;
        out
    }
}
