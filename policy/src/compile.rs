//! The compiled form: per local pod and direction, tables whose lookup cost does not depend
//! on the number of policies, rules or peers.
//!
//! * **Identities** (Cilium's idea): every distinct (namespace, labels, named container ports)
//!   of the known pods is one numeric [identity](Compiled::identity_of), and every pod IP maps
//!   to its pod's identity. Selectors are evaluated against identities at compile time, never
//!   per packet. The named ports are part of the identity so that an egress rule's named port,
//!   which resolves against the *peer* pod, resolves exactly per identity.
//! * Per local pod and direction a [`DirTable`]: `isolated`, then three allow structures,
//!   each giving a [`PortSet`] (per protocol, sorted disjoint intervals, binary searched):
//!   by peer identity (pod selector peers, and "all peers"), by peer IP (only for egress
//!   rules that combine an `ipBlock` with a named port: the port is resolved against the pod
//!   owning that IP), and a [`CidrTable`] for `ipBlock`s (longest prefix over the cidrs and
//!   excepts, each prefix carrying the union of the blocks it is inside and not excepted
//!   from).
//! * A lookup is: one hash probe for the identity, one for the IP, at most 33 (IPv4) or 129
//!   (IPv6) hash probes for the longest prefix, and a binary search per hit. Every hit
//!   carries the smallest [`RuleId`] that allows the port, which is the rule the reference
//!   [`crate::eval`] reports (rules are numbered in input order), for counters and traces.
//!
//! Recompiling is a full rebuild for now; the input is small and the per-pod tables are
//! independent, so an incremental one can recompile only the pods a change touches.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{
    namespace_labels, Direction, Labels, NamedPort, Namespace, Peer, Pod, Policy, PolicyPort, PortMatch,
    Protocol,
};

/// A rule of a policy, numbered in input order (policy, then direction, then rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u32);

/// What a [`RuleId`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// Which list the rule is in.
    pub dir: Direction,
    /// Its index in `spec.ingress` / `spec.egress`.
    pub rule: usize,
}

/// The outcome of a compiled lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No policy selects the pod for this direction.
    NotIsolated,
    /// Allowed by this rule.
    Allowed(RuleId),
    /// Isolated and no rule allows.
    Denied,
}

impl Lookup {
    /// Whether the flow passes.
    pub fn allows(self) -> bool {
        !matches!(self, Lookup::Denied)
    }
}

/// Ports per protocol: sorted, disjoint intervals, each with the smallest rule allowing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    by_proto: [Vec<(u16, u16, RuleId)>; 3],
}

impl PortSet {
    /// The smallest rule allowing `proto`/`port`, if any.
    pub fn lookup(&self, proto: Protocol, port: u16) -> Option<RuleId> {
        let v = &self.by_proto[proto.index()];
        let i = v.partition_point(|&(start, _, _)| start <= port);
        let &(_, end, rule) = v.get(i.checked_sub(1)?)?;
        (port <= end).then_some(rule)
    }

    /// The intervals of a protocol.
    pub fn intervals(&self, proto: Protocol) -> &[(u16, u16, RuleId)] {
        &self.by_proto[proto.index()]
    }
}

/// Port intervals collected before [`PortBuilder::build`] sorts and merges them.
#[derive(Debug, Clone, Default)]
struct PortBuilder {
    raw: [Vec<(u16, u16, RuleId)>; 3],
}

impl PortBuilder {
    fn push(&mut self, proto: Protocol, start: u16, end: u16, rule: RuleId) {
        if start <= end {
            self.raw[proto.index()].push((start, end, rule));
        }
    }

    /// Adds a rule's `ports` (empty: all), named ports resolved against `dst_ports` (`None`:
    /// the destination is not a pod, named ports match nothing).
    fn add(&mut self, ports: &[PolicyPort], dst_ports: Option<&[NamedPort]>, rule: RuleId) {
        if ports.is_empty() {
            for proto in Protocol::ALL {
                self.push(proto, 0, u16::MAX, rule);
            }
        }
        for p in ports {
            match &p.port {
                PortMatch::All => self.push(p.protocol, 0, u16::MAX, rule),
                PortMatch::Range(a, b) => self.push(p.protocol, *a, *b, rule),
                PortMatch::Named(name) => {
                    if let Some(n) = dst_ports.and_then(|d| crate::model::resolve_named(name, p.protocol, d))
                    {
                        self.push(p.protocol, n, n, rule);
                    }
                }
            }
        }
    }

    fn merge(&mut self, other: &PortBuilder) {
        for (a, b) in self.raw.iter_mut().zip(&other.raw) {
            a.extend_from_slice(b);
        }
    }

