//! Kubernetes objects → the [`tapway_policy`] model, over the k8s-openapi types: what
//! `tapwayctl policy sync` will read (`kubectl get namespaces,pods,networkpolicies -A -o json`,
//! a v1 List) and what the watcher will keep. As in [`crate::convert`], one bad object never
//! fails the import: it is listed in [`PolicyImport::skipped`] with the reason.
//!
//! * Namespaces: name and labels.
//! * Pods: `status.podIPs` (else `status.podIP`), labels, `spec.nodeName` (local when it is
//!   the node given), and the named `spec.containers[].ports[]`. Skipped: pods without an
//!   IP yet, `hostNetwork` pods (they have the node's address, which policy does not cover),
//!   and finished pods (`Succeeded`/`Failed`, whose IPs may already be another pod's).
//! * NetworkPolicies: everything v1 has. What the API server would have refused is read so
//!   that the policy allows *less*, never more: a bad port or peer is left out of its rule,
//!   a rule whose every port (or every peer) is bad is left out, a peer selector with an
//!   unknown operator selects nothing. Only a bad `spec.podSelector` skips the policy.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod as K8sPod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::Value;
use tapway_policy::{
    Direction, NamedPort, Namespace, Operator, Peer, Pod, Policy, PolicyPort, PortMatch, Protocol,
    Requirement, Rule, Selector,
};

use crate::convert::{
    head_label, namespace_of, nonempty, ns_label, parse_ip, top_level_items, type_name, KubeError,
};

/// Result of converting a kubectl List for policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyImport {
    /// Namespaces, sorted by name.
    pub namespaces: Vec<Namespace>,
    /// Pods with IPs, sorted by `namespace/name`.
    pub pods: Vec<Pod>,
    /// NetworkPolicies, sorted by `namespace/name`.
    pub policies: Vec<Policy>,
    /// Objects, or parts of them, left out: `Kind ns/name: why`.
    pub skipped: Vec<String>,
}

/// Converts `kubectl get namespaces,pods,networkpolicies -A -o json` output (a List, one
/// object or a bare array) into the policy model; pods on node `node` are local. Objects of
/// other kinds are skipped. See the [module docs](self).
pub fn import_policy(json: &Value, node: Option<&str>) -> Result<PolicyImport, KubeError> {
    let items = top_level_items(json)?;
    let mut out = PolicyImport::default();
    let mut namespaces: BTreeMap<String, Namespace> = BTreeMap::new();
    let mut pods: BTreeMap<(String, String), Pod> = BTreeMap::new();
    let mut policies: BTreeMap<(String, String), Policy> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            out.skipped.push(format!("item {i}: a JSON {}, not an object", type_name(item)));
            continue;
        };
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = obj.get("apiVersion").and_then(Value::as_str);
        let label = head_label(obj.get("metadata"));
        match (kind, api_version) {
            ("Namespace", None | Some("v1")) => match K8sNamespace::deserialize(*item) {
                Ok(ns) => match nonempty(&ns.metadata.name) {
                    Some(name) if namespaces.contains_key(name) => {
                        out.skipped.push(format!("Namespace {name}: listed twice, the first one is used"))
                    }
                    Some(name) => {
                        let labels = ns.metadata.labels.clone().unwrap_or_default();
                        namespaces.insert(name.to_string(), Namespace { name: name.to_string(), labels });
                    }
                    None => out.skipped.push("Namespace ?: no metadata.name".to_string()),
                },
                Err(e) => {
                    out.skipped.push(format!("Namespace {}: not a valid v1 Namespace: {e}", label.display()))
                }
            },
            ("Pod", None | Some("v1")) => match K8sPod::deserialize(*item) {
                Ok(p) => {
                    if let Some(pod) = parse_pod(&p, node, &mut out.skipped) {
                        let key = (pod.namespace.clone(), pod.name.clone());
                        let label = pod.key();
                        if let Entry::Vacant(v) = pods.entry(key) {
                            v.insert(pod);
                        } else {
                            out.skipped.push(format!("Pod {label}: listed twice, the first one is used"));
                        }
                    }
                }
                Err(e) => out.skipped.push(format!("Pod {}: not a valid v1 Pod: {e}", ns_label(&label))),
            },
            ("NetworkPolicy", None | Some("networking.k8s.io/v1")) => match NetworkPolicy::deserialize(*item)
            {
                Ok(np) => {
                    if let Some(p) = parse_policy(&np, &mut out.skipped) {
                        let key = (p.namespace.clone(), p.name.clone());
                        let label = p.key();
                        if let Entry::Vacant(v) = policies.entry(key) {
                            v.insert(p);
                        } else {
                            out.skipped
                                .push(format!("NetworkPolicy {label}: listed twice, the first one is used"));
                        }
                    }
                }
                Err(e) => out.skipped.push(format!(
                    "NetworkPolicy {}: not a valid networking.k8s.io/v1 NetworkPolicy: {e}",
                    ns_label(&label)
                )),
            },
            ("", _) => out.skipped.push(format!("item {i} ({}): no kind", label.display())),
            _ => {
                let version = api_version.map(|v| format!(" ({v})")).unwrap_or_default();
                out.skipped.push(format!(
                    "{kind}{version} {}: not a Namespace, Pod (v1) or NetworkPolicy (networking.k8s.io/v1)",
                    label.display()
                ));
            }
        }
    }
    // An IP held by two pods (a finished pod not yet gone, say): the first keeps it.
    let mut owners: BTreeMap<IpAddr, String> = BTreeMap::new();
    for pod in pods.values_mut() {
        let key = pod.key();
        pod.ips.retain(|ip| match owners.get(ip) {
            Some(other) => {
                out.skipped.push(format!("Pod {key}: IP {ip} is already Pod {other}'s, left out"));
                false
            }
            None => {
                owners.insert(*ip, key.clone());
                true
            }
        });
    }
    out.namespaces = namespaces.into_values().collect();
    out.pods = pods.into_values().filter(|p| !p.ips.is_empty()).collect();
    out.policies = policies.into_values().collect();
    Ok(out)
}

