//! The uplink's transmit side: a frame goes on the tx ring in its own pool buffer when it can
//! (zero-copy), else it is copied, segmented (software TSO/USO) or split over several
//! transmit chunks (multi-buffer), its partial checksum completed; the ring is kicked once a
//! kick's worth of descriptors waits.

use std::sync::MutexGuard;

use super::queue::Queue;
use super::{lock, XdpPort, KICK_BATCH, L2_OVERHEAD};
use crate::pool::{Frame, LocalPool};
use crate::port::PortError;
use crate::wire::segment::{complete_csum, needs_segmentation, SegmentPlan};
use crate::wire::vnet::{VnetHdr, F_NEEDS_CSUM};
use crate::wire::{IpL4, VNET_HDR_LEN};

impl XdpPort {
    /// The queue `worker` transmits on: its first, or the owner's when it serves none. `Gone`
    /// once the port is closed.
    pub(super) fn tx_queue(&self, worker: usize) -> Result<MutexGuard<'_, Queue>, PortError> {
        let i = self.layout.tx_queue(worker);
        self.queues.get(i).or_else(|| self.queues.first()).map(lock).ok_or(PortError::Gone)
    }

    /// Writes one frame (vnet header + Ethernet) into free transmit chunks, segmenting or
    /// completing its checksum as needed; the descriptors wait in `pending_tx`.
    /// `l4` is the transport header the parse stage kept with the frame ([`Frame::l4`]); a
    /// super-frame without one is parsed here.
    pub(super) fn stage_tx(&self, q: &mut Queue, frame: &[u8], l4: Option<&IpL4>) -> Result<(), PortError> {
        let bad = || PortError::Io(std::io::Error::from(std::io::ErrorKind::InvalidData));
        let hdr = VnetHdr::parse(frame).map_err(|_| bad())?;
        let eth = &frame[VNET_HDR_LEN..];
        let mtu = self.mtu as usize;
        if needs_segmentation(&hdr) {
            let planned = match l4 {
                Some(l4) => SegmentPlan::with_l4(&hdr, eth, Some(l4), mtu),
                None => SegmentPlan::new(&hdr, eth, mtu),
            };
            let plan = match planned {
                Ok(p) => p.pack_to_mtu(mtu),
                Err(_) => {
                    q.counters.tx_bad_gso.inc();
                    return Err(bad());
                }
            };
            let n = plan.count();
            let chunks_each = plan.segment_len(0).div_ceil(self.shared.room.max(1));
            if q.free.len() < n * chunks_each {
                q.counters.tx_full.inc();
                return Err(PortError::Full);
            }
            for i in 0..n {
                let len = plan.segment_len(i);
                let res = if len > self.shared.room {
                    // A jumbo segment: cut into the scratch buffer, then over several chunks.
                    let mut big = std::mem::take(&mut q.big);
                    let ok = big.get_mut(..len).is_some_and(|b| plan.write(eth, i, b).is_ok())
                        && q.stage_split(&self.shared, &big[..len]);
                    q.big = big;
                    ok
                } else {
                    let Some(mut desc) = q.free.pop() else { return Err(PortError::Full) };
                    let ok =
                        q.write_with(&self.shared, &mut desc, len, |buf| plan.write(eth, i, buf).is_ok());
                    q.pending_tx.push(desc);
                    ok
                };
                if !res {
                    q.counters.tx_bad_gso.inc();
                    return Err(bad());
                }
            }
            q.counters.tx_gso_frames.inc();
            q.counters.tx_segments.add(n as u64);
            return Ok(());
        }
        if eth.len() > mtu + L2_OVERHEAD || (eth.len() > self.shared.room && !self.shared.multi_buffer) {
            q.counters.tx_too_big.inc();
            return Err(bad());
        }
        let csum = hdr.flags & F_NEEDS_CSUM != 0;
        if eth.len() > self.shared.room {
            // A jumbo frame: put together (checksum completed) in the scratch buffer, then
            // written over several chunks.
            let mut big = std::mem::take(&mut q.big);
            let len = eth.len();
            let ok = big.get_mut(..len).is_some_and(|b| {
                b.copy_from_slice(eth);
                !csum || complete_csum(b, hdr.csum_start, hdr.csum_offset).is_ok()
            });
            let staged = ok && q.stage_split(&self.shared, &big[..len]);
            q.big = big;
            if !ok {
                return Err(bad());
            }
            if !staged {
                q.counters.tx_full.inc();
                return Err(PortError::Full);
            }
            q.counters.tx_multi_buffer.inc();
            return Ok(());
        }
        let Some(mut desc) = q.free.pop() else {
            q.counters.tx_full.inc();
            return Err(PortError::Full);
        };
        let ok = q.write_with(&self.shared, &mut desc, eth.len(), |buf| {
            buf.copy_from_slice(eth);
            !csum || complete_csum(buf, hdr.csum_start, hdr.csum_offset).is_ok()
        });
        q.pending_tx.push(desc);
        if !ok {
            return Err(bad());
        }
        if csum {
            q.counters.tx_csum_completed.inc();
        }
        Ok(())
    }

    /// Copies `frame` into transmit chunks and puts them on the tx ring (`l4` as for
    /// [`XdpPort::stage_tx`]).
    pub(super) fn send_copy(&self, q: &mut Queue, frame: &[u8], l4: Option<&IpL4>) -> Result<(), PortError> {
        if let Err(e) = self.stage_tx(q, frame, l4) {
            let mut pending = std::mem::take(&mut q.pending_tx);
            q.free.append(&mut pending);
            return Err(e);
        }
        if !q.produce_tx() {
            // The ring is full: let the kernel drain it, reap, and try once more.
            self.kick_now(q);
            if self.stage_tx(q, frame, l4).is_err() || !q.produce_tx() {
                let mut pending = std::mem::take(&mut q.pending_tx);
                q.free.append(&mut pending);
                q.counters.tx_full.inc();
                return Err(PortError::Full);
            }
        }
        self.kick_maybe(q);
        Ok(())
    }

    /// Puts the pool buffer `frame` itself on the tx ring (no copy), when it can go as it is:
    /// a frame of this UMEM's pool, not a super-frame, fitting one UMEM frame. Gives the frame
    /// back otherwise.
    pub(super) fn send_in_place(
        &self,
        q: &mut Queue,
        mut frame: Frame,
    ) -> Result<Result<(), PortError>, Frame> {
        let Ok(hdr) = VnetHdr::parse(frame.bytes()) else { return Err(frame) };
        let len = frame.ethernet().len();
        if !frame.is_from(&self.pool)
            || needs_segmentation(&hdr)
            || len == 0
            || len > self.mtu as usize + L2_OVERHEAD
            || len > self.shared.room
        {
            return Err(frame);
        }
        let idx = self.shared.slot_of(&frame);
        let Some(mut desc) = self.shared.slot_desc.get(idx).copied() else { return Err(frame) };
        // (A frame larger than one UMEM frame went to the copy path above: the descriptors
        // xsk-rs hands out all point 256 bytes into a UMEM frame, so the rest of a pool buffer
        // cannot be described as a continuation.)
        if hdr.flags & F_NEEDS_CSUM != 0 {
            let eth = &mut frame.bytes_mut()[VNET_HDR_LEN..];
            if complete_csum(eth, hdr.csum_start, hdr.csum_offset).is_err() {
                q.released.push(frame);
                return Ok(Err(PortError::Io(std::io::Error::from(std::io::ErrorKind::InvalidData))));
            }
            q.counters.tx_csum_completed.inc();
        }
        // Only the descriptor's length is set: the bytes are already in place.
        // SAFETY: `desc` is this pool buffer's first UMEM frame, owned by `frame`, which is
        // not borrowed now.
        unsafe { self.shared.umem.data_mut(&mut desc) }.cursor().set_pos(len);
        let mut produced = q.produce_one(&desc);
        if !produced {
            self.kick_now(q);
            produced = q.produce_one(&desc);
        }
        if !produced {
            q.counters.tx_full.inc();
            q.released.push(frame);
            return Ok(Err(PortError::Full));
        }
        if let Some(slot) = q.lent.get_mut(idx) {
            *slot = Some(frame);
        }
        q.tx_lent += 1;
        q.counters.tx_zero_copy.inc();
        self.kick_maybe(q);
        Ok(Ok(()))
    }

    /// Kicks the tx ring now (it is full) and reaps what completed.
    pub(super) fn kick_now(&self, q: &mut Queue) {
        self.kick(q);
        q.unkicked = 0;
        q.reap(&self.shared);
    }

    /// Counts one more descriptor on the tx ring and kicks once a kick's worth is waiting.
    pub(super) fn kick_maybe(&self, q: &mut Queue) {
        q.unkicked += 1;
        if q.unkicked >= KICK_BATCH {
            self.kick(q);
            q.unkicked = 0;
        }
    }

    pub(super) fn kick(&self, q: &Queue) {
        q.counters.tx_kicks.inc();
        if let Err(e) = q.tx.wakeup() {
            tracing::debug!(uplink = self.ifname, error = %e, "tx kick failed");
        }
    }

    /// Transmits one frame on `q`: from its own buffer when it can go as it is, else copied
    /// (and segmented) into transmit chunks.
    pub(super) fn send_one(
        &self,
        q: &mut Queue,
        frame: Frame,
        pool: &mut LocalPool,
    ) -> Result<(), PortError> {
        match self.send_in_place(q, frame) {
            Ok(res) => res,
            Err(frame) => {
                let res = self.send_copy(q, frame.bytes(), frame.l4());
                pool.put(frame);
                res
            }
        }
    }
}
