//! What tapway needs of NetworkPolicies, Pods and Namespaces: small, comparable types with
//! the Kubernetes meaning written on each, and the few predicates ([`Selector::matches`],
//! [`Peer`] and [`PolicyPort`] matching) that both [`crate::eval`] and [`crate::compile`] use,
//! so that the two cannot disagree on what a selector or a port means.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The label the API server puts on every Namespace, its name as value (Kubernetes ≥ 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Labels, sorted so that equal label sets compare (and hash into identities) equal.
pub type Labels = BTreeMap<String, String>;

/// The direction a policy isolates: traffic into the selected pod, or out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    /// Into the selected pod (`policyTypes: [Ingress]`, `spec.ingress`).
    Ingress,
    /// Out of the selected pod (`policyTypes: [Egress]`, `spec.egress`).
    Egress,
}

/// A layer-4 protocol a policy port names. `protocol` defaults to TCP when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP: kept so that a rule for SCTP never allows TCP (an upstream e2e case).
    Sctp,
}

impl Protocol {
    /// Every protocol, in index order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// A dense index (0..3) for per-protocol tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// The label is present and its value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label is present (any value).
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Operator,
    /// The values (`In`/`NotIn`; ignored by `Exists`/`DoesNotExist`).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` meets this requirement, as `k8s.io/apimachinery/pkg/labels` says.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => !v.is_some_and(|v| self.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
        }
    }
}

/// A label selector: `matchLabels` AND every `matchExpressions` entry. The empty selector
/// (`{}`) selects everything; [`Selector::nothing`] selects nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Selector {
    /// Each key must be present with this value.
    pub match_labels: Labels,
    /// Each must hold.
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    /// `{}`: selects every object.
    pub fn all() -> Self {
        Selector::default()
    }

    /// A selector that selects no object (what an invalid selector means, as in
    /// `metav1.LabelSelectorAsSelector` failing: an `In` over an empty value set).
    pub fn nothing() -> Self {
        Selector {
            match_labels: Labels::new(),
            match_expressions: vec![Requirement { key: String::new(), op: Operator::In, values: Vec::new() }],
        }
    }

    /// `matchLabels` only.
    pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Selector {
            match_labels: pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether the selector selects an object with these labels.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// A `from`/`to` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector` (at least one present). `podSelector` alone:
    /// those pods of the policy's own namespace. `namespaceSelector` alone: every pod of the
    /// selected namespaces. Both: the selected pods of the selected namespaces.
    Pods {
        /// `podSelector`; `None` when absent (every pod).
        pods: Option<Selector>,
        /// `namespaceSelector`; `None` when absent (the policy's namespace only).
        namespaces: Option<Selector>,
    },
    /// `ipBlock`: addresses in `cidr` but in none of `except`. It matches any address,
    /// pod IPs included: the upstream e2e tests expect an `ipBlock` of a pod's IP to allow
    /// egress to that pod, and an `except` of it to deny it.
    IpBlock {
        /// `cidr`.
        cidr: IpNet,
        /// `except`.
        except: Vec<IpNet>,
    },
}

impl Peer {
    /// Whether a pod in namespace `ns` (with labels `ns_labels`) and labels `pod_labels` is
    /// this peer of a policy in namespace `policy_ns`. An `ipBlock` never matches here: it is
    /// matched by address ([`Peer::matches_ip`]).
    pub fn matches_pod(&self, policy_ns: &str, ns: &str, ns_labels: &Labels, pod_labels: &Labels) -> bool {
        match self {
            Peer::Pods { pods, namespaces } => {
                let ns_ok = match namespaces {
                    None => ns == policy_ns,
                    Some(sel) => sel.matches(ns_labels),
                };
                ns_ok && !pods.as_ref().is_some_and(|sel| !sel.matches(pod_labels))
            }
            Peer::IpBlock { .. } => false,
        }
    }

    /// Whether `ip` is in this `ipBlock` (never for a pod selector peer).
    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            Peer::IpBlock { cidr, except } => cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip)),
            Peer::Pods { .. } => false,
        }
    }
}

/// Which destination ports a policy port covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PortMatch {
    /// No `port`: every port of the protocol.
    All,
    /// `port` (and `endPort`): `start..=end`; a single port has `start == end`.
    Range(u16, u16),
    /// A named `port`: resolved against the destination pod's container ports of the same
    /// protocol; it matches nothing on a destination that is not a pod or has no such port.
    Named(String),
}

/// A `ports[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyPort {
    /// `protocol`, TCP when absent.
    pub protocol: Protocol,
    /// `port` / `endPort`.
    pub port: PortMatch,
}

