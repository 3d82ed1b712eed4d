//! One AF_XDP socket (one NIC queue) of the uplink and the bookkeeping of the buffers it lends
//! to the kernel.
//!
//! A queue owns its four rings (rx, tx, fill, completion), its share of the transmit chunks
//! (UMEM frames that segments and copies are written into) and the pool buffers it has lent to
//! the kernel, by pool index. A buffer lent to the fill ring comes back on the same socket's
//! rx ring, one lent to the tx ring on its completion ring, so nothing is shared between
//! queues but the UMEM itself and its layout ([`Shared`]).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use super::XdpCounters;
use crate::pool::{BufferLayout, Frame, LocalPool};
use crate::wire::VNET_HDR_LEN;

/// What every queue of the uplink shares, fixed once the UMEM is laid out.
pub(super) struct Shared {
    pub umem: Umem,
    /// Descriptor of each pool buffer's first UMEM frame, by pool index.
    pub pool_desc: Vec<FrameDesc>,
    /// How the pool's buffers sit in the UMEM.
    pub layout: BufferLayout,
    /// Bytes of the UMEM taken by the pool (transmit chunks follow).
    pub pool_bytes: usize,
    /// Data room of one UMEM frame.
    pub room: usize,
    /// The pods' MTU: received TCP segments larger than its MSS get a GSO header cutting them
    /// to it.
    pub pod_mtu: usize,
    /// Pool buffers each fill ring is kept topped up with.
    pub fill_target: usize,
    /// Frames taken from an rx ring at once.
    pub batch: usize,
    /// Size of the rx and tx rings.
    pub ring_size: usize,
}

impl Shared {
    /// The pool index of the buffer `addr` (a UMEM address) falls in, if it is a pool buffer.
    pub fn pool_index(&self, addr: usize) -> Option<usize> {
        (addr < self.pool_bytes).then(|| addr / self.layout.stride)
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
    /// Pool buffers lent to the kernel or received and not yet handed out, by pool index.
    pub lent: Vec<Option<Frame>>,
    /// Pool buffers on the tx or completion ring.
    pub tx_lent: usize,
    /// Free transmit chunks.
    pub free: Vec<FrameDesc>,
    /// Transmit chunks in all.
    pub chunks: usize,
    /// Frames read from the rx ring and not yet handed out.
    pub held: VecDeque<FrameDesc>,
    /// Pool buffers whose transmission completed, to go back to a worker's pool.
    pub released: Vec<Frame>,
    /// Transmit chunks to be produced on the tx ring by the current send.
    pub pending_tx: Vec<FrameDesc>,
    /// Descriptors produced on the tx ring since the last kick.
    pub unkicked: usize,
    /// Frames received and transmitted on this queue.
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Scratch for ring operations.
    scratch: Vec<FrameDesc>,
    /// Descriptors on their way to the fill ring.
    fill_buf: Vec<FrameDesc>,
}

impl Queue {
    /// A bound socket's rings, with its share of the transmit chunks.
    pub fn new(
        id: u32,
        (rx, tx, fill, comp): (RxQueue, TxQueue, FillQueue, CompQueue),
        chunks: Vec<FrameDesc>,
        sh: &Shared,
        pool_count: usize,
    ) -> Queue {
        Queue {
            id,
            rx,
            tx,
            fill,
            comp,
            in_rx: 0,
            in_tx: 0,
            lent: std::iter::repeat_with(|| None).take(pool_count).collect(),
            tx_lent: 0,
            chunks: chunks.len(),
            free: chunks,
            held: VecDeque::with_capacity(sh.batch),
            released: Vec::new(),
            pending_tx: Vec::with_capacity(64),
            unkicked: 0,
            rx_frames: 0,
            tx_frames: 0,
            scratch: vec![FrameDesc::default(); sh.fill_target.max(sh.ring_size).max(sh.batch)],
            fill_buf: Vec::with_capacity(sh.fill_target),
        }
    }

