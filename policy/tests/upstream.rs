//! The upstream Kubernetes NetworkPolicy e2e cases (test/e2e/network/netpol/network_policy.go)
//! as table tests of `eval` and `compile`: namespaces x, y, z with pods a, b, c, each pod
//! labelled `pod: <name>` with the container ports the e2e pods have (serve-80-tcp,
//! serve-81-tcp, serve-80-udp, serve-81-udp). Each expected matrix is written from the
//! `reachability.Expect*` lines of the upstream case it names; loopback (a pod to itself)
//! is not checked, as upstream ignores it. Cases marked "(from the API's meaning)" have no
//! upstream twin in that file.

// Fixtures built from constants: unwrap on them is fine.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;

use common::{agreed, compile_all};
use tapway_policy::model::{Labels, NAMESPACE_NAME_LABEL};
use tapway_policy::{
    Direction, NamedPort, Namespace, Operator, Peer, Pod, Policy, PolicyPort, PortMatch, Protocol,
    Requirement, Rule, Selector,
};

const NSS: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn ip_of(ns: &str, pod: &str) -> IpAddr {
    let n = NSS.iter().position(|&x| x == ns).unwrap() as u8;
    let p = PODS.iter().position(|&x| x == pod).unwrap() as u8;
    IpAddr::from([10, 0, n, 10 + p])
}

fn world() -> (Vec<Pod>, Vec<Namespace>) {
    let mut pods = Vec::new();
    for ns in NSS {
        for p in PODS {
            let ports = [(80, Protocol::Tcp), (81, Protocol::Tcp), (80, Protocol::Udp), (81, Protocol::Udp)]
                .into_iter()
                .map(|(port, protocol)| NamedPort {
                    name: format!("serve-{port}-{}", protocol.to_string().to_lowercase()),
                    protocol,
                    port,
                })
                .collect();
            pods.push(Pod {
                namespace: ns.into(),
                name: p.into(),
                labels: [("pod".to_string(), p.to_string())].into(),
                ips: vec![ip_of(ns, p)],
                local: true,
                ports,
            });
        }
    }
    let nss = NSS
        .iter()
        .map(|&n| Namespace { name: n.into(), labels: [("ns".to_string(), n.to_string())].into() })
        .collect();
    (pods, nss)
}

fn policy(
    ns: &str,
    name: &str,
    sel: Selector,
    types: &[Direction],
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
) -> Policy {
    Policy {
        namespace: ns.into(),
        name: name.into(),
        pod_selector: sel,
        policy_types: Some(types.to_vec()),
        ingress,
        egress,
    }
}

fn pod_a() -> Selector {
    Selector::labels([("pod", "a")])
}

fn ns_sel(ns: &str) -> Option<Selector> {
    Some(Selector::labels([(NAMESPACE_NAME_LABEL, ns)]))
}

/// A namespace selector `kubernetes.io/metadata.name NotIn [ns]`.
fn ns_not_in(ns: &str) -> Selector {
    Selector {
        match_labels: Labels::new(),
        match_expressions: vec![Requirement {
            key: NAMESPACE_NAME_LABEL.into(),
            op: Operator::NotIn,
            values: vec![ns.into()],
        }],
    }
}

fn from(peers: Vec<Peer>, ports: Vec<PolicyPort>) -> Rule {
    Rule { peers, ports }
}

fn tcp(port: u16) -> PolicyPort {
    PolicyPort { protocol: Protocol::Tcp, port: PortMatch::Range(port, port) }
}

fn named(name: &str, protocol: Protocol) -> PolicyPort {
    PolicyPort { protocol, port: PortMatch::Named(name.into()) }
}

/// Checks every pair of distinct pods on `proto`/`port` against `expect(src, dst)`, where a
/// pod is `(ns, pod)`.
fn matrix(
    policies: &[Policy],
    proto: Protocol,
    port: u16,
    expect: impl Fn((&str, &str), (&str, &str)) -> bool,
) {
    let (pods, nss) = world();
    let c = compile_all(policies, &pods, &nss);
    let mut wrong = Vec::new();
    for s in pods.iter() {
        for d in pods.iter() {
            if s.key() == d.key() {
                continue;
            }
            let got = agreed(policies, &pods, &nss, &c, s.ips[0], d.ips[0], proto, port);
            let want = expect((&s.namespace, &s.name), (&d.namespace, &d.name));
            if got != want {
                wrong.push(format!("{} -> {}: got {got}, want {want}", s.key(), d.key()));
            }
        }
    }
    assert!(wrong.is_empty(), "{proto}/{port}:\n{}", wrong.join("\n"));
}

