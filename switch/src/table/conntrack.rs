//! Connection tracking for service flows: the first packet of a flow to a VIP pins a backend,
//! later packets (and the replies, whatever port they arrive on) follow the entry, so a change
//! of the backend set never breaks a running connection.
//!
//! Layout: [`SHARDS`] shards, each a mutex over a hash map from both directions' keys to a slab
//! of flows. A flow's two keys live in the same shard because the shard is chosen by the
//! client-side port, which both directions carry (the source port of the original direction,
//! the destination port of the reply; hairpin SNAT keeps the port or moves it by multiples of
//! [`SHARDS`]). So every frame locks exactly one shard, briefly, and workers meet on a lock
//! only when they touch the same shard at the same instant: there is no global lock.
//!
//! Bounds: each shard holds at most `max / SHARDS` flows. When full, the oldest entry goes,
//! with a second chance for live established TCP flows (at most [`SECOND_CHANCES`]), so a SYN
//! flood evicts its own half-open entries and cannot grow memory. Expired entries are removed
//! by [`Conntrack::sweep`] (the control thread, once a second) and on lookup.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::services::{pack, PackedKey};
use crate::wire::l4::{tcp_flags, PROTO_TCP};
use crate::wire::Mac;

/// Number of shards (a power of two dividing 65536, see the module docs).
pub const SHARDS: usize = 64;

/// Live established flows skipped by eviction before the oldest is taken anyway.
pub const SECOND_CHANCES: usize = 8;

/// A packet's identity as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
}

/// Which direction a packet travels in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → VIP.
    Orig,
    /// Backend → client.
    Reply,
}

/// Tracking state (enough for timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    /// TCP, SYN seen, no answer yet.
    SynSent,
    /// TCP, both directions talked.
    Established,
    /// TCP, a FIN was seen.
    Closing,
    /// TCP, a RST was seen.
    Closed,
    /// UDP.
    Udp,
}

impl CtState {
    /// The state's name in dumps.
    pub fn name(self) -> &'static str {
        match self {
            CtState::SynSent => "syn_sent",
            CtState::Established => "established",
            CtState::Closing => "closing",
            CtState::Closed => "closed",
            CtState::Udp => "udp",
        }
    }
}

/// Idle timeouts per state, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Timeouts {
    /// TCP after the SYN.
    pub tcp_syn: u32,
    /// TCP established.
    pub tcp_established: u32,
    /// TCP after a FIN.
    pub tcp_closing: u32,
    /// TCP after a RST.
    pub tcp_closed: u32,
    /// UDP.
    pub udp: u32,
}

impl Default for Timeouts {
    /// kube-proxy's conntrack settings where it sets them (established 86400 s), the kernel's
    /// otherwise (SYN 120 s, time-wait 120 s, close 10 s), UDP 120 s (the kernel's stream value).
    fn default() -> Self {
        Timeouts { tcp_syn: 120, tcp_established: 86_400, tcp_closing: 120, tcp_closed: 10, udp: 120 }
    }
}

impl Timeouts {
    fn of(&self, s: CtState) -> u32 {
        match s {
            CtState::SynSent => self.tcp_syn,
            CtState::Established => self.tcp_established,
            CtState::Closing => self.tcp_closing,
            CtState::Closed => self.tcp_closed,
            CtState::Udp => self.udp,
        }
    }
}

/// One tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// IP protocol.
    pub proto: u8,
    /// Client address and port.
    pub client: (IpAddr, u16),
    /// VIP and port the client addressed.
    pub vip: (IpAddr, u16),
    /// The pinned backend.
    pub backend: (IpAddr, u16),
    /// Source the backend sees instead of the client (hairpin).
    pub snat: Option<(IpAddr, u16)>,
    /// The client's MAC (replies go back to it).
    pub client_mac: Mac,
    /// The MAC the client sent to (the gateway's, or the host-side VIP MAC): replies come
    /// from it.
    pub vip_mac: Mac,
    /// The backend's MAC (DNATed frames go to it).
    pub backend_mac: Mac,
    /// Tracking state.
    pub state: CtState,
    /// Last packet, seconds of the switch clock.
    pub last_seen: u32,
}

