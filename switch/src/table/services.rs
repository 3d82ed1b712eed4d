//! The service table: (VIP, port, protocol) → backends with a Maglev lookup table, compiled by
//! the control plane and published to the workers as an immutable snapshot (like the port
//! table). A lookup is one hash probe whatever the number of services.
//!
//! Backends are split by their Kubernetes conditions: new flows go to *ready* backends; when
//! none is ready, to backends that are *serving* while terminating (kube-proxy's
//! terminating-endpoint fallback); when there are none of those either, the service rejects.
//! Flows already pinned in conntrack keep their backend whatever the table says.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tapway_api::{Affinity, ServiceKey, ServiceSpec};

use super::maglev;
use crate::wire::Mac;

/// A service key packed into one word: `vip << 24 | port << 8 | proto` (IPv4 only).
pub type PackedKey = u64;

/// Packs an IPv4 (address, port, IP protocol) triple.
#[inline]
pub fn pack(ip: Ipv4Addr, port: u16, proto: u8) -> PackedKey {
    (u64::from(u32::from(ip)) << 24) | (u64::from(port) << 8) | u64::from(proto)
}

/// A fast hasher for keys the control plane chooses (services, backends): frames can look
/// them up but never insert, so there is nothing to flood and no need for SipHash.
#[derive(Default, Clone, Copy)]
pub struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        maglev::mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)) ^ (self.0 >> 56);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

/// `BuildHasher` of [`MixHasher`].
pub type MixBuild = BuildHasherDefault<MixHasher>;

/// Counters of one service port; kept across updates of the same key.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    /// Flows created.
    pub new_flows: AtomicU64,
    /// New flows refused for want of a usable backend.
    pub rejected: AtomicU64,
}

/// One backend as the datapath uses it.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Address.
    pub ip: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// Flows placed on it; kept across updates while the backend stays.
    pub flows: Arc<AtomicU64>,
}

/// A compiled service port.
#[derive(Debug)]
pub struct Service {
    /// What the control plane asked for.
    pub spec: ServiceSpec,
    /// The IPv4 VIP; `None` for an IPv6 service, which the datapath does not serve yet.
    pub vip: Option<Ipv4Addr>,
    /// IP protocol number.
    pub proto: u8,
    /// Backends that can take new flows (ready, or the serving-terminating fallback); Maglev
    /// slots index this list.
    pub usable: Vec<Backend>,
    /// Maglev table over `usable` (every slot [`maglev::EMPTY`] when `usable` is empty).
    pub maglev: Vec<u16>,
    /// Per-spec-backend flow counters, in `spec.backends` order.
    pub backend_flows: Vec<Arc<AtomicU64>>,
    /// Service counters.
    pub counters: Arc<ServiceCounters>,
}

impl Service {
    /// Compiles `spec`, reusing the counters of `prev` (the same key's previous version).
    pub fn compile(spec: ServiceSpec, prev: Option<&Service>) -> Service {
        let proto = spec.key.protocol.number();
        let vip = match spec.key.vip {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        };
        let backend_flows: Vec<Arc<AtomicU64>> = spec
            .backends
            .iter()
            .map(|b| {
                prev.and_then(|p| p.spec.backends.iter().position(|o| o.ip == b.ip && o.port == b.port))
                    .and_then(|i| prev.map(|p| p.backend_flows[i].clone()))
                    .unwrap_or_default()
            })
            .collect();
        let pick = |f: &dyn Fn(&tapway_api::BackendSpec) -> bool| -> Vec<usize> {
            spec.backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.weight > 0 && b.ip.is_ipv4() && f(b))
                .map(|(i, _)| i)
                .collect()
        };
        let mut chosen = pick(&|b| b.ready && !b.terminating);
        if chosen.is_empty() {
            chosen = pick(&|b| b.serving);
        }
        chosen.truncate(maglev::MAX_BACKENDS);
        let usable: Vec<Backend> = chosen
            .iter()
            .filter_map(|&i| {
                let b = &spec.backends[i];
                let IpAddr::V4(ip) = b.ip else { return None };
                Some(Backend { ip, port: b.port, flows: backend_flows[i].clone() })
            })
            .collect();
        let hashes: Vec<(u64, u16)> = chosen
            .iter()
            .map(|&i| {
                let b = &spec.backends[i];
                (maglev::backend_hash(&b.ip, b.port, 0), b.weight)
            })
            .collect();
        let maglev = maglev::build(&hashes, maglev::table_size(hashes.len()));
        let counters = prev.map(|p| p.counters.clone()).unwrap_or_default();
        Service { spec, vip, proto, usable, maglev, backend_flows, counters }
    }

    /// The backend Maglev gives `hash`, if any backend is usable.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<&Backend> {
        let slot = *self.maglev.get((hash % self.maglev.len().max(1) as u64) as usize)?;
        self.usable.get(usize::from(slot))
    }

    /// Client-IP affinity timeout, if the service has affinity.
    pub fn affinity_timeout(&self) -> Option<u32> {
        match self.spec.affinity {
            Affinity::None => None,
            Affinity::ClientIp { timeout } => Some(timeout),
        }
    }

    /// The packed key (IPv4 services only).
    pub fn packed(&self) -> Option<PackedKey> {
        self.vip.map(|v| pack(v, self.spec.key.port, self.proto))
    }
}

