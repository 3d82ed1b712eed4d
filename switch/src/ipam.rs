//! Address allocation: ranges and range sets with host-local's rules, and the choice of free
//! addresses. Pure: what is in use and where the last allocation ended come from the control
//! plane ([`crate::control::ipam`]), which owns the records.
//!
//! Rules, as host-local's (containernetworking/plugins `ipam/host-local`):
//! - a range is a subnet with an optional `rangeStart`, `rangeEnd` and `gateway`; by default
//!   the range starts after the network address and ends at the last address (IPv4: before
//!   the broadcast address), and the gateway is the first address;
//! - one address is allocated from each range set; the ranges of a set are tried in order;
//! - allocation is round robin: it continues after the set's last allocated address, so a
//!   released address is not handed out again at once (its old owner's neighbour entries and
//!   flows have time to go);
//! - the gateway, the network and broadcast addresses, and every address in use are never
//!   handed out;
//! - a requested address must lie in a range of some set and be free; that set then gives no
//!   other address.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use tapway_api::IpamRange;

/// Why an allocation cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// A range of the request is not usable.
    #[error("ipam range {range}: {why}")]
    BadRange {
        /// The range as given.
        range: String,
        /// Why.
        why: String,
    },
    /// A requested address is in none of the ranges.
    #[error("requested address {0} is in none of the ranges")]
    NotInRange(IpAddr),
    /// A requested address is a gateway.
    #[error("requested address {0} is the gateway of its range")]
    Gateway(IpAddr),
    /// Two requested addresses fall in the same range set.
    #[error("requested addresses {0} and {1} are in the same range set (one address per set)")]
    SameSet(IpAddr, IpAddr),
    /// A requested address is in use.
    #[error("requested address {0} is not available: it is in use")]
    InUse(IpAddr),
    /// No free address is left in a range set.
    #[error("no free address left in range set {0}")]
    Exhausted(String),
}

/// An address as a number: IPv4 in the low 32 bits.
fn num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of family `v4` numbered `n` (`n` fits the family).
fn addr(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// One range: addresses `start..=end` of `subnet`, whose `gateway` is never handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (network address, prefix): what allocated addresses get their prefix from.
    pub subnet: IpNet,
    /// First address handed out.
    pub start: IpAddr,
    /// Last address handed out.
    pub end: IpAddr,
    /// The gateway.
    pub gateway: IpAddr,
}

impl Range {
    /// The whole of `subnet` with host-local's defaults, and `gateway` unless none is given.
    pub fn of_subnet(subnet: IpNet, gateway: Option<IpAddr>) -> Result<Range, IpamError> {
        Range::parse(&IpamRange {
            subnet: subnet.to_string(),
            gateway: gateway.map(|g| g.to_string()),
            ..Default::default()
        })
    }

    /// A range as the ipam section gives it, checked and with its defaults filled in.
    pub fn parse(r: &IpamRange) -> Result<Range, IpamError> {
        let bad = |why: String| IpamError::BadRange { range: r.subnet.clone(), why };
        let given: IpNet = r.subnet.parse().map_err(|_| bad("subnet is not a CIDR".into()))?;
        let subnet = given.trunc();
        let v4 = subnet.addr().is_ipv4();
        if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
            return Err(bad("the subnet is too small to allocate from".into()));
        }
        let network = num(subnet.network());
        let last = num(subnet.broadcast());
        let usable_end = if v4 { last - 1 } else { last };
        let ip = |field: &str, v: &Option<String>, default: u128| -> Result<u128, IpamError> {
            let Some(s) = v else { return Ok(default) };
            let a: IpAddr = s.parse().map_err(|_| bad(format!("{field} {s:?} is not an address")))?;
            let n = num(a);
            if a.is_ipv4() != v4 || n <= network || n > usable_end {
                return Err(bad(format!("{field} {a} is not a usable address of {subnet}")));
            }
            Ok(n)
        };
        let start = ip("rangeStart", &r.range_start, network + 1)?;
        let end = ip("rangeEnd", &r.range_end, usable_end)?;
        let gateway = ip("gateway", &r.gateway, network + 1)?;
        if start > end {
            return Err(bad(format!("rangeStart {} is after rangeEnd {}", addr(v4, start), addr(v4, end))));
        }
        Ok(Range { subnet, start: addr(v4, start), end: addr(v4, end), gateway: addr(v4, gateway) })
    }

    /// Whether `ip` is one of the range's addresses (`start..=end`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4() && (num(self.start)..=num(self.end)).contains(&num(ip))
    }

    /// Addresses that can be handed out: `start..=end` less the gateway if it is among them.
    pub fn size(&self) -> u128 {
        let n = num(self.end) - num(self.start) + 1;
        n - u128::from(self.contains(self.gateway))
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && num(self.start) <= num(other.end)
            && num(other.start) <= num(self.end)
    }
}