impl Flow {
    /// Key of the client → VIP direction.
    pub fn orig_key(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.client.0,
            sport: self.client.1,
            dst: self.vip.0,
            dport: self.vip.1,
        }
    }

    /// Key of the backend → client direction (after our DNAT and SNAT).
    pub fn reply_key(&self) -> FlowKey {
        let to = self.snat.unwrap_or(self.client);
        FlowKey { proto: self.proto, src: self.backend.0, sport: self.backend.1, dst: to.0, dport: to.1 }
    }

    /// The state a flow starts in, from its first packet.
    pub fn initial_state(proto: u8, flags: u8) -> CtState {
        if proto != PROTO_TCP {
            CtState::Udp
        } else if flags & tcp_flags::SYN != 0 && flags & tcp_flags::ACK == 0 {
            CtState::SynSent
        } else {
            // Picked up mid-stream (after a restart or a flush): trust it.
            CtState::Established
        }
    }

    fn advance(&mut self, dir: Dir, flags: u8) {
        if self.proto != PROTO_TCP {
            return;
        }
        self.state = match self.state {
            _ if flags & tcp_flags::RST != 0 => CtState::Closed,
            CtState::Closed => CtState::Closed,
            _ if flags & tcp_flags::FIN != 0 => CtState::Closing,
            CtState::SynSent if dir == Dir::Reply && flags & tcp_flags::ACK != 0 => CtState::Established,
            s => s,
        };
    }
}

/// Why a flow was not inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// Another flow already uses the reply key (pick another SNAT port).
    #[error("reply key in use")]
    ReplyKeyInUse,
}

/// Conntrack counters.
#[derive(Debug, Default)]
pub struct CtCounters {
    /// Flows created.
    pub created: AtomicU64,
    /// Flows removed because they timed out.
    pub expired: AtomicU64,
    /// Flows removed to make room (table full).
    pub evicted: AtomicU64,
}

struct Slot {
    flow: Flow,
    gen: u32,
    live: bool,
}

#[derive(Default)]
struct Shard {
    keys: HashMap<FlowKey, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Insertion order: (slot, generation); stale pairs are skipped.
    fifo: VecDeque<(u32, u32)>,
    len: usize,
}

impl Shard {
    fn remove(&mut self, idx: u32) {
        let Some(slot) = self.slots.get_mut(idx as usize) else { return };
        if !slot.live {
            return;
        }
        slot.live = false;
        slot.gen = slot.gen.wrapping_add(1);
        let (o, r) = (slot.flow.orig_key(), slot.flow.reply_key());
        self.keys.remove(&o);
        self.keys.remove(&r);
        self.free.push(idx);
        self.len -= 1;
    }

    /// Frees one slot: the oldest entry, preferring expired or non-established ones.
    fn evict_one(&mut self, now: u32, t: &Timeouts) -> bool {
        let mut chances = 0;
        while let Some((idx, gen)) = self.fifo.pop_front() {
            let Some(slot) = self.slots.get(idx as usize) else { continue };
            if !slot.live || slot.gen != gen {
                continue;
            }
            let f = &slot.flow;
            let alive = now.saturating_sub(f.last_seen) <= t.of(f.state);
            if alive && f.state == CtState::Established && chances < SECOND_CHANCES {
                chances += 1;
                self.fifo.push_back((idx, gen));
                continue;
            }
            self.remove(idx);
            return true;
        }
        false
    }
}

/// The connection-tracking table.
pub struct Conntrack {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    timeouts: Timeouts,
    len: AtomicUsize,
    /// Counters.
    pub counters: CtCounters,
}

/// What [`Conntrack::sweep`] found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Entries removed.
    pub expired: usize,
    /// Backends (packed with their protocol) that still have live flows.
    pub live_backends: HashSet<PackedKey>,
}

fn shard_index(port: u16) -> usize {
    usize::from(port) % SHARDS
}

