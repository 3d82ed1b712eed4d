//! The frame pool: every frame buffer the datapath uses is allocated once at start-up and
//! recycled, so the fast path never allocates.
//!
//! Buffers live in a global lock-free queue; each worker keeps a small local cache
//! ([`LocalPool`]) and moves buffers to and from the global queue in bulk, so a frame costs no
//! shared-memory traffic in the common case. A buffer handed to another worker through a ring
//! is returned by that worker.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::wire::VNET_HDR_LEN;

/// Bytes in one buffer: the vnet header plus the largest frame a TAP hands over (a 64 KiB GSO
/// super-frame plus its Ethernet header).
pub const FRAME_CAPACITY: usize = VNET_HDR_LEN + 65536 + 64;

/// One frame buffer: `data[..len]` is the vnet header followed by the Ethernet frame.
pub struct Frame {
    data: Box<[u8]>,
    len: usize,
}

impl Frame {
    fn new(capacity: usize) -> Frame {
        Frame { data: vec![0u8; capacity].into_boxed_slice(), len: 0 }
    }

    /// The whole buffer, to receive into.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Sets how many bytes of the buffer are valid (clamped to the capacity).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.data.len());
    }

    /// Vnet header + frame.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// Mutable vnet header + frame.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }

    /// The Ethernet frame without the vnet header (empty if the buffer is shorter).
    pub fn ethernet(&self) -> &[u8] {
        self.bytes().get(VNET_HDR_LEN..).unwrap_or(&[])
    }

    /// Copies `other`'s bytes into this buffer.
    pub fn copy_from(&mut self, other: &Frame) {
        let n = other.len.min(self.data.len());
        self.data[..n].copy_from_slice(&other.data[..n]);
        self.len = n;
    }
}

/// The global pool.
pub struct FramePool {
    free: ArrayQueue<Frame>,
    total: usize,
    outstanding: AtomicUsize,
}

impl FramePool {
    /// Allocates `count` buffers of `capacity` bytes. Pages are only touched when first used,
    /// so an idle node's resident memory stays small.
    pub fn new(count: usize, capacity: usize) -> Arc<FramePool> {
        let count = count.max(1);
        let free = ArrayQueue::new(count);
        for _ in 0..count {
            // Cannot fail: the queue was sized for exactly `count` frames.
            let _ = free.push(Frame::new(capacity));
        }
        Arc::new(FramePool { free, total: count, outstanding: AtomicUsize::new(0) })
    }

    /// Number of buffers in the pool.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Buffers in the global queue right now (worker caches not included).
    pub fn free_global(&self) -> usize {
        self.free.len()
    }

    /// Buffers held by workers' caches, rings and in-flight batches.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Relaxed)
    }
}

/// A worker's cache of free buffers.
pub struct LocalPool {
    global: Arc<FramePool>,
    cache: Vec<Frame>,
    refill: usize,
}

impl LocalPool {
    /// A cache that moves `refill` buffers at a time to and from the global pool.
    pub fn new(global: Arc<FramePool>, refill: usize) -> LocalPool {
        let refill = refill.max(1);
        LocalPool { global, cache: Vec::with_capacity(refill * 3), refill }
    }

    /// Takes a buffer, or None when the pool is exhausted.
    #[inline]
    pub fn get(&mut self) -> Option<Frame> {
        if self.cache.is_empty() {
            for _ in 0..self.refill {
                match self.global.free.pop() {
                    Some(f) => {
                        self.global.outstanding.fetch_add(1, Relaxed);
                        self.cache.push(f);
                    }
                    None => break,
                }
            }
        }
        self.cache.pop()
    }

    /// Returns a buffer.
    #[inline]
    pub fn put(&mut self, mut frame: Frame) {
        frame.len = 0;
        self.cache.push(frame);
        if self.cache.len() >= self.refill * 2 {
            while self.cache.len() > self.refill {
                let Some(f) = self.cache.pop() else { break };
                self.global.outstanding.fetch_sub(1, Relaxed);
                // Cannot overflow: the queue holds every buffer ever allocated.
                let _ = self.global.free.push(f);
            }
        }
    }

    /// Buffers in this cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

impl Drop for LocalPool {
    fn drop(&mut self) {
        for f in self.cache.drain(..) {
            self.global.outstanding.fetch_sub(1, Relaxed);
            let _ = self.global.free.push(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_put_accounting() {
        let pool = FramePool::new(8, 64);
        let mut local = LocalPool::new(pool.clone(), 2);
        let mut held = Vec::new();
        while let Some(f) = local.get() {
            held.push(f);
        }
        assert_eq!(held.len(), 8);
        assert_eq!(pool.free_global(), 0);
        for f in held.drain(..) {
            local.put(f);
        }
        assert_eq!(pool.free_global() + local.cached(), 8);
        drop(local);
        assert_eq!(pool.free_global(), 8);
        assert_eq!(pool.outstanding(), 0);
    }

    #[test]
    fn frame_bytes() {
        let pool = FramePool::new(2, 32);
        let mut local = LocalPool::new(pool, 1);
        let mut a = local.get().unwrap();
        a.buffer_mut()[..20].copy_from_slice(&[7u8; 20]);
        a.set_len(20);
        assert_eq!(a.ethernet().len(), 20 - VNET_HDR_LEN);
        a.set_len(1000);
        assert_eq!(a.bytes().len(), 32);
        let mut b = local.get().unwrap();
        b.copy_from(&a);
        assert_eq!(b.bytes(), a.bytes());
    }
}
