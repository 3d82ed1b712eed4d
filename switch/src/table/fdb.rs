//! The forwarding database (FDB): MAC → port, learned from source addresses, aged out.
//!
//! Every worker learns and looks up concurrently, so the table is lock-free: a fixed array of
//! slots, each an `AtomicU64` packing the MAC (48 bits) and the port (16 bits), plus an
//! `AtomicU32` "last seen" in seconds. A MAC hashes to a window of [`PROBE`] consecutive slots;
//! learning claims an empty slot in the window with a compare-and-swap, and refreshes the
//! timestamp at most once a second so a busy flow does not bounce the cache line between cores.
//!
//! Size is bounded by `max_entries` (a full table counts `fdb_full` and the frame is flooded).
//! Expired entries read as absent; [`Fdb::sweep`], run by the control thread, clears them.
//! Two workers racing to learn the same new MAC may leave a duplicate slot for a while; both
//! point to the same port and the spare one ages out.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::wire::Mac;

/// Slots searched per MAC.
pub const PROBE: usize = 16;

/// Default aging time, seconds (as the Linux bridge and OVS).
pub const DEFAULT_AGING_SECS: u32 = 300;

/// Result of [`Fdb::learn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Already known on this port.
    Known,
    /// New entry.
    New,
    /// The MAC moved from another port.
    Moved {
        /// The port it was on.
        from: u16,
    },
    /// No room: the table is at its bound or the MAC's window is full.
    Full,
}

/// The table.
pub struct Fdb {
    keys: Box<[AtomicU64]>,
    seen: Box<[AtomicU32]>,
    mask: usize,
    len: AtomicUsize,
    max_entries: usize,
    aging_secs: u32,
}

const EMPTY: u64 = 0;

fn pack(mac: &Mac, port: u16) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(mac);
    b[6..].copy_from_slice(&port.to_le_bytes());
    u64::from_le_bytes(b)
}

fn unpack(v: u64) -> (Mac, u16) {
    let b = v.to_le_bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&b[..6]);
    (mac, u16::from_le_bytes([b[6], b[7]]))
}

fn mac_bits(v: u64) -> u64 {
    v & 0x0000_ffff_ffff_ffff
}

fn hash(mac: &Mac) -> usize {
    // The splitmix64 finalizer: every input bit affects every output bit, so MACs that differ
    // only in their last byte (the usual case) land in different windows.
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(mac);
    let mut h = u64::from_le_bytes(b);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)) as usize
}

impl Fdb {
    /// A table holding at most `max_entries` MACs, aging entries after `aging_secs`.
    pub fn new(max_entries: usize, aging_secs: u32) -> Fdb {
        let max_entries = max_entries.max(1);
        // Twice the bound, rounded to a power of two, keeps windows sparse.
        let slots = (max_entries * 2).next_power_of_two().max(PROBE);
        Fdb {
            keys: (0..slots).map(|_| AtomicU64::new(EMPTY)).collect(),
            seen: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            mask: slots - 1,
            len: AtomicUsize::new(0),
            max_entries,
            aging_secs: aging_secs.max(1),
        }
    }

    /// The size bound.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The aging time.
    pub fn aging_secs(&self) -> u32 {
        self.aging_secs
    }

