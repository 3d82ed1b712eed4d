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
//! Confirmation (Linux conntrack's "unreplied" and "assured"): a flow is *unreplied* until the
//! backend's first answer, and its idle timeout is capped at [`Timeouts::unreplied`] until
//! then, whatever packet created it (a SYN, or an ACK picked up mid-stream after a restart).
//! A flow is *confirmed* once replied while established (TCP) or at all (UDP); a closing,
//! closed or ended flow is no longer confirmed.
//!
//! Bounds, so one client cannot push out its neighbours' flows:
//! - a quota per client address (`per_client` flows, counted over all shards in a separate
//!   sharded map that only inserts and removals touch); over it the new flow is refused;
//! - each shard holds at most `max / SHARDS` flows. A full shard evicts an unconfirmed (or
//!   expired) flow, oldest first, from a queue of candidates; confirmed live flows are never
//!   evicted: when only those remain, the new flow is refused. Each insert does amortised
//!   O(1) work (a flow moves between the queues at most twice in its life).
//!
//! Expired entries are removed by [`Conntrack::sweep`] (the control thread, once a second) and
//! on lookup. [`Conntrack::end_flows`] ends the flows of removed backends: UDP flows go (the
//! client's next datagram starts a new flow), TCP flows become [`CtState::Ended`]
//! tombstones whose segments the service stage answers with a RST.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::services::{pack, PackedKey};
use crate::wire::ip::PROTO_TCP;
use crate::wire::tcp::flags as tcp_flags;
use crate::wire::Mac;

/// Number of shards (a power of two dividing 65536, see the module docs).
pub const SHARDS: usize = 64;

/// Confirmed flows a full shard looks at for an expired one before refusing a new flow.
pub const EXPIRED_PROBES: usize = 8;

/// Default most flows one client address holds (1/16 of the default table).
pub const DEFAULT_PER_CLIENT: u32 = 16_384;

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
    /// TCP, both directions talked (or picked up mid-stream: then unreplied until an answer).
    Established,
    /// TCP, a FIN was seen.
    Closing,
    /// TCP, a RST was seen.
    Closed,
    /// UDP.
    Udp,
    /// TCP, ended by the switch (its backend was removed, or a pod of it detached): segments
    /// either way are answered with a RST, and a new SYN replaces the entry.
    Ended,
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
            CtState::Ended => "ended",
        }
    }
}

/// Idle timeouts per state, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Timeouts {
    /// TCP after the SYN (capped by `unreplied`, since no answer came yet).
    pub tcp_syn: u32,
    /// TCP established.
    pub tcp_established: u32,
    /// TCP after a FIN.
    pub tcp_closing: u32,
    /// TCP after a RST, and the tombstone of a flow whose backend was removed.
    pub tcp_closed: u32,
    /// UDP.
    pub udp: u32,
    /// Cap on every state's timeout until the backend's first answer.
    pub unreplied: u32,
}

impl Default for Timeouts {
    /// kube-proxy's conntrack settings where it sets them (established 86400 s), the kernel's
    /// otherwise (SYN 120 s, time-wait 120 s, close 10 s, UDP unreplied 30 s), UDP 120 s (the
    /// kernel's stream value).
    fn default() -> Self {
        Timeouts {
            tcp_syn: 120,
            tcp_established: 86_400,
            tcp_closing: 120,
            tcp_closed: 10,
            udp: 120,
            unreplied: 30,
        }
    }
}

impl Timeouts {
    fn of(&self, s: CtState) -> u32 {
        match s {
            CtState::SynSent => self.tcp_syn,
            CtState::Established => self.tcp_established,
            CtState::Closing => self.tcp_closing,
            CtState::Closed | CtState::Ended => self.tcp_closed,
            CtState::Udp => self.udp,
        }
    }

    /// Every value, for validation.
    pub fn all(&self) -> [u32; 6] {
        [self.tcp_syn, self.tcp_established, self.tcp_closing, self.tcp_closed, self.udp, self.unreplied]
    }

    /// The idle timeout of `f`.
    pub fn timeout(&self, f: &Flow) -> u32 {
        let t = self.of(f.state);
        if f.replied {
            t
        } else {
            t.min(self.unreplied)
        }
    }

