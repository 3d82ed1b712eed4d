//! An in-memory port: frames injected by a test appear as received, frames the switch sends are
//! captured. It lets the whole datapath (workers, rings, FDB) run in unit tests without root.
//! Bursts take the capture's lock once per burst, as the uplink takes its queue's.

use std::sync::Mutex;

use crossbeam_queue::ArrayQueue;

use super::{read_into_pool, PortError, PortIo, TxTally};
use crate::pool::{Frame, LocalPool};

/// The in-memory port.
pub struct MemPort {
    rx: ArrayQueue<Vec<u8>>,
    tx: Mutex<Sent>,
}

/// What the switch sent to a [`MemPort`].
#[derive(Default)]
struct Sent {
    frames: Vec<Vec<u8>>,
    /// The size of each `send_burst`, 0 for each single `send`.
    calls: Vec<usize>,
}

impl MemPort {
    /// A port whose receive queue holds up to `depth` frames.
    pub fn new(depth: usize) -> MemPort {
        MemPort { rx: ArrayQueue::new(depth.max(1)), tx: Mutex::new(Sent::default()) }
    }

    /// Queues a frame (vnet header + Ethernet) as if it arrived on the port. False when full.
    pub fn inject(&self, frame: Vec<u8>) -> bool {
        self.rx.push(frame).is_ok()
    }

    /// Takes every frame the switch has sent so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent().frames)
    }

    /// Takes how the frames were sent so far: the size of each burst, 0 for each single frame
    /// (a flooded copy).
    pub fn take_calls(&self) -> Vec<usize> {
        std::mem::take(&mut self.sent().calls)
    }

    fn sent(&self) -> std::sync::MutexGuard<'_, Sent> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One injected frame into a buffer of `pool`.
    fn pop_into(&self, pool: &mut LocalPool) -> Result<Option<Frame>, PortError> {
        read_into_pool(pool, |buf| {
            let Some(f) = self.rx.pop() else { return Ok(None) };
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            Ok(Some(n))
        })
    }
}

impl PortIo for MemPort {
    fn recv_frame(&self, _worker: usize, pool: &mut LocalPool) -> Result<Option<Frame>, PortError> {
        if self.rx.is_empty() {
            return Ok(None);
        }
        self.pop_into(pool)
    }

    fn recv_burst(
        &self,
        _worker: usize,
        pool: &mut LocalPool,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> Result<(), PortError> {
        while out.len() < max && !self.rx.is_empty() {
            match self.pop_into(pool)? {
                Some(f) => out.push(f),
                None => break,
            }
        }
        Ok(())
    }

    fn send(&self, _worker: usize, frame: &[u8]) -> Result<(), PortError> {
        let mut sent = self.sent();
        sent.frames.push(frame.to_vec());
        sent.calls.push(0);
        Ok(())
    }

    fn send_burst(&self, _worker: usize, frames: &mut Vec<Frame>, pool: &mut LocalPool, tally: &mut TxTally) {
        let mut sent = self.sent();
        sent.calls.push(frames.len());
        for f in frames.drain(..) {
            sent.frames.push(f.bytes().to_vec());
            tally.count(f.ethernet().len(), &Ok(()));
            pool.put(f);
        }
    }

    fn readiness_fd(&self, _worker: usize) -> Option<std::os::fd::RawFd> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::FramePool;
    use crate::wire::VNET_HDR_LEN;

    fn frame(tag: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN + len];
        f[VNET_HDR_LEN] = tag;
        f
    }

    #[test]
    fn a_burst_takes_what_is_waiting_up_to_its_size_in_order() {
        let port = MemPort::new(16);
        let mut pool = LocalPool::new(FramePool::new(16, 2048), 4);
        for i in 0..5 {
            assert!(port.inject(frame(i, 60)));
        }
        let mut out = Vec::new();
        port.recv_burst(0, &mut pool, &mut out, 3).unwrap();
        assert_eq!(out.len(), 3, "full burst: more may be waiting");
        port.recv_burst(0, &mut pool, &mut out, 8).unwrap();
        assert_eq!(out.len(), 5, "the rest, appended; not full: drained");
        let tags: Vec<u8> = out.iter().map(|f| f.ethernet()[0]).collect();
        assert_eq!(tags, [0, 1, 2, 3, 4]);
        port.recv_burst(0, &mut pool, &mut out, 8).unwrap();
        assert_eq!(out.len(), 5, "nothing waiting");
        for f in out {
            pool.put(f);
        }
    }

    #[test]
    fn a_burst_stops_at_an_empty_pool_and_keeps_what_it_got() {
        let port = MemPort::new(16);
        let global = FramePool::new(2, 2048);
        let mut pool = LocalPool::new(global.clone(), 1);
        for i in 0..4 {
            assert!(port.inject(frame(i, 60)));
        }
        let mut out = Vec::new();
        assert!(matches!(port.recv_burst(0, &mut pool, &mut out, 8), Err(PortError::PoolEmpty)));
        assert_eq!(out.len(), 2);
        for f in out {
            pool.put(f);
        }
        drop(pool);
        assert_eq!(global.outstanding(), 0);
    }

    #[test]
    fn a_send_burst_captures_every_frame_tallies_it_and_returns_the_buffers() {
        let port = MemPort::new(4);
        let global = FramePool::new(8, 2048);
        let mut pool = LocalPool::new(global.clone(), 2);
        let mut frames = Vec::new();
        for (i, len) in [(7u8, 60usize), (8, 100), (9, 1500)] {
            let mut f = pool.get().unwrap();
            f.buffer_mut()[..VNET_HDR_LEN + len].copy_from_slice(&frame(i, len));
            f.set_len(VNET_HDR_LEN + len);
            frames.push(f);
        }
        let mut tally = TxTally::default();
        port.send_burst(0, &mut frames, &mut pool, &mut tally);
        assert!(frames.is_empty());
        assert_eq!(tally, TxTally { frames: 3, bytes: 1660, ..Default::default() });
        let sent = port.take_sent();
        assert_eq!(sent.iter().map(|f| f[VNET_HDR_LEN]).collect::<Vec<_>>(), [7, 8, 9]);
        assert_eq!(sent[2].len(), VNET_HDR_LEN + 1500);
        assert!(port.send(0, &frame(1, 60)).is_ok());
        assert_eq!(port.take_calls(), [3, 0], "one burst of three, one single frame");
        drop(pool);
        assert_eq!(global.outstanding(), 0);
    }

    #[test]
    fn the_tally_names_each_failure() {
        let mut t = TxTally::default();
        t.count(60, &Ok(()));
        t.count(60, &Err(PortError::Gone));
        t.count(60, &Err(PortError::Full));
        t.count(60, &Err(PortError::PoolEmpty));
        assert_eq!(t, TxTally { frames: 1, bytes: 60, gone: 1, full: 1, failed: 1 });
    }
}