    /// A sweep over the interval ends: each elementary segment gets the smallest covering
    /// rule, and neighbours with the same rule are joined.
    fn build(&self) -> PortSet {
        let mut out = PortSet::default();
        for (raw, dst) in self.raw.iter().zip(out.by_proto.iter_mut()) {
            let mut starts: Vec<(u32, RuleId)> = raw.iter().map(|&(s, _, r)| (u32::from(s), r)).collect();
            let mut ends: Vec<(u32, RuleId)> = raw.iter().map(|&(_, e, r)| (u32::from(e) + 1, r)).collect();
            starts.sort_unstable();
            ends.sort_unstable();
            let mut points: Vec<u32> = starts.iter().chain(&ends).map(|&(p, _)| p).collect();
            points.sort_unstable();
            points.dedup();
            let mut active: BTreeMap<RuleId, u32> = BTreeMap::new();
            let (mut si, mut ei) = (0, 0);
            for w in points.windows(2) {
                let (at, next) = (w[0], w[1]);
                while si < starts.len() && starts[si].0 == at {
                    *active.entry(starts[si].1).or_default() += 1;
                    si += 1;
                }
                while ei < ends.len() && ends[ei].0 == at {
                    if let Some(c) = active.get_mut(&ends[ei].1) {
                        *c -= 1;
                        if *c == 0 {
                            active.remove(&ends[ei].1);
                        }
                    }
                    ei += 1;
                }
                let Some((&rule, _)) = active.iter().next() else { continue };
                // `at < next <= 65536`, so both ends fit a u16.
                let (s, e) = (at as u16, (next - 1) as u16);
                match dst.last_mut() {
                    Some(last) if last.2 == rule && u32::from(last.1) + 1 == at => last.1 = e,
                    _ => dst.push((s, e, rule)),
                }
            }
        }
        out
    }
}

/// Longest-prefix table of the `ipBlock`s of one pod and direction.
#[derive(Debug, Clone, Default)]
pub struct CidrTable {
    /// The prefix lengths present, longest first, per family (v4, v6).
    lens: [Vec<u8>; 2],
    /// Every cidr and except (truncated), with the union of the blocks it lies inside and is
    /// not excepted from.
    prefixes: HashMap<IpNet, PortSet>,
}

impl CidrTable {
    fn build(blocks: &[(IpNet, Vec<IpNet>, PortBuilder)]) -> Self {
        let mut all: Vec<IpNet> =
            blocks.iter().flat_map(|(c, ex, _)| std::iter::once(c).chain(ex)).map(IpNet::trunc).collect();
        all.sort_unstable();
        all.dedup();
        let mut t = CidrTable::default();
        for p in all {
            let mut b = PortBuilder::default();
            for (cidr, except, ports) in blocks {
                if cidr.contains(&p) && !except.iter().any(|e| e.contains(&p)) {
                    b.merge(ports);
                }
            }
            let fam = usize::from(matches!(p, IpNet::V6(_)));
            if !t.lens[fam].contains(&p.prefix_len()) {
                t.lens[fam].push(p.prefix_len());
            }
            t.prefixes.insert(p, b.build());
        }
        for l in &mut t.lens {
            l.sort_unstable_by(|a, b| b.cmp(a));
        }
        t
    }

    /// The port set of the longest prefix holding `ip`. It is exact: cidrs and excepts are
    /// nested or disjoint, so the longest one holding `ip` is inside exactly the cidrs and
    /// excepts that hold `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&PortSet> {
        let fam = usize::from(ip.is_ipv6());
        self.lens[fam].iter().find_map(|&len| {
            let net = IpNet::new(ip, len).ok()?.trunc();
            self.prefixes.get(&net)
        })
    }

    /// The number of prefixes.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }
}

/// One direction of one local pod.
#[derive(Debug, Clone, Default)]
pub struct DirTable {
    /// Some policy selects the pod for this direction.
    pub isolated: bool,
    /// Peer identity → ports.
    pub by_identity: HashMap<u32, PortSet>,
    /// Peer IP → ports (egress `ipBlock` with named ports, resolved on the pod owning the IP).
    pub by_ip: HashMap<IpAddr, PortSet>,
    /// `ipBlock`s.
    pub cidrs: CidrTable,
}

impl DirTable {
    fn lookup(&self, peer_identity: Option<u32>, peer: IpAddr, proto: Protocol, port: u16) -> Lookup {
        if !self.isolated {
            return Lookup::NotIsolated;
        }
        let by_id =
            peer_identity.and_then(|id| self.by_identity.get(&id)).and_then(|s| s.lookup(proto, port));
        let by_ip = self.by_ip.get(&peer).and_then(|s| s.lookup(proto, port));
        let by_cidr = self.cidrs.lookup(peer).and_then(|s| s.lookup(proto, port));
        match [by_id, by_ip, by_cidr].into_iter().flatten().min() {
            Some(rule) => Lookup::Allowed(rule),
            None => Lookup::Denied,
        }
    }
}

