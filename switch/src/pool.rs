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
//! shared-memory traffic in the common case. A buffer handed to another worker through a ring
//! is returned by that worker; a buffer lent to the kernel (uplink fill or transmit ring) is
//! kept by the port until the kernel gives it back.

use std::alloc::Layout;
use std::any::Any;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::wire::VNET_HDR_LEN;

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

/// One frame buffer: `bytes()` is the vnet header followed by the Ethernet frame.
///
/// Each buffer of the region has exactly one `Frame`, created with the pool; moving the
/// `Frame` moves the right to touch those bytes.
pub struct Frame {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
    index: u32,
    region: Arc<Region>,
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
    }

    /// Which buffer of its pool this is (`0..total`).
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// Whether this buffer belongs to `pool`.
    pub fn is_from(&self, pool: &FramePool) -> bool {
        Arc::ptr_eq(&self.region, &pool.region)
    }
}

/// The global pool.
pub struct FramePool {
    free: ArrayQueue<Frame>,
    total: usize,
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
        let layout = BufferLayout { stride, head: 0, capacity };
        // Cannot fail: the layout was built to fit.
        match FramePool::build(region, count, layout) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// Lays `count` buffers out over memory mapped by someone else (the uplink's UMEM), which
    /// `owner` keeps mapped.
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
        count: usize,
        layout: BufferLayout,
    ) -> Result<Arc<FramePool>, LayoutError> {
        FramePool::build(Region { base, len, owner: Owner::Shared(owner) }, count, layout)
    }

    fn build(region: Region, count: usize, layout: BufferLayout) -> Result<Arc<FramePool>, LayoutError> {
        let needed = count.checked_mul(layout.stride);
        if count == 0 || count > u32::MAX as usize || layout.head + layout.capacity > layout.stride {
            return Err(LayoutError(format!("{count} buffers of {layout:?}")));
        }
        if needed.is_none_or(|n| n > region.len) {
            return Err(LayoutError(format!(
                "{count} buffers of {} bytes exceed {} bytes",
                layout.stride, region.len
            )));
        }
        let region = Arc::new(region);
        let free = ArrayQueue::new(count);
        for i in 0..count {
            // SAFETY: `i * stride + head + capacity <= count * stride <= len` (checked above).
            let ptr =
                unsafe { NonNull::new_unchecked(region.base.as_ptr().add(i * layout.stride + layout.head)) };
            let frame =
                Frame { ptr, capacity: layout.capacity, len: 0, index: i as u32, region: region.clone() };
            // Cannot fail: the queue was sized for exactly `count` frames.
            let _ = free.push(frame);
        }
        Ok(Arc::new(FramePool { free, total: count, outstanding: AtomicUsize::new(0), layout, region }))
    }

    /// Number of buffers in the pool.
    pub fn total(&self) -> usize {
        self.total
    }

    /// How the buffers are laid out in the region.
    pub fn layout(&self) -> BufferLayout {
        self.layout
    }

    /// Buffers in the global queue right now (worker caches not included).
    pub fn free_global(&self) -> usize {
        self.free.len()
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
        // SAFETY: `mem` is moved into the pool as its owner and not touched otherwise; moving a
        // boxed slice does not move its heap bytes.
        let pool = unsafe { FramePool::over(base, 1024, Box::new(mem), 4, layout) }.unwrap();
        assert_eq!(pool.layout(), layout);
        let mut local = LocalPool::new(pool.clone(), 4);
        let mut f = local.get().unwrap();
        assert_eq!(f.buffer_mut().len(), 240);
        let off = f.buffer_mut().as_ptr() as usize - base.as_ptr() as usize;
        assert_eq!(off, f.index() * 256 + 16);
        local.put(f);
        let too_many = BufferLayout { stride: 512, ..layout };
        let mut mem2 = vec![0u8; 1024].into_boxed_slice();
        let base2 = NonNull::new(mem2.as_mut_ptr()).unwrap();
        // SAFETY: as above.
        assert!(unsafe { FramePool::over(base2, 1024, Box::new(mem2), 4, too_many) }.is_err());
    }
}
