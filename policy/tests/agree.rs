//! The compiled lookup agrees with the reference evaluation: on random small worlds (2–3
//! namespaces, 2–4 pods each with random labels and named ports, 0–4 random policies), for
//! every (src, dst, proto, port) over the pods and two addresses no pod has, both sides and
//! the allowing rule are the same. Also the compile cost at 1,000 policies × 10 rules × 100
//! pods (printed, not asserted).

// Fixtures built from constants: unwrap on them is fine.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::Instant;

use common::{agreed, compile_all};
use ipnet::IpNet;
use proptest::prelude::*;
use tapway_policy::model::NAMESPACE_NAME_LABEL;
use tapway_policy::{
    compile, Direction, Labels, NamedPort, Namespace, Operator, Peer, Pod, Policy, PolicyPort, PortMatch,
    Protocol, Requirement, Rule, Selector,
};

const PORTS: [u16; 4] = [53, 80, 81, 82];
const NAMES: [&str; 3] = ["http", "dns", "alt"];

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp), Just(Protocol::Sctp)]
}

fn labels() -> impl Strategy<Value = Labels> {
    (prop::option::of(0..2u8), prop::option::of(0..2u8)).prop_map(|(app, tier)| {
        let mut l = Labels::new();
        if let Some(a) = app {
            l.insert("app".into(), format!("a{a}"));
        }
        if let Some(t) = tier {
            l.insert("tier".into(), format!("t{t}"));
        }
        l
    })
}

fn selector() -> impl Strategy<Value = Selector> {
    let op = prop_oneof![
        Just(Operator::In),
        Just(Operator::NotIn),
        Just(Operator::Exists),
        Just(Operator::DoesNotExist)
    ];
    prop_oneof![
        Just(Selector::all()),
        Just(Selector::nothing()),
        (0..2u8).prop_map(|a| Selector::labels([("app", if a == 0 { "a0" } else { "a1" })])),
        (op, prop::bool::ANY, 0..2u8).prop_map(|(op, key, v)| Selector {
            match_labels: Labels::new(),
            match_expressions: vec![Requirement {
                key: if key { "app".into() } else { "tier".into() },
                op,
                values: vec![format!("{}{v}", if key { "a" } else { "t" })],
            }],
        }),
    ]
}

fn ns_selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        Just(Selector::all()),
        (0..3u8).prop_map(|n| Selector::labels([(NAMESPACE_NAME_LABEL, ["n0", "n1", "n2"][n as usize])])),
        (0..2u8).prop_map(|t| Selector::labels([("team", if t == 0 { "red" } else { "blue" })])),
    ]
}

fn net(s: String) -> IpNet {
    s.parse::<IpNet>().map(|n| n.trunc()).unwrap_or_else(|_| IpNet::default())
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        (prop::option::of(selector()), prop::option::of(ns_selector())).prop_map(|(pods, namespaces)| {
            match (pods, namespaces) {
                (None, None) => Peer::Pods { pods: Some(Selector::all()), namespaces: None },
                (pods, namespaces) => Peer::Pods { pods, namespaces },
            }
        }),
        (0..4u8, prop::option::of((0..3u8, 0..5u8, prop_oneof![Just(30u8), Just(32u8)]))).prop_map(
            |(c, ex)| {
                let cidr = match c {
                    0 => net("10.0.0.0/8".into()),
                    1 => net("10.1.0.0/16".into()),
                    2 => net("0.0.0.0/0".into()),
                    _ => net("192.168.0.0/16".into()),
                };
                let except =
                    ex.map(|(n, i, len)| vec![net(format!("10.{n}.0.{}/{len}", 10 + i))]).unwrap_or_default();
                Peer::IpBlock { cidr, except }
            }
        ),
    ]
}

fn policy_port() -> impl Strategy<Value = PolicyPort> {
    let m = prop_oneof![
        Just(PortMatch::All),
        (0..4usize, 0..4usize).prop_map(|(a, b)| PortMatch::Range(PORTS[a], PORTS[b])),
        (0..3usize).prop_map(|n| PortMatch::Named(NAMES[n].into())),
    ];
    (protocol(), m).prop_map(|(protocol, port)| PolicyPort { protocol, port })
}

