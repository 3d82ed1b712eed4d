//! The frame pool: every frame buffer the datapath uses is allocated once at start-up and
//! recycled, so the fast path never allocates.
//!
//! The buffers are slices of one memory region: an anonymous allocation by default, or the
//! AF_XDP uplink's UMEM ([`FramePool::over`]), in which case a frame read from a TAP can be put
//! on the uplink's transmit ring, and a frame the kernel received into the UMEM handed to the
//! datapath, without a copy (see [`crate::port::xdp`]).
//!
//! Buffers live in a global lock-free queue; each worker keeps a small local cache
//! ([`LocalPool`]) and moves buffers to and from the global queue in bulk, so a frame costs no
//! shared-memory traffic in the common case.
//!
//! A pool in a UMEM also has a second class of buffers, small ones (one UMEM frame each) that
//! the uplink lends to its fill rings: the kernel writes at most a UMEM frame into each, so
//! 64 KiB buffers there would pin memory for nothing. A received frame travels through the
//! datapath in its small buffer, which goes back to its own queue when put. A buffer handed to another worker through a ring
//! is returned by that worker; a buffer lent to the kernel (uplink fill or transmit ring) is
//! kept by the port until the kernel gives it back.

use std::alloc::Layout;
use std::any::Any;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::wire::{IpL4, VNET_HDR_LEN};

/// Bytes in one buffer: the vnet header plus the largest frame a TAP hands over (a 64 KiB GSO
/// super-frame plus its Ethernet header).
pub const FRAME_CAPACITY: usize = VNET_HDR_LEN + 65536 + 64;

/// Why a pool could not be laid out over a region.
#[derive(Debug, thiserror::Error)]
#[error("frame pool layout: {0}")]
pub struct LayoutError(String);

/// Where each buffer sits in the region: buffer `i` starts at `i * stride + head` and holds
/// `capacity` bytes (vnet header + frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLayout {
    /// Bytes from one buffer's slot to the next.
    pub stride: usize,
    /// Bytes left unused before each buffer (room the UMEM layout needs; 0 on the heap).
    pub head: usize,
    /// Usable bytes of each buffer.
    pub capacity: usize,
}

/// The memory behind the buffers. Frames hold it alive, so no buffer can outlive it.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    owner: Owner,
}

enum Owner {
    /// Allocated by the pool itself.
    Heap(Layout),
    /// Mapped by someone else (the UMEM), kept alive by this handle.
    Shared(#[allow(dead_code)] Box<dyn Any + Send + Sync>),
}

// SAFETY: the region is plain memory; which parts each thread touches is decided by the
// ownership of the `Frame`s (one per buffer), never by shared references to the region itself.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Bytes in the region.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never, for a pool's).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Owner::Heap(layout) = self.owner {
            // SAFETY: allocated in `FramePool::new` with this layout, and no frame is left
            // (each holds the region alive).
            unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) };
        }
    }
}

/// Where one class of buffers sits in the region: `count` buffers of `layout`, the first
/// `offset` bytes into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// Bytes from the region's start to the first buffer's slot.
    pub offset: usize,
    /// Buffers in the class.
    pub count: usize,
    /// Their layout.
    pub layout: BufferLayout,
}

impl Class {
    /// Bytes the class spans.
    pub fn bytes(&self) -> usize {
        self.count.saturating_mul(self.layout.stride)
    }
}

/// One frame buffer: `bytes()` is the vnet header followed by the Ethernet frame.
///
/// Each buffer of the region has exactly one `Frame`, created with the pool; moving the
/// `Frame` moves the right to touch those bytes.
pub struct Frame {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
    index: u32,
    /// A small receive buffer (the second class), not a datapath buffer.
    small: bool,
    region: Arc<Region>,
    /// The transport header the parse stage found in a super-frame, kept with the frame for
    /// the port that segments it (the uplink), so that it does not parse the frame again.
    l4: Option<IpL4>,
}

// SAFETY: a `Frame` is the only handle on its bytes (see above), like a `Box<[u8]>`.
unsafe impl Send for Frame {}
// SAFETY: `&Frame` only gives shared access to the bytes.
unsafe impl Sync for Frame {}

impl Frame {
    /// The whole buffer, to receive into.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr..ptr + capacity` lies in the region (checked when the pool was laid
        // out), the region lives as long as `self.region`, and this frame owns those bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    /// The whole buffer, whatever its length says.
    pub fn buffer(&self) -> &[u8] {
        // SAFETY: as in `buffer_mut`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity) }
    }

