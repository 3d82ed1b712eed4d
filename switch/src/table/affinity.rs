//! Session affinity (`ClientIP`): which backend a client IP was last sent to, per service, so
//! its next new flows land on the same backend while it keeps coming back within the timeout
//! (kube-proxy's `recent` match, refreshed by every new connection).
//!
//! Sharded by client address like [`super::conntrack`]; consulted only for new flows of
//! services with affinity. Bounded: when a shard is full, expired pins are dropped first, then
//! the new pin is simply not recorded (the flow still works, it just is not pinned).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::services::PackedKey;

const SHARDS: usize = 16;

/// A pinned backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pin {
    backend: (IpAddr, u16),
    last: u32,
    timeout: u32,
}

/// One shard: (service, client) → pin.
type Shard = HashMap<(PackedKey, IpAddr), Pin>;

/// The affinity table.
pub struct AffinityTable {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Pins that could not be recorded because the table was full.
    pub full: AtomicU64,
}

impl AffinityTable {
    /// A table of at most `max` pins.
    pub fn new(max: usize) -> AffinityTable {
        AffinityTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max.div_ceil(SHARDS).max(1),
            full: AtomicU64::new(0),
        }
    }

    fn shard(&self, client: IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        let low = match client {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(a) => a.octets()[15],
        };
        let i = usize::from(low) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend `client` is pinned to for `service`, if the pin is still fresh.
    pub fn get(&self, service: PackedKey, client: IpAddr, now: u32) -> Option<(IpAddr, u16)> {
        let shard = self.shard(client);
        let pin = shard.get(&(service, client))?;
        (now.saturating_sub(pin.last) <= pin.timeout).then_some(pin.backend)
    }

    /// Pins (or refreshes) `client` to `backend` for `service`.
    pub fn set(&self, service: PackedKey, client: IpAddr, backend: (IpAddr, u16), timeout: u32, now: u32) {
        let mut shard = self.shard(client);
        if shard.len() >= self.per_shard && !shard.contains_key(&(service, client)) {
            shard.retain(|_, p| now.saturating_sub(p.last) <= p.timeout);
            if shard.len() >= self.per_shard {
                self.full.fetch_add(1, Relaxed);
                return;
            }
        }
        shard.insert((service, client), Pin { backend, last: now, timeout });
    }

    /// Drops expired pins.
    pub fn sweep(&self, now: u32) {
        for s in self.shards.iter() {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            s.retain(|_, p| now.saturating_sub(p.last) <= p.timeout);
        }
    }

    /// Pins held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    /// Whether no pin is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_expire_and_refresh() {
        let t = AffinityTable::new(64);
        let c = IpAddr::from([10, 244, 0, 2]);
        let b = (IpAddr::from([10, 244, 0, 3]), 8080);
        let (s7, s8) = ((IpAddr::from([10, 96, 0, 7]), 80, 6), (IpAddr::from([10, 96, 0, 8]), 80, 6));
        t.set(s7, c, b, 10, 0);
        assert_eq!(t.get(s7, c, 10), Some(b));
        assert_eq!(t.get(s8, c, 10), None, "per service");
        assert_eq!(t.get(s7, c, 11), None, "expired");
        t.set(s7, c, b, 10, 11);
        assert_eq!(t.get(s7, c, 20), Some(b), "refreshed");
        t.sweep(100);
        assert!(t.is_empty());
    }

    #[test]
    fn bounded() {
        let t = AffinityTable::new(SHARDS); // one pin per shard
        let s = (IpAddr::from([10, 96, 0, 1]), 80, 6);
        for i in 0..100u32 {
            t.set(s, IpAddr::from(i.to_be_bytes()), (IpAddr::from([1, 1, 1, 1]), 1), 1000, 0);
        }
        assert_eq!(t.len(), SHARDS);
        assert_eq!(t.full.load(Relaxed), 100 - SHARDS as u64);
    }
}