/// Reduces a Pod, or `None` (with the reason in `skipped`).
pub fn parse_pod(p: &K8sPod, node: Option<&str>, skipped: &mut Vec<String>) -> Option<Pod> {
    let ns = namespace_of(&p.metadata);
    let Some(name) = nonempty(&p.metadata.name).map(str::to_string) else {
        skipped.push(format!("Pod {ns}/?: no metadata.name"));
        return None;
    };
    let mut skip = |why: &str| skipped.push(format!("Pod {ns}/{name}: {why}"));
    let spec = p.spec.as_ref();
    if spec.and_then(|s| s.host_network) == Some(true) {
        skip("hostNetwork: it has the node's addresses, not covered by NetworkPolicy");
        return None;
    }
    let status = p.status.as_ref();
    if let Some(phase @ ("Succeeded" | "Failed")) = status.and_then(|s| s.phase.as_deref()) {
        skip(&format!("phase {phase}: finished, its IP may be reused"));
        return None;
    }
    let raw: Vec<&str> = match status.and_then(|s| s.pod_ips.as_ref()) {
        Some(ips) if !ips.is_empty() => ips.iter().map(|i| i.ip.as_str()).collect(),
        _ => status.and_then(|s| s.pod_ip.as_deref()).into_iter().collect(),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for s in raw.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match parse_ip(s) {
            Some(ip) if !ips.contains(&ip) => ips.push(ip),
            Some(_) => {}
            None => skip(&format!("podIP {s:?} is not an IP address, ignored")),
        }
    }
    if ips.is_empty() {
        skip("no IP yet (status.podIPs)");
        return None;
    }
    let mut ports: Vec<NamedPort> = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or(&[]) {
        for cp in c.ports.as_deref().unwrap_or(&[]) {
            let Some(pname) = nonempty(&cp.name) else { continue };
            let Ok(protocol) = protocol_of(cp.protocol.as_deref()) else {
                skip(&format!("container port {pname}: unknown protocol, ignored"));
                continue;
            };
            match u16::try_from(cp.container_port).ok().filter(|&n| n != 0) {
                Some(port) => ports.push(NamedPort { name: pname.to_string(), protocol, port }),
                None => {
                    skip(&format!("container port {pname}: {} is not in 1-65535, ignored", cp.container_port))
                }
            }
        }
    }
    ports.sort();
    ports.dedup();
    let local = node.is_some_and(|n| spec.and_then(|s| s.node_name.as_deref()) == Some(n));
    Some(Pod {
        namespace: ns,
        name,
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ips,
        local,
        ports,
    })
}

/// `protocol` of a port: TCP when absent.
fn protocol_of(v: Option<&str>) -> Result<Protocol, String> {
    match v {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some("SCTP") => Ok(Protocol::Sctp),
        Some(other) => Err(format!("unknown protocol {other:?}")),
    }
}