    /// Sets how many bytes of the buffer are valid (clamped to the capacity).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity);
        // New bytes: what was parsed of the old ones no longer holds.
        self.l4 = None;
    }

    /// Vnet header + frame.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: as in `buffer_mut`; `len <= capacity`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Mutable vnet header + frame.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.buffer_mut()[..len]
    }

    /// The Ethernet frame without the vnet header (empty if the buffer is shorter).
    pub fn ethernet(&self) -> &[u8] {
        self.bytes().get(VNET_HDR_LEN..).unwrap_or(&[])
    }

    /// Copies `other`'s bytes into this buffer.
    pub fn copy_from(&mut self, other: &Frame) {
        let n = other.len.min(self.capacity);
        self.buffer_mut()[..n].copy_from_slice(&other.bytes()[..n]);
        self.len = n;
        self.l4 = other.l4.filter(|_| n == other.len);
    }

    /// Keeps `l4`, the frame's transport header as the parse stage found it, for a port that
    /// segments the frame ([`Frame::l4`]). Only a super-frame needs it.
    pub fn set_l4(&mut self, l4: Option<IpL4>) {
        self.l4 = l4;
    }

    /// The transport header the parse stage found ([`Frame::set_l4`]); `None` if it kept none
    /// (the port then parses the frame itself). Cleared when the buffer goes back to a pool.
    pub fn l4(&self) -> Option<&IpL4> {
        self.l4.as_ref()
    }

    /// Which buffer of its class this is (`0..count`).
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// Whether this is a small receive buffer rather than a datapath buffer.
    pub fn is_small(&self) -> bool {
        self.small
    }

    /// Whether this buffer belongs to `pool`.
    pub fn is_from(&self, pool: &FramePool) -> bool {
        Arc::ptr_eq(&self.region, &pool.region)
    }
}

/// The global pool.
pub struct FramePool {
    free: ArrayQueue<Frame>,
    /// Small receive buffers (empty unless the pool has that class).
    small: ArrayQueue<Frame>,
    total: usize,
    small_total: usize,
    /// Buffers of both classes out of the global queues.
    outstanding: AtomicUsize,
    layout: BufferLayout,
    region: Arc<Region>,
}

