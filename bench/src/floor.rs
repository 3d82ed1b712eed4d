//! The `floor` topology's forwarder: the design's physical limit on this machine.
//!
//! Two pod namespaces each get a TAP set up exactly as tapwayd sets up a pod port, with
//! tapway-switch's own code: [`TapPort::open`] (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, the
//! 12-byte little-endian vnet header, the same `TUNSETOFFLOAD` flags), then tapwayd's netlink
//! calls for MAC, MTU, transmit queue ([`POD_TXQLEN`]), EUI-64 link-local, up and address.
//! One thread, pinned like tapwayd's worker, moves every frame from one TAP to the other and
//! back through the same [`PortIo`] calls and frame pool tapwayd's worker uses, in bursts of
//! [`BATCH`], with no parsing, learning, anti-spoofing or lookup. What tapway costs beyond
//! this is the switch; what this costs is the TAP I/O every TAP switch pays.
//!
//! The poll modes mirror tapwayd's: `busy` never sleeps; `adaptive` spins for tapwayd's
//! [`SPIN_TIME`] after the last frame, then sleeps in `poll(2)` on both fds (at most
//! [`IDLE_SLEEP`]). The only difference in setup: the TAPs are not persistent, so they go
//! with the thread (a tapwayd restart is no concern here).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tapway_switch::control::pods::{random_mac, POD_TXQLEN};
use tapway_switch::datapath::worker::{IDLE_SLEEP, SPIN_TIME};
use tapway_switch::netlink::{LinkChanges, Netlink};
use tapway_switch::pool::{FramePool, LocalPool, FRAME_CAPACITY};
use tapway_switch::port::tap::TapPort;
use tapway_switch::port::{PortError, PortIo};
use thiserror::Error;

use crate::netns::{self, NetnsError};

/// Frames per direction per iteration: tapwayd's default rx burst (`SwitchConfig::batch`).
pub const BATCH: usize = 32;
/// The pods' MTU: tapwayd's default (`--mtu`).
pub const MTU: u32 = 1500;