fn rule() -> impl Strategy<Value = Rule> {
    (prop::collection::vec(peer(), 0..3), prop::collection::vec(policy_port(), 0..3))
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

fn types() -> impl Strategy<Value = Option<Vec<Direction>>> {
    prop_oneof![
        Just(None),
        Just(Some(vec![Direction::Ingress])),
        Just(Some(vec![Direction::Egress])),
        Just(Some(vec![Direction::Ingress, Direction::Egress])),
    ]
}

fn pod_ports() -> impl Strategy<Value = Vec<NamedPort>> {
    prop::collection::btree_map(0..3usize, (protocol(), 0..4usize), 0..3).prop_map(|m| {
        m.into_iter()
            .map(|(n, (protocol, p))| NamedPort { name: NAMES[n].into(), protocol, port: PORTS[p] })
            .collect()
    })
}

#[derive(Debug, Clone)]
struct World {
    nss: Vec<Namespace>,
    pods: Vec<Pod>,
    policies: Vec<Policy>,
}

fn world() -> impl Strategy<Value = World> {
    (2..4usize)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(prop::option::of(0..2u8), n),
                prop::collection::vec(prop::collection::vec((labels(), pod_ports()), 2..5), n),
                prop::collection::vec(
                    (
                        0..n,
                        selector(),
                        types(),
                        prop::collection::vec(rule(), 0..3),
                        prop::collection::vec(rule(), 0..3),
                    ),
                    0..5,
                ),
            )
        })
        .prop_map(|(teams, pods_per_ns, pols)| {
            let nss: Vec<Namespace> = teams
                .iter()
                .enumerate()
                .map(|(i, t)| Namespace {
                    name: format!("n{i}"),
                    labels: t
                        .map(|t| {
                            [("team".to_string(), if t == 0 { "red" } else { "blue" }.to_string())].into()
                        })
                        .unwrap_or_default(),
                })
                .collect();
            let mut pods = Vec::new();
            for (n, ps) in pods_per_ns.into_iter().enumerate() {
                for (i, (labels, ports)) in ps.into_iter().enumerate() {
                    pods.push(Pod {
                        namespace: format!("n{n}"),
                        name: format!("p{i}"),
                        labels,
                        ips: vec![IpAddr::from([10, n as u8, 0, 10 + i as u8])],
                        local: true,
                        ports,
                    });
                }
            }
            let policies = pols
                .into_iter()
                .enumerate()
                .map(|(i, (ns, sel, types, ingress, egress))| Policy {
                    namespace: format!("n{ns}"),
                    name: format!("pol{i}"),
                    pod_selector: sel,
                    policy_types: types,
                    ingress,
                    egress,
                })
                .collect();
            World { nss, pods, policies }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn compiled_agrees_with_eval(w in world()) {
        let c = compile_all(&w.policies, &w.pods, &w.nss);
        let mut ips: Vec<IpAddr> = w.pods.iter().map(|p| p.ips[0]).collect();
        ips.push([10, 0, 0, 200].into());
        ips.push([192, 168, 1, 1].into());
        for &src in &ips {
            for &dst in &ips {
                for proto in Protocol::ALL {
                    for port in PORTS {
                        agreed(&w.policies, &w.pods, &w.nss, &c, src, dst, proto, port);
                    }
                }
            }
        }
    }
}

#[test]
fn remote_pods_get_no_tables() {
    let mut pods = vec![Pod {
        namespace: "x".into(),
        name: "a".into(),
        labels: Labels::new(),
        ips: vec![[10, 0, 0, 1].into()],
        local: false,
        ports: vec![],
    }];
    let c = compile(&[], &pods, &[]);
    assert!(c.local([10, 0, 0, 1].into()).is_none());
    assert_eq!(c.identity_of([10, 0, 0, 1].into()), Some(0), "remote pods still have identities");
    pods[0].local = true;
    assert!(compile(&[], &pods, &[]).local([10, 0, 0, 1].into()).is_some());
}

/// 1,000 policies × 10 rules selecting 100 local pods, as the benchmark has them.
#[test]
fn compile_cost_1000_policies_10_rules_100_pods() {
    let pods: Vec<Pod> = (0..100u16)
        .map(|i| Pod {
            namespace: "bench".into(),
            name: format!("p{i}"),
            labels: [("app".to_string(), format!("a{}", i % 10))].into(),
            ips: vec![IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8 + 1])],
            local: true,
            ports: vec![NamedPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }],
        })
        .collect();
    let policies: Vec<Policy> = (0..1000u32)
        .map(|i| Policy {
            namespace: "bench".into(),
            name: format!("pol{i}"),
            pod_selector: Selector::all(),
            policy_types: Some(vec![Direction::Ingress, Direction::Egress]),
            ingress: (0..10u32)
                .map(|r| Rule {
                    peers: vec![Peer::Pods {
                        pods: Some(Selector::labels([(
                            "app",
                            ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"][(r % 10) as usize],
                        )])),
                        namespaces: None,
                    }],
                    ports: vec![PolicyPort {
                        protocol: Protocol::Tcp,
                        port: PortMatch::Range((1000 + i) as u16, (1000 + i + r) as u16),
                    }],
                })
                .collect(),
            egress: vec![Rule {
                peers: vec![],
                ports: vec![PolicyPort { protocol: Protocol::Tcp, port: PortMatch::Named("http".into()) }],
            }],
        })
        .collect();
    let t = Instant::now();
    let c = compile(&policies, &pods, &[]);
    let took = t.elapsed();
    println!("compile: 1,000 policies x 10 rules x 100 pods in {took:?} ({} identities)", c.identities.len());
    let a: IpAddr = pods[0].ips[0];
    let b: IpAddr = pods[1].ips[0];
    assert!(c.lookup(a, Direction::Ingress, b, Protocol::Tcp, 1500).is_some_and(|l| l.allows()));
    assert!(!c.lookup(a, Direction::Ingress, b, Protocol::Tcp, 80).is_some_and(|l| l.allows()));
    let n = 1_000_000;
    let t = Instant::now();
    let mut allowed = 0u32;
    for i in 0..n {
        if c.lookup(a, Direction::Ingress, b, Protocol::Tcp, 900 + (i % 2200) as u16)
            .is_some_and(|l| l.allows())
        {
            allowed += 1;
        }
    }
    println!("lookup: {:?} per lookup ({allowed} of {n} allowed)", t.elapsed() / n);
}