impl PolicyPort {
    /// Whether a flow to `proto`/`port` on a destination with container ports `dst_ports`
    /// (`None`: the destination is not a known pod) is covered.
    pub fn matches(&self, proto: Protocol, port: u16, dst_ports: Option<&[NamedPort]>) -> bool {
        if self.protocol != proto {
            return false;
        }
        match &self.port {
            PortMatch::All => true,
            PortMatch::Range(a, b) => (*a..=*b).contains(&port),
            PortMatch::Named(name) => {
                resolve_named(name, proto, dst_ports.unwrap_or(&[])).is_some_and(|p| p == port)
            }
        }
    }
}

/// The number of the container port named `name` for `proto`, if any.
pub fn resolve_named(name: &str, proto: Protocol, ports: &[NamedPort]) -> Option<u16> {
    ports.iter().find(|p| p.name == name && p.protocol == proto).map(|p| p.port)
}

/// An `ingress[]` (`from`) or `egress[]` (`to`) rule: it allows a flow when the peer matches
/// one of `peers` AND the port matches one of `ports`. An empty list means "all": the rule
/// `{}` allows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// `from` / `to`; empty or absent: every peer (any pod, any address).
    pub peers: Vec<Peer>,
    /// `ports`; empty or absent: every port and protocol.
    pub ports: Vec<PolicyPort>,
}

/// A NetworkPolicy, reduced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// Namespace: the policy selects pods of this namespace only.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.podSelector`; `{}` selects every pod of the namespace.
    pub pod_selector: Selector,
    /// `spec.policyTypes` as given; `None` when absent (see [`Policy::isolates`]).
    pub policy_types: Option<Vec<Direction>>,
    /// `spec.ingress`; absent and `[]` are the same: no ingress allowed by this policy.
    pub ingress: Vec<Rule>,
    /// `spec.egress`; as `ingress`.
    pub egress: Vec<Rule>,
}

impl Policy {
    /// Whether the policy isolates its pods in `dir`: `policyTypes` lists it, or, when
    /// `policyTypes` is absent, Ingress always and Egress when there are egress rules.
    pub fn isolates(&self, dir: Direction) -> bool {
        match &self.policy_types {
            Some(types) => types.contains(&dir),
            None => dir == Direction::Ingress || !self.egress.is_empty(),
        }
    }