    pub fn accounting(&self) -> Accounting {
        let held = self.held.len() + self.released.len();
        let holding = self.lent.iter().filter(|f| f.is_some()).count() + self.released.len();
        Accounting {
            rx_lent: self.in_rx,
            tx_lent: self.tx_lent,
            held,
            lost: holding.abs_diff(self.in_rx + self.tx_lent + held),
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
            self.in_tx -= n;
            for i in 0..n {
                let desc = self.scratch[i];
                match sh.pool_index(desc.addr()) {
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
    }

    /// Hands the buffers whose transmission completed back to `pool`.
    pub fn give_back(&mut self, pool: &mut LocalPool) {
        for f in self.released.drain(..) {
            pool.put(f);
        }
    }

    /// Tops the fill ring up with buffers from `pool` once a burst's worth is missing, waking
    /// the driver if it stopped for want of fill entries.
    pub fn refill(&mut self, sh: &Shared, pool: &mut LocalPool, counters: &XdpCounters) {
        let want = sh.fill_target.saturating_sub(self.in_rx);
        if want < sh.batch.min(sh.fill_target) {
            return;
        }
        self.fill_buf.clear();
        while self.fill_buf.len() < want {
            let Some(f) = pool.get() else {
                counters.rx_fill_short.fetch_add(1, Relaxed);
                break;
            };
            let idx = f.index();
            match (sh.pool_desc.get(idx), self.lent.get_mut(idx)) {
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
                    sh.pool_index(d.addr()).and_then(|i| self.lent.get_mut(i)).and_then(Option::take)
                {
                    pool.put(f);
                }
            }
        }
        if self.fill.needs_wakeup() {
            counters.rx_fill_wakeups.fetch_add(1, Relaxed);
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
    }

    /// Takes the next burst from the rx ring into `held`; false when it is empty.
    pub fn pull(&mut self, sh: &Shared, counters: &XdpCounters) -> bool {
        let batch = sh.batch.min(self.scratch.len());
        // SAFETY: the rx ring belongs to a socket of this UMEM.
        let n = unsafe { self.rx.consume(&mut self.scratch[..batch]) };
        if n > 0 {
            self.in_rx -= n;
            self.rx_frames += n as u64;
            self.held.extend(self.scratch[..n].iter().copied());
            return true;
        }
        if self.fill.needs_wakeup() {
            counters.rx_fill_wakeups.fetch_add(1, Relaxed);
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
        false
    }

    /// Takes the pool buffer a received descriptor points into, with its Ethernet frame moved
    /// to where the datapath expects it (right after the vnet header) and its length set to
    /// vnet header + frame. None if the descriptor is not one of ours.
    pub fn take_received(&mut self, sh: &Shared, desc: &FrameDesc) -> Option<Frame> {
        let idx = sh.pool_index(desc.addr())?;
        let mut f = self.lent.get_mut(idx)?.take()?;
        let len = desc.lengths().data();
        // Where the frame starts in the buffer: normally right after the vnet header.
        let at = (desc.addr() - idx * sh.layout.stride).checked_sub(sh.layout.head);
        match at {
            Some(at) if at >= VNET_HDR_LEN && at + len <= sh.layout.capacity => {
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

    /// The received bytes of the next held frame, if it lies in a buffer this queue lent.
    pub fn peek_received(&self, sh: &Shared) -> Option<&[u8]> {
        let next = self.held.front()?;
        let idx = sh.pool_index(next.addr())?;
        let f = self.lent.get(idx)?.as_ref()?;
        let off = (next.addr() - idx * sh.layout.stride).checked_sub(sh.layout.head)?;
        f.buffer().get(off..off + next.lengths().data())
    }

    /// Drops the next held frame, giving its buffer to `pool`.
    pub fn skip_received(&mut self, sh: &Shared, pool: &mut LocalPool) {
        if let Some(d) = self.held.pop_front() {
            if let Some(f) = sh.pool_index(d.addr()).and_then(|i| self.lent.get_mut(i)).and_then(Option::take)
            {
                pool.put(f);
            }
        }
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

    /// Takes back every pool buffer this queue holds (once its socket is closed).
    pub fn take_all(&mut self) -> Vec<Frame> {
        let mut out: Vec<Frame> = self.lent.iter_mut().filter_map(Option::take).collect();
        out.append(&mut self.released);
        self.held.clear();
        self.in_rx = 0;
        self.tx_lent = 0;
        out
    }
}