    /// Entries in the table (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fresh(&self, slot: usize, now: u32) -> bool {
        now.wrapping_sub(self.seen[slot].load(Relaxed)) < self.aging_secs
    }

    fn window(&self, mac: &Mac) -> impl Iterator<Item = usize> + '_ {
        let start = hash(mac);
        (0..PROBE).map(move |i| (start + i) & self.mask)
    }

    /// The port `mac` was last seen on, unless unknown or aged out. `now` is seconds on any
    /// monotonic clock shared by all callers.
    #[inline]
    pub fn lookup(&self, mac: &Mac, now: u32) -> Option<u16> {
        let want = pack(mac, 0);
        for slot in self.window(mac) {
            let v = self.keys[slot].load(Relaxed);
            if v != EMPTY && mac_bits(v) == want && self.fresh(slot, now) {
                return Some(unpack(v).1);
            }
        }
        None
    }

    /// Records that `mac` was seen on `port` at `now`.
    #[inline]
    pub fn learn(&self, mac: &Mac, port: u16, now: u32) -> Learned {
        let want = pack(mac, port);
        let mut free = None;
        for slot in self.window(mac) {
            let v = self.keys[slot].load(Relaxed);
            if v == EMPTY {
                free.get_or_insert(slot);
                continue;
            }
            if mac_bits(v) != mac_bits(want) {
                continue;
            }
            let was_fresh = self.fresh(slot, now);
            if self.seen[slot].load(Relaxed) != now {
                self.seen[slot].store(now, Relaxed);
            }
            if v == want {
                return Learned::Known;
            }
            // Same MAC, other port: a move (or a stale entry being reused).
            let from = unpack(v).1;
            return match self.keys[slot].compare_exchange(v, want, Relaxed, Relaxed) {
                Ok(_) if was_fresh => Learned::Moved { from },
                Ok(_) => Learned::New,
                // Another worker changed the slot at the same moment; its view wins this round.
                Err(_) => Learned::Known,
            };
        }
        let Some(slot) = free else { return Learned::Full };
        if self.len.fetch_add(1, Relaxed) >= self.max_entries {
            self.len.fetch_sub(1, Relaxed);
            return Learned::Full;
        }
        self.seen[slot].store(now, Relaxed);
        match self.keys[slot].compare_exchange(EMPTY, want, Relaxed, Relaxed) {
            Ok(_) => Learned::New,
            Err(_) => {
                // Lost the slot to a concurrent learner; the next frame will learn again.
                self.len.fetch_sub(1, Relaxed);
                Learned::Known
            }
        }
    }

    /// Removes entries older than the aging time; returns how many.
    pub fn sweep(&self, now: u32) -> usize {
        self.remove_where(|slot, _| !self.fresh(slot, now))
    }

    /// Removes every entry pointing at `port` (when it is detached); returns how many.
    pub fn flush_port(&self, port: u16) -> usize {
        self.remove_where(|_, p| p == port)
    }

    fn remove_where(&self, mut pred: impl FnMut(usize, u16) -> bool) -> usize {
        let mut removed = 0;
        for slot in 0..self.keys.len() {
            let v = self.keys[slot].load(Relaxed);
            if v != EMPTY
                && pred(slot, unpack(v).1)
                && self.keys[slot].compare_exchange(v, EMPTY, Relaxed, Relaxed).is_ok()
            {
                self.len.fetch_sub(1, Relaxed);
                removed += 1;
            }
        }
        removed
    }

    /// Live entries as (MAC, port, age in seconds), sorted by MAC.
    pub fn dump(&self, now: u32) -> Vec<(Mac, u16, u32)> {
        let mut out: Vec<(Mac, u16, u32)> = (0..self.keys.len())
            .filter_map(|slot| {
                let v = self.keys[slot].load(Relaxed);
                (v != EMPTY && self.fresh(slot, now)).then(|| {
                    let (mac, port) = unpack(v);
                    (mac, port, now.wrapping_sub(self.seen[slot].load(Relaxed)))
                })
            })
            .collect();
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> Mac {
        let b = i.to_be_bytes();
        [0x02, 0x42, b[0], b[1], b[2], b[3]]
    }

    #[test]
    fn learn_lookup_move() {
        let fdb = Fdb::new(64, 300);
        assert_eq!(fdb.lookup(&mac(1), 10), None);
        assert_eq!(fdb.learn(&mac(1), 3, 10), Learned::New);
        assert_eq!(fdb.learn(&mac(1), 3, 11), Learned::Known);
        assert_eq!(fdb.lookup(&mac(1), 11), Some(3));
        assert_eq!(fdb.learn(&mac(1), 5, 12), Learned::Moved { from: 3 });
        assert_eq!(fdb.lookup(&mac(1), 12), Some(5));
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn ages_out_and_sweeps() {
        let fdb = Fdb::new(64, 300);
        fdb.learn(&mac(1), 1, 100);
        fdb.learn(&mac(2), 2, 350);
        assert_eq!(fdb.lookup(&mac(1), 399), Some(1));
        assert_eq!(fdb.lookup(&mac(1), 400), None);
        assert_eq!(fdb.sweep(400), 1);
        assert_eq!(fdb.len(), 1);
        assert_eq!(fdb.dump(400), vec![(mac(2), 2, 50)]);
        // An aged entry relearned on another port is new, not a move.
        fdb.learn(&mac(2), 2, 350);
        assert_eq!(fdb.learn(&mac(2), 7, 700), Learned::New);
    }

    #[test]
    fn bounded() {
        let fdb = Fdb::new(10, 300);
        let learned = (0..100).filter(|i| fdb.learn(&mac(*i), 1, 1) == Learned::New).count();
        assert_eq!(learned, 10);
        assert_eq!(fdb.len(), 10);
        assert_eq!(fdb.learn(&mac(1000), 1, 1), Learned::Full);
        assert_eq!(fdb.flush_port(1), 10);
        assert!(fdb.is_empty());
        assert_eq!(fdb.learn(&mac(1000), 1, 1), Learned::New);
    }

    #[test]
    fn flush_port_only_that_port() {
        let fdb = Fdb::new(100, 300);
        for i in 0..20 {
            fdb.learn(&mac(i), (i % 2) as u16, 1);
        }
        assert_eq!(fdb.flush_port(0), 10);
        assert!((0..20).all(|i| fdb.lookup(&mac(i), 1) == if i % 2 == 1 { Some(1) } else { None }));
    }

    #[test]
    fn concurrent_learning_agrees() {
        let fdb = std::sync::Arc::new(Fdb::new(4096, 300));
        let threads: Vec<_> = (0..4u16)
            .map(|t| {
                let fdb = fdb.clone();
                std::thread::spawn(move || {
                    for round in 0..50 {
                        for i in 0..1000 {
                            fdb.learn(&mac(i), t, round);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for i in 0..1000 {
            assert!(fdb.lookup(&mac(i), 49).is_some(), "mac {i} lost");
        }
        assert!(fdb.len() <= 4096);
        assert_eq!(fdb.dump(49).len(), 1000);
    }
}
