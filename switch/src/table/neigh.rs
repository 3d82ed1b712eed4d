//! Neighbours the switch has seen in ARP and IPv6 neighbour discovery: which MAC an address
//! answers to, and behind which port. The service stage needs a backend's MAC to send a DNATed
//! frame to it; local pods are found in the port table, backends on other nodes (behind the
//! uplink) through what ARP and NDP taught us.
//!
//! What a port may put here is bounded: the pipeline lets a pod port teach only its own
//! addresses, and every port, trusted ones included, holds at most `per_port` entries. The
//! table is 64 shards (chosen by address), each a short mutex, so learning on different
//! workers rarely meets; only ARP and NDP frames learn, lookups happen once per new service
//! flow. A learn costs O(1) even when the table is full: it is refused (and counted by the
//! caller), never a scan. Entries expire in [`Neighbours::sweep`], run once a second by the
//! control thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use crate::wire::Mac;

/// Shards of the table.
pub const SHARDS: usize = 64;

/// Default most entries one port may hold (`--neigh-per-port`).
pub const DEFAULT_PER_PORT: u32 = 4096;

/// Result of [`Neighbours::learn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighLearn {
    /// Already known behind this port (refreshed).
    Known,
    /// A new entry.
    New,
    /// The address moved from another port.
    Moved,
    /// Nothing to learn (unspecified or multicast address).
    Ignored,
    /// Refused: the port holds its quota.
    Quota,
    /// Refused: the table is at its bound.
    Full,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: Mac,
    port: u16,
    seen: u32,
}

/// The neighbour cache.
pub struct Neighbours {
    shards: Box<[Mutex<HashMap<IpAddr, Entry>>]>,
    /// Entries held per port number.
    per_port: Box<[AtomicU32]>,
    len: AtomicUsize,
    max: usize,
    quota: u32,
    aging: u32,
}

fn shard_of(ip: &IpAddr) -> usize {
    let x = match ip {
        IpAddr::V4(a) => u64::from(u32::from(*a)),
        IpAddr::V6(a) => {
            let v = u128::from(*a);
            (v as u64) ^ ((v >> 64) as u64)
        }
    };
    // Fibonacci hashing: the top bits of the product spread neighbouring addresses.
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SHARDS
}