    /// The rules of a direction.
    pub fn rules(&self, dir: Direction) -> &[Rule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Whether the policy selects `pod` for `dir`.
    pub fn selects(&self, pod: &Pod, dir: Direction) -> bool {
        self.isolates(dir) && pod.namespace == self.namespace && self.pod_selector.matches(&pod.labels)
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A named container port (`spec.containers[].ports[]` with a `name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NamedPort {
    /// `name`.
    pub name: String,
    /// `protocol`, TCP when absent.
    pub protocol: Protocol,
    /// `containerPort`.
    pub port: u16,
}

/// A Pod, reduced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// `status.podIPs` (else `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// On this node (its port is on this tapwayd), or reached over the uplink.
    pub local: bool,
    /// Named container ports, sorted.
    pub ports: Vec<NamedPort>,
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A Namespace, reduced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels, as given (see [`namespace_labels`]).
    pub labels: Labels,
}

/// The labels namespace selectors see for namespace `ns`: its object's labels, plus
/// [`NAMESPACE_NAME_LABEL`] (the API server sets it; old objects or hand-written inputs may
/// lack it). A namespace without an object in the input has that label only.
pub fn namespace_labels(namespaces: &[Namespace], ns: &str) -> Labels {
    let mut labels = namespaces.iter().find(|n| n.name == ns).map(|n| n.labels.clone()).unwrap_or_default();
    labels.entry(NAMESPACE_NAME_LABEL.to_string()).or_insert_with(|| ns.to_string());
    labels
}

/// The pod that owns `ip`: the first in `pods` that lists it (inputs should not have two).
pub fn pod_by_ip(pods: &[Pod], ip: IpAddr) -> Option<&Pod> {
    pods.iter().find(|p| p.ips.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement { key: key.into(), op, values: values.iter().map(|v| v.to_string()).collect() }
    }

    #[test]
    fn empty_selector_selects_all_and_nothing_selects_none() {
        assert!(Selector::all().matches(&Labels::new()));
        assert!(Selector::all().matches(&l(&[("a", "b")])));
        assert!(!Selector::nothing().matches(&Labels::new()));
        assert!(!Selector::nothing().matches(&l(&[("", "")])));
    }

    #[test]
    fn match_labels_and_expressions_all_must_hold() {
        let mut s = Selector::labels([("pod", "a")]);
        assert!(s.matches(&l(&[("pod", "a"), ("x", "y")])));
        assert!(!s.matches(&l(&[("pod", "b")])));
        s.match_expressions.push(req("x", Operator::Exists, &[]));
        assert!(!s.matches(&l(&[("pod", "a")])));
        assert!(s.matches(&l(&[("pod", "a"), ("x", "")])));
    }

    #[test]
    fn operators() {
        let ab = l(&[("k", "a")]);
        let none = Labels::new();
        assert!(req("k", Operator::In, &["a", "b"]).matches(&ab));
        assert!(!req("k", Operator::In, &["b"]).matches(&ab));
        assert!(!req("k", Operator::In, &["a"]).matches(&none));
        assert!(!req("k", Operator::NotIn, &["a"]).matches(&ab));
        assert!(req("k", Operator::NotIn, &["b"]).matches(&ab));
        assert!(req("k", Operator::NotIn, &["a"]).matches(&none), "NotIn holds when the key is absent");
        assert!(req("k", Operator::Exists, &[]).matches(&ab));
        assert!(!req("k", Operator::Exists, &[]).matches(&none));
        assert!(req("k", Operator::DoesNotExist, &[]).matches(&none));
        assert!(!req("k", Operator::DoesNotExist, &[]).matches(&ab));
    }

    #[test]
    fn policy_types_default() {
        let mut p = Policy {
            namespace: "x".into(),
            name: "p".into(),
            pod_selector: Selector::all(),
            policy_types: None,
            ingress: vec![],
            egress: vec![],
        };
        assert!(p.isolates(Direction::Ingress), "Ingress is implied");
        assert!(!p.isolates(Direction::Egress), "Egress only with egress rules");
        p.egress.push(Rule::default());
        assert!(p.isolates(Direction::Egress));
        p.policy_types = Some(vec![Direction::Egress]);
        assert!(!p.isolates(Direction::Ingress), "explicit policyTypes win");
    }

    #[test]
    fn peers() {
        let nsl = l(&[(NAMESPACE_NAME_LABEL, "y")]);
        let pod_only = Peer::Pods { pods: Some(Selector::labels([("pod", "b")])), namespaces: None };
        assert!(pod_only.matches_pod("x", "x", &nsl, &l(&[("pod", "b")])));
        assert!(!pod_only.matches_pod("x", "y", &nsl, &l(&[("pod", "b")])), "own namespace only");
        let ns_only =
            Peer::Pods { pods: None, namespaces: Some(Selector::labels([(NAMESPACE_NAME_LABEL, "y")])) };
        assert!(ns_only.matches_pod("x", "y", &nsl, &Labels::new()));
        let both = Peer::Pods {
            pods: Some(Selector::labels([("pod", "b")])),
            namespaces: Some(Selector::labels([(NAMESPACE_NAME_LABEL, "y")])),
        };
        assert!(both.matches_pod("x", "y", &nsl, &l(&[("pod", "b")])));
        assert!(!both.matches_pod("x", "y", &nsl, &l(&[("pod", "a")])), "both: intersection");
        let block = Peer::IpBlock {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: vec!["10.1.0.0/16".parse().unwrap()],
        };
        assert!(block.matches_ip("10.2.0.1".parse().unwrap()));
        assert!(!block.matches_ip("10.1.0.1".parse().unwrap()));
        assert!(!block.matches_ip("11.0.0.1".parse().unwrap()));
        assert!(!block.matches_pod("x", "x", &nsl, &Labels::new()));
    }

    #[test]
    fn ports() {
        let named = vec![NamedPort { name: "serve-80-tcp".into(), protocol: Protocol::Tcp, port: 80 }];
        let p = PolicyPort { protocol: Protocol::Tcp, port: PortMatch::Named("serve-80-tcp".into()) };
        assert!(p.matches(Protocol::Tcp, 80, Some(&named)));
        assert!(!p.matches(Protocol::Tcp, 81, Some(&named)));
        assert!(!p.matches(Protocol::Tcp, 80, None), "a named port matches pods only");
        let udp = PolicyPort { protocol: Protocol::Udp, port: PortMatch::Named("serve-80-tcp".into()) };
        assert!(!udp.matches(Protocol::Udp, 80, Some(&named)), "resolved with the rule's protocol");
        let range = PolicyPort { protocol: Protocol::Tcp, port: PortMatch::Range(80, 82) };
        assert!(range.matches(Protocol::Tcp, 82, None) && !range.matches(Protocol::Tcp, 83, None));
        assert!(!range.matches(Protocol::Udp, 80, None));
        let sctp = PolicyPort { protocol: Protocol::Sctp, port: PortMatch::Range(81, 81) };
        assert!(!sctp.matches(Protocol::Tcp, 81, None), "SCTP never allows TCP");
    }

    #[test]
    fn namespace_labels_add_the_name_label() {
        let nss = vec![Namespace { name: "x".into(), labels: l(&[("team", "t")]) }];
        assert_eq!(namespace_labels(&nss, "x"), l(&[("team", "t"), (NAMESPACE_NAME_LABEL, "x")]));
        assert_eq!(namespace_labels(&nss, "q"), l(&[(NAMESPACE_NAME_LABEL, "q")]));
    }
}
