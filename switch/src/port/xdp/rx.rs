//! The uplink's receive side: a worker's queues polled in turn, each locked once per burst, and
//! the frames of a burst handed out in the buffers the kernel wrote them into, with the TCP
//! segments of one flow coalesced (software GRO).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, MutexGuard};

use super::queue::Queue;
use super::{lock, XdpPort};
use crate::pool::{Frame, LocalPool};
use crate::port::PortError;
use crate::wire::gro::Merge;
use crate::wire::vnet::VnetHdr;
use crate::wire::VNET_HDR_LEN;

impl XdpPort {
    /// Hands up to `max` received frames of `worker`'s queues to `push`. Finishes the burst
    /// in hand, then takes new bursts from the worker's next queues that have one (the one in
    /// hand last), so a busy queue does not starve the others; each queue is locked once per
    /// call.
    pub(super) fn receive(
        &self,
        worker: usize,
        pool: &mut LocalPool,
        max: usize,
        mut push: impl FnMut(Frame),
    ) -> Result<(), PortError> {
        if !Arc::ptr_eq(pool.global(), &self.pool) {
            return Err(PortError::Io(std::io::Error::other(
                "the switch does not use the uplink's frame pool",
            )));
        }
        let (Some(qs), Some(draining)) = (self.layout.serve.get(worker), self.draining.get(worker)) else {
            return Ok(());
        };
        let n = qs.len();
        if n == 0 || max == 0 {
            return Ok(());
        }
        let start = draining.load(Relaxed) % n;
        let mut got = 0;
        // With one queue, the queue in hand is also the next one: its guard is kept.
        let mut kept: Option<MutexGuard<'_, Queue>> = None;
        for k in 0..=n {
            let i = (start + k) % n;
            let mut q = match kept.take() {
                Some(q) => q,
                None => match qs.get(i).and_then(|&qi| self.queues.get(qi)) {
                    Some(q) => lock(q),
                    None => continue,
                },
            };
            q.give_back(pool);
            if k > 0 {
                q.refill(&self.shared, pool);
                if !q.pull(&self.shared, pool) {
                    continue;
                }
                draining.store(i, Relaxed);
            }
            while got < max {
                let Some(f) = self.next_received(&mut q, pool) else { break };
                push(f);
                got += 1;
            }
            if got >= max {
                return Ok(());
            }
            if n == 1 {
                kept = Some(q);
            }
        }
        Ok(())
    }

    /// The next frame of the burst `q` holds, with the following segments of its flow in the
    /// burst coalesced into its buffer (theirs go back to `pool`). None once the burst is done.
    pub(super) fn next_received(&self, q: &mut Queue, pool: &mut LocalPool) -> Option<Frame> {
        let mut frame = q.held.pop_front()?;
        let vnet = match Merge::start(frame.ethernet()) {
            Some(mut m) => {
                if frame.is_small() && !q.held.is_empty() {
                    // A train may follow: move the first segment into a datapath buffer,
                    // which has room for a whole super-frame (one copy of at most a UMEM
                    // frame; the merge state holds offsets, not addresses).
                    if let Some(mut big) = pool.get() {
                        let n = frame.bytes().len();
                        big.buffer_mut()[..n].copy_from_slice(frame.bytes());
                        big.set_len(n);
                        pool.put(std::mem::replace(&mut frame, big));
                    }
                }
                let buf = &mut frame.buffer_mut()[VNET_HDR_LEN..];
                while let Some(next) = q.held.front() {
                    if !m.append(buf, next.ethernet()) {
                        break;
                    }
                    if let Some(next) = q.held.pop_front() {
                        pool.put(next);
                    }
                }
                if m.count() > 1 {
                    q.counters.rx_gro_frames.inc();
                    q.counters.rx_gro_segments.add(m.count() as u64);
                }
                let vnet = m.finish(buf, self.shared.pod_mtu);
                frame.set_len(VNET_HDR_LEN + m.frame_len());
                vnet
            }
            // Its length is already vnet header + frame.
            None => VnetHdr::default(),
        };
        vnet.emit(&mut frame.buffer_mut()[..VNET_HDR_LEN]);
        q.counters.rx_zero_copy.inc();
        Some(frame)
    }
}