impl Neighbours {
    /// A cache of at most `max` entries, at most `per_port` of them behind any one of ports
    /// `0..ports`, forgetting them `aging` seconds after they were last seen.
    pub fn new(max: usize, per_port: u32, ports: usize, aging: u32) -> Neighbours {
        let cap = max.div_ceil(SHARDS).min(1024);
        Neighbours {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::with_capacity(cap))).collect(),
            per_port: (0..ports.max(1)).map(|_| AtomicU32::new(0)).collect(),
            len: AtomicUsize::new(0),
            max,
            quota: per_port,
            aging,
        }
    }

    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.shards[shard_of(ip)].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one place in `port`'s quota, if it has one left.
    fn take(&self, port: u16) -> bool {
        let Some(c) = self.per_port.get(usize::from(port)) else { return false };
        if c.fetch_add(1, Relaxed) >= self.quota {
            c.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    fn release(&self, port: u16) {
        if let Some(c) = self.per_port.get(usize::from(port)) {
            c.fetch_sub(1, Relaxed);
        }
    }

    /// Records that `ip` is at `mac`, behind `port`. Which addresses a port may claim is the
    /// caller's check (a pod port: only its own).
    pub fn learn(&self, ip: IpAddr, mac: Mac, port: u16, now: u32) -> NeighLearn {
        if ip.is_unspecified() || ip.is_multicast() {
            return NeighLearn::Ignored; // ARP probes (RFC 5227) and DAD claim nothing yet
        }
        let mut m = self.shard(&ip);
        if let Some(e) = m.get_mut(&ip) {
            if e.port == port {
                e.mac = mac;
                e.seen = now;
                return NeighLearn::Known;
            }
            if !self.take(port) {
                return NeighLearn::Quota;
            }
            self.release(e.port);
            *e = Entry { mac, port, seen: now };
            return NeighLearn::Moved;
        }
        if !self.take(port) {
            return NeighLearn::Quota;
        }
        if self.len.fetch_add(1, Relaxed) >= self.max {
            self.len.fetch_sub(1, Relaxed);
            self.release(port);
            return NeighLearn::Full;
        }
        m.insert(ip, Entry { mac, port, seen: now });
        NeighLearn::New
    }

    fn fresh(&self, e: &Entry, now: u32) -> bool {
        now.saturating_sub(e.seen) <= self.aging
    }

    /// The MAC of `ip`, if known and fresh.
    pub fn lookup(&self, ip: IpAddr, now: u32) -> Option<Mac> {
        self.shard(&ip).get(&ip).filter(|e| self.fresh(e, now)).map(|e| e.mac)
    }

    /// Entries in the table (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries behind `port`.
    pub fn port_len(&self, port: u16) -> u32 {
        self.per_port.get(usize::from(port)).map_or(0, |c| c.load(Relaxed))
    }

    /// Removes the entries older than the aging time; returns how many.
    pub fn sweep(&self, now: u32) -> usize {
        self.remove_where(|e| !self.fresh(e, now))
    }

    /// Removes every entry behind `port` (when it is detached); returns how many.
    pub fn flush_port(&self, port: u16) -> usize {
        self.remove_where(|e| e.port == port)
    }

    fn remove_where(&self, pred: impl Fn(&Entry) -> bool) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut m = shard.lock().unwrap_or_else(|p| p.into_inner());
            m.retain(|_, e| {
                if !pred(e) {
                    return true;
                }
                self.release(e.port);
                removed += 1;
                false
            });
        }
        self.len.fetch_sub(removed, Relaxed);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn learn_lookup_age_and_sweep() {
        let n = Neighbours::new(16, 8, 4, 10);
        assert_eq!(n.learn(v4(1), [2, 0, 0, 0, 0, 1], 1, 0), NeighLearn::New);
        assert_eq!(n.learn(v4(1), [2, 0, 0, 0, 0, 9], 1, 3), NeighLearn::Known);
        assert_eq!(n.lookup(v4(1), 5), Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(n.lookup(v4(1), 14), None, "stale reads as absent");
        assert_eq!(n.len(), 1, "until the sweep");
        assert_eq!(n.sweep(14), 1);
        assert_eq!((n.len(), n.port_len(1)), (0, 0));
        assert_eq!(n.learn(IpAddr::from([0, 0, 0, 0]), [5; 6], 1, 20), NeighLearn::Ignored);
        assert_eq!(n.learn("ff02::1".parse().unwrap(), [5; 6], 1, 20), NeighLearn::Ignored);
        assert!(n.is_empty());
    }

    #[test]
    fn per_port_quota() {
        let n = Neighbours::new(100, 3, 4, 300);
        let learned = (0..10).filter(|i| n.learn(v4(*i), [2; 6], 1, 0) == NeighLearn::New).count();
        assert_eq!(learned, 3);
        assert_eq!(n.learn(v4(50), [2; 6], 1, 0), NeighLearn::Quota);
        assert_eq!(n.port_len(1), 3);
        // Another port is not affected, and known entries still refresh.
        assert_eq!(n.learn(v4(50), [3; 6], 2, 0), NeighLearn::New);
        assert_eq!(n.learn(v4(0), [2; 6], 1, 1), NeighLearn::Known);
        // A move needs room in the new port's quota, and frees one in the old port's.
        assert_eq!(n.learn(v4(0), [3; 6], 2, 1), NeighLearn::Moved);
        assert_eq!((n.port_len(1), n.port_len(2)), (2, 2));
        assert_eq!(n.learn(v4(20), [2; 6], 1, 1), NeighLearn::New);
        assert_eq!(n.learn(v4(21), [2; 6], 1, 1), NeighLearn::Quota);
        // Port numbers past the table hold nothing.
        assert_eq!(n.learn(v4(60), [2; 6], 9, 1), NeighLearn::Quota);
        // A detached port's entries go, and so does its count.
        assert_eq!(n.flush_port(1), 3);
        assert_eq!((n.port_len(1), n.len()), (0, 2));
        assert_eq!(n.learn(v4(30), [2; 6], 1, 1), NeighLearn::New);
    }

    #[test]
    fn full_table_refuses_in_constant_time() {
        let n = Neighbours::new(8, 100, 4, 10);
        for i in 0..8 {
            assert_eq!(n.learn(v4(i), [2; 6], 0, 0), NeighLearn::New);
        }
        // Full of entries, stale ones included: refused, not scanned.
        assert_eq!(n.learn(v4(100), [2; 6], 1, 50), NeighLearn::Full);
        assert_eq!((n.len(), n.port_len(1)), (8, 0), "the refusal keeps no quota");
        // The sweep makes room.
        assert_eq!(n.sweep(50), 8);
        assert_eq!(n.learn(v4(100), [2; 6], 1, 50), NeighLearn::New);
        assert_eq!(n.lookup(v4(100), 50), Some([2; 6]));
    }

    #[test]
    fn concurrent_learners_keep_counts_right() {
        let n = std::sync::Arc::new(Neighbours::new(10_000, 500, 8, 300));
        let threads: Vec<_> = (0..4u16)
            .map(|t| {
                let n = n.clone();
                std::thread::spawn(move || {
                    for i in 0..2000u32 {
                        n.learn(v4(i), [2; 6], t, 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: u32 = (0..4).map(|p| n.port_len(p)).sum();
        assert!((0..4).all(|p| n.port_len(p) <= 500));
        assert_eq!(total as usize, n.len());
        let len = n.len();
        assert_eq!(n.sweep(1000), len);
        assert!(n.is_empty());
        assert!((0..4).all(|p| n.port_len(p) == 0));
    }
}