/// Why the floor could not be set up.
#[derive(Debug, Error)]
pub enum FloorError {
    /// Entering a pod namespace.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Creating the TAP.
    #[error("floor TAP: {0}")]
    Tap(#[from] tapway_switch::port::tap::TapError),
    /// Configuring it.
    #[error("floor TAP: {0}")]
    Netlink(#[from] tapway_switch::netlink::NlError),
    /// The TAP vanished between creation and configuration.
    #[error("floor TAP {0} vanished after creation")]
    Vanished(String),
    /// The address does not make a prefix.
    #[error("floor address {0}/{1} is not a prefix")]
    Prefix(Ipv4Addr, u8),
    /// The forwarding thread could not be started.
    #[error("starting the floor thread: {0}")]
    Thread(std::io::Error),
}

/// How the forwarder waits when there is nothing to move (tapwayd's `--poll-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Never sleep.
    Busy,
    /// Spin [`SPIN_TIME`] after the last frame, then sleep in poll(2).
    Adaptive,
}

impl Poll {
    /// From tapwayd's flag value (`busy`, `adaptive`).
    pub fn parse(mode: &str) -> Option<Poll> {
        match mode {
            "busy" => Some(Poll::Busy),
            "adaptive" => Some(Poll::Adaptive),
            _ => None,
        }
    }
}

/// Creates pod port `ifname` in netns `ns` as tapwayd's attach does (TAP, then MAC, MTU,
/// txqueuelen, EUI-64 link-local, up, `addr/prefix`).
pub fn pod_tap(ns: &str, ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<TapPort, FloorError> {
    let ifname = ifname.to_string();
    netns::in_netns(Some(ns), move || -> Result<TapPort, FloorError> {
        let net = ipnet::IpNet::new(addr.into(), prefix).map_err(|_| FloorError::Prefix(addr, prefix))?;
        let tap = TapPort::open(&ifname, false, true)?;
        let mut nl = Netlink::new()?;
        let link = nl.link_by_name(tap.name())?.ok_or_else(|| FloorError::Vanished(ifname.clone()))?;
        let changes = LinkChanges {
            mac: Some(random_mac()),
            mtu: Some(MTU),
            txqlen: Some(POD_TXQLEN),
            ..Default::default()
        };
        nl.set_link(link.index, &changes)?;
        nl.set_addr_gen_eui64(link.index)?;
        nl.set_link(link.index, &LinkChanges { up: Some(true), ..Default::default() })?;
        nl.add_addr(link.index, net)?;
        Ok(tap)
    })
}

/// What the forwarder counted.
#[derive(Debug, Default)]
pub struct FloorCounters {
    /// Frames moved from pod a to pod b.
    pub a_to_b: AtomicU64,
    /// Frames moved from pod b to pod a.
    pub b_to_a: AtomicU64,
    /// Frames a TAP write refused (queue full or error).
    pub tx_dropped: AtomicU64,
    /// Receive errors other than "nothing waiting".
    pub rx_errors: AtomicU64,
}

/// The shared side of a running forwarder: pause, resume, its thread id and counters.
#[derive(Debug)]
pub struct FloorCtl {
    stop: AtomicBool,
    paused: AtomicBool,
    tid: AtomicI32,
    /// Counters.
    pub counters: FloorCounters,
}

impl FloorCtl {
    /// Stops moving frames (a busy forwarder stops spinning) until [`FloorCtl::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }

    /// Moves frames again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Relaxed);
    }

    /// The forwarding thread's `/proc/self/task/TID/stat`, for its CPU time (0 until it runs).
    pub fn stat_path(&self) -> String {
        format!("/proc/self/task/{}/stat", self.tid.load(Ordering::Relaxed))
    }
}

/// A running forwarder; stopped (and its TAPs closed, which deletes them) by [`Floor::stop`].
pub struct Floor {
    /// Pause, resume, counters.
    pub ctl: Arc<FloorCtl>,
    thread: Option<JoinHandle<()>>,
}

impl Floor {
    /// Starts the thread moving frames between `a` and `b`, pinned to `core` when given.
    pub fn start(a: TapPort, b: TapPort, core: Option<usize>, poll: Poll) -> Result<Floor, FloorError> {
        let ctl = Arc::new(FloorCtl {
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            tid: AtomicI32::new(0),
            counters: FloorCounters::default(),
        });
        let c2 = ctl.clone();
        let thread = std::thread::Builder::new()
            .name("floor".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                c2.tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
                if let Some(core) = core {
                    let mut set = nix::sched::CpuSet::new();
                    if set.set(core).is_ok() {
                        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                    }
                }
                forward(&a, &b, poll, &c2);
            })
            .map_err(FloorError::Thread)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while ctl.tid.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Floor { ctl, thread: Some(thread) })
    }

    /// Stops the thread and waits for it; its TAPs close with it.
    pub fn stop(mut self) {
        self.ctl.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.ctl.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves up to [`BATCH`] frames from `rx` to `tx`; how many were read.
fn burst(rx: &TapPort, tx: &TapPort, pool: &mut LocalPool, moved: &AtomicU64, c: &FloorCounters) -> usize {
    let mut n = 0;
    while n < BATCH {
        match rx.recv_frame(0, pool) {
            Ok(Some(f)) => {
                n += 1;
                match tx.send_frame(0, f, pool) {
                    Ok(()) => moved.fetch_add(1, Ordering::Relaxed),
                    Err(_) => c.tx_dropped.fetch_add(1, Ordering::Relaxed),
                };
            }
            Ok(None) => break,
            Err(PortError::PoolEmpty) => break,
            Err(_) => {
                c.rx_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    n
}

/// Both fds readable or `timeout` passed (poll(2), level-triggered: nothing is lost).
fn wait_readable(a: &TapPort, b: &TapPort, timeout: Duration) {
    let fd = |t: &TapPort| t.readiness_fd(0).unwrap_or(-1);
    let mut fds = [
        libc::pollfd { fd: fd(a), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: fd(b), events: libc::POLLIN, revents: 0 },
    ];
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX).max(1);
    // SAFETY: `fds` is a live array of two pollfds and its length is passed with it; the fds
    // belong to the TAPs borrowed for the duration of the call.
    let _ = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
}

fn forward(a: &TapPort, b: &TapPort, poll: Poll, ctl: &FloorCtl) {
    let mut pool = LocalPool::new(FramePool::new(4 * BATCH, FRAME_CAPACITY), BATCH);
    let c = &ctl.counters;
    let mut last_work = Instant::now();
    while !ctl.stop.load(Ordering::Relaxed) {
        if ctl.paused.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let n = burst(a, b, &mut pool, &c.a_to_b, c) + burst(b, a, &mut pool, &c.b_to_a, c);
        if n > 0 {
            last_work = Instant::now();
        } else if poll == Poll::Adaptive && last_work.elapsed() >= SPIN_TIME {
            // Woken by a frame or at least every IDLE_SLEEP, to see `stop` and `paused`.
            wait_readable(a, b, IDLE_SLEEP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_modes_are_tapwayds_flag_values() {
        assert_eq!(Poll::parse("busy"), Some(Poll::Busy));
        assert_eq!(Poll::parse("adaptive"), Some(Poll::Adaptive));
        assert_eq!(Poll::parse("spin"), None);
    }
}