/// A label selector; `Err` with the reason when an operator is unknown or `In`/`NotIn` has
/// no values (the API server refuses both).
fn selector(s: &LabelSelector) -> Result<Selector, String> {
    let mut out =
        Selector { match_labels: s.match_labels.clone().unwrap_or_default(), match_expressions: Vec::new() };
    for r in s.match_expressions.as_deref().unwrap_or(&[]) {
        let op = match r.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => return Err(format!("matchExpressions key {:?}: unknown operator {other:?}", r.key)),
        };
        let values = r.values.clone().unwrap_or_default();
        if matches!(op, Operator::In | Operator::NotIn) && values.is_empty() {
            return Err(format!("matchExpressions key {:?}: {} without values", r.key, r.operator));
        }
        out.match_expressions.push(Requirement { key: r.key.clone(), op, values });
    }
    Ok(out)
}

/// Reduces a NetworkPolicy, or `None` (with the reason in `skipped`).
pub fn parse_policy(np: &NetworkPolicy, skipped: &mut Vec<String>) -> Option<Policy> {
    let ns = namespace_of(&np.metadata);
    let Some(name) = nonempty(&np.metadata.name).map(str::to_string) else {
        skipped.push(format!("NetworkPolicy {ns}/?: no metadata.name"));
        return None;
    };
    let label = format!("NetworkPolicy {ns}/{name}");
    let Some(spec) = &np.spec else {
        skipped.push(format!("{label}: no spec"));
        return None;
    };
    let pod_selector = match spec.pod_selector.as_ref().map(selector).unwrap_or(Ok(Selector::all())) {
        Ok(s) => s,
        Err(why) => {
            skipped.push(format!("{label}: spec.podSelector: {why}"));
            return None;
        }
    };
    let policy_types = spec.policy_types.as_ref().map(|types| {
        types
            .iter()
            .filter_map(|t| match t.as_str() {
                "Ingress" => Some(Direction::Ingress),
                "Egress" => Some(Direction::Egress),
                other => {
                    skipped.push(format!("{label}: policyTypes {other:?} is unknown, ignored"));
                    None
                }
            })
            .collect()
    });
    let mut rules = |dir: &str, list: Vec<RawRule<'_>>| {
        let mut out = Vec::new();
        for (i, (peers, ports)) in list.into_iter().enumerate() {
            let at = format!("{label}: {dir}[{i}]");
            if let Some(rule) = parse_rule(&at, peers.map(Vec::as_slice), ports.map(Vec::as_slice), skipped) {
                out.push(rule);
            }
        }
        out
    };
    let ingress = rules(
        "ingress",
        spec.ingress.iter().flatten().map(|r| (r.from.as_ref(), r.ports.as_ref())).collect(),
    );
    let egress =
        rules("egress", spec.egress.iter().flatten().map(|r| (r.to.as_ref(), r.ports.as_ref())).collect());
    Some(Policy { namespace: ns, name, pod_selector, policy_types, ingress, egress })
}

/// A rule as k8s-openapi has it: its peers (`from`/`to`) and its ports.
type RawRule<'a> = (Option<&'a Vec<NetworkPolicyPeer>>, Option<&'a Vec<NetworkPolicyPort>>);

/// One rule; `None` when every one of its peers or ports is bad (an empty list would mean
/// "all", allowing more than written).
fn parse_rule(
    at: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    skipped: &mut Vec<String>,
) -> Option<Rule> {
    let (peers, ports) = (peers.unwrap_or(&[]), ports.unwrap_or(&[]));
    let mut rule = Rule::default();
    for (j, p) in peers.iter().enumerate() {
        match parse_peer(p) {
            Ok(peer) => rule.peers.push(peer),
            Err(why) => skipped.push(format!("{at} peer {j}: {why}, left out")),
        }
    }
    for (j, p) in ports.iter().enumerate() {
        match parse_port(p) {
            Ok(port) => rule.ports.push(port),
            Err(why) => skipped.push(format!("{at} port {j}: {why}, left out")),
        }
    }
    if (!peers.is_empty() && rule.peers.is_empty()) || (!ports.is_empty() && rule.ports.is_empty()) {
        skipped.push(format!("{at}: nothing valid left in it, the rule is left out"));
        return None;
    }
    Some(rule)
}

