//! Session affinity (`ClientIP`): which backend a client IP was last sent to, per service, so
//! its next new flows land on the same backend while it keeps coming back within the timeout
//! (kube-proxy's `recent` match, refreshed by every new connection).
//!
//! Sharded by client address like [`super::conntrack`]; consulted only for new flows of
//! services with affinity. Bounded: when a shard is full, expired pins are dropped first, then
//! the new pin is simply not recorded (the flow still works, it just is not pinned).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::services::PackedKey;

const SHARDS: usize = 16;

/// A pinned backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pin {
    backend: (Ipv4Addr, u16),
    last: u32,
    timeout: u32,
}

/// One shard: (service, client) → pin.
type Shard = HashMap<(PackedKey, Ipv4Addr), Pin>;

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

    fn shard(&self, client: Ipv4Addr) -> std::sync::MutexGuard<'_, Shard> {
        let i = (u32::from(client) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend `client` is pinned to for `service`, if the pin is still fresh.
    pub fn get(&self, service: PackedKey, client: Ipv4Addr, now: u32) -> Option<(Ipv4Addr, u16)> {
        let shard = self.shard(client);
        let pin = shard.get(&(service, client))?;
        (now.saturating_sub(pin.last) <= pin.timeout).then_some(pin.backend)
    }

    /// Pins (or refreshes) `client` to `backend` for `service`.
    pub fn set(
        &self,
        service: PackedKey,
        client: Ipv4Addr,
        backend: (Ipv4Addr, u16),
        timeout: u32,
        now: u32,
    ) {
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
        let c = Ipv4Addr::new(10, 244, 0, 2);
        let b = (Ipv4Addr::new(10, 244, 0, 3), 8080);
        t.set(7, c, b, 10, 0);
        assert_eq!(t.get(7, c, 10), Some(b));
        assert_eq!(t.get(8, c, 10), None, "per service");
        assert_eq!(t.get(7, c, 11), None, "expired");
        t.set(7, c, b, 10, 11);
        assert_eq!(t.get(7, c, 20), Some(b), "refreshed");
        t.sweep(100);
        assert!(t.is_empty());
    }

    #[test]
    fn bounded() {
        let t = AffinityTable::new(SHARDS); // one pin per shard
        for i in 0..100u32 {
            t.set(1, Ipv4Addr::from(i), (Ipv4Addr::new(1, 1, 1, 1), 1), 1000, 0);
        }
        assert_eq!(t.len(), SHARDS);
        assert_eq!(t.full.load(Relaxed), 100 - SHARDS as u64);
    }
}
