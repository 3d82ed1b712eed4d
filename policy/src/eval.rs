//! The reference evaluation of one flow, written to be obviously right rather than fast: it
//! walks every policy. A flow `src → dst proto/port` is allowed when the source's egress
//! allows it (only checked when the source is a pod isolated for egress) AND the
//! destination's ingress allows it (only when the destination is a pod isolated for
//! ingress). A pod is isolated in a direction when some policy of its namespace selects it
//! for that direction; then the flow is allowed only if some rule of one of those policies
//! matches the peer and the port (the union). An address no pod has is matched by `ipBlock`s
//! only; a pod's address is matched by pod selectors and by `ipBlock`s (as the upstream e2e
//! tests expect). Named ports resolve against the destination pod: the local pod for
//! ingress, the peer for egress.
//!
//! The [`Verdict`] says why, per direction: what `tapwayctl policy trace` will print.

use std::fmt;
use std::net::IpAddr;

use crate::model::{namespace_labels, pod_by_ip, Direction, Namespace, Pod, Policy, Protocol};

/// The outcome for one direction of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// The endpoint is no known pod: nothing to check on this side.
    NotAPod,
    /// No policy selects the pod for this direction: everything is allowed.
    NotIsolated,
    /// Rule `rule` (index in `spec.ingress`/`spec.egress`) of policy `policy` allows it;
    /// `selecting` are all the policies that isolate the pod in this direction.
    Allowed {
        /// `namespace/name` of the first policy (in input order) with a matching rule.
        policy: String,
        /// Its rule's index.
        rule: usize,
        /// Every policy selecting the pod for this direction.
        selecting: Vec<String>,
    },
    /// Isolated, and no rule of the selecting policies allows the flow.
    Denied {
        /// Every policy selecting the pod for this direction.
        selecting: Vec<String>,
    },
}

impl Side {
    /// Whether this side lets the flow through.
    pub fn allows(&self) -> bool {
        !matches!(self, Side::Denied { .. })
    }
}

/// The verdict on a flow, with the reason on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Both sides allow.
    pub allowed: bool,
    /// The source's egress.
    pub egress: Side,
    /// The destination's ingress.
    pub ingress: Side,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::NotAPod => f.write_str("not a pod: no policy applies"),
            Side::NotIsolated => f.write_str("not isolated: no policy selects it"),
            Side::Allowed { policy, rule, selecting } => {
                write!(f, "allowed by {policy} rule {rule} (selected by {})", selecting.join(", "))
            }
            Side::Denied { selecting } => {
                write!(f, "denied: isolated by {} and nothing allows", selecting.join(", "))
            }
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = if self.allowed { "ALLOW" } else { "DENY" };
        write!(
            f,
            "{word}\n  egress of the source: {}\n  ingress of the destination: {}",
            self.egress, self.ingress
        )
    }
}

/// Evaluates the flow `src → dst` on `proto`/`port`. See the [module docs](self).
pub fn allowed(
    policies: &[Policy],
    pods: &[Pod],
    namespaces: &[Namespace],
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    port: u16,
) -> Verdict {
    let src_pod = pod_by_ip(pods, src);
    let dst_pod = pod_by_ip(pods, dst);
    let egress = match src_pod {
        None => Side::NotAPod,
        Some(local) => {
            side(policies, namespaces, Direction::Egress, local, dst, dst_pod, proto, port, dst_pod)
        }
    };
    let ingress = match dst_pod {
        None => Side::NotAPod,
        Some(local) => {
            side(policies, namespaces, Direction::Ingress, local, src, src_pod, proto, port, Some(local))
        }
    };
    Verdict { allowed: egress.allows() && ingress.allows(), egress, ingress }
}

/// One direction: `local` is the pod whose policies apply, `peer`/`peer_pod` the other end,
/// `dst_pod` the pod named ports resolve against.
#[allow(clippy::too_many_arguments)]
fn side(
    policies: &[Policy],
    namespaces: &[Namespace],
    dir: Direction,
    local: &Pod,
    peer: IpAddr,
    peer_pod: Option<&Pod>,
    proto: Protocol,
    port: u16,
    dst_pod: Option<&Pod>,
) -> Side {
    let selecting: Vec<&Policy> = policies.iter().filter(|p| p.selects(local, dir)).collect();
    if selecting.is_empty() {
        return Side::NotIsolated;
    }
    let names = selecting.iter().map(|p| p.key()).collect();
    let peer_ns_labels = peer_pod.map(|p| namespace_labels(namespaces, &p.namespace));
    let dst_ports = dst_pod.map(|p| p.ports.as_slice());
    for policy in &selecting {
        for (i, rule) in policy.rules(dir).iter().enumerate() {
            let peer_ok = rule.peers.is_empty()
                || rule.peers.iter().any(|peer_sel| {
                    peer_sel.matches_ip(peer)
                        || match (peer_pod, &peer_ns_labels) {
                            (Some(pp), Some(nsl)) => {
                                peer_sel.matches_pod(&policy.namespace, &pp.namespace, nsl, &pp.labels)
                            }
                            _ => false,
                        }
                });
            let port_ok =
                rule.ports.is_empty() || rule.ports.iter().any(|pp| pp.matches(proto, port, dst_ports));
            if peer_ok && port_ok {
                return Side::Allowed { policy: policy.key(), rule: i, selecting: names };
            }
        }
    }
    Side::Denied { selecting: names }
}