impl FramePool {
    /// Allocates `count` buffers of `capacity` bytes in an anonymous region. Pages are only
    /// touched when first used, so an idle node's resident memory stays small.
    pub fn new(count: usize, capacity: usize) -> Arc<FramePool> {
        let count = count.max(1);
        let capacity = capacity.max(1);
        // Cache-line aligned buffers.
        let stride = capacity.div_ceil(64) * 64;
        let len = count.saturating_mul(stride);
        let Ok(layout) = Layout::from_size_align(len, 4096) else {
            panic!("frame pool of {count} x {stride} bytes is too large")
        };
        // SAFETY: `len` is non-zero (count and capacity are at least 1).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(base) = NonNull::new(ptr) else { std::alloc::handle_alloc_error(layout) };
        let region = Region { base, len, owner: Owner::Heap(layout) };
        let class = Class { offset: 0, count, layout: BufferLayout { stride, head: 0, capacity } };
        // Cannot fail: the layout was built to fit.
        match FramePool::build(region, class, None) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// Lays the datapath's buffers (`buffers`), and optionally small receive buffers
    /// (`receive`), out over memory mapped by someone else (the uplink's UMEM), which `owner`
    /// keeps mapped.
    ///
    /// # Safety
    ///
    /// `base..base + len` must be valid, writable memory for as long as `owner` lives, and
    /// nothing else may touch it except through the pool's frames (the kernel included: it may
    /// only write into a buffer lent to it by the frame's holder).
    pub unsafe fn over(
        base: NonNull<u8>,
        len: usize,
        owner: Box<dyn Any + Send + Sync>,
        buffers: Class,
        receive: Option<Class>,
    ) -> Result<Arc<FramePool>, LayoutError> {
        FramePool::build(Region { base, len, owner: Owner::Shared(owner) }, buffers, receive)
    }

    fn build(region: Region, buffers: Class, receive: Option<Class>) -> Result<Arc<FramePool>, LayoutError> {
        let check = |c: &Class| -> Result<(), LayoutError> {
            let l = c.layout;
            if c.count == 0 || c.count > u32::MAX as usize || l.head + l.capacity > l.stride {
                return Err(LayoutError(format!("{} buffers of {l:?}", c.count)));
            }
            let end = c.count.checked_mul(l.stride).and_then(|n| n.checked_add(c.offset));
            if end.is_none_or(|n| n > region.len) {
                return Err(LayoutError(format!(
                    "{} buffers of {} bytes from offset {} exceed {} bytes",
                    c.count, l.stride, c.offset, region.len
                )));
            }
            Ok(())
        };
        check(&buffers)?;
        if let Some(r) = &receive {
            check(r)?;
            let apart =
                r.offset >= buffers.offset + buffers.bytes() || buffers.offset >= r.offset + r.bytes();
            if !apart {
                return Err(LayoutError("the two classes of buffers overlap".into()));
            }
        }
        let region = Arc::new(region);
        let fill = |c: &Class, small: bool| {
            let q = ArrayQueue::new(c.count.max(1));
            for i in 0..c.count {
                let at = c.offset + i * c.layout.stride + c.layout.head;
                // SAFETY: `offset + i * stride + head + capacity <= offset + count * stride <=
                // len` (checked above), so `at` is inside the region.
                let ptr = unsafe { NonNull::new_unchecked(region.base.as_ptr().add(at)) };
                let capacity = c.layout.capacity;
                let frame =
                    Frame { ptr, capacity, len: 0, index: i as u32, small, region: region.clone(), l4: None };
                // Cannot fail: the queue was sized for exactly `count` frames.
                let _ = q.push(frame);
            }
            q
        };
        let free = fill(&buffers, false);
        let small = match &receive {
            Some(r) => fill(r, true),
            None => ArrayQueue::new(1),
        };
        Ok(Arc::new(FramePool {
            free,
            small,
            total: buffers.count,
            small_total: receive.map_or(0, |r| r.count),
            outstanding: AtomicUsize::new(0),
            layout: buffers.layout,
            region,
        }))
    }

    /// Number of buffers in the pool, of both classes.
    pub fn total(&self) -> usize {
        self.total + self.small_total
    }

    /// Number of small receive buffers among them.
    pub fn receive_total(&self) -> usize {
        self.small_total
    }

    /// How the buffers are laid out in the region.
    pub fn layout(&self) -> BufferLayout {
        self.layout
    }

    /// Buffers in the global queues right now (worker caches not included).
    pub fn free_global(&self) -> usize {
        self.free.len() + self.small.len()
    }

    /// Buffers held by workers' caches, rings, ports and in-flight batches.
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

    /// Takes a small receive buffer, or None when there is none left (or the pool has none).
    pub fn get_receive(&mut self) -> Option<Frame> {
        let f = self.global.small.pop()?;
        self.global.outstanding.fetch_add(1, Relaxed);
        Some(f)
    }

    /// Returns a buffer (of either class).
    #[inline]
    pub fn put(&mut self, mut frame: Frame) {
        frame.len = 0;
        frame.l4 = None;
        if frame.small {
            self.global.outstanding.fetch_sub(1, Relaxed);
            // Cannot overflow: the queue holds every receive buffer ever allocated.
            let _ = self.global.small.push(frame);
            return;
        }
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

    /// The pool this cache draws from.
    pub fn global(&self) -> &Arc<FramePool> {
        &self.global
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

    /// A frame's parsed transport header goes with its bytes: copied with them, gone once
    /// they change or the buffer is given back.
    #[test]
    fn the_parsed_header_lives_as_long_as_its_bytes() {
        let mut local = LocalPool::new(FramePool::new(2, 128), 1);
        let mut a = local.get().unwrap();
        a.set_len(100);
        let l4 = IpL4 {
            l4_off: 34,
            payload_off: 54,
            proto: 6,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 1,
            dport: 2,
            flags: 0,
            later_fragment: false,
        };
        a.set_l4(Some(l4));
        let mut b = local.get().unwrap();
        b.copy_from(&a);
        assert_eq!(b.l4(), Some(&l4));
        b.set_len(60);
        assert_eq!(b.l4(), None, "new bytes");
        local.put(a);
        let again = local.get().unwrap();
        assert_eq!(again.l4(), None, "a buffer comes back without it");
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

    #[test]
    fn buffers_are_disjoint_slices_of_one_region() {
        let pool = FramePool::new(4, 100);
        let mut local = LocalPool::new(pool.clone(), 4);
        let mut frames: Vec<Frame> = std::iter::from_fn(|| local.get()).collect();
        frames.sort_by_key(|f| f.index());
        assert_eq!(frames.iter().map(|f| f.index()).collect::<Vec<_>>(), [0, 1, 2, 3]);
        for (i, f) in frames.iter_mut().enumerate() {
            assert!(f.is_from(&pool));
            f.buffer_mut().fill(i as u8);
            f.set_len(100);
        }
        for (i, f) in frames.iter().enumerate() {
            assert!(f.bytes().iter().all(|&b| b == i as u8), "buffer {i} was overwritten");
        }
        let other = FramePool::new(1, 100);
        assert!(!frames[0].is_from(&other));
    }

    #[test]
    fn pool_over_foreign_memory() {
        let mut mem = vec![0u8; 4 * 256].into_boxed_slice();
        let base = NonNull::new(mem.as_mut_ptr()).unwrap();
        let layout = BufferLayout { stride: 256, head: 16, capacity: 240 };
        let class = Class { offset: 0, count: 4, layout };
        // SAFETY: `mem` is moved into the pool as its owner and not touched otherwise; moving a
        // boxed slice does not move its heap bytes.
        let pool = unsafe { FramePool::over(base, 1024, Box::new(mem), class, None) }.unwrap();
        assert_eq!(pool.layout(), layout);
        let mut local = LocalPool::new(pool.clone(), 4);
        assert!(local.get_receive().is_none(), "no receive class");
        let mut f = local.get().unwrap();
        assert_eq!(f.buffer_mut().len(), 240);
        let off = f.buffer_mut().as_ptr() as usize - base.as_ptr() as usize;
        assert_eq!(off, f.index() * 256 + 16);
        local.put(f);
        let too_many = Class { layout: BufferLayout { stride: 512, ..layout }, ..class };
        let mut mem2 = vec![0u8; 1024].into_boxed_slice();
        let base2 = NonNull::new(mem2.as_mut_ptr()).unwrap();
        // SAFETY: as above.
        assert!(unsafe { FramePool::over(base2, 1024, Box::new(mem2), too_many, None) }.is_err());
    }

    #[test]
    fn small_receive_buffers_are_a_class_of_their_own() {
        let mut mem = vec![0u8; 4 * 256 + 8 * 64].into_boxed_slice();
        let base = NonNull::new(mem.as_mut_ptr()).unwrap();
        let big = Class { offset: 0, count: 4, layout: BufferLayout { stride: 256, head: 0, capacity: 256 } };
        let small =
            Class { offset: 1024, count: 8, layout: BufferLayout { stride: 64, head: 8, capacity: 56 } };
        // SAFETY: as in `pool_over_foreign_memory`.
        let pool = unsafe { FramePool::over(base, 1536, Box::new(mem), big, Some(small)) }.unwrap();
        assert_eq!((pool.total(), pool.receive_total()), (12, 8));
        let mut local = LocalPool::new(pool.clone(), 2);
        let mut r = local.get_receive().unwrap();
        assert!(r.is_small() && r.is_from(&pool));
        assert_eq!(r.buffer_mut().len(), 56);
        let off = r.buffer_mut().as_ptr() as usize - base.as_ptr() as usize;
        assert_eq!(off, 1024 + r.index() * 64 + 8);
        let b = local.get().unwrap();
        assert!(!b.is_small());
        assert_eq!(pool.outstanding(), 3, "one small + a refill of two big");
        // Each goes back to its own class.
        local.put(r);
        local.put(b);
        drop(local);
        assert_eq!((pool.outstanding(), pool.free_global()), (0, 12));
        let all: Vec<Frame> = {
            let mut l = LocalPool::new(pool.clone(), 1);
            std::iter::from_fn(|| l.get_receive()).collect()
        };
        assert_eq!(all.len(), 8);
        // Overlapping classes are refused.
        let mut mem2 = vec![0u8; 2048].into_boxed_slice();
        let base2 = NonNull::new(mem2.as_mut_ptr()).unwrap();
        let clash = Class { offset: 512, ..small };
        // SAFETY: as above.
        assert!(unsafe { FramePool::over(base2, 2048, Box::new(mem2), big, Some(clash)) }.is_err());
    }
}
