//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size `M`
//! in which each backend owns about `M·wᵢ/Σw` slots. A new flow takes the backend in slot
//! `hash(flow) mod M`. When a backend is added or removed, only about `1/N` of the slots
//! change owner, so most new flows keep landing where they did.
//!
//! Size: the smallest prime ≥ max(251, 100·P), P being N rounded up to a power of two. At
//! least 100 slots per backend keep the shares within about 1 % of the weights, 251 keeps
//! small services even, and rounding N up means the size (and with it every slot's
//! permutation) only changes when N crosses a power of two: adding an 11th backend to 10
//! keeps the table size, so only ~1/11 of the slots move. (Google uses 65537 for every
//! service; per-service sizing keeps 10,000 ten-backend services at ~32 MB.)
//!
//! Every node computes the same table from the same backends (the permutations hash only the
//! backend address), so a flow picks the same backend whichever node it arrives on.

use std::net::IpAddr;

/// Slot value for "no backend".
pub const EMPTY: u16 = u16::MAX;

/// Most backends one service may have (slot values are `u16`).
pub const MAX_BACKENDS: usize = (u16::MAX - 1) as usize;

/// 64-bit finaliser (splitmix64): a fixed, fast, well-mixed hash, the same on every node.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Hash of a backend's identity (address and port).
pub fn backend_hash(ip: &IpAddr, port: u16, seed: u64) -> u64 {
    let a = match ip {
        IpAddr::V4(v) => u64::from(u32::from(*v)),
        IpAddr::V6(v) => {
            let x = u128::from(*v);
            mix64(x as u64) ^ (x >> 64) as u64
        }
    };
    mix64(mix64(a ^ seed) ^ u64::from(port))
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Table size for `n` backends: the smallest prime ≥ max(251, 100·n.next_power_of_two()).
pub fn table_size(n: usize) -> usize {
    let mut m = (100 * n.max(1).next_power_of_two()).max(251);
    while !is_prime(m) {
        m += 1;
    }
    m
}

/// Builds the lookup table for backends given as `(hash, weight)`; a weight of 0 gets no slot.
/// Every slot is filled when at least one weight is non-zero, else every slot is [`EMPTY`].
pub fn build(backends: &[(u64, u16)], size: usize) -> Vec<u16> {
    let mut table = vec![EMPTY; size];
    let n = backends.len().min(MAX_BACKENDS);
    let wmax = backends.iter().take(n).map(|b| u32::from(b.1)).max().unwrap_or(0);
    if n == 0 || wmax == 0 || size < 2 {
        return table;
    }
    let m = size as u64;
    // Each backend walks its permutation offset, offset+skip, ... (mod m); keeping the current
    // position and subtracting m on overflow avoids a division per probe.
    let mut pos: Vec<u64> = Vec::with_capacity(n);
    let mut skip: Vec<u64> = Vec::with_capacity(n);
    for (h, _) in backends.iter().take(n) {
        pos.push(h % m);
        skip.push((mix64(*h) % (m - 1)) + 1);
    }
    let mut filled = 0;
    let mut round: u64 = 0;
    while filled < size {
        round += 1;
        for i in 0..n {
            // Weighted turns: backend i plays in round r when ⌊r·wᵢ/wmax⌋ grows.
            let w = u64::from(backends[i].1);
            if w == 0 || (round * w) / u64::from(wmax) == ((round - 1) * w) / u64::from(wmax) {
                continue;
            }
            loop {
                let slot = pos[i] as usize;
                pos[i] += skip[i];
                if pos[i] >= m {
                    pos[i] -= m;
                }
                if table[slot] == EMPTY {
                    table[slot] = i as u16;
                    filled += 1;
                    break;
                }
            }
            if filled == size {
                break;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize, from: u32) -> Vec<(u64, u16)> {
        (from..from + n as u32)
            .map(|i| (backend_hash(&IpAddr::from([10, 244, (i >> 8) as u8, i as u8]), 8080, 0), 1))
            .collect()
    }

    fn shares(t: &[u16], n: usize) -> Vec<f64> {
        let mut c = vec![0usize; n];
        for &s in t {
            c[usize::from(s)] += 1;
        }
        c.iter().map(|&x| x as f64 / t.len() as f64).collect()
    }

    #[test]
    fn sizes_are_primes() {
        assert_eq!(table_size(0), 251);
        assert_eq!(table_size(1), 251);
        assert_eq!(table_size(3), 401);
        assert_eq!(table_size(10), 1601);
        assert_eq!(table_size(11), table_size(16), "size is stable between powers of two");
        assert!(is_prime(table_size(777)));
    }

    #[test]
    fn even_within_a_few_percent() {
        for n in [1usize, 2, 3, 5, 10, 50] {
            let t = build(&backends(n, 1), table_size(n));
            assert!(t.iter().all(|&s| s != EMPTY));
            for s in shares(&t, n) {
                let ideal = 1.0 / n as f64;
                assert!((s - ideal).abs() <= ideal * 0.05 + 0.002, "n={n}: share {s} vs {ideal}");
            }
        }
    }

    #[test]
    fn weights_are_respected() {
        let mut b = backends(3, 1);
        b[0].1 = 3; // 3:1:1
        b[2].1 = 1;
        let t = build(&b, table_size(3));
        let s = shares(&t, 3);
        assert!((s[0] - 0.6).abs() < 0.02, "{s:?}");
        assert!((s[1] - 0.2).abs() < 0.02, "{s:?}");
        b[1].1 = 0;
        let t = build(&b, table_size(3));
        assert!(t.iter().all(|&x| x != 1), "weight 0 gets nothing");
        let none = build(&[(1, 0), (2, 0)], 251);
        assert!(none.iter().all(|&x| x == EMPTY));
        assert!(build(&[], 251).iter().all(|&x| x == EMPTY));
    }

    #[test]
    fn minimal_disruption() {
        let n = 10;
        let size = table_size(n);
        assert_eq!(size, table_size(n + 1));
        let before = backends(n, 1);
        let mut after = before.clone();
        after.push(backends(1, 100)[0]);
        let (t0, t1) = (build(&before, size), build(&after, size));
        let moved = t0.iter().zip(&t1).filter(|(a, b)| a != b).count() as f64 / size as f64;
        // Ideal: 1/11 of the slots move to the new backend; Maglev stays close to that.
        assert!(moved < 0.15, "adding one of 11 backends moved {moved}");
        // Removing one: only its slots and a few others change.
        let mut fewer = before.clone();
        fewer.remove(3);
        let t2 = build(&fewer, size);
        let changed = t0
            .iter()
            .zip(&t2)
            .filter(|(a, b)| {
                let a_id = before[usize::from(**a)].0;
                let b_id = fewer[usize::from(**b)].0;
                a_id != b_id
            })
            .count() as f64
            / size as f64;
        assert!(changed < 0.15, "removing one of 10 backends changed {changed}");
    }
}
