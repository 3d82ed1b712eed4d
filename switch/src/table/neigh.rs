//! Neighbours the switch has seen in ARP and IPv6 neighbour discovery: which MAC an address
//! answers to. The service
//! stage needs a backend's MAC to send a DNATed frame to it; local pods are found in the port
//! table, backends on other nodes (behind the uplink) through what ARP taught us.
//!
//! Only ARP and NDP frames write here (rare), so one mutex is enough; lookups happen once per new
//! service flow, not per frame.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::wire::Mac;

/// The neighbour cache.
pub struct Neighbours {
    map: Mutex<HashMap<IpAddr, (Mac, u32)>>,
    max: usize,
    aging: u32,
}

impl Neighbours {
    /// A cache of at most `max` entries forgetting them after `aging` seconds.
    pub fn new(max: usize, aging: u32) -> Neighbours {
        Neighbours { map: Mutex::new(HashMap::new()), max, aging }
    }

    /// Records that `ip` is at `mac`.
    pub fn learn(&self, ip: IpAddr, mac: Mac, now: u32) {
        if ip.is_unspecified() || ip.is_multicast() {
            return; // ARP probes (RFC 5227) and DAD claim nothing yet
        }
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= self.max && !m.contains_key(&ip) {
            let aging = self.aging;
            m.retain(|_, (_, t)| now.saturating_sub(*t) <= aging);
            if m.len() >= self.max {
                return;
            }
        }
        m.insert(ip, (mac, now));
    }

    /// The MAC of `ip`, if known and fresh.
    pub fn lookup(&self, ip: IpAddr, now: u32) -> Option<Mac> {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&ip).filter(|(_, t)| now.saturating_sub(*t) <= self.aging).map(|(mac, _)| *mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_age_and_bound() {
        let n = Neighbours::new(2, 10);
        let a = IpAddr::from([10, 0, 0, 1]);
        n.learn(a, [2, 0, 0, 0, 0, 1], 0);
        assert_eq!(n.lookup(a, 5), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(n.lookup(a, 11), None);
        n.learn(IpAddr::from([10, 0, 0, 2]), [2; 6], 20);
        n.learn(IpAddr::from([10, 0, 0, 3]), [3; 6], 20); // the stale one makes room
        n.learn(IpAddr::from([10, 0, 0, 4]), [4; 6], 20); // full of fresh ones: not recorded
        assert_eq!(n.lookup(IpAddr::from([10, 0, 0, 4]), 20), None);
        n.learn(IpAddr::from([0, 0, 0, 0]), [5; 6], 20);
        assert_eq!(n.lookup(IpAddr::from([0, 0, 0, 0]), 20), None);
    }
}
