//! A worker thread: owns the receive side of a set of ports, runs their frames through the
//! [`Pipeline`](super::Pipeline) and transmits them.
//!
//! The loop, once per iteration:
//! 1. pick up a new port table if the control plane published one (re-register fds);
//! 2. transmit frames other workers handed over through this worker's ring;
//! 3. read a burst from every port that is readable (epoll said so, or the last burst was
//!    full), process it, deliver it;
//! 4. ask epoll what became readable: without waiting while there is work or while spinning,
//!    and (adaptive mode) sleeping up to [`IDLE_SLEEP`] once idle for [`SPIN_TIME`].
//!
//! Ports are registered edge-triggered; a port stays on the pending list until a read
//! returns nothing, so no readiness is lost.
//!
//! Frames move in bursts: [`PortIo::recv_burst`](crate::port::PortIo::recv_burst) fills the
//! batch, and the frames of a batch (or of the hand-off ring) bound for ports this worker
//! transmits on are grouped by egress port and sent with one
//! [`send_burst`](crate::port::PortIo::send_burst) per port, so a port's per-call costs (the
//! uplink's queue lock) are paid per burst. A flooded frame first sends the groups queued
//! before it, so frames to one port keep their order. The port table is held in a local once
//! per burst and borrowed by every frame: no reference count changes per frame. Counters are
//! the worker's own slots ([`crate::stats`]).
//!
//! For `/metrics` and `/healthz`, the worker stores the second an iteration starts in as its
//! heartbeat (once a second), and an iteration that had work adds its duration to the
//! worker's busy time: one clock read per iteration, nothing per frame.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::pipeline::Scratch;
use super::service::Services;
use super::{Disposition, Pipeline, PollMode};
use crate::pool::{Frame, LocalPool};
use crate::port::{PortError, TxTally};
use crate::stats::{DropReason, PortCount};
use crate::switch::{Handoff, Switch};
use crate::table::{PortEntry, PortTable};

/// Token of the waker (ring hand-off and table changes).
pub const WAKE_TOKEN: Token = Token(usize::MAX);

/// How long an adaptive worker keeps spinning after its last frame.
pub const SPIN_TIME: Duration = Duration::from_micros(200);

/// Longest sleep of an idle adaptive worker.
pub const IDLE_SLEEP: Duration = Duration::from_millis(250);

/// One worker's state.
pub struct Worker {
    id: usize,
    sw: Arc<Switch>,
    poll: Poll,
    events: Events,
    local: LocalPool,
    table: Arc<PortTable>,
    generation: u64,
    registered: HashMap<u16, RawFd>,
    /// Owned ports without a readiness fd: read on every iteration.
    always: Vec<u16>,
    pending: Vec<u16>,
    next_pending: Vec<u16>,
    rx: Vec<Frame>,
    disp: Vec<Disposition>,
    scratch: Scratch,
    /// Frames waiting to be sent as bursts, by egress port.
    out: TxGroups,
    /// Ports transmitted on since the last flush.
    dirty: Vec<u16>,
    /// An rx burst found the frame pool empty in this iteration.
    starved: bool,
}

impl Worker {
    /// A worker with its own poller.
    pub fn new(id: usize, sw: Arc<Switch>, poll: Poll) -> Worker {
        let batch = sw.config.batch.max(1);
        Worker {
            id,
            local: LocalPool::new(sw.pool.clone(), batch),
            table: Arc::new(PortTable::default()),
            generation: u64::MAX,
            registered: HashMap::new(),
            always: Vec::new(),
            pending: Vec::new(),
            next_pending: Vec::new(),
            rx: Vec::with_capacity(batch),
            disp: Vec::with_capacity(batch),
            scratch: Scratch::default(),
            out: TxGroups::default(),
            dirty: Vec::new(),
            starved: false,
            events: Events::with_capacity(256),
            poll,
            sw,
        }
    }

