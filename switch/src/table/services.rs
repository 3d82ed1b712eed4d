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
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tapway_api::{Affinity, ServiceKey, ServiceSpec};

use super::maglev;
use crate::wire::Mac;

/// An (address, port, IP protocol) triple: a service port or a backend.
pub type PackedKey = (IpAddr, u16, u8);

/// Makes a [`PackedKey`].
#[inline]
pub fn pack(ip: IpAddr, port: u16, proto: u8) -> PackedKey {
    (ip, port, proto)
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
        // FNV-1a style; finished by a full 64-bit mix.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
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
    pub ip: IpAddr,
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
    /// The VIP.
    pub vip: IpAddr,
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
        let vip = spec.key.vip;
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
                .filter(|(_, b)| b.weight > 0 && b.ip.is_ipv4() == vip.is_ipv4() && f(b))
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
            .map(|&i| {
                let b = &spec.backends[i];
                Backend { ip: b.ip, port: b.port, flows: backend_flows[i].clone() }
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

    /// The service's key.
    pub fn packed(&self) -> PackedKey {
        pack(self.vip, self.spec.key.port, self.proto)
    }
}

/// The snapshot the workers read.
#[derive(Default)]
pub struct ServiceTable {
    /// Every service port, for listing.
    pub all: BTreeMap<ServiceKey, Arc<Service>>,
    fast: HashMap<PackedKey, Arc<Service>, MixBuild>,
    vips: HashSet<IpAddr, MixBuild>,
    /// Backends whose replies are reverse-NATed: every backend of every service, plus removed
    /// backends that still have tracked flows.
    replies: HashSet<PackedKey, MixBuild>,
    /// MAC the rewritten frames come from (the host port's, i.e. the pods' gateway).
    pub gateway_mac: Mac,
    /// MAC the switch gives VIPs when the node's kernel asks for them (ARP/NDP on the host
    /// port); `None` unless a service range is routed into the host port.
    pub host_vip_mac: Option<Mac>,
    /// Source addresses for hairpin SNAT: the pods' gateways (one per family at most).
    pub gateways: Vec<IpAddr>,
    /// The pod network(s) behind the switch. A backend outside them (a host-network
    /// endpoint such as the API server on a node address) is reached through the gateway,
    /// i.e. the node's kernel routes it. Empty: every backend is taken as on-link.
    pub onlink: Vec<ipnet::IpNet>,
}

impl ServiceTable {
    /// A table of `services`; `extra_replies` are backends removed from every service whose
    /// flows still live.
    pub fn new(
        services: BTreeMap<ServiceKey, Arc<Service>>,
        extra_replies: &HashSet<PackedKey>,
        gateway_mac: Mac,
    ) -> ServiceTable {
        let mut t = ServiceTable { gateway_mac, ..Default::default() };
        for s in services.values() {
            t.fast.insert(s.packed(), s.clone());
            t.vips.insert(s.vip);
            for b in &s.spec.backends {
                t.replies.insert(pack(b.ip, b.port, s.proto));
            }
        }
        t.replies.extend(extra_replies.iter().copied());
        t.all = services;
        t
    }

    /// Whether no service exists (the service stage is skipped then).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.fast.is_empty() && self.replies.is_empty()
    }

    /// The service at (vip, port, proto).
    #[inline]
    pub fn lookup(&self, vip: IpAddr, port: u16, proto: u8) -> Option<&Arc<Service>> {
        self.fast.get(&pack(vip, port, proto))
    }

    /// Whether `ip` is a VIP of any service (for fragments, which have no ports).
    #[inline]
    pub fn is_vip(&self, ip: IpAddr) -> bool {
        self.vips.contains(&ip)
    }

    /// Whether frames from (ip, port, proto) may be replies of tracked service flows.
    #[inline]
    pub fn is_reply_source(&self, ip: IpAddr, port: u16, proto: u8) -> bool {
        self.replies.contains(&pack(ip, port, proto))
    }

    /// Whether a backend at `ip` is reached through the gateway rather than on the pod L2.
    pub fn via_gateway(&self, ip: IpAddr) -> bool {
        self.gateways.contains(&ip)
            || !(self.onlink.is_empty() || self.onlink.iter().any(|n| n.contains(&ip)))
    }

    /// The gateway address of `ip`'s family (hairpin SNAT source).
    pub fn gateway_for(&self, ip: IpAddr) -> Option<IpAddr> {
        self.gateways.iter().copied().find(|g| g.is_ipv4() == ip.is_ipv4())
    }

    /// The backends currently in services (not the retired ones).
    pub fn current_backends(&self) -> HashSet<PackedKey> {
        backends_of(&self.all)
    }
}

/// Every backend (with its protocol) of `services`.
pub fn backends_of(services: &BTreeMap<ServiceKey, Arc<Service>>) -> HashSet<PackedKey> {
    services.values().flat_map(|s| s.spec.backends.iter().map(move |b| pack(b.ip, b.port, s.proto))).collect()
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
        assert_eq!(s.usable[0].ip, IpAddr::from([10, 244, 0, 1]));
        let s = Service::compile(spec(vec![b(1, false, false, false), b(2, false, true, true)]), None);
        assert_eq!(s.usable.len(), 1, "fallback to serving terminating backends");
        assert_eq!(s.usable[0].ip, IpAddr::from([10, 244, 0, 2]));
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
        retired.insert(pack(IpAddr::from([10, 244, 0, 9]), 8080, 6));
        let mut t = ServiceTable::new(all, &retired, [2, 0, 0, 0, 0, 1]);
        t.gateways = vec![IpAddr::from([10, 244, 0, 1])];
        let vip = IpAddr::from([10, 96, 0, 10]);
        assert!(t.lookup(vip, 80, 6).is_some());
        assert!(t.lookup(vip, 80, 17).is_none());
        assert!(t.lookup(vip, 81, 6).is_none());
        assert!(t.is_vip(vip));
        assert!(t.is_reply_source(IpAddr::from([10, 244, 0, 1]), 8080, 6));
        assert!(t.is_reply_source(IpAddr::from([10, 244, 0, 9]), 8080, 6), "retired backend");
        assert!(!t.is_reply_source(IpAddr::from([10, 244, 0, 1]), 8081, 6));
        assert_eq!(t.current_backends().len(), 1);
        assert!(!t.via_gateway(IpAddr::from([192, 168, 1, 1])), "no pod network known: all on-link");
        t.onlink = vec!["10.244.0.0/16".parse().unwrap()];
        assert!(t.via_gateway(IpAddr::from([192, 168, 1, 1])));
        assert!(t.via_gateway(IpAddr::from([10, 244, 0, 1])), "the gateway itself");
        assert!(!t.via_gateway(IpAddr::from([10, 244, 0, 9])));
        assert_eq!(t.gateway_for(IpAddr::from([10, 244, 0, 9])), Some(IpAddr::from([10, 244, 0, 1])));
        assert_eq!(t.gateway_for("fd00::9".parse().unwrap()), None);
    }
}