/// Ranges one address is allocated from: all of one family, none overlapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    /// A set of `ranges` (at least one), checked.
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, IpamError> {
        let Some(first) = ranges.first() else {
            return Err(IpamError::BadRange { range: "[]".into(), why: "a range set has no ranges".into() });
        };
        let v4 = first.start.is_ipv4();
        for (i, r) in ranges.iter().enumerate() {
            let bad = |why: String| IpamError::BadRange { range: r.subnet.to_string(), why };
            if r.start.is_ipv4() != v4 {
                return Err(bad("a range set mixes address families".into()));
            }
            if let Some(o) = ranges[..i].iter().find(|o| o.overlaps(r)) {
                return Err(bad(format!("overlaps range {} of the same set", o.subnet)));
            }
        }
        Ok(RangeSet { ranges })
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// Whether the set's addresses are IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.ranges.first().is_some_and(|r| r.start.is_ipv4())
    }

    /// The range holding `ip`, if any.
    pub fn range_of(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    /// The set's name: its ranges' subnets and bounds. Keys the round-robin position.
    pub fn key(&self) -> String {
        let parts: Vec<String> =
            self.ranges.iter().map(|r| format!("{}-{}@{}", r.start, r.end, r.subnet)).collect();
        parts.join(",")
    }

    /// Addresses that can be handed out in all.
    pub fn size(&self) -> u128 {
        self.ranges.iter().map(Range::size).sum()
    }

    /// The first free address after `last` (or from the start when `last` is not in the
    /// set), walking the ranges in order and wrapping around. `taken` says whether an address
    /// is in use. Looks at no more addresses than are taken plus one per gateway plus one, so
    /// a huge IPv6 range costs what a small one does.
    fn next_free(
        &self,
        last: Option<IpAddr>,
        taken: &dyn Fn(IpAddr) -> bool,
        in_use: usize,
    ) -> Option<(&Range, IpAddr)> {
        let v4 = self.is_ipv4();
        let (mut ri, mut n) =
            match last.and_then(|l| self.ranges.iter().position(|r| r.contains(l)).map(|i| (i, l))) {
                Some((i, l)) => (i, num(l)),
                // Start just before the first range's first address.
                None => (self.ranges.len() - 1, num(self.ranges[self.ranges.len() - 1].end)),
            };
        let budget = self.size().min(in_use as u128 + self.ranges.len() as u128 + 1);
        let mut looked = 0u128;
        while looked < budget {
            let r = &self.ranges[ri];
            if n >= num(r.end) {
                ri = (ri + 1) % self.ranges.len();
                n = num(self.ranges[ri].start);
            } else {
                n += 1;
            }
            let r = &self.ranges[ri];
            let a = addr(v4, n);
            if a == r.gateway {
                continue;
            }
            looked += 1;
            if !taken(a) {
                return Some((r, a));
            }
        }
        None
    }
}

/// One address allocated: with its subnet's prefix, and its range's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    /// The address, with the prefix of its subnet.
    pub address: IpNet,
    /// The gateway of its range.
    pub gateway: IpAddr,
}

/// Allocates one address from each of `sets`, the `requested` ones first, none of which is in
/// `in_use`. `last` holds each set's last allocated address (by [`RangeSet::key`]) and is
/// moved on. Nothing is changed on error.
pub fn allocate(
    sets: &[RangeSet],
    in_use: &HashSet<IpAddr>,
    last: &mut BTreeMap<String, IpAddr>,
    requested: &[IpAddr],
) -> Result<Vec<Allocated>, IpamError> {
    let mut chosen: Vec<Option<Allocated>> = vec![None; sets.len()];
    for &ip in requested {
        let (i, r) = sets
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.range_of(ip).map(|r| (i, r)))
            .ok_or(IpamError::NotInRange(ip))?;
        if let Some(other) = &chosen[i] {
            return Err(IpamError::SameSet(other.address.addr(), ip));
        }
        if ip == r.gateway {
            return Err(IpamError::Gateway(ip));
        }
        if in_use.contains(&ip) {
            return Err(IpamError::InUse(ip));
        }
        chosen[i] = Some(Allocated { address: with_prefix(ip, &r.subnet), gateway: r.gateway });
    }
    let mut moved = Vec::new();
    for (set, slot) in sets.iter().zip(chosen.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        let key = set.key();
        let taken = |a: IpAddr| in_use.contains(&a);
        let (r, a) = set.next_free(last.get(&key).copied(), &taken, in_use.len()).ok_or_else(|| {
            let bounds: Vec<String> = set.ranges.iter().map(|r| format!("{}-{}", r.start, r.end)).collect();
            IpamError::Exhausted(bounds.join(","))
        })?;
        *slot = Some(Allocated { address: with_prefix(a, &r.subnet), gateway: r.gateway });
        moved.push((key, a));
    }
    last.extend(moved);
    Ok(chosen.into_iter().flatten().collect())
}