    /// Runs until the switch stops.
    pub fn run(mut self) {
        let mut last_work = Instant::now();
        // When this iteration started: the busy time of an iteration with work is counted
        // from here, with one clock read per iteration (none per frame).
        let mut woke = last_work;
        let mut beat = u32::MAX;
        while !self.sw.stopping() {
            if self.sw.generation() != self.generation {
                self.reload();
            }
            let now = self.sw.now();
            if now != beat {
                beat = now;
                self.sw.lanes[self.id].heartbeat.store(now, Ordering::Relaxed);
            }
            let mut work = self.drain_inbox();
            let mut pending = std::mem::take(&mut self.pending);
            let always = std::mem::take(&mut self.always);
            for &port in pending.iter().chain(always.iter()) {
                let (n, more) = self.rx_port(port, now);
                work += n;
                if more && !self.next_pending.contains(&port) {
                    self.next_pending.push(port);
                }
            }
            self.always = always;
            pending.clear();
            self.pending = std::mem::replace(&mut self.next_pending, pending);
            self.flush();

            if work > 0 {
                last_work = Instant::now();
                let busy = last_work.saturating_duration_since(woke).as_nanos();
                self.sw.lanes[self.id].busy_ns.add(u64::try_from(busy).unwrap_or(u64::MAX));
            }
            let timeout = self.timeout(work, last_work);
            self.wait(timeout);
            woke = Instant::now();
        }
    }

    fn timeout(&self, work: usize, last_work: Instant) -> Duration {
        let lane = &self.sw.lanes[self.id];
        if work > 0 || !self.pending.is_empty() || self.sw.config.poll_mode == PollMode::Busy {
            return Duration::ZERO;
        }
        if last_work.elapsed() < SPIN_TIME {
            return Duration::ZERO;
        }
        if !self.always.is_empty() {
            return Duration::from_millis(1);
        }
        // Announce the sleep, then look once more: a sender that pushed before seeing the
        // flag is caught by this check, one that pushes after it will wake us.
        lane.sleeping.store(true, Ordering::SeqCst);
        if !lane.inbox.is_empty() || self.sw.generation() != self.generation || self.sw.stopping() {
            return Duration::ZERO;
        }
        IDLE_SLEEP
    }