fn parse_peer(p: &NetworkPolicyPeer) -> Result<Peer, String> {
    // A bad peer selector selects nothing: the peer allows less, never more.
    let sel =
        |s: &Option<LabelSelector>| s.as_ref().map(|s| selector(s).unwrap_or_else(|_| Selector::nothing()));
    match (&p.ip_block, &p.pod_selector, &p.namespace_selector) {
        (Some(b), None, None) => {
            let cidr =
                parse_net(&b.cidr).ok_or_else(|| format!("ipBlock cidr {:?} is not a CIDR", b.cidr))?;
            let mut except = Vec::new();
            for e in b.except.as_deref().unwrap_or(&[]) {
                except.push(parse_net(e).ok_or_else(|| format!("ipBlock except {e:?} is not a CIDR"))?);
            }
            Ok(Peer::IpBlock { cidr, except })
        }
        (Some(_), _, _) => Err("ipBlock together with a selector".to_string()),
        (None, None, None) => Err("no podSelector, namespaceSelector or ipBlock".to_string()),
        (None, pods, namespaces) => Ok(Peer::Pods { pods: sel(pods), namespaces: sel(namespaces) }),
    }
}

/// A CIDR, host bits cleared (the API accepts `10.0.0.1/4`, the e2e tests use it).
fn parse_net(s: &str) -> Option<IpNet> {
    s.trim().parse::<IpNet>().ok().map(|n| n.trunc())
}