impl Conntrack {
    /// A table of at most `max` flows (rounded up to a multiple of [`SHARDS`]).
    pub fn new(max: usize, timeouts: Timeouts) -> Conntrack {
        let per_shard = max.div_ceil(SHARDS).max(1);
        Conntrack {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            timeouts,
            len: AtomicUsize::new(0),
            counters: CtCounters::default(),
        }
    }

    /// Flows tracked now.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Whether no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The size bound.
    pub fn max(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A worker that panicked mid-update cannot leave a shard worse than a lost entry.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds the flow `key` belongs to, travelling in `dir`; refreshes it and advances its TCP
    /// state with `flags`. An expired entry is removed and not returned.
    pub fn lookup(&self, key: &FlowKey, dir: Dir, flags: u8, now: u32) -> Option<Flow> {
        let port = if dir == Dir::Orig { key.sport } else { key.dport };
        let mut shard = self.shard(shard_index(port));
        let idx = *shard.keys.get(key)?;
        let state = shard.slots.get(idx as usize)?.flow.state;
        let last = shard.slots.get(idx as usize)?.flow.last_seen;
        if now.saturating_sub(last) > self.timeouts.of(state) {
            shard.remove(idx);
            self.len.fetch_sub(1, Relaxed);
            self.counters.expired.fetch_add(1, Relaxed);
            return None;
        }
        let slot = shard.slots.get_mut(idx as usize)?;
        slot.flow.advance(dir, flags);
        slot.flow.last_seen = now;
        Some(slot.flow)
    }

    /// Tracks `flow`. When another worker tracked the same client flow first, that flow is
    /// returned instead, so both agree on the backend.
    pub fn insert(&self, flow: Flow) -> Result<Flow, InsertError> {
        let (orig, reply) = (flow.orig_key(), flow.reply_key());
        debug_assert_eq!(shard_index(orig.sport), shard_index(reply.dport));
        let mut shard = self.shard(shard_index(orig.sport));
        if let Some(&idx) = shard.keys.get(&orig) {
            if let Some(slot) = shard.slots.get(idx as usize) {
                return Ok(slot.flow);
            }
        }
        if shard.keys.contains_key(&reply) {
            return Err(InsertError::ReplyKeyInUse);
        }
        if shard.len >= self.per_shard && shard.evict_one(flow.last_seen, &self.timeouts) {
            self.len.fetch_sub(1, Relaxed);
            self.counters.evicted.fetch_add(1, Relaxed);
        }
        let idx = match shard.free.pop() {
            Some(i) => {
                let s = &mut shard.slots[i as usize];
                s.flow = flow;
                s.live = true;
                i
            }
            None => {
                shard.slots.push(Slot { flow, gen: 0, live: true });
                (shard.slots.len() - 1) as u32
            }
        };
        let gen = shard.slots[idx as usize].gen;
        shard.keys.insert(orig, idx);
        shard.keys.insert(reply, idx);
        shard.fifo.push_back((idx, gen));
        shard.len += 1;
        self.len.fetch_add(1, Relaxed);
        self.counters.created.fetch_add(1, Relaxed);
        Ok(flow)
    }

    /// Removes expired flows; reports which backends still have live ones.
    pub fn sweep(&self, now: u32) -> Sweep {
        let mut out = Sweep::default();
        for i in 0..SHARDS {
            let mut shard = self.shard(i);
            let mut dead = Vec::new();
            for (idx, slot) in shard.slots.iter().enumerate() {
                if !slot.live {
                    continue;
                }
                let f = &slot.flow;
                if now.saturating_sub(f.last_seen) > self.timeouts.of(f.state) {
                    dead.push(idx as u32);
                } else {
                    out.live_backends.insert(pack(f.backend.0, f.backend.1, f.proto));
                }
            }
            for idx in &dead {
                shard.remove(*idx);
            }
            // Keep the insertion queue from growing with stale pairs.
            if shard.fifo.len() > 2 * shard.len + 64 {
                let Shard { fifo, slots, .. } = &mut *shard;
                fifo.retain(|(i, g)| slots.get(*i as usize).is_some_and(|s| s.live && s.gen == *g));
            }
            out.expired += dead.len();
        }
        self.len.fetch_sub(out.expired, Relaxed);
        self.counters.expired.fetch_add(out.expired as u64, Relaxed);
        out
    }

    /// Every live flow matching `keep`, with seconds left before it expires.
    pub fn dump(&self, now: u32, keep: impl Fn(&Flow) -> bool) -> Vec<(Flow, u32)> {
        let mut out = Vec::new();
        for i in 0..SHARDS {
            let shard = self.shard(i);
            for slot in shard.slots.iter().filter(|s| s.live && keep(&s.flow)) {
                let f = slot.flow;
                let left = self.timeouts.of(f.state).saturating_sub(now.saturating_sub(f.last_seen));
                out.push((f, left));
            }
        }
        out
    }

    /// Removes every flow matching `kill`; returns how many.
    pub fn flush(&self, kill: impl Fn(&Flow) -> bool) -> usize {
        let mut n = 0;
        for i in 0..SHARDS {
            let mut shard = self.shard(i);
            let dead: Vec<u32> = shard
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.live && kill(&s.flow))
                .map(|(i, _)| i as u32)
                .collect();
            for idx in &dead {
                shard.remove(*idx);
            }
            n += dead.len();
        }
        self.len.fetch_sub(n, Relaxed);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::l4::PROTO_UDP;

    fn flow(client_port: u16, now: u32) -> Flow {
        Flow {
            proto: PROTO_TCP,
            client: (IpAddr::from([10, 244, 0, 2]), client_port),
            vip: (IpAddr::from([10, 96, 0, 10]), 80),
            backend: (IpAddr::from([10, 244, 0, 3]), 8080),
            snat: None,
            client_mac: [2, 0, 0, 0, 0, 2],
            vip_mac: [2, 0, 0, 0, 0, 1],
            backend_mac: [2, 0, 0, 0, 0, 3],
            state: CtState::SynSent,
            last_seen: now,
        }
    }

    #[test]
    fn both_directions_find_the_flow() {
        let ct = Conntrack::new(1024, Timeouts::default());
        let f = flow(40000, 1);
        ct.insert(f).unwrap();
        assert_eq!(ct.lookup(&f.orig_key(), Dir::Orig, tcp_flags::SYN, 1).unwrap().backend, f.backend);
        let r = ct.lookup(&f.reply_key(), Dir::Reply, tcp_flags::SYN | tcp_flags::ACK, 2).unwrap();
        assert_eq!(r.state, CtState::Established);
        assert_eq!(ct.len(), 1);
        // Same client flow inserted again (another worker raced us): the first one wins.
        let mut other = f;
        other.backend = (IpAddr::from([10, 244, 0, 9]), 8080);
        assert_eq!(ct.insert(other).unwrap().backend, f.backend);
        assert_eq!(ct.len(), 1);
    }

    #[test]
    fn tcp_states_and_timeouts() {
        let t = Timeouts { tcp_syn: 5, tcp_established: 100, tcp_closing: 3, tcp_closed: 1, udp: 7 };
        let ct = Conntrack::new(1024, t);
        let f = flow(40001, 0);
        ct.insert(f).unwrap();
        // SYN_SENT expires after 5 s without an answer.
        assert!(ct.lookup(&f.orig_key(), Dir::Orig, 0, 6).is_none());
        assert_eq!(ct.len(), 0);
        assert_eq!(ct.counters.expired.load(Relaxed), 1);
        ct.insert(flow(40001, 10)).unwrap();
        ct.lookup(&f.reply_key(), Dir::Reply, tcp_flags::SYN | tcp_flags::ACK, 10).unwrap();
        assert!(ct.lookup(&f.orig_key(), Dir::Orig, tcp_flags::ACK, 90).is_some(), "established lives");
        let s = ct.lookup(&f.orig_key(), Dir::Orig, tcp_flags::FIN | tcp_flags::ACK, 91).unwrap();
        assert_eq!(s.state, CtState::Closing);
        assert!(ct.lookup(&f.orig_key(), Dir::Orig, tcp_flags::ACK, 95).is_none(), "closing is short");
        ct.insert(flow(40001, 100)).unwrap();
        let s = ct.lookup(&f.reply_key(), Dir::Reply, tcp_flags::RST, 100).unwrap();
        assert_eq!(s.state, CtState::Closed);
        assert_eq!(ct.sweep(102).expired, 1);
        assert!(ct.is_empty());
        // UDP.
        let mut u = flow(5353, 0);
        u.proto = PROTO_UDP;
        u.state = Flow::initial_state(PROTO_UDP, 0);
        ct.insert(u).unwrap();
        assert!(ct.lookup(&u.orig_key(), Dir::Orig, 0, 7).is_some());
        let sw = ct.sweep(15);
        assert_eq!((sw.expired, ct.len()), (1, 0));
    }

    #[test]
    fn bounded_with_eviction() {
        // 64 shards × 2 = 128 flows at most; a "SYN flood" of 10,000 flows stays bounded.
        let ct = Conntrack::new(128, Timeouts::default());
        for p in 0..10_000u16 {
            ct.insert(flow(p, 1)).unwrap();
        }
        assert_eq!(ct.len(), 128);
        assert_eq!(ct.counters.evicted.load(Relaxed), 10_000 - 128);
        assert_eq!(ct.counters.created.load(Relaxed), 10_000);
    }

    #[test]
    fn established_flows_get_a_second_chance() {
        // Two flows per shard: an old established flow and a half-open one share shard 0.
        let ct = Conntrack::new(2 * SHARDS, Timeouts::default());
        let mut old = flow(0, 1);
        old.state = CtState::Established;
        ct.insert(old).unwrap();
        ct.insert(flow(64, 1)).unwrap(); // same shard (port % 64 == 0), SYN_SENT
        ct.insert(flow(128, 1)).unwrap(); // full: the half-open one goes, though younger
        assert!(ct.lookup(&old.orig_key(), Dir::Orig, tcp_flags::ACK, 2).is_some());
        assert!(ct.lookup(&flow(64, 1).orig_key(), Dir::Orig, 0, 2).is_none());
        // With one slot per shard the established flow must go after all.
        let one = Conntrack::new(SHARDS, Timeouts::default());
        one.insert(old).unwrap();
        one.insert(flow(64, 1)).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one.lookup(&old.orig_key(), Dir::Orig, tcp_flags::ACK, 2).is_none());
    }