    fn wait(&mut self, timeout: Duration) {
        let lane = &self.sw.lanes[self.id];
        let res = self.poll.poll(&mut self.events, Some(timeout));
        lane.sleeping.store(false, Ordering::Relaxed);
        if let Err(e) = res {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(worker = self.id, error = %e, "epoll failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        for ev in self.events.iter() {
            if ev.token() == WAKE_TOKEN {
                continue;
            }
            if let Ok(port) = u16::try_from(ev.token().0) {
                if !self.pending.contains(&port) {
                    self.pending.push(port);
                }
            }
        }
    }

    /// Takes the newest port table and (de)registers this worker's ports.
    fn reload(&mut self) {
        self.generation = self.sw.generation();
        let next = self.sw.ports();
        let mut wanted: HashMap<u16, Option<RawFd>> = HashMap::new();
        for p in next.iter().filter(|p| p.worker == self.id || p.io.serves(self.id)) {
            wanted.insert(p.id, p.io.readiness_fd(self.id));
        }
        // Deregister while the old table still holds the old fds open.
        let stale: Vec<(u16, RawFd)> = self
            .registered
            .iter()
            .filter(|(id, fd)| wanted.get(id) != Some(&Some(**fd)))
            .map(|(id, fd)| (*id, *fd))
            .collect();
        for (id, fd) in stale {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            self.registered.remove(&id);
        }
        self.always.clear();
        for (id, fd) in &wanted {
            match fd {
                Some(fd) if !self.registered.contains_key(id) => {
                    match self.poll.registry().register(
                        &mut SourceFd(fd),
                        Token(usize::from(*id)),
                        Interest::READABLE,
                    ) {
                        Ok(()) => {
                            self.registered.insert(*id, *fd);
                            // Frames may already be waiting: read once without an event.
                            self.pending.push(*id);
                        }
                        Err(e) => {
                            tracing::error!(worker = self.id, port = id, error = %e, "cannot poll port")
                        }
                    }
                }
                Some(_) => {}
                None => self.always.push(*id),
            }
        }
        self.pending.retain(|id| wanted.contains_key(id));
        self.always.sort_unstable();
        self.table = next;
    }

    /// Transmits frames other workers handed over, in bursts per port. Bounded per iteration
    /// so rx is not starved.
    fn drain_inbox(&mut self) -> usize {
        if self.sw.lanes[self.id].inbox.is_empty() {
            return 0;
        }
        let table = self.table.clone();
        let limit = self.sw.config.batch * 8;
        let mut n = 0;
        while n < limit {
            let Some(Handoff { port, frame }) = self.sw.lanes[self.id].inbox.pop() else { break };
            n += 1;
            // A port detached meanwhile simply loses the frame.
            match table.get(port) {
                Some(entry) => self.queue_tx(entry, frame),
                None => self.local.put(frame),
            }
        }
        self.send_out(&table);
        n
    }

    /// Reads one burst from `port`; returns (frames read, whether more may be waiting).
    fn rx_port(&mut self, port: u16, now: u32) -> (usize, bool) {
        // Held for the burst: every frame borrows its ports from it.
        let table = self.table.clone();
        let Some(entry) = table.get(port) else { return (0, false) };
        let batch = self.sw.config.batch.max(1);
        let more = match entry.io.recv_burst(self.id, &mut self.local, &mut self.rx, batch) {
            Ok(()) => self.rx.len() >= batch,
            Err(PortError::PoolEmpty) => {
                self.sw.counters.at(self.id).pool_empty.inc();
                self.starved = true;
                true
            }
            Err(e) => {
                if !matches!(e, PortError::Gone) {
                    tracing::debug!(port, error = %e, "rx error");
                }
                false
            }
        };
        let n = self.rx.len();
        if n == 0 {
            return (0, false);
        }
        let sw = self.sw.clone();
        let services_table = sw.services.load();
        let services = Services {
            table: &services_table,
            ct: &sw.conntrack,
            affinity: &sw.affinity,
            neigh: &sw.neigh,
            ports: &table,
        };
        let pipe = Pipeline {
            fdb: &sw.fdb,
            counters: sw.counters.at(self.id),
            worker: self.id,
            now,
            now_ns: sw.now_ns(),
            services: Some(&services),
        };
        pipe.run(entry, &mut self.rx, &mut self.scratch, &mut self.disp);
        // Moved out and back (no allocation) so frames can be delivered while `self` is borrowed.
        let mut frames = std::mem::take(&mut self.rx);
        let disps = std::mem::take(&mut self.disp);
        for (frame, disp) in frames.drain(..).zip(disps.iter()) {
            self.deliver(&table, entry, frame, *disp);
        }
        self.send_out(&table);
        self.rx = frames;
        self.disp = disps;
        (n, more)
    }

    fn deliver(&mut self, table: &PortTable, ingress: &PortEntry, frame: Frame, disp: Disposition) {
        match disp {
            Disposition::Drop(_) => self.local.put(frame),
            Disposition::Unicast(p) => match table.get(p) {
                Some(egress) if self.transmits(egress) => self.queue_tx(egress, frame),
                Some(egress) => self.handoff(egress, frame),
                None => {
                    ingress.counters.at(self.id).drop_frame(DropReason::PortGone);
                    self.local.put(frame);
                }
            },
            Disposition::Flood => {
                // The frames queued before this one go first: a port sees them in order.
                self.send_out(table);
                for egress in table.iter().filter(|p| p.id != ingress.id) {
                    if self.transmits(egress) {
                        self.tx(egress, &frame);
                    } else if let Some(mut copy) = self.local.get() {
                        copy.copy_from(&frame);
                        self.handoff(egress, copy);
                    } else {
                        egress.counters.at(self.id).drop_frame(DropReason::PoolEmpty);
                    }
                }
                self.local.put(frame);
            }
        }
    }

    /// Whether this worker transmits on `egress` itself (rather than handing frames over).
    fn transmits(&self, egress: &PortEntry) -> bool {
        egress.worker == self.id || egress.io.serves(self.id)
    }

    fn handoff(&mut self, egress: &PortEntry, frame: Frame) {
        let lane = &self.sw.lanes[egress.worker];
        match lane.inbox.push(Handoff { port: egress.id, frame }) {
            Ok(()) => {
                self.sw.counters.at(self.id).ring_handoffs.inc();
                lane.wake();
            }
            Err(h) => {
                egress.counters.at(self.id).drop_frame(DropReason::RingFull);
                self.local.put(h.frame);
            }
        }
    }

    /// Lets every port transmitted on in this iteration push its batch out; after a burst that
    /// found the pool empty, asks every port for the buffers it no longer needs.
    fn flush(&mut self) {
        for id in self.dirty.drain(..) {
            if let Some(p) = self.table.get(id) {
                p.io.flush(self.id, &mut self.local);
            }
        }
        if std::mem::take(&mut self.starved) {
            for p in self.table.iter() {
                p.io.reclaim(&mut self.local);
            }
        }
    }

    /// Transmits a copy of `frame` (a flooded frame goes to several ports).
    fn tx(&mut self, egress: &PortEntry, frame: &Frame) {
        if !self.admit(egress, frame) {
            return;
        }
        let mut tally = TxTally::default();
        tally.count(frame.ethernet().len(), &egress.io.send(self.id, frame.bytes()));
        count_tx(egress.counters.at(self.id), &tally);
    }

    /// Queues `frame` for the burst to `egress` (sent by [`Worker::send_out`]), which may send
    /// straight from its buffer.
    fn queue_tx(&mut self, egress: &PortEntry, frame: Frame) {
        if self.admit(egress, &frame) {
            self.out.push(egress.id, frame);
        } else {
            self.local.put(frame);
        }
    }

    /// Sends the queued frames: one burst per egress port, counted once per burst.
    fn send_out(&mut self, table: &PortTable) {
        let Worker { out, local, id, .. } = self;
        for (port, frames) in out.active() {
            match table.get(*port) {
                Some(egress) => {
                    let mut tally = TxTally::default();
                    egress.io.send_burst(*id, frames, local, &mut tally);
                    // A port takes the whole burst; anything it left counts as a tx error.
                    for f in frames.drain(..) {
                        tally.failed += 1;
                        local.put(f);
                    }
                    count_tx(egress.counters.at(*id), &tally);
                }
                // Not reached: `table` is the snapshot the frames were queued against.
                None => frames.drain(..).for_each(|f| local.put(f)),
            }
        }
        out.clear();
    }

    /// Applies the pod's ingress policer and marks the port for the end-of-iteration flush;
    /// false when the frame is to be dropped.
    fn admit(&mut self, egress: &PortEntry, frame: &Frame) -> bool {
        if let Some(p) = &egress.police.to_pod {
            if !p.allow(frame.ethernet().len(), self.sw.now_ns()) {
                egress.counters.at(self.id).drop_frame(DropReason::RateLimited);
                return false;
            }
        }
        if !self.dirty.contains(&egress.id) {
            self.dirty.push(egress.id);
        }
        true
    }
}

/// Frames bound for ports this worker transmits on, grouped by egress port until they are sent
/// as one burst per port. The groups keep their buffers' capacity across batches, so after the
/// first batches nothing is allocated.
#[derive(Default)]
struct TxGroups {
    /// (egress port, its frames); the first `used` are in use.
    groups: Vec<(u16, Vec<Frame>)>,
    used: usize,
}

impl TxGroups {
    fn push(&mut self, port: u16, frame: Frame) {
        let active = &mut self.groups[..self.used];
        if let Some((_, frames)) = active.iter_mut().find(|(p, _)| *p == port) {
            frames.push(frame);
            return;
        }
        match self.groups.get_mut(self.used) {
            Some(g) => {
                g.0 = port;
                g.1.push(frame);
            }
            None => self.groups.push((port, vec![frame])),
        }
        self.used += 1;
    }