fn parse_port(p: &NetworkPolicyPort) -> Result<PolicyPort, String> {
    let protocol = protocol_of(p.protocol.as_deref())?;
    let number = |n: i32| u16::try_from(n).ok().filter(|&n| n != 0);
    let port = match (&p.port, p.end_port) {
        (None, None) => PortMatch::All,
        (None, Some(_)) => return Err("endPort without port".to_string()),
        (Some(IntOrString::Int(n)), end) => {
            let start = number(*n).ok_or_else(|| format!("port {n} is not in 1-65535"))?;
            let end = match end {
                None => start,
                Some(e) => number(e)
                    .filter(|&e| e >= start)
                    .ok_or_else(|| format!("endPort {e} is not in {start}-65535"))?,
            };
            PortMatch::Range(start, end)
        }
        (Some(IntOrString::String(_)), Some(_)) => return Err("endPort with a named port".to_string()),
        (Some(IntOrString::String(s)), None) if s.is_empty() => return Err("empty port name".to_string()),
        (Some(IntOrString::String(s)), None) => PortMatch::Named(s.clone()),
    };
    Ok(PolicyPort { protocol, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/policy-list.json")).unwrap()
    }

    #[test]
    fn imports_the_fixture_list() {
        let imp = import_policy(&fixture(), Some("node-1")).unwrap();
        assert_eq!(imp.namespaces.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(
            imp.namespaces[0].labels.get("kubernetes.io/metadata.name").map(String::as_str),
            Some("x")
        );
        let names: Vec<String> = imp.pods.iter().map(Pod::key).collect();
        assert_eq!(names, ["x/a", "x/b", "y/a"]);
        let a = &imp.pods[0];
        assert_eq!(a.ips, vec!["10.0.0.10".parse::<IpAddr>().unwrap(), "fd00::10".parse().unwrap()]);
        assert!(a.local);
        assert!(!imp.pods[1].local, "x/b is on node-2");
        assert_eq!(
            a.ports,
            vec![
                NamedPort { name: "serve-80-tcp".into(), protocol: Protocol::Tcp, port: 80 },
                NamedPort { name: "serve-80-udp".into(), protocol: Protocol::Udp, port: 80 },
            ]
        );
        assert_eq!(imp.pods[1].ips, vec!["10.0.0.11".parse::<IpAddr>().unwrap()], "status.podIP fallback");

        assert_eq!(imp.policies.len(), 1);
        let p = &imp.policies[0];
        assert_eq!(p.key(), "x/allow-y");
        assert_eq!(p.pod_selector, Selector::labels([("pod", "a")]));
        assert_eq!(p.policy_types, Some(vec![Direction::Ingress, Direction::Egress]));
        assert_eq!(p.ingress.len(), 1);
        let r = &p.ingress[0];
        assert_eq!(
            r.peers,
            vec![
                Peer::Pods {
                    pods: Some(Selector::labels([("pod", "b")])),
                    namespaces: Some(Selector::labels([("kubernetes.io/metadata.name", "y")])),
                },
                Peer::IpBlock {
                    cidr: "0.0.0.0/4".parse().unwrap(),
                    except: vec!["10.0.0.11/32".parse().unwrap()]
                },
            ]
        );
        assert_eq!(
            r.ports,
            vec![
                PolicyPort { protocol: Protocol::Tcp, port: PortMatch::Range(80, 81) },
                PolicyPort { protocol: Protocol::Udp, port: PortMatch::Named("serve-80-udp".into()) },
                PolicyPort { protocol: Protocol::Sctp, port: PortMatch::All },
            ]
        );
        assert_eq!(p.egress, vec![Rule::default()], "the empty rule {{}} is kept: allow all");

        let skipped = imp.skipped.join("\n");
        for want in [
            "Pod x/host: hostNetwork",
            "Pod x/pending: no IP yet",
            "Pod x/done: phase Succeeded",
            "Service (v1) default/web: not a Namespace, Pod (v1) or NetworkPolicy",
        ] {
            assert!(skipped.contains(want), "{want:?} not in:\n{skipped}");
        }
        assert_eq!(imp.skipped.len(), 4, "{skipped}");
    }

    fn one_policy(spec: Value) -> (Option<Policy>, Vec<String>) {
        let np: NetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": "x", "name": "p"}, "spec": spec
        }))
        .unwrap();
        let mut skipped = Vec::new();
        (parse_policy(&np, &mut skipped), skipped)
    }

    #[test]
    fn absent_policy_types_and_rules() {
        let (p, skipped) = one_policy(json!({"podSelector": {}}));
        let p = p.unwrap();
        assert!(skipped.is_empty());
        assert_eq!(p.policy_types, None);
        assert!(p.isolates(Direction::Ingress) && !p.isolates(Direction::Egress));
        assert_eq!(p.pod_selector, Selector::all());
    }

    #[test]
    fn bad_parts_allow_less_never_more() {
        // The only port is bad: the rule goes (an empty ports list would allow every port).
        let (p, skipped) = one_policy(json!({"podSelector": {}, "ingress": [
            {"ports": [{"port": 70000}]},
            {"ports": [{"port": "http", "endPort": 90}, {"port": 8080}]},
            {"from": [{}]},
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["nope"]}}, {"podSelector": {"matchExpressions": [{"key": "k", "operator": "Like"}]}}]}
        ]}));
        let p = p.unwrap();
        assert_eq!(p.ingress.len(), 2, "{skipped:?}");
        assert_eq!(
            p.ingress[0].ports,
            vec![PolicyPort { protocol: Protocol::Tcp, port: PortMatch::Range(8080, 8080) }]
        );
        assert_eq!(
            p.ingress[1].peers,
            vec![Peer::Pods { pods: Some(Selector::nothing()), namespaces: None }]
        );
        let s = skipped.join("\n");
        assert!(s.contains("ingress[0] port 0: port 70000 is not in 1-65535"), "{s}");
        assert!(s.contains("ingress[0]: nothing valid left"), "{s}");
        assert!(s.contains("endPort with a named port"), "{s}");
        assert!(s.contains("ingress[2] peer 0: no podSelector"), "{s}");
        assert!(s.contains("except \"nope\" is not a CIDR"), "{s}");
    }

    #[test]
    fn bad_pod_selector_skips_the_policy() {
        let (p, skipped) =
            one_policy(json!({"podSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}));
        assert!(p.is_none());
        assert!(
            skipped[0].contains("spec.podSelector: matchExpressions key \"k\": In without values"),
            "{skipped:?}"
        );
    }

    #[test]
    fn whole_input_errors_and_bad_items() {
        assert!(import_policy(&json!("x"), None).is_err());
        let imp = import_policy(
            &json!([1, {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}, "spec": "bad"}]),
            None,
        )
        .unwrap();
        assert_eq!(imp.skipped.len(), 2, "{:?}", imp.skipped);
        assert!(imp.skipped[1].starts_with("Pod default/p: not a valid v1 Pod"), "{:?}", imp.skipped);
    }

    #[test]
    fn duplicate_ips_keep_the_first_pod() {
        let pod = |name: &str| {
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"namespace": "x", "name": name},
                   "spec": {"containers": []}, "status": {"podIP": "10.0.0.5"}})
        };
        let imp = import_policy(&json!({"kind": "List", "items": [pod("a"), pod("b")]}), None).unwrap();
        assert_eq!(imp.pods.iter().map(Pod::key).collect::<Vec<_>>(), ["x/a"]);
        assert!(imp.skipped[0].contains("Pod x/b: IP 10.0.0.5 is already Pod x/a's"), "{:?}", imp.skipped);
    }
}