#[test]
fn default_deny_ingress() {
    // "should support a 'default-deny-ingress' policy": ExpectPeer(any, x, false).
    let p = policy("x", "deny-ingress", Selector::all(), &[Direction::Ingress], vec![], vec![]);
    matrix(&[p], Protocol::Tcp, 80, |_, d| d.0 != "x");
}

#[test]
fn default_deny_all() {
    // "should support a 'default-deny-all' policy": (any → x) and (x → any) false.
    let p =
        policy("x", "deny-all", Selector::all(), &[Direction::Ingress, Direction::Egress], vec![], vec![]);
    matrix(&[p], Protocol::Tcp, 80, |s, d| s.0 != "x" && d.0 != "x");
}

#[test]
fn default_deny_egress() {
    // Egress twin of default-deny-ingress (from the API's meaning): x → any false.
    let p = policy("x", "deny-egress", Selector::all(), &[Direction::Egress], vec![], vec![]);
    matrix(std::slice::from_ref(&p), Protocol::Tcp, 80, |s, _| s.0 != "x");
    matrix(&[p], Protocol::Udp, 81, |s, _| s.0 != "x");
}

#[test]
fn allow_from_pod_selector() {
    // "...allow traffic from pods within server namespace based on PodSelector": only x/b → x/a.
    let r = from(vec![Peer::Pods { pods: Some(Selector::labels([("pod", "b")])), namespaces: None }], vec![]);
    let p = policy("x", "x-a-allows-x-b", pod_a(), &[Direction::Ingress], vec![r], vec![]);
    matrix(&[p], Protocol::Tcp, 80, |s, d| d != ("x", "a") || s == ("x", "b"));
}

#[test]
fn allow_from_namespace_selector() {
    // "...allow traffic only from a different namespace, based on NamespaceSelector".
    let r = from(vec![Peer::Pods { pods: None, namespaces: ns_sel("y") }], vec![]);
    let p = policy("x", "allow-client-a-via-ns-selector", pod_a(), &[Direction::Ingress], vec![r], vec![]);
    matrix(&[p], Protocol::Tcp, 80, |s, d| d != ("x", "a") || s.0 == "y");
}

#[test]
fn allow_from_pod_and_namespace_selector_in_one_peer() {
    // "should enforce policy based on PodSelector and NamespaceSelector": NotIn [x] AND pod=b.
    let ns = ns_not_in("x");
    let r =
        from(vec![Peer::Pods { pods: Some(Selector::labels([("pod", "b")])), namespaces: Some(ns) }], vec![]);
    let p =
        policy("x", "allow-ns-y-podselector-and-nsselector", pod_a(), &[Direction::Ingress], vec![r], vec![]);
    matrix(&[p], Protocol::Tcp, 80, |s, d| d != ("x", "a") || s == ("y", "b") || s == ("z", "b"));
}

#[test]
fn allow_pod_selector_or_namespace_selector() {
    // "should enforce policy based on PodSelector or NamespaceSelector": x/c → x/a denied.
    let ns = ns_not_in("x");
    let r = from(
        vec![
            Peer::Pods { pods: None, namespaces: Some(ns) },
            Peer::Pods { pods: Some(Selector::labels([("pod", "b")])), namespaces: None },
        ],
        vec![],
    );
    let p = policy("x", "allow-ns-y-match-selector", pod_a(), &[Direction::Ingress], vec![r], vec![]);
    matrix(&[p], Protocol::Tcp, 80, |s, d| !(d == ("x", "a") && s == ("x", "c")));
}

#[test]
fn allow_on_port_81_only() {
    // "should enforce policy based on Ports": from y on 81; port 80 denied to x/a for all.
    let r = from(vec![Peer::Pods { pods: None, namespaces: ns_sel("y") }], vec![tcp(81)]);
    let p = policy("x", "allow-client-a-via-ns-selector", pod_a(), &[Direction::Ingress], vec![r], vec![]);
    matrix(std::slice::from_ref(&p), Protocol::Tcp, 81, |s, d| d != ("x", "a") || s.0 == "y");
    matrix(&[p], Protocol::Tcp, 80, |_, d| d != ("x", "a"));
}

