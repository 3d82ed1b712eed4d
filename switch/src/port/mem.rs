//! An in-memory port: frames injected by a test appear as received, frames the switch sends are
//! captured. It lets the whole datapath (workers, rings, FDB) run in unit tests without root.

use std::sync::Mutex;

use crossbeam_queue::ArrayQueue;

use super::{read_into_pool, PortError, PortIo};
use crate::pool::{Frame, LocalPool};

/// The in-memory port.
pub struct MemPort {
    rx: ArrayQueue<Vec<u8>>,
    tx: Mutex<Vec<Vec<u8>>>,
}

impl MemPort {
    /// A port whose receive queue holds up to `depth` frames.
    pub fn new(depth: usize) -> MemPort {
        MemPort { rx: ArrayQueue::new(depth.max(1)), tx: Mutex::new(Vec::new()) }
    }

    /// Queues a frame (vnet header + Ethernet) as if it arrived on the port. False when full.
    pub fn inject(&self, frame: Vec<u8>) -> bool {
        self.rx.push(frame).is_ok()
    }

    /// Takes every frame the switch has sent so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        match self.tx.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

impl PortIo for MemPort {
    fn recv_frame(&self, _worker: usize, pool: &mut LocalPool) -> Result<Option<Frame>, PortError> {
        if self.rx.is_empty() {
            return Ok(None);
        }
        read_into_pool(pool, |buf| {
            let Some(f) = self.rx.pop() else { return Ok(None) };
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            Ok(Some(n))
        })
    }

    fn send(&self, _worker: usize, frame: &[u8]) -> Result<(), PortError> {
        match self.tx.lock() {
            Ok(mut g) => g.push(frame.to_vec()),
            Err(p) => p.into_inner().push(frame.to_vec()),
        }
        Ok(())
    }

    fn readiness_fd(&self, _worker: usize) -> Option<std::os::fd::RawFd> {
        None
    }
}