/// The snapshot the workers read.
#[derive(Default)]
pub struct ServiceTable {
    /// Every service port, IPv6 ones included, for listing.
    pub all: BTreeMap<ServiceKey, Arc<Service>>,
    fast: HashMap<PackedKey, Arc<Service>, MixBuild>,
    vips: HashSet<u32, MixBuild>,
    /// Backends whose replies are reverse-NATed: every backend of every service, plus removed
    /// backends that still have tracked flows.
    replies: HashSet<PackedKey, MixBuild>,
    /// MAC the rewritten frames come from (the host port's, i.e. the pods' gateway).
    pub gateway_mac: Mac,
    /// Source address for hairpin SNAT (the pods' IPv4 gateway).
    pub gateway_v4: Option<Ipv4Addr>,
    /// The pod network(s) behind the switch. A backend outside them (a host-network
    /// endpoint such as the API server on a node address) is reached through the gateway,
    /// i.e. the node's kernel routes it. Empty: every backend is taken as on-link.
    pub onlink: Vec<ipnet::Ipv4Net>,
}

impl ServiceTable {
    /// A table of `services`; `extra_replies` are backends removed from every service whose
    /// flows still live.
    pub fn new(
        services: BTreeMap<ServiceKey, Arc<Service>>,
        extra_replies: &HashSet<PackedKey>,
        gateway_mac: Mac,
        gateway_v4: Option<Ipv4Addr>,
    ) -> ServiceTable {
        let mut t = ServiceTable { gateway_mac, gateway_v4, ..Default::default() };
        for s in services.values() {
            if let (Some(k), Some(vip)) = (s.packed(), s.vip) {
                t.fast.insert(k, s.clone());
                t.vips.insert(u32::from(vip));
                for b in &s.spec.backends {
                    if let IpAddr::V4(ip) = b.ip {
                        t.replies.insert(pack(ip, b.port, s.proto));
                    }
                }
            }
        }
        t.replies.extend(extra_replies.iter().copied());
        t.all = services;
        t
    }