    /// The groups in use, in the order their first frame came.
    fn active(&mut self) -> impl Iterator<Item = &mut (u16, Vec<Frame>)> {
        self.groups[..self.used].iter_mut()
    }

    /// Forgets the groups (their frames were sent: they are empty).
    fn clear(&mut self) {
        self.used = 0;
    }
}

/// Adds a burst's transmissions to the egress port's counters (this worker's slot).
fn count_tx(c: &PortCount, t: &TxTally) {
    if t.frames > 0 {
        c.tx_packets.add(t.frames);
        c.tx_bytes.add(t.bytes);
    }
    for (reason, n) in
        [(DropReason::PortGone, t.gone), (DropReason::TxFull, t.full), (DropReason::TxError, t.failed)]
    {
        if n > 0 {
            c.drop_frames(reason, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::port::mem::MemPort;

    use crate::switch::{Switch, SwitchConfig};
    use crate::table::{PortEntry, PortKind, SpoofGuard};
    use crate::wire::frame::tests::{arp, udp4};
    use crate::wire::{Mac, VNET_HDR_LEN};

    fn mac(i: u8) -> Mac {
        [2, 0, 0, 0, 0, i]
    }

    /// Pod port `id` on `io`, guarded to its MAC and 10.0.0.<id + 1>/24, on worker 0.
    fn guarded_pod(id: u16, io: Arc<MemPort>) -> PortEntry {
        let ip = format!("10.0.0.{}/24", id + 1).parse().unwrap();
        PortEntry {
            guard: Some(SpoofGuard::new(mac(id as u8), &[ip])),
            ..PortEntry::test(id, PortKind::Pod, io)
        }
    }

    fn with_vnet(frame: Vec<u8>) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend(frame);
        f
    }

    /// Waits (bounded) until `port` has sent `n` frames; returns them.
    fn sent(port: &MemPort, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(port.take_sent());
            std::thread::sleep(Duration::from_millis(2));
        }
        got
    }

    #[test]
    fn two_workers_flood_learn_and_hand_off() {
        let cfg = SwitchConfig {
            cores: vec![None, None],
            pool_frames: 256,
            frame_capacity: 2048,
            ..Default::default()
        };
        let running = Switch::start(cfg).unwrap();
        let sw = running.switch.clone();
        let ports: Vec<Arc<MemPort>> = (0..3).map(|_| Arc::new(MemPort::new(64))).collect();
        for (i, p) in ports.iter().enumerate() {
            let id = i as u16 + 1;
            // Ports 1 and 3 on worker 0, port 2 on worker 1.
            let entry = Arc::new(PortEntry { worker: i % 2, ..guarded_pod(id, p.clone()) });
            sw.update(|t| (t.with(entry), ()));
        }
        // Broadcast ARP from port 1 reaches ports 2 (other worker) and 3 (same worker).
        assert!(ports[0].inject(with_vnet(arp(mac(1), [10, 0, 0, 2]))));
        assert_eq!(sent(&ports[1], 1).len(), 1);
        assert_eq!(sent(&ports[2], 1).len(), 1);
        assert!(ports[0].take_sent().is_empty(), "never back to the ingress port");
        // Port 2 answers unicast: port 1's MAC was learned, so only port 1 gets it.
        assert!(ports[1].inject(with_vnet(udp4(mac(2), mac(1), [10, 0, 0, 3], [10, 0, 0, 2]))));
        let got = sent(&ports[0], 1);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][VNET_HDR_LEN..VNET_HDR_LEN + 6], &mac(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(ports[2].take_sent().is_empty(), "known unicast is not flooded");
        // A spoofed frame from port 3 goes nowhere and is counted.
        assert!(ports[2].inject(with_vnet(udp4(mac(9), mac(1), [10, 0, 0, 4], [10, 0, 0, 2]))));
        let deadline = Instant::now() + Duration::from_secs(10);
        let table = sw.ports();
        let p3 = table.get(3).unwrap();
        while p3.counters.dropped(crate::stats::DropReason::SpoofedMac) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(p3.counters.dropped(crate::stats::DropReason::SpoofedMac), 1);
        assert!(sw.counters.to_map()["ring_handoffs"] >= 2);
        assert_eq!(sw.fdb.lookup(&mac(1), sw.now()), Some(1));
        assert_eq!(sw.fdb.lookup(&mac(9), sw.now()), None);
        running.stop();
        // Every buffer is back once the workers are gone.
        assert_eq!(sw.pool.outstanding(), 0);
    }

    /// A port that keeps every frame sent to it, the way a zero-copy NIC keeps a buffer until
    /// it completes, and hands them back only on `reclaim`.
    struct Holding {
        held: std::sync::Mutex<Vec<crate::pool::Frame>>,
        sent: std::sync::atomic::AtomicUsize,
    }

    impl crate::port::PortIo for Holding {
        fn recv_frame(
            &self,
            _: usize,
            _: &mut crate::pool::LocalPool,
        ) -> Result<Option<crate::pool::Frame>, crate::port::PortError> {
            Ok(None)
        }
        fn send(&self, _: usize, _: &[u8]) -> Result<(), crate::port::PortError> {
            Ok(())
        }
        fn send_frame(
            &self,
            _: usize,
            frame: crate::pool::Frame,
            _: &mut crate::pool::LocalPool,
        ) -> Result<(), crate::port::PortError> {
            self.held.lock().unwrap().push(frame);
            self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        fn readiness_fd(&self, _: usize) -> Option<std::os::fd::RawFd> {
            None
        }
        fn reclaim(&self, pool: &mut crate::pool::LocalPool) {
            for f in self.held.lock().unwrap().drain(..) {
                pool.put(f);
            }
        }
    }

    #[test]
    fn a_port_holding_buffers_gives_them_back_when_the_pool_runs_dry() {
        let cfg = SwitchConfig { pool_frames: 64, frame_capacity: 2048, batch: 8, ..Default::default() };
        let running = Switch::start(cfg).unwrap();
        let sw = running.switch.clone();
        let pod = Arc::new(MemPort::new(1024));
        let nic = Arc::new(Holding { held: Default::default(), sent: Default::default() });
        let entry =
            |id: u16, io: Arc<dyn crate::port::PortIo>| Arc::new(PortEntry::test(id, PortKind::Pod, io));
        sw.update(|t| (t.with(entry(1, pod.clone())), ()));
        sw.update(|t| (t.with(entry(2, nic.clone())), ()));
        // The far MAC is behind the holding port, so frames to it go there unicast.
        sw.fdb.learn(&mac(9), 2, sw.now());
        let total = 500;
        let mut injected = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while nic.sent.load(std::sync::atomic::Ordering::Relaxed) < total && Instant::now() < deadline {
            while injected < total
                && pod.inject(with_vnet(udp4(mac(1), mac(9), [10, 0, 0, 2], [10, 0, 0, 9])))
            {
                injected += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Far more frames than the pool holds went through: the worker took the held buffers
        // back each time it ran dry.
        assert_eq!(nic.sent.load(std::sync::atomic::Ordering::Relaxed), total);
        assert!(sw.counters.to_map()["pool_empty"] > 0, "the pool never ran dry");
        running.stop();
        let mut local = crate::pool::LocalPool::new(sw.pool.clone(), 8);
        crate::port::PortIo::reclaim(&*nic, &mut local);
        drop(local);
        assert_eq!(sw.pool.outstanding(), 0);
    }

    /// One rx burst of unicast, unicast, broadcast, unicast to one port: the unicast frames go
    /// as bursts on either side of the flooded frame, and the port sees all four in order.
    #[test]
    fn a_batch_goes_out_in_bursts_per_port_in_order() {
        let running = Switch::start(SwitchConfig { pool_frames: 256, ..Default::default() }).unwrap();
        let sw = running.switch.clone();
        let pod = Arc::new(MemPort::new(64));
        let rec = Arc::new(MemPort::new(1));
        sw.update(|t| (t.with(Arc::new(PortEntry::test(2, PortKind::Pod, rec.clone()))), ()));
        sw.fdb.learn(&mac(2), 2, sw.now());
        let uni = || with_vnet(udp4(mac(1), mac(2), [10, 0, 0, 2], [10, 0, 0, 3]));
        for f in [uni(), uni(), with_vnet(arp(mac(1), [10, 0, 0, 2])), uni()] {
            assert!(pod.inject(f));
        }
        // Attached with its frames already waiting: the worker reads them as one burst.
        sw.update(|t| (t.with(Arc::new(guarded_pod(1, pod.clone()))), ()));
        let types: Vec<u16> = sent(&rec, 4)
            .iter()
            .map(|f| u16::from_be_bytes([f[VNET_HDR_LEN + 12], f[VNET_HDR_LEN + 13]]))
            .collect();
        assert_eq!(types, [0x0800, 0x0800, 0x0806, 0x0800]);
        assert_eq!(rec.take_calls(), [2, 0, 1], "a burst, the flooded copy, a burst");
        // Counted once the worker is done with the burst: read after it stopped.
        running.stop();
        let table = sw.ports();
        assert_eq!(table.get(2).unwrap().counters.totals().tx_packets, 4);
        assert_eq!(table.get(1).unwrap().counters.totals().rx_packets, 4);
        assert_eq!(sw.counters.to_map()["flooded"], 1);
        assert_eq!(sw.pool.outstanding(), 0);
    }

    /// Over in-memory ports, through the workers: a pod floods 300 ARP requests and sends one
    /// UDP super-frame of a thousand 1-byte segments. Its neighbour gets the storm-control
    /// burst of the ARPs and never the super-frame; both are counted on the pod's port.
    #[test]
    fn floods_and_bad_gso_headers_stop_at_the_ingress_port() {
        use crate::datapath::police::{PortPolice, StormConfig};
        use crate::stats::DropReason;
        use crate::wire::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_UDP_L4};
        let storm = StormConfig { pps: 1, pps_burst: 50, bytes: 0, bytes_burst: 0 };
        let cfg = SwitchConfig { pool_frames: 256, frame_capacity: 4096, storm, ..Default::default() };
        let running = Switch::start(cfg).unwrap();
        let sw = running.switch.clone();
        let ports: Vec<Arc<MemPort>> = (0..2).map(|_| Arc::new(MemPort::new(512))).collect();
        for (i, p) in ports.iter().enumerate() {
            let id = i as u16 + 1;
            let police = PortPolice::new(None).with_storm(&sw.config.storm);
            let entry = Arc::new(PortEntry { police, ..guarded_pod(id, p.clone()) });
            sw.update(|t| (t.with(entry), ()));
        }
        // Port 2's MAC is known, so the super-frame would go to it unicast.
        sw.fdb.learn(&mac(2), 2, sw.now());
        let mut bad = vec![0u8; VNET_HDR_LEN];
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 42,
            gso_size: 1,
            csum_start: 34,
            csum_offset: 6,
        };
        assert!(hdr.emit(&mut bad));
        let b = etherparse::PacketBuilder::ethernet2(mac(1), mac(2)).ipv4([10, 0, 0, 2], [10, 0, 0, 3], 64);
        b.udp(1, 2).write(&mut bad, &[9u8; 1000]).unwrap();
        assert!(ports[0].inject(bad));
        for _ in 0..300 {
            assert!(ports[0].inject(with_vnet(arp(mac(1), [10, 0, 0, 2]))));
        }
        let table = sw.ports();
        let p1 = table.get(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while p1.counters.totals().rx_packets < 301 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let got = sent(&ports[1], 50);
        std::thread::sleep(Duration::from_millis(20));
        let got = got.len() + ports[1].take_sent().len();
        let stormed = p1.counters.dropped(DropReason::StormControl);
        // The burst of 50, and the few tokens refilled meanwhile (1/s); the rest dropped.
        assert!((50..300).contains(&got), "{got} ARPs reached the neighbour");
        assert_eq!(stormed as usize + got, 300);
        assert_eq!(p1.counters.dropped(DropReason::GsoInvalid), 1);
        running.stop();
        assert_eq!(sw.pool.outstanding(), 0);
    }
}
