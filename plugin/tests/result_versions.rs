//! The result the real plugin prints on ADD has exactly the fields of its cniVersion (the
//! lists in each version's SPEC.md), also when it re-emits a prevResult that carries fields
//! the version lacks. Against a real tapwayd and host-local, like `cni.rs`; prints `SKIP: …`
//! and passes when the machine cannot run it (see `common/mod.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

/// The spec's keys for one version: what each level may have.
struct Spec {
    version: &'static str,
    interface: &'static [&'static str],
    ip: &'static [&'static str],
    route: &'static [&'static str],
}

const TOP: &[&str] = &["cniVersion", "interfaces", "ips", "routes", "dns"];
const DNS: &[&str] = &["nameservers", "domain", "search", "options"];

const SPECS: [Spec; 3] = [
    Spec {
        version: "0.4.0",
        interface: &["name", "mac", "sandbox"],
        ip: &["version", "address", "gateway", "interface"],
        route: &["dst", "gw"],
    },
    Spec {
        version: "1.0.0",
        interface: &["name", "mac", "sandbox"],
        ip: &["address", "gateway", "interface"],
        route: &["dst", "gw"],
    },
    Spec {
        version: "1.1.0",
        interface: &["name", "mac", "mtu", "sandbox", "socketPath", "pciID"],
        ip: &["address", "gateway", "interface"],
        route: &["dst", "gw", "mtu", "advmss", "priority", "table", "scope"],
    },
];

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().map(String::as_str).collect()
}

fn set(list: &[&'static str]) -> BTreeSet<&'static str> {
    list.iter().copied().collect()
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Every key of `res`, at every level, is one the spec lists for the version.
fn assert_within_spec(res: &Value, s: &Spec) {
    assert!(keys(res).is_subset(&set(TOP)), "{}: top level {res}", s.version);
    for (level, list) in [("interfaces", s.interface), ("ips", s.ip), ("routes", s.route)] {
        for item in items(&res[level]) {
            let extra: Vec<&str> = keys(item).difference(&set(list)).copied().collect();
            assert!(extra.is_empty(), "{}: {level}[] has {extra:?}, not in the spec: {res}", s.version);
        }
    }
    if let Some(d) = res.get("dns") {
        assert!(keys(d).is_subset(&set(DNS)), "{}: dns {res}", s.version);
    }
}

#[test]
fn add_prints_exactly_the_fields_of_its_version() {
    let Some(r) = ready() else { return };
    let node = Node::start(&r);
    for s in &SPECS {
        let mut conf = node.conf(s.version, "shape");
        conf["dns"] = json!({"nameservers": ["10.88.0.53"], "domain": "cluster.local",
            "search": ["svc.cluster.local"], "options": ["ndots:5"]});
        let pod = Netns::new("pod");
        let cid = unique("shape");
        let res = Call::new("ADD", &cid, &pod.path(), "eth0").run(&conf).ok();
        assert_within_spec(&res, s);
        // And everything tapway knows is there: the top level, the interface (with the MTU
        // where the version has it), the address, the default route, all of DNS.
        assert_eq!(keys(&res), set(TOP), "{res}");
        let mut want_if = set(&["name", "mac", "sandbox"]);
        if s.interface.contains(&"mtu") {
            want_if.insert("mtu");
            assert_eq!(res["interfaces"][0]["mtu"], pod.link("eth0").unwrap()["mtu"], "{res}");
        }
        assert_eq!(keys(&res["interfaces"][0]), want_if, "{res}");
        assert_eq!(keys(&res["ips"][0]), set(s.ip), "{res}");
        assert_eq!(keys(&res["routes"][0]), set(&["dst", "gw"]), "{res}");
        assert_eq!(keys(&res["dns"]), set(DNS), "{res}");
        Call::new("DEL", &cid, &pod.path(), "eth0").run(&with_prev(&conf, &res)).ok();
        assert!(node.port_of(&cid).is_none());
    }
}

#[test]
fn prev_result_is_re_emitted_in_its_version() {
    let Some(r) = ready() else { return };
    let node = Node::start(&r);
    // A prevResult from a plugin that writes 1.1.0's fields in every version (libcni >= 1.2
    // does), plus keys no version has.
    let prev = |ver: &str| {
        json!({
            "cniVersion": ver,
            "interfaces": [{"name": "host0", "mac": "02:00:00:00:00:01", "mtu": 1400,
                "socketPath": "/run/x.sock", "pciID": "0000:00:04.0", "color": "blue"}],
            "ips": [{"address": "192.168.77.2/24", "interface": 0, "weight": 3}],
            "routes": [{"dst": "192.168.0.0/16", "gw": "192.168.77.1", "mtu": 1400, "advmss": 1360,
                "priority": 5, "table": 100, "scope": 0}],
            "dns": {"nameservers": ["192.168.77.53"], "ttl": 5},
            "extra": true
        })
    };
    for s in &SPECS {
        let conf = node.conf(s.version, "prev");
        let pod = Netns::new("pod");
        let cid = unique("prev");
        let res = Call::new("ADD", &cid, &pod.path(), "eth0").run(&with_prev(&conf, &prev(s.version))).ok();
        assert_within_spec(&res, s);
        let host0 = &res["interfaces"][0];
        assert_eq!(host0["name"], "host0", "{res}");
        assert_eq!(host0.get("socketPath").is_some(), s.version == "1.1.0", "{res}");
        assert_eq!(res["routes"][0]["table"].as_u64(), (s.version == "1.1.0").then_some(100), "{res}");
        assert_eq!(res["ips"][0]["address"], "192.168.77.2/24");
        assert_eq!(res["interfaces"][1]["name"], "eth0");
        assert_eq!(res["dns"], json!({"nameservers": ["192.168.77.53"]}));
        Call::new("DEL", &cid, &pod.path(), "eth0").run(&with_prev(&conf, &res)).ok();
        assert!(node.port_of(&cid).is_none());
    }
}