    /// Whether no IPv4 service exists (the service stage is skipped then).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.fast.is_empty() && self.replies.is_empty()
    }

    /// The service at (vip, port, proto).
    #[inline]
    pub fn lookup(&self, vip: Ipv4Addr, port: u16, proto: u8) -> Option<&Arc<Service>> {
        self.fast.get(&pack(vip, port, proto))
    }

    /// Whether `ip` is a VIP of any service (for fragments, which have no ports).
    #[inline]
    pub fn is_vip(&self, ip: Ipv4Addr) -> bool {
        self.vips.contains(&u32::from(ip))
    }

    /// Whether frames from (ip, port, proto) may be replies of tracked service flows.
    #[inline]
    pub fn is_reply_source(&self, ip: Ipv4Addr, port: u16, proto: u8) -> bool {
        self.replies.contains(&pack(ip, port, proto))
    }

    /// Whether a backend at `ip` is reached through the gateway rather than on the pod L2.
    pub fn via_gateway(&self, ip: Ipv4Addr) -> bool {
        Some(ip) == self.gateway_v4
            || !(self.onlink.is_empty() || self.onlink.iter().any(|n| n.contains(&ip)))
    }

    /// The backends currently in services (not the retired ones).
    pub fn current_backends(&self) -> HashSet<PackedKey> {
        let mut out = HashSet::new();
        for s in self.all.values() {
            for b in &s.spec.backends {
                if let IpAddr::V4(ip) = b.ip {
                    out.insert(pack(ip, b.port, s.proto));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use tapway_api::{BackendSpec, Protocol};

    use super::*;

    fn spec(backends: Vec<BackendSpec>) -> ServiceSpec {
        ServiceSpec {
            name: "default/web".into(),
            key: ServiceKey { vip: "10.96.0.10".parse().unwrap(), port: 80, protocol: Protocol::Tcp },
            affinity: Affinity::None,
            backends,
        }
    }

    fn b(last: u8, ready: bool, serving: bool, terminating: bool) -> BackendSpec {
        BackendSpec {
            ip: IpAddr::from([10, 244, 0, last]),
            port: 8080,
            weight: 1,
            ready,
            serving,
            terminating,
        }
    }

    #[test]
    fn ready_first_then_serving_terminating() {
        let s = Service::compile(spec(vec![b(1, true, true, false), b(2, false, true, true)]), None);
        assert_eq!(s.usable.len(), 1);
        assert_eq!(s.usable[0].ip, Ipv4Addr::new(10, 244, 0, 1));
        let s = Service::compile(spec(vec![b(1, false, false, false), b(2, false, true, true)]), None);
        assert_eq!(s.usable.len(), 1, "fallback to serving terminating backends");
        assert_eq!(s.usable[0].ip, Ipv4Addr::new(10, 244, 0, 2));
        let s = Service::compile(spec(vec![b(1, false, false, true)]), None);
        assert!(s.usable.is_empty());
        assert!(s.pick(12345).is_none());
    }

    #[test]
    fn counters_survive_updates() {
        let s1 = Service::compile(spec(vec![b(1, true, true, false), b(2, true, true, false)]), None);
        s1.backend_flows[1].fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        s1.counters.new_flows.fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        let s2 = Service::compile(spec(vec![b(2, true, true, false), b(3, true, true, false)]), Some(&s1));
        assert_eq!(s2.backend_flows[0].load(std::sync::atomic::Ordering::Relaxed), 7);
        assert_eq!(s2.backend_flows[1].load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(s2.counters.new_flows.load(std::sync::atomic::Ordering::Relaxed), 7);
    }

    #[test]
    fn table_lookups() {
        let s = Arc::new(Service::compile(spec(vec![b(1, true, true, false)]), None));
        let mut all = BTreeMap::new();
        all.insert(s.spec.key, s.clone());
        let mut retired = HashSet::new();
        retired.insert(pack(Ipv4Addr::new(10, 244, 0, 9), 8080, 6));
        let t = ServiceTable::new(all, &retired, [2, 0, 0, 0, 0, 1], Some(Ipv4Addr::new(10, 244, 0, 1)));
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        assert!(t.lookup(vip, 80, 6).is_some());
        assert!(t.lookup(vip, 80, 17).is_none());
        assert!(t.lookup(vip, 81, 6).is_none());
        assert!(t.is_vip(vip));
        assert!(t.is_reply_source(Ipv4Addr::new(10, 244, 0, 1), 8080, 6));
        assert!(t.is_reply_source(Ipv4Addr::new(10, 244, 0, 9), 8080, 6), "retired backend");
        assert!(!t.is_reply_source(Ipv4Addr::new(10, 244, 0, 1), 8081, 6));
        assert_eq!(t.current_backends().len(), 1);
        assert!(!t.via_gateway(Ipv4Addr::new(192, 168, 1, 1)), "no pod network known: all on-link");
        let mut t = t;
        t.onlink = vec!["10.244.0.0/16".parse().unwrap()];
        assert!(t.via_gateway(Ipv4Addr::new(192, 168, 1, 1)));
        assert!(t.via_gateway(Ipv4Addr::new(10, 244, 0, 1)), "the gateway itself");
        assert!(!t.via_gateway(Ipv4Addr::new(10, 244, 0, 9)));
    }
}