    #[test]
    fn hairpin_reply_key_collision() {
        let ct = Conntrack::new(1024, Timeouts::default());
        let gw = IpAddr::from([10, 244, 0, 1]);
        let mut a = flow(40000, 1);
        a.snat = Some((gw, 40000));
        ct.insert(a).unwrap();
        let mut b = flow(40000, 1);
        b.client = (IpAddr::from([10, 244, 0, 7]), 40000);
        b.snat = Some((gw, 40000));
        assert_eq!(ct.insert(b), Err(InsertError::ReplyKeyInUse));
        b.snat = Some((gw, 40000 + SHARDS as u16));
        assert!(ct.insert(b).is_ok());
    }

    #[test]
    fn dump_and_flush_filter() {
        let ct = Conntrack::new(1024, Timeouts::default());
        for p in 1..=10 {
            let mut f = flow(p, 1);
            if p % 2 == 0 {
                f.backend.0 = IpAddr::from([10, 244, 0, 4]);
            }
            ct.insert(f).unwrap();
        }
        let four = IpAddr::from([10, 244, 0, 4]);
        assert_eq!(ct.dump(1, |f| f.backend.0 == four).len(), 5);
        assert_eq!(ct.flush(|f| f.backend.0 == four), 5);
        assert_eq!(ct.len(), 5);
        assert_eq!(ct.sweep(2).live_backends.len(), 1);
    }
}
