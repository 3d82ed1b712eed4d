//! Ports: where frames enter and leave the switch.
//!
//! A port is anything that implements [`PortIo`]: the pod and host TAPs ([`tap`]), an
//! in-memory port for tests ([`mem`]), and the AF_XDP uplink ([`xdp`]). The datapath only sees the
//! trait, so every stage can be tested without root. Frames cross the trait as
//! `vnet header + Ethernet frame` (see [`crate::wire::vnet`]); a port without a vnet header of
//! its own adds and strips one.

pub mod mem;
pub mod tap;
pub mod xdp;

use std::os::fd::RawFd;

/// Why a port operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The device is gone (deleted, or its netns was destroyed).
    #[error("device is gone")]
    Gone,
    /// The port cannot take the frame now (its queue is full).
    #[error("port queue full")]
    Full,
    /// Any other error from the kernel.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frame I/O of one port. Implementations are non-blocking.
pub trait PortIo: Send + Sync {
    /// Reads one frame (vnet header + Ethernet frame) into `buf`. `Ok(None)` when nothing is
    /// waiting.
    fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, PortError>;

    /// Writes one frame (vnet header + Ethernet frame).
    fn send(&self, frame: &[u8]) -> Result<(), PortError>;

    /// A file descriptor that becomes readable when frames are waiting, for the worker's
    /// epoll set. `None` means the worker polls the port on every iteration.
    fn readiness_fd(&self) -> Option<RawFd>;

    /// Called by the owning worker after a burst of `send`s, so a port that batches
    /// transmissions (the AF_XDP uplink kicks its tx ring) can push them out. No-op by default.
    fn flush(&self) {}

    /// Port-specific counters by name, added to `tapwayctl stats`. None by default.
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