fn with_prefix(ip: IpAddr, subnet: &IpNet) -> IpNet {
    // The prefix comes from a parsed subnet of the same family: always valid.
    IpNet::new(ip, subnet.prefix_len()).unwrap_or_else(|_| IpNet::from(ip))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(
        subnet: &str,
        start: Option<&str>,
        end: Option<&str>,
        gw: Option<&str>,
    ) -> Result<Range, IpamError> {
        Range::parse(&IpamRange {
            subnet: subnet.into(),
            range_start: start.map(Into::into),
            range_end: end.map(Into::into),
            gateway: gw.map(Into::into),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(ranges: &[Range]) -> RangeSet {
        RangeSet::new(ranges.to_vec()).unwrap()
    }

    #[test]
    fn ranges_get_host_locals_defaults() {
        let r = range("10.1.2.77/24", None, None, None).unwrap();
        assert_eq!(r.subnet.to_string(), "10.1.2.0/24");
        assert_eq!((r.start, r.end, r.gateway), (ip("10.1.2.1"), ip("10.1.2.254"), ip("10.1.2.1")));
        assert_eq!(r.size(), 253);
        let r = range("fd00::/120", None, None, None).unwrap();
        assert_eq!((r.start, r.end, r.gateway), (ip("fd00::1"), ip("fd00::ff"), ip("fd00::1")));
        assert_eq!(r.size(), 254);
        let r = range("10.1.2.0/24", Some("10.1.2.100"), Some("10.1.2.109"), Some("10.1.2.254")).unwrap();
        assert_eq!(r.size(), 10);
        assert!(r.contains(ip("10.1.2.100")) && r.contains(ip("10.1.2.109")));
        assert!(!r.contains(ip("10.1.2.110")) && !r.contains(ip("fd00::64")));
    }

    #[test]
    fn bad_ranges_are_refused() {
        let cases = [
            ("10.1.2.0", None, None, None, "not a CIDR"),
            ("10.1.2.0/31", None, None, None, "too small"),
            ("fd00::/127", None, None, None, "too small"),
            ("10.1.2.0/24", Some("10.1.3.5"), None, None, "rangeStart 10.1.3.5 is not a usable"),
            ("10.1.2.0/24", Some("10.1.2.0"), None, None, "rangeStart 10.1.2.0 is not a usable"),
            ("10.1.2.0/24", None, Some("10.1.2.255"), None, "rangeEnd 10.1.2.255"),
            ("10.1.2.0/24", None, None, Some("fd00::1"), "gateway fd00::1"),
            ("10.1.2.0/24", None, None, Some("x"), "not an address"),
            ("10.1.2.0/24", Some("10.1.2.9"), Some("10.1.2.8"), None, "after rangeEnd"),
        ];
        for (subnet, s, e, g, want) in cases {
            let err = range(subnet, s, e, g).unwrap_err().to_string();
            assert!(err.contains(want), "{subnet}: {err}");
        }
        let a = range("10.1.2.0/24", None, None, None).unwrap();
        let b = range("10.1.2.0/25", None, None, None).unwrap();
        let six = range("fd00::/64", None, None, None).unwrap();
        assert!(RangeSet::new(vec![a.clone(), b]).unwrap_err().to_string().contains("overlaps"));
        assert!(RangeSet::new(vec![a, six]).unwrap_err().to_string().contains("mixes"));
        assert!(RangeSet::new(Vec::new()).is_err());
    }

    #[test]
    fn allocation_is_round_robin_and_skips_what_is_taken() {
        let sets = [set(&[range("10.0.0.0/29", None, None, None).unwrap()])];
        let mut last = BTreeMap::new();
        let mut used = HashSet::new();
        let mut got = Vec::new();
        // .1 is the gateway; .2-.6 can be handed out (.7 is broadcast).
        for _ in 0..5 {
            let a = allocate(&sets, &used, &mut last, &[]).unwrap();
            assert_eq!(a[0].gateway, ip("10.0.0.1"));
            assert_eq!(a[0].address.prefix_len(), 29);
            used.insert(a[0].address.addr());
            got.push(a[0].address.addr().to_string());
        }
        assert_eq!(got, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        let e = allocate(&sets, &used, &mut last, &[]).unwrap_err();
        assert_eq!(e, IpamError::Exhausted("10.0.0.1-10.0.0.6".into()));
        // A released address is not the next one handed out while others are free.
        used.remove(&ip("10.0.0.3"));
        used.remove(&ip("10.0.0.5"));
        assert_eq!(allocate(&sets, &used, &mut last, &[]).unwrap()[0].address.addr(), ip("10.0.0.3"));
        used.insert(ip("10.0.0.3"));
        assert_eq!(allocate(&sets, &used, &mut last, &[]).unwrap()[0].address.addr(), ip("10.0.0.5"));
    }

    #[test]
    fn sets_give_one_address_each_and_requests_come_first() {
        let v4 = set(&[
            range("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.11"), None).unwrap(),
            range("10.0.1.0/24", Some("10.0.1.10"), Some("10.0.1.20"), None).unwrap(),
        ]);
        let v6 = set(&[range("fd00::/64", None, None, None).unwrap()]);
        let sets = [v4, v6];
        let mut last = BTreeMap::new();
        let used: HashSet<IpAddr> = [ip("10.0.0.10"), ip("10.0.0.11")].into();
        let a = allocate(&sets, &used, &mut last, &[]).unwrap();
        assert_eq!(a[0].address.to_string(), "10.0.1.10/24", "the next range of the set");
        assert_eq!(a[0].gateway, ip("10.0.1.1"));
        assert_eq!(a[1].address.to_string(), "fd00::2/64");
        let a = allocate(&sets, &used, &mut last, &[ip("fd00::99")]).unwrap();
        assert_eq!(a[1].address.to_string(), "fd00::99/64", "requested");
        assert_eq!(a[0].address.to_string(), "10.0.1.11/24");
        let before = last.clone();
        for (req, want) in [
            (vec![ip("10.0.2.5")], IpamError::NotInRange(ip("10.0.2.5"))),
            (vec![ip("10.0.0.10")], IpamError::InUse(ip("10.0.0.10"))),
            (vec![ip("fd00::1")], IpamError::Gateway(ip("fd00::1"))),
            (vec![ip("fd00::5"), ip("fd00::6")], IpamError::SameSet(ip("fd00::5"), ip("fd00::6"))),
        ] {
            assert_eq!(allocate(&sets, &used, &mut last, &req).unwrap_err(), want);
        }
        assert_eq!(last, before, "a failed allocation moves nothing");
    }

    #[test]
    fn a_huge_range_costs_what_its_used_addresses_cost() {
        let sets = [set(&[range("fd00::/48", None, None, None).unwrap()])];
        let used: HashSet<IpAddr> = (2..2000u128).map(|n| addr(false, num(ip("fd00::")) + n)).collect();
        let a = allocate(&sets, &used, &mut BTreeMap::new(), &[]).unwrap();
        assert_eq!(a[0].address.addr(), addr(false, num(ip("fd00::")) + 2000));
    }

    proptest! {
        /// Whatever is in use and wherever the last allocation ended, an allocation never hands
        /// out a gateway, an address in use or one outside the ranges, and fails only when the
        /// set is full.
        #[test]
        fn never_hands_out_what_it_must_not(
            start in 1u8..20, len in 0u8..12, gw in 0u8..32,
            used in proptest::collection::hash_set(0u8..32, 0..32), last in proptest::option::of(0u8..32)
        ) {
            let r = range("10.9.0.0/27", Some(&format!("10.9.0.{start}")),
                Some(&format!("10.9.0.{}", (start + len).min(30))),
                Some(&format!("10.9.0.{}", gw.clamp(1, 30)))).unwrap();
            let sets = [set(std::slice::from_ref(&r))];
            let in_use: HashSet<IpAddr> = used.iter().map(|n| ip(&format!("10.9.0.{n}"))).collect();
            let mut cursor = BTreeMap::new();
            if let Some(l) = last { cursor.insert(sets[0].key(), ip(&format!("10.9.0.{l}"))); }
            let free = (num(r.start)..=num(r.end)).map(|n| addr(true, n))
                .filter(|a| *a != r.gateway && !in_use.contains(a)).count();
            match allocate(&sets, &in_use, &mut cursor, &[]) {
                Ok(a) => {
                    let got = a[0].address.addr();
                    prop_assert!(r.contains(got) && got != r.gateway && !in_use.contains(&got));
                    prop_assert_eq!(cursor.get(&sets[0].key()), Some(&got));
                }
                Err(e) => prop_assert!(free == 0, "{e} with {free} free"),
            }
        }
    }
}
