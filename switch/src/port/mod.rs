//! Ports: where frames enter and leave the switch.
//!
//! A port is anything that implements [`PortIo`]: the pod and host TAPs ([`tap`]), an
//! in-memory port for tests ([`mem`]), and the AF_XDP uplink ([`xdp`]). The datapath only sees the
//! trait, so every stage can be tested without root. Frames cross the trait as
//! `vnet header + Ethernet frame` (see [`crate::wire::vnet`]); a port without a vnet header of
//! its own adds and strips one.
//!
//! Workers move frames in bursts: [`PortIo::recv_burst`] fills a batch, and
//! [`PortIo::send_burst`] transmits the frames of one batch bound for one port, so a port
//! that locks something per call (the uplink's queue, the in-memory port's capture) does so
//! once per burst. The one-frame calls remain for the frame-at-a-time cases (a flooded frame
//! copied to each port) and as the building blocks of the default burst methods, which simply
//! loop (the TAP: one `read`/`write` per frame is what the kernel offers).

pub mod mem;
pub mod tap;
pub mod xdp;

use std::os::fd::RawFd;

use crate::pool::{Frame, LocalPool};

/// Why a port operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The device is gone (deleted, or its netns was destroyed).
    #[error("device is gone")]
    Gone,
    /// The port cannot take the frame now (its queue is full).
    #[error("port queue full")]
    Full,
    /// No free buffer in the frame pool to receive into.
    #[error("frame pool empty")]
    PoolEmpty,
    /// Any other error from the kernel.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frame I/O of one port. Implementations are non-blocking.
///
/// `worker` is the calling worker. A port is served by the worker that owns it, except a port
/// whose queues are spread over several workers (the AF_XDP uplink): each worker it
/// [`serves`](PortIo::serves) receives from and transmits on its own queues, given by `worker`.
/// Other ports ignore it.
pub trait PortIo: Send + Sync {
    /// Receives one frame (vnet header + Ethernet frame) into a buffer of `pool`. `Ok(None)`
    /// when nothing is waiting. A port that reads into the switch's buffers uses
    /// [`read_into_pool`]; the uplink hands out the buffer the kernel received into.
    fn recv_frame(&self, worker: usize, pool: &mut LocalPool) -> Result<Option<Frame>, PortError>;

    /// Writes one frame (vnet header + Ethernet frame); the caller keeps the buffer.
    fn send(&self, worker: usize, frame: &[u8]) -> Result<(), PortError>;

    /// Transmits `frame` and gives its buffer back to `pool`, now or, for a port that
    /// transmits straight from the buffer (the uplink when the pool is its UMEM), once the
    /// kernel is done with it.
    fn send_frame(&self, worker: usize, frame: Frame, pool: &mut LocalPool) -> Result<(), PortError> {
        let res = self.send(worker, frame.bytes());
        pool.put(frame);
        res
    }

    /// Receives up to `max - out.len()` frames onto `out` (the frames stay there when an error
    /// ends the burst). `Ok` with `out` not full: nothing more is waiting now.
    /// `Err(PoolEmpty)`: the pool ran dry and more may be waiting. The default loops over
    /// [`recv_frame`](PortIo::recv_frame).
    fn recv_burst(
        &self,
        worker: usize,
        pool: &mut LocalPool,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> Result<(), PortError> {
        while out.len() < max {
            match self.recv_frame(worker, pool)? {
                Some(f) => out.push(f),
                None => break,
            }
        }
        Ok(())
    }

    /// Transmits every frame of `frames` (leaving it empty), giving the buffers back to `pool`
    /// as [`send_frame`](PortIo::send_frame) does, and adds what became of them to `tally`.
    /// The default loops over `send_frame`.
    fn send_burst(&self, worker: usize, frames: &mut Vec<Frame>, pool: &mut LocalPool, tally: &mut TxTally) {
        for f in frames.drain(..) {
            let len = f.ethernet().len();
            let res = self.send_frame(worker, f, pool);
            tally.count(len, &res);
        }
    }

    /// A file descriptor that becomes readable when frames are waiting for `worker`, for its
    /// epoll set. `None` means the worker polls the port on every iteration.
    fn readiness_fd(&self, worker: usize) -> Option<RawFd>;

    /// Whether `worker` receives from and transmits on this port itself although it does not
    /// own it (it serves some of the port's queues). False by default.
    fn serves(&self, _worker: usize) -> bool {
        false
    }

    /// Called by a worker after a burst of `send`s, so a port that batches transmissions (the
    /// AF_XDP uplink kicks its tx ring) can push them out, and give the buffers it is done
    /// with back to `pool`. No-op by default.
    fn flush(&self, _worker: usize, _pool: &mut LocalPool) {}

    /// Gives `pool` the buffers the port holds that the kernel is done with (transmissions
    /// completed since the port last looked). Called by a worker whose pool ran dry: a
    /// zero-copy NIC completes asynchronously, and a port that nobody sends on any more would
    /// otherwise keep them. No-op by default.
    fn reclaim(&self, _pool: &mut LocalPool) {}

    /// Port-specific counters by name, added to `tapwayctl stats`. None by default.
    fn stats(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// What became of a burst of transmissions, for the egress port's counters: counted frame by
/// frame by the port, added to the counters once per burst by the worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxTally {
    /// Frames sent.
    pub frames: u64,
    /// Their Ethernet bytes.
    pub bytes: u64,
    /// Frames refused because the device is gone.
    pub gone: u64,
    /// Frames refused because the port's queue was full.
    pub full: u64,
    /// Frames the port could not send for another reason (the kernel refused, bad headers).
    pub failed: u64,
}

impl TxTally {
    /// Counts one transmission of an Ethernet frame of `len` bytes.
    #[inline]
    pub fn count(&mut self, len: usize, res: &Result<(), PortError>) {
        match res {
            Ok(()) => {
                self.frames += 1;
                self.bytes += len as u64;
            }
            Err(PortError::Gone) => self.gone += 1,
            Err(PortError::Full) => self.full += 1,
            Err(_) => self.failed += 1,
        }
    }
}

/// Takes a buffer from `pool` and lets `read` fill it (returning the bytes read, or `None` when
/// nothing is waiting): the receive side of ports that read into the switch's buffers.
pub fn read_into_pool(
    pool: &mut LocalPool,
    read: impl FnOnce(&mut [u8]) -> Result<Option<usize>, PortError>,
) -> Result<Option<Frame>, PortError> {
    let Some(mut frame) = pool.get() else { return Err(PortError::PoolEmpty) };
    match read(frame.buffer_mut()) {
        Ok(Some(len)) => {
            frame.set_len(len);
            Ok(Some(frame))
        }
        Ok(None) => {
            pool.put(frame);
            Ok(None)
        }
        Err(e) => {
            pool.put(frame);
            Err(e)
        }
    }
}