/// The tables of one local pod.
#[derive(Debug, Clone)]
pub struct PodTables {
    /// `namespace/name`.
    pub pod: String,
    /// Traffic into the pod.
    pub ingress: DirTable,
    /// Traffic out of the pod.
    pub egress: DirTable,
}

/// What an identity stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Namespace.
    pub namespace: String,
    /// Pod labels.
    pub labels: Labels,
    /// Named container ports.
    pub ports: Vec<NamedPort>,
}

/// The compiled policies of one node. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// Every rule, by [`RuleId`].
    pub rules: Vec<RuleRef>,
    /// Every identity, by number.
    pub identities: Vec<Identity>,
    ip_identity: HashMap<IpAddr, u32>,
    local: HashMap<IpAddr, usize>,
    /// Per local pod.
    pub pods: Vec<PodTables>,
}

impl Compiled {
    /// The identity of the pod owning `ip`.
    pub fn identity_of(&self, ip: IpAddr) -> Option<u32> {
        self.ip_identity.get(&ip).copied()
    }

    /// The tables of the local pod owning `ip`.
    pub fn local(&self, ip: IpAddr) -> Option<&PodTables> {
        self.local.get(&ip).and_then(|&i| self.pods.get(i))
    }

    /// Looks up one direction of the local pod owning `local_ip` against `peer`; `None` when
    /// `local_ip` is no local pod's.
    pub fn lookup(
        &self,
        local_ip: IpAddr,
        dir: Direction,
        peer: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> Option<Lookup> {
        let t = self.local(local_ip)?;
        let table = match dir {
            Direction::Ingress => &t.ingress,
            Direction::Egress => &t.egress,
        };
        Some(table.lookup(self.identity_of(peer), peer, proto, port))
    }

    /// Both sides of a flow as far as this node sees them: the source's egress when the
    /// source is local, and the destination's ingress when it is local.
    pub fn flow(
        &self,
        src: IpAddr,
        dst: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> (Option<Lookup>, Option<Lookup>) {
        (
            self.lookup(src, Direction::Egress, dst, proto, port),
            self.lookup(dst, Direction::Ingress, src, proto, port),
        )
    }
}

/// Compiles `policies` for the pods with `local` set. See the [module docs](self).
pub fn compile(policies: &[Policy], pods: &[Pod], namespaces: &[Namespace]) -> Compiled {
    let mut c = Compiled::default();

    // Rule numbers in input order, so the smallest allowing rule is the one eval reports.
    let mut first_rule: Vec<[u32; 2]> = Vec::with_capacity(policies.len());
    for p in policies {
        let mut firsts = [0u32; 2];
        for (d, dir) in [Direction::Ingress, Direction::Egress].into_iter().enumerate() {
            firsts[d] = c.rules.len() as u32;
            for i in 0..p.rules(dir).len() {
                c.rules.push(RuleRef { policy: p.key(), dir, rule: i });
            }
        }
        first_rule.push(firsts);
    }

    // Identities, and the owner of every IP (the first pod listing it, as eval has it).
    let mut ids: HashMap<Identity, u32> = HashMap::new();
    let mut pod_identity: Vec<u32> = Vec::with_capacity(pods.len());
    for pod in pods {
        let key = Identity {
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            ports: pod.ports.clone(),
        };
        let next = ids.len() as u32;
        let id = *ids.entry(key.clone()).or_insert_with(|| {
            c.identities.push(key);
            next
        });
        pod_identity.push(id);
    }
    let mut owner: HashMap<IpAddr, usize> = HashMap::new();
    for (i, pod) in pods.iter().enumerate() {
        for &ip in &pod.ips {
            owner.entry(ip).or_insert(i);
        }
    }
    c.ip_identity = owner.iter().map(|(&ip, &i)| (ip, pod_identity[i])).collect();
    let id_ns_labels: Vec<Labels> =
        c.identities.iter().map(|id| namespace_labels(namespaces, &id.namespace)).collect();

    for (pi, pod) in pods.iter().enumerate() {
        if !pod.local || !pod.ips.iter().any(|ip| owner.get(ip) == Some(&pi)) {
            continue;
        }
        let mut tables =
            PodTables { pod: pod.key(), ingress: DirTable::default(), egress: DirTable::default() };
        for (d, dir) in [Direction::Ingress, Direction::Egress].into_iter().enumerate() {
            let table = if d == 0 { &mut tables.ingress } else { &mut tables.egress };
            let mut by_identity: HashMap<u32, PortBuilder> = HashMap::new();
            let mut by_ip: HashMap<IpAddr, PortBuilder> = HashMap::new();
            let mut blocks: Vec<(IpNet, Vec<IpNet>, PortBuilder)> = Vec::new();
            for (policy, firsts) in policies.iter().zip(&first_rule) {
                if !policy.selects(pod, dir) {
                    continue;
                }
                table.isolated = true;
                for (ri, rule) in policy.rules(dir).iter().enumerate() {
                    let rid = RuleId(firsts[d] + ri as u32);
                    // Ingress: named ports resolve on this pod, the same for every peer.
                    let local_ports = (dir == Direction::Ingress).then_some(pod.ports.as_slice());
                    let mut numeric = PortBuilder::default();
                    numeric.add(&rule.ports, local_ports, rid);
                    let mut add_identity = |id: u32| {
                        let b = by_identity.entry(id).or_default();
                        match dir {
                            Direction::Ingress => b.merge(&numeric),
                            Direction::Egress => {
                                b.add(&rule.ports, Some(&c.identities[id as usize].ports), rid)
                            }
                        }
                    };
                    if rule.peers.is_empty() {
                        (0..c.identities.len() as u32).for_each(&mut add_identity);
                        for all in ["0.0.0.0/0", "::/0"] {
                            if let Ok(net) = all.parse() {
                                blocks.push((net, Vec::new(), numeric.clone()));
                            }
                        }
                        continue;
                    }
                    for peer in &rule.peers {
                        match peer {
                            Peer::Pods { .. } => {
                                for (id, ident) in c.identities.iter().enumerate() {
                                    let nsl = &id_ns_labels[id];
                                    if peer.matches_pod(
                                        &policy.namespace,
                                        &ident.namespace,
                                        nsl,
                                        &ident.labels,
                                    ) {
                                        add_identity(id as u32);
                                    }
                                }
                            }
                            Peer::IpBlock { cidr, except } => {
                                blocks.push((*cidr, except.clone(), numeric.clone()));
                                let named = rule.ports.iter().any(|p| matches!(p.port, PortMatch::Named(_)));
                                if dir == Direction::Egress && named {
                                    for (&ip, &o) in &owner {
                                        if peer.matches_ip(ip) {
                                            by_ip.entry(ip).or_default().add(
                                                &rule.ports,
                                                Some(&pods[o].ports),
                                                rid,
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            table.by_identity = by_identity.into_iter().map(|(k, b)| (k, b.build())).collect();
            table.by_ip = by_ip.into_iter().map(|(k, b)| (k, b.build())).collect();
            table.cidrs = CidrTable::build(&blocks);
        }
        let idx = c.pods.len();
        for &ip in &pod.ips {
            if owner.get(&ip) == Some(&pi) {
                c.local.insert(ip, idx);
            }
        }
        c.pods.push(tables);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_set_merges_and_keeps_the_smallest_rule() {
        let mut b = PortBuilder::default();
        b.push(Protocol::Tcp, 80, 90, RuleId(5));
        b.push(Protocol::Tcp, 85, 100, RuleId(2));
        b.push(Protocol::Tcp, 101, 101, RuleId(2));
        b.push(Protocol::Udp, 0, u16::MAX, RuleId(7));
        b.push(Protocol::Tcp, 9, 3, RuleId(1)); // empty range: ignored
        let s = b.build();
        assert_eq!(s.intervals(Protocol::Tcp), &[(80, 84, RuleId(5)), (85, 101, RuleId(2))]);
        assert_eq!(s.lookup(Protocol::Tcp, 79), None);
        assert_eq!(s.lookup(Protocol::Tcp, 80), Some(RuleId(5)));
        assert_eq!(s.lookup(Protocol::Tcp, 101), Some(RuleId(2)));
        assert_eq!(s.lookup(Protocol::Tcp, 102), None);
        assert_eq!(s.lookup(Protocol::Udp, 65535), Some(RuleId(7)));
        assert_eq!(s.lookup(Protocol::Sctp, 80), None);
    }

    #[test]
    fn cidr_table_longest_prefix_with_except() {
        let mut p8 = PortBuilder::default();
        p8.push(Protocol::Tcp, 80, 80, RuleId(0));
        let mut p24 = PortBuilder::default();
        p24.push(Protocol::Tcp, 81, 81, RuleId(1));
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let t = CidrTable::build(&[
            (net("10.0.0.0/8"), vec![net("10.1.0.0/16")], p8),
            (net("10.1.2.0/24"), vec![], p24),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let at = |s: &str, port| t.lookup(ip(s)).and_then(|ps| ps.lookup(Protocol::Tcp, port));
        assert_eq!(at("10.9.9.9", 80), Some(RuleId(0)));
        assert_eq!(at("10.1.9.9", 80), None, "excepted");
        assert_eq!(at("10.1.2.3", 80), None, "inside the except, even inside another block");
        assert_eq!(at("10.1.2.3", 81), Some(RuleId(1)));
        assert_eq!(at("11.0.0.1", 80), None);
        assert!(t.lookup(ip("::1")).is_none());
    }
}