#[test]
fn union_of_stacked_policies() {
    // "should enforce multiple, stacked policies with overlapping podSelectors": adding the
    // port-80 policy makes port 80 behave as 81.
    let r81 = from(vec![Peer::Pods { pods: None, namespaces: ns_sel("y") }], vec![tcp(81)]);
    let r80 = from(vec![Peer::Pods { pods: None, namespaces: ns_sel("y") }], vec![tcp(80)]);
    let ps = [
        policy("x", "allow-client-a-via-ns-selector", pod_a(), &[Direction::Ingress], vec![r81], vec![]),
        policy("x", "allow-client-a-via-ns-selector-80", pod_a(), &[Direction::Ingress], vec![r80], vec![]),
    ];
    for port in [80, 81] {
        matrix(&ps, Protocol::Tcp, port, |s, d| d != ("x", "a") || s.0 == "y");
    }
}

#[test]
fn allow_all_with_empty_rule() {
    // "should support allow-all policy": the rule {} allows everything.
    let p = policy("x", "allow-all", Selector::all(), &[Direction::Ingress], vec![Rule::default()], vec![]);
    for port in [80, 81] {
        matrix(std::slice::from_ref(&p), Protocol::Tcp, port, |_, _| true);
    }
}

#[test]
fn named_port_ingress() {
    // "should allow ingress access on one named port": serve-81-tcp for all of x.
    let r = from(vec![], vec![named("serve-81-tcp", Protocol::Tcp)]);
    let p = policy("x", "allow-all", Selector::all(), &[Direction::Ingress], vec![r], vec![]);
    matrix(std::slice::from_ref(&p), Protocol::Tcp, 81, |_, _| true);
    matrix(&[p], Protocol::Tcp, 80, |_, d| d.0 != "x");
}

#[test]
fn named_port_from_namespace() {
    // "should allow ingress access from namespace on one named port": serve-80-tcp from y.
    let r = from(
        vec![Peer::Pods { pods: None, namespaces: ns_sel("y") }],
        vec![named("serve-80-tcp", Protocol::Tcp)],
    );
    let p = policy("x", "allow-client-a-via-ns-selector-80", pod_a(), &[Direction::Ingress], vec![r], vec![]);
    matrix(std::slice::from_ref(&p), Protocol::Tcp, 80, |s, d| d != ("x", "a") || s.0 == "y");
    matrix(&[p], Protocol::Tcp, 81, |_, d| d != ("x", "a"));
}

#[test]
fn named_port_egress() {
    // "should allow egress access on one named port": serve-80-tcp resolves on the peer.
    let r = from(vec![], vec![named("serve-80-tcp", Protocol::Tcp)]);
    let p = policy("x", "allow-egress", Selector::all(), &[Direction::Egress], vec![], vec![r]);
    matrix(std::slice::from_ref(&p), Protocol::Tcp, 80, |_, _| true);
    matrix(&[p], Protocol::Tcp, 81, |s, _| s.0 != "x");
}

#[test]
fn end_port_range() {
    // (from the API's meaning) TCP 80-81 from y into x/a; 82 and UDP stay denied.
    let r = from(
        vec![Peer::Pods { pods: None, namespaces: ns_sel("y") }],
        vec![PolicyPort { protocol: Protocol::Tcp, port: PortMatch::Range(80, 81) }],
    );
    let p = policy("x", "range", pod_a(), &[Direction::Ingress], vec![r], vec![]);
    for port in [80, 81] {
        matrix(std::slice::from_ref(&p), Protocol::Tcp, port, |s, d| d != ("x", "a") || s.0 == "y");
    }
    matrix(std::slice::from_ref(&p), Protocol::Tcp, 82, |_, d| d != ("x", "a"));
    matrix(&[p], Protocol::Udp, 80, |_, d| d != ("x", "a"));
}

#[test]
fn ip_block_of_one_pod() {
    // "should allow egress access to server in CIDR block": x/a → only y/b (its /32).
    let r = from(
        vec![Peer::IpBlock { cidr: format!("{}/32", ip_of("y", "b")).parse().unwrap(), except: vec![] }],
        vec![],
    );
    let p =
        policy("x", "allow-client-a-via-cidr-egress-rule", pod_a(), &[Direction::Egress], vec![], vec![r]);
    matrix(&[p], Protocol::Tcp, 80, |s, d| s != ("x", "a") || d == ("y", "b"));
}