    fn alive(&self, f: &Flow, now: u32) -> bool {
        now.saturating_sub(f.last_seen) <= self.timeout(f)
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
    /// Whether the backend answered yet.
    pub replied: bool,
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
            // Picked up mid-stream (after a restart or a flush): Maglev places it where it
            // was, and it stays unreplied (short-lived) until the backend answers.
            CtState::Established
        }
    }

    /// Confirmed: answered by the backend and live (TCP established, or UDP). Eviction never
    /// takes a confirmed flow that has not expired.
    pub fn confirmed(&self) -> bool {
        self.replied && matches!(self.state, CtState::Established | CtState::Udp)
    }

    fn advance(&mut self, dir: Dir, flags: u8) {
        if dir == Dir::Reply {
            self.replied = true;
        }
        if self.proto != PROTO_TCP {
            return;
        }
        self.state = match self.state {
            CtState::Ended => CtState::Ended,
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
    /// The client holds its quota of flows.
    #[error("client over its conntrack quota")]
    Quota,
    /// The shard is full of confirmed live flows, which are never evicted.
    #[error("conntrack full of confirmed flows")]
    Full,
}

/// Conntrack counters.
#[derive(Debug, Default)]
pub struct CtCounters {
    /// Flows created.
    pub created: AtomicU64,
    /// Flows removed because they timed out.
    pub expired: AtomicU64,
    /// Unconfirmed or expired flows removed to make room (table full).
    pub evicted: AtomicU64,
    /// New flows refused: their client held its quota.
    pub quota: AtomicU64,
    /// New flows refused: the shard held only confirmed live flows.
    pub full: AtomicU64,
    /// Flows of removed backends (or detached pods) flushed: UDP, and TCP already closed.
    pub backend_flushed: AtomicU64,
    /// TCP flows of removed backends (or detached pods) ended: answered with a RST from then on.
    pub backend_ended: AtomicU64,
    /// RSTs the service stage sent for ended flows.
    pub resets: AtomicU64,
}

/// Flows per client address, over all shards: only inserts and removals touch it.
struct Clients {
    shards: Box<[Mutex<HashMap<IpAddr, u32>>]>,
    hasher: RandomState,
    limit: u32,
}

impl Clients {
    fn new(limit: u32) -> Clients {
        Clients {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            limit,
        }
    }

    fn shard(&self, ip: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        let i = (self.hasher.hash_one(ip) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one flow of `ip`'s quota; `false` when it holds its quota already.
    fn acquire(&self, ip: IpAddr) -> bool {
        let mut m = self.shard(&ip);
        let n = m.entry(ip).or_insert(0);
        if self.limit != 0 && *n >= self.limit {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut m = self.shard(&ip);
        if let Some(n) = m.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }

    fn count(&self, ip: IpAddr) -> u32 {
        self.shard(&ip).get(&ip).copied().unwrap_or(0)
    }
}

struct Slot {
    flow: Flow,
    gen: u32,
    live: bool,
    /// Whether the flow holds one of its client's quota.
    counted: bool,
}

#[derive(Default)]
struct Shard {
    keys: HashMap<FlowKey, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Eviction candidates, oldest first: every flow when inserted, and again when it stops
    /// being confirmed; (slot, generation), stale pairs skipped.
    candidates: VecDeque<(u32, u32)>,
    /// Flows found confirmed in `candidates`, oldest first; only looked at for expired ones.
    confirmed: VecDeque<(u32, u32)>,
    len: usize,
}

impl Shard {
    /// Removes the flow in `idx`, giving back its client's quota.
    fn remove(&mut self, idx: u32, clients: &Clients) -> bool {
        let Some(slot) = self.slots.get_mut(idx as usize) else { return false };
        if !slot.live {
            return false;
        }
        slot.live = false;
        slot.gen = slot.gen.wrapping_add(1);
        if slot.counted {
            clients.release(slot.flow.client.0);
        }
        let (o, r) = (slot.flow.orig_key(), slot.flow.reply_key());
        self.keys.remove(&o);
        self.keys.remove(&r);
        self.free.push(idx);
        self.len -= 1;
        true
    }

    /// The live flow of `(idx, gen)`, if the pair is not stale.
    fn current(&self, (idx, gen): (u32, u32)) -> Option<&Flow> {
        self.slots.get(idx as usize).filter(|s| s.live && s.gen == gen).map(|s| &s.flow)
    }

    /// Frees one slot: the oldest unconfirmed or expired flow. `false`: only confirmed live
    /// flows are left (among the first [`EXPIRED_PROBES`] confirmed ones).
    fn evict_one(&mut self, now: u32, t: &Timeouts, clients: &Clients) -> bool {
        while let Some(pair) = self.candidates.pop_front() {
            let Some(f) = self.current(pair) else { continue };
            if f.confirmed() && t.alive(f, now) {
                self.confirmed.push_back(pair);
                continue;
            }
            return self.remove(pair.0, clients);
        }
        for _ in 0..EXPIRED_PROBES.min(self.confirmed.len()) {
            let Some(pair) = self.confirmed.pop_front() else { break };
            let Some(f) = self.current(pair) else { continue };
            if f.confirmed() && t.alive(f, now) {
                self.confirmed.push_back(pair);
                continue;
            }
            return self.remove(pair.0, clients);
        }
        false
    }

    /// Drops stale pairs once the queues grew well past the flows they order.
    fn compact(&mut self) {
        if self.candidates.len() + self.confirmed.len() > 3 * self.len + 64 {
            let Shard { candidates, confirmed, slots, .. } = self;
            let fresh = |(i, g): &(u32, u32)| slots.get(*i as usize).is_some_and(|s| s.live && s.gen == *g);
            candidates.retain(fresh);
            confirmed.retain(fresh);
        }
    }
}

/// The connection-tracking table.
pub struct Conntrack {
    shards: Box<[Mutex<Shard>]>,
    clients: Clients,
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

/// What [`Conntrack::end_flows`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// UDP flows removed.
    pub flushed: usize,
    /// TCP flows turned into [`CtState::Ended`] tombstones.
    pub ended: usize,
}

fn shard_index(port: u16) -> usize {
    usize::from(port) % SHARDS
}

impl Conntrack {
    /// A table of at most `max` flows (rounded up to a multiple of [`SHARDS`]), of which one
    /// client address holds at most `per_client` (0: no quota).
    pub fn new(max: usize, timeouts: Timeouts, per_client: u32) -> Conntrack {
        let per_shard = max.div_ceil(SHARDS).max(1);
        Conntrack {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            clients: Clients::new(per_client),
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

    /// The quota of one client address (0: none).
    pub fn per_client(&self) -> u32 {
        self.clients.limit
    }

    /// Flows `ip` holds against its quota.
    pub fn client_flows(&self, ip: IpAddr) -> u32 {
        self.clients.count(ip)
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A worker that panicked mid-update cannot leave a shard worse than a lost entry.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds the flow `key` belongs to, travelling in `dir`; refreshes it, marks it replied
    /// (a reply) and advances its TCP state with `flags`. An expired entry is removed and not
    /// returned.
    pub fn lookup(&self, key: &FlowKey, dir: Dir, flags: u8, now: u32) -> Option<Flow> {
        let port = if dir == Dir::Orig { key.sport } else { key.dport };
        let mut shard = self.shard(shard_index(port));
        let idx = *shard.keys.get(key)?;
        let slot = shard.slots.get(idx as usize)?;
        if !self.timeouts.alive(&slot.flow, now) {
            if shard.remove(idx, &self.clients) {
                self.len.fetch_sub(1, Relaxed);
                self.counters.expired.fetch_add(1, Relaxed);
            }
            return None;
        }
        let slot = shard.slots.get_mut(idx as usize)?;
        let was = slot.flow.confirmed();
        slot.flow.advance(dir, flags);
        slot.flow.last_seen = now;
        let (flow, gen) = (slot.flow, slot.gen);
        if was && !flow.confirmed() {
            // Closing or closed: evictable again.
            shard.candidates.push_back((idx, gen));
        }
        Some(flow)
    }

    /// Tracks `flow`; `counted`: it takes one of its client's quota. When another worker
    /// tracked the same client flow first, that flow is returned instead, so both agree on the
    /// backend.
    pub fn insert(&self, flow: Flow, counted: bool) -> Result<Flow, InsertError> {
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
        if counted && !self.clients.acquire(flow.client.0) {
            self.counters.quota.fetch_add(1, Relaxed);
            return Err(InsertError::Quota);
        }
        if shard.len >= self.per_shard {
            if shard.evict_one(flow.last_seen, &self.timeouts, &self.clients) {
                self.len.fetch_sub(1, Relaxed);
                self.counters.evicted.fetch_add(1, Relaxed);
            } else {
                if counted {
                    self.clients.release(flow.client.0);
                }
                self.counters.full.fetch_add(1, Relaxed);
                return Err(InsertError::Full);
            }
        }
        let idx = match shard.free.pop() {
            Some(i) => {
                let s = &mut shard.slots[i as usize];
                s.flow = flow;
                s.live = true;
                s.counted = counted;
                i
            }
            None => {
                shard.slots.push(Slot { flow, gen: 0, live: true, counted });
                (shard.slots.len() - 1) as u32
            }
        };
        let gen = shard.slots[idx as usize].gen;
        shard.keys.insert(orig, idx);
        shard.keys.insert(reply, idx);
        shard.candidates.push_back((idx, gen));
        shard.len += 1;
        shard.compact();
        self.len.fetch_add(1, Relaxed);
        self.counters.created.fetch_add(1, Relaxed);
        Ok(flow)
    }

    /// Runs `f` on every live flow of every shard; `f` says whether to remove it.
    fn each(&self, mut f: impl FnMut(&mut Shard, u32) -> bool) -> usize {
        let mut n = 0;
        for i in 0..SHARDS {
            let mut shard = self.shard(i);
            let live: Vec<u32> =
                (0..shard.slots.len() as u32).filter(|&i| shard.slots[i as usize].live).collect();
            for idx in live {
                if f(&mut shard, idx) && shard.remove(idx, &self.clients) {
                    n += 1;
                }
            }
            shard.compact();
        }
        self.len.fetch_sub(n, Relaxed);
        n
    }

    /// Removes expired flows; reports which backends still have live ones.
    pub fn sweep(&self, now: u32) -> Sweep {
        let mut live = HashSet::new();
        let expired = self.each(|shard, idx| {
            let f = &shard.slots[idx as usize].flow;
            let alive = self.timeouts.alive(f, now);
            if alive {
                live.insert(pack(f.backend.0, f.backend.1, f.proto));
            }
            !alive
        });
        self.counters.expired.fetch_add(expired as u64, Relaxed);
        Sweep { expired, live_backends: live }
    }

    /// Every live flow matching `keep`, with seconds left before it expires.
    pub fn dump(&self, now: u32, keep: impl Fn(&Flow) -> bool) -> Vec<(Flow, u32)> {
        let mut out = Vec::new();
        for i in 0..SHARDS {
            let shard = self.shard(i);
            for slot in shard.slots.iter().filter(|s| s.live && keep(&s.flow)) {
                let f = slot.flow;
                let left = self.timeouts.timeout(&f).saturating_sub(now.saturating_sub(f.last_seen));
                out.push((f, left));
            }
        }
        out
    }

    /// Removes the flow whose original direction is `key` (a SYN reopening an ended flow).
    pub fn remove(&self, key: &FlowKey) -> bool {
        let mut shard = self.shard(shard_index(key.sport));
        let Some(&idx) = shard.keys.get(key) else { return false };
        let removed = shard.remove(idx, &self.clients);
        if removed {
            self.len.fetch_sub(1, Relaxed);
        }
        removed
    }

    /// Removes every flow matching `kill`; returns how many.
    pub fn flush(&self, kill: impl Fn(&Flow) -> bool) -> usize {
        self.each(|shard, idx| kill(&shard.slots[idx as usize].flow))
    }

    /// Ends the flows matching `gone` (their backend was removed): UDP flows and TCP flows
    /// that were closed anyway are removed, so the client's next datagram starts a new flow;
    /// other TCP flows become [`CtState::Ended`] for `tcp-closed` seconds, during which
    /// the service stage answers either side with a RST instead of forwarding.
    pub fn end_flows(&self, now: u32, gone: impl Fn(&Flow) -> bool) -> Ended {
        let mut ended = 0;
        let flushed = self.each(|shard, idx| {
            let slot = &mut shard.slots[idx as usize];
            let f = &mut slot.flow;
            if !gone(f) || f.state == CtState::Ended {
                return false;
            }
            if f.proto != PROTO_TCP || f.state == CtState::Closed {
                return true;
            }
            f.state = CtState::Ended;
            f.last_seen = now;
            ended += 1;
            let pair = (idx, slot.gen);
            shard.candidates.push_back(pair);
            false
        });
        self.counters.backend_flushed.fetch_add(flushed as u64, Relaxed);
        self.counters.backend_ended.fetch_add(ended as u64, Relaxed);
        Ended { flushed, ended }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::PROTO_UDP;
    use proptest::prelude::*;

    const SYN: u8 = tcp_flags::SYN;
    const ACK: u8 = tcp_flags::ACK;
    const SYNACK: u8 = tcp_flags::SYN | tcp_flags::ACK;

    fn client(n: u8) -> IpAddr {
        IpAddr::from([10, 244, 0, n])
    }

    fn flow_of(c: u8, client_port: u16, now: u32) -> Flow {
        Flow {
            proto: PROTO_TCP,
            client: (client(c), client_port),
            vip: (IpAddr::from([10, 96, 0, 10]), 80),
            backend: (IpAddr::from([10, 244, 0, 3]), 8080),
            snat: None,
            client_mac: [2, 0, 0, 0, 0, c],
            vip_mac: [2, 0, 0, 0, 0, 1],
            backend_mac: [2, 0, 0, 0, 0, 3],
            state: CtState::SynSent,
            replied: false,
            last_seen: now,
        }
    }

    fn flow(client_port: u16, now: u32) -> Flow {
        flow_of(2, client_port, now)
    }

    /// Inserts a TCP flow and completes its handshake: confirmed.
    fn confirmed(ct: &Conntrack, f: Flow) {
        ct.insert(f, true).unwrap();
        let r = ct.lookup(&f.reply_key(), Dir::Reply, SYNACK, f.last_seen).unwrap();
        assert!(r.confirmed());
    }

    #[test]
    fn both_directions_find_the_flow() {
        let ct = Conntrack::new(1024, Timeouts::default(), 0);
        let f = flow(40000, 1);
        ct.insert(f, true).unwrap();
        assert_eq!(ct.lookup(&f.orig_key(), Dir::Orig, SYN, 1).unwrap().backend, f.backend);
        let r = ct.lookup(&f.reply_key(), Dir::Reply, SYNACK, 2).unwrap();
        assert_eq!((r.state, r.replied), (CtState::Established, true));
        assert_eq!(ct.len(), 1);
        // Same client flow inserted again (another worker raced us): the first one wins.
        let mut other = f;
        other.backend = (IpAddr::from([10, 244, 0, 9]), 8080);
        assert_eq!(ct.insert(other, true).unwrap().backend, f.backend);
        assert_eq!(ct.len(), 1);
        assert_eq!(ct.client_flows(f.client.0), 1);
    }

    #[test]
    fn tcp_states_and_timeouts() {
        let t = Timeouts {
            tcp_syn: 5,
            tcp_established: 100,
            tcp_closing: 3,
            tcp_closed: 1,
            udp: 7,
            unreplied: 50,
        };
        let ct = Conntrack::new(1024, t, 0);
        let f = flow(40001, 0);
        ct.insert(f, true).unwrap();
        // SYN_SENT expires after 5 s without an answer.
        assert!(ct.lookup(&f.orig_key(), Dir::Orig, 0, 6).is_none());
        assert_eq!(ct.len(), 0);
        assert_eq!(ct.counters.expired.load(Relaxed), 1);
        assert_eq!(ct.client_flows(f.client.0), 0, "expiry gives the quota back");
        ct.insert(flow(40001, 10), true).unwrap();
        ct.lookup(&f.reply_key(), Dir::Reply, SYNACK, 10).unwrap();
        assert!(ct.lookup(&f.orig_key(), Dir::Orig, ACK, 90).is_some(), "established lives");
        let s = ct.lookup(&f.orig_key(), Dir::Orig, tcp_flags::FIN | ACK, 91).unwrap();
        assert_eq!(s.state, CtState::Closing);
        assert!(!s.confirmed(), "a closing flow is evictable");
        assert!(ct.lookup(&f.orig_key(), Dir::Orig, ACK, 95).is_none(), "closing is short");
        ct.insert(flow(40001, 100), true).unwrap();
        let s = ct.lookup(&f.reply_key(), Dir::Reply, tcp_flags::RST, 100).unwrap();
        assert_eq!(s.state, CtState::Closed);
        assert_eq!(ct.sweep(102).expired, 1);
        assert!(ct.is_empty());
        // UDP.
        let mut u = flow(5353, 0);
        u.proto = PROTO_UDP;
        u.state = Flow::initial_state(PROTO_UDP, 0);
        ct.insert(u, true).unwrap();
        assert!(ct.lookup(&u.orig_key(), Dir::Orig, 0, 7).is_some());
        let sw = ct.sweep(15);
        assert_eq!((sw.expired, ct.len()), (1, 0));
    }

    #[test]
    fn unreplied_flows_are_short_lived() {
        let t = Timeouts::default();
        let ct = Conntrack::new(1024, t, 0);
        // An ACK with no entry (a restart, or a forged segment): picked up, but unreplied.
        let mut f = flow(40002, 0);
        f.state = Flow::initial_state(PROTO_TCP, ACK);
        assert_eq!(f.state, CtState::Established);
        ct.insert(f, true).unwrap();
        let (d, left) = ct.dump(0, |_| true)[0];
        assert_eq!((d.replied, d.confirmed(), left), (false, false, t.unreplied));
        // Client packets alone never confirm it.
        assert!(ct.lookup(&f.orig_key(), Dir::Orig, ACK, t.unreplied).is_some());
        assert!(ct.lookup(&f.orig_key(), Dir::Orig, ACK, 2 * t.unreplied + 1).is_none());
        // The backend's answer confirms it: the established timeout from then on.
        ct.insert(f, true).unwrap();
        let r = ct.lookup(&f.reply_key(), Dir::Reply, ACK, 1).unwrap();
        assert!(r.confirmed());
        assert_eq!(ct.dump(1, |_| true)[0].1, t.tcp_established);
        // UDP: 30 s until an answer, 120 s after.
        let mut u = flow(5353, 0);
        u.proto = PROTO_UDP;
        u.state = CtState::Udp;
        ct.insert(u, true).unwrap();
        assert_eq!(ct.dump(0, |f| f.proto == PROTO_UDP)[0].1, t.unreplied);
        ct.lookup(&u.reply_key(), Dir::Reply, 0, 0).unwrap();
        assert_eq!(ct.dump(0, |f| f.proto == PROTO_UDP)[0].1, t.udp);
    }

    #[test]
    fn bounded_with_eviction() {
        // 64 shards × 2 = 128 flows at most; a "SYN flood" of 10,000 flows stays bounded.
        let ct = Conntrack::new(128, Timeouts::default(), 0);
        for p in 0..10_000u16 {
            ct.insert(flow(p, 1), true).unwrap();
        }
        assert_eq!(ct.len(), 128);
        assert_eq!(ct.counters.evicted.load(Relaxed), 10_000 - 128);
        assert_eq!(ct.counters.created.load(Relaxed), 10_000);
        assert_eq!(ct.client_flows(client(2)), 128, "eviction gives the quota back");
    }

    #[test]
    fn confirmed_flows_are_never_evicted() {
        // Two flows per shard: an old confirmed flow and a younger half-open one share shard 0.
        let ct = Conntrack::new(2 * SHARDS, Timeouts::default(), 0);
        let old = flow_of(7, 0, 1);
        confirmed(&ct, old);
        ct.insert(flow(64, 2), true).unwrap(); // same shard (port % 64 == 0), SYN_SENT
        ct.insert(flow(128, 3), true).unwrap(); // full: the half-open one goes, though younger
        assert!(ct.lookup(&old.orig_key(), Dir::Orig, ACK, 3).is_some());
        assert!(ct.lookup(&flow(64, 2).orig_key(), Dir::Orig, 0, 3).is_none());
        assert_eq!(ct.counters.evicted.load(Relaxed), 1);
        // Only confirmed flows left: a new flow is refused, nothing is evicted.
        let one = Conntrack::new(SHARDS, Timeouts::default(), 0);
        confirmed(&one, old);
        assert_eq!(one.insert(flow(64, 2), true), Err(InsertError::Full));
        assert_eq!(one.counters.full.load(Relaxed), 1);
        assert_eq!(one.client_flows(client(2)), 0, "a refused flow holds no quota");
        assert!(one.lookup(&old.orig_key(), Dir::Orig, ACK, 3).is_some());
        // Once it expired, or stopped being confirmed, it can go.
        one.lookup(&old.orig_key(), Dir::Orig, tcp_flags::FIN | ACK, 4).unwrap();
        assert!(one.insert(flow(64, 5), true).is_ok());
        let two = Conntrack::new(SHARDS, Timeouts::default(), 0);
        confirmed(&two, old);
        assert!(two.insert(flow(64, 2 + Timeouts::default().tcp_established), true).is_ok());
    }

    #[test]
    fn per_client_quota() {
        let ct = Conntrack::new(4096, Timeouts::default(), 10);
        for p in 0..10 {
            ct.insert(flow_of(66, p, 1), true).unwrap();
        }
        assert_eq!(ct.insert(flow_of(66, 10, 1), true), Err(InsertError::Quota));
        assert_eq!(ct.counters.quota.load(Relaxed), 1);
        // Others are not touched by it, and an uncounted client (the node) has no quota.
        ct.insert(flow_of(3, 10, 1), true).unwrap();
        ct.insert(flow_of(66, 11, 1), false).unwrap();
        assert_eq!((ct.client_flows(client(66)), ct.client_flows(client(3)), ct.len()), (10, 1, 12));
        // A flush gives the quota back.
        assert_eq!(ct.flush(|f| f.client.1 < 5 && f.client.0 == client(66)), 5);
        assert_eq!(ct.client_flows(client(66)), 5);
        assert!(ct.insert(flow_of(66, 20, 1), true).is_ok());
        ct.flush(|_| true);
        assert_eq!((ct.client_flows(client(66)), ct.len()), (0, 0));
    }

    #[test]
    fn removed_backends_end_their_flows() {
        let ct = Conntrack::new(1024, Timeouts::default(), 0);
        let tcp = flow(40000, 1);
        confirmed(&ct, tcp);
        let mut udp = flow(5353, 1);
        udp.proto = PROTO_UDP;
        udp.state = CtState::Udp;
        ct.insert(udp, true).unwrap();
        let mut other = flow(40001, 1);
        other.backend.0 = IpAddr::from([10, 244, 0, 4]);
        confirmed(&ct, other);
        let e = ct.end_flows(5, |f| f.backend.0 == tcp.backend.0);
        assert_eq!(e, Ended { flushed: 1, ended: 1 });
        assert!(ct.lookup(&udp.orig_key(), Dir::Orig, 0, 5).is_none(), "UDP flow gone");
        let g = ct.lookup(&tcp.orig_key(), Dir::Orig, ACK, 6).unwrap();
        assert_eq!(g.state, CtState::Ended);
        assert!(!g.confirmed());
        // Sticky whatever comes, and short-lived.
        let g = ct.lookup(&tcp.reply_key(), Dir::Reply, SYNACK, 7).unwrap();
        assert_eq!(g.state, CtState::Ended);
        assert_eq!(ct.end_flows(8, |f| f.backend.0 == tcp.backend.0), Ended::default());
        assert_eq!(ct.sweep(7 + Timeouts::default().tcp_closed + 1).expired, 1);
        let o = ct.lookup(&other.orig_key(), Dir::Orig, ACK, 20).unwrap();
        assert_eq!(o.state, CtState::Established, "other backends' flows untouched");
        assert_eq!(ct.counters.backend_ended.load(Relaxed), 1);
        assert_eq!(ct.counters.backend_flushed.load(Relaxed), 1);
    }

    #[test]
    fn hairpin_reply_key_collision() {
        let ct = Conntrack::new(1024, Timeouts::default(), 0);
        let gw = IpAddr::from([10, 244, 0, 1]);
        let mut a = flow(40000, 1);
        a.snat = Some((gw, 40000));
        ct.insert(a, true).unwrap();
        let mut b = flow(40000, 1);
        b.client = (IpAddr::from([10, 244, 0, 7]), 40000);
        b.snat = Some((gw, 40000));
        assert_eq!(ct.insert(b, true), Err(InsertError::ReplyKeyInUse));
        b.snat = Some((gw, 40000 + SHARDS as u16));
        assert!(ct.insert(b, true).is_ok());
    }

    #[test]
    fn dump_and_flush_filter() {
        let ct = Conntrack::new(1024, Timeouts::default(), 0);
        for p in 1..=10 {
            let mut f = flow(p, 1);
            if p % 2 == 0 {
                f.backend.0 = IpAddr::from([10, 244, 0, 4]);
            }
            ct.insert(f, true).unwrap();
        }
        let four = IpAddr::from([10, 244, 0, 4]);
        assert_eq!(ct.dump(1, |f| f.backend.0 == four).len(), 5);
        assert_eq!(ct.flush(|f| f.backend.0 == four), 5);
        assert_eq!(ct.len(), 5);
        assert_eq!(ct.sweep(2).live_backends.len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A new flow from client `c`, port `p`; `ack`: an ACK-only first packet.
        New {
            c: u8,
            p: u16,
            ack: bool,
        },
        /// The backend answers the `i`-th flow inserted (modulo).
        Reply(usize),
        /// The client of the `i`-th flow sends a FIN.
        Fin(usize),
        /// Time passes.
        Tick(u32),
        Sweep,
        /// Backend removed.
        End,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..4, 0u16..512, any::<bool>()).prop_map(|(c, p, ack)| Op::New { c, p, ack }),
            3 => any::<usize>().prop_map(Op::Reply),
            1 => any::<usize>().prop_map(Op::Fin),
            1 => (0u32..40).prop_map(Op::Tick),
            1 => Just(Op::Sweep),
            1 => Just(Op::End),
        ]
    }

    proptest! {
        /// Whatever the traffic: the table and every client stay within their bounds, the
        /// quota counts are exact, and a confirmed live flow is never evicted.
        #[test]
        fn bounds_and_confirmed_flows_hold(ops in proptest::collection::vec(op(), 1..300)) {
            let t = Timeouts::default();
            let (max, quota) = (4 * SHARDS, 40);
            let ct = Conntrack::new(max, t, quota);
            let mut now = 0u32;
            let mut made: Vec<Flow> = Vec::new();
            for op in ops {
                match op {
                    Op::New { c, p, ack } => {
                        let mut f = flow_of(c, p, now);
                        f.state = Flow::initial_state(PROTO_TCP, if ack { ACK } else { SYN });
                        let confirmed_before: Vec<Flow> = ct
                            .dump(now, |f| f.confirmed())
                            .into_iter()
                            .filter(|(f, _)| t.alive(f, now))
                            .map(|(f, _)| f)
                            .collect();
                        match ct.insert(f, true) {
                            Ok(_) => made.push(f),
                            Err(e) => prop_assert!(e != InsertError::ReplyKeyInUse),
                        }
                        for c in confirmed_before {
                            prop_assert!(ct.dump(now, |f| f.orig_key() == c.orig_key()).len() == 1);
                        }
                    }
                    Op::Reply(i) if !made.is_empty() => {
                        let f = made[i % made.len()];
                        ct.lookup(&f.reply_key(), Dir::Reply, SYNACK, now);
                    }
                    Op::Fin(i) if !made.is_empty() => {
                        let f = made[i % made.len()];
                        ct.lookup(&f.orig_key(), Dir::Orig, tcp_flags::FIN | ACK, now);
                    }
                    Op::Tick(dt) => now += dt,
                    Op::Sweep => {
                        ct.sweep(now);
                    }
                    Op::End => {
                        ct.end_flows(now, |f| f.client.1 % 3 == 0);
                    }
                    _ => {}
                }
                let all = ct.dump(now, |_| true);
                prop_assert_eq!(all.len(), ct.len());
                prop_assert!(ct.len() <= ct.max());
                for c in 0..4 {
                    let n = all.iter().filter(|(f, _)| f.client.0 == client(c)).count();
                    prop_assert_eq!(n as u32, ct.client_flows(client(c)));
                    prop_assert!(n as u32 <= quota);
                }
            }
        }
    }
}