#[test]
fn ip_block_with_except() {
    // "should enforce except clause while egress access to server in CIDR block": x/a's /4
    // except x/b's /32: only x/a → x/b is denied.
    let cidr = format!("{}/4", ip_of("x", "a")).parse::<ipnet::IpNet>().unwrap().trunc();
    let except = vec![format!("{}/32", ip_of("x", "b")).parse().unwrap()];
    let r = from(vec![Peer::IpBlock { cidr, except }], vec![]);
    let p =
        policy("x", "allow-client-a-via-cidr-egress-rule", pod_a(), &[Direction::Egress], vec![], vec![r]);
    matrix(std::slice::from_ref(&p), Protocol::Tcp, 80, |s, d| !(s == ("x", "a") && d == ("x", "b")));
    // "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed": a
    // second policy allowing x/b's /32 makes x/a → x/b allowed (the union).
    let r2 = from(
        vec![Peer::IpBlock { cidr: format!("{}/32", ip_of("x", "b")).parse().unwrap(), except: vec![] }],
        vec![],
    );
    let p2 = policy("x", "allow-x-b", pod_a(), &[Direction::Egress], vec![], vec![r2]);
    matrix(&[p, p2], Protocol::Tcp, 80, |_, _| true);
}

#[test]
fn egress_to_dns_only() {
    // (from the API's meaning) x may only send to port 53: no pod-to-pod on 80, while a DNS
    // server outside the cluster is reachable on UDP and TCP 53 and nothing else.
    let r =
        from(vec![], vec![PolicyPort { protocol: Protocol::Udp, port: PortMatch::Range(53, 53) }, tcp(53)]);
    let p = policy("x", "dns-only", Selector::all(), &[Direction::Egress], vec![], vec![r]);
    matrix(std::slice::from_ref(&p), Protocol::Tcp, 80, |s, _| s.0 != "x");
    matrix(std::slice::from_ref(&p), Protocol::Udp, 53, |_, _| true);
    let (pods, nss) = world();
    let c = compile_all(std::slice::from_ref(&p), &pods, &nss);
    let dns: IpAddr = [10, 96, 0, 10].into();
    let xa = ip_of("x", "a");
    let ps = std::slice::from_ref(&p);
    assert!(agreed(ps, &pods, &nss, &c, xa, dns, Protocol::Udp, 53));
    assert!(agreed(ps, &pods, &nss, &c, xa, dns, Protocol::Tcp, 53));
    assert!(!agreed(ps, &pods, &nss, &c, xa, dns, Protocol::Tcp, 80));
    assert!(agreed(ps, &pods, &nss, &c, ip_of("y", "a"), dns, Protocol::Tcp, 80));
}

#[test]
fn sctp_rule_does_not_allow_tcp() {
    // "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'" and "should properly
    // isolate pods that are selected by a policy allowing SCTP".
    let r = from(vec![], vec![PolicyPort { protocol: Protocol::Sctp, port: PortMatch::Range(81, 81) }]);
    let p =
        policy("x", "allow-only-sctp-ingress-on-port-81", pod_a(), &[Direction::Ingress], vec![r], vec![]);
    matrix(&[p], Protocol::Tcp, 81, |_, d| d != ("x", "a"));
}

#[test]
fn udp_rule_does_not_allow_tcp() {
    // "should not allow access by TCP when a policy specifies only UDP".
    let r = from(vec![], vec![PolicyPort { protocol: Protocol::Udp, port: PortMatch::Range(81, 81) }]);
    let p = policy("x", "allow-only-udp-ingress-on-port-81", pod_a(), &[Direction::Ingress], vec![r], vec![]);
    matrix(std::slice::from_ref(&p), Protocol::Tcp, 81, |_, d| d != ("x", "a"));
    matrix(&[p], Protocol::Udp, 81, |_, _| true);
}

#[test]
fn ingress_and_egress_independent() {
    // "...ingress and egress policies can be controlled independently based on PodSelector".
    let eg =
        policy("x", "allow-egress-for-target", pod_a(), &[Direction::Egress], vec![], vec![Rule::default()]);
    matrix(std::slice::from_ref(&eg), Protocol::Tcp, 80, |_, _| true);
    let deny = policy("x", "deny-ingress-via-label-selector", pod_a(), &[Direction::Ingress], vec![], vec![]);
    matrix(&[eg, deny], Protocol::Tcp, 80, |_, d| d != ("x", "a"));
}

#[test]
fn namespace_selector_not_in_egress() {
    // "should enforce policy based on NamespaceSelector with MatchExpressions using default
    // ns label": egress of x/a to namespaces NotIn [y]: x/a → y denied.
    let ns = ns_not_in("y");
    let r = from(vec![Peer::Pods { pods: None, namespaces: Some(ns) }], vec![]);
    let p = policy(
        "x",
        "allow-ns-y-match-selector-for-immutable-ns-label",
        pod_a(),
        &[Direction::Egress],
        vec![],
        vec![r],
    );
    matrix(&[p], Protocol::Tcp, 80, |s, d| !(s == ("x", "a") && d.0 == "y"));
}
