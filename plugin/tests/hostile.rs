//! The plugin against addresses that belong to others, a tapwayd killed mid-ADD, and a DEL
//! whose outcome is unknown: the real plugin binary, a real tapwayd, the reference host-local
//! and static IPAM. See `common/mod.rs` for what the tests need; they print `SKIP: …` and pass
//! when the machine cannot run them.
//!
//! Ranges: like cni.rs, every node is a namespace of its own running its own tapwayd, so each
//! test uses the harness's `POD_CIDR` (10.88.0.0/24) without clashing with any other test.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;
#[path = "common/hostile.rs"]
mod hostile;

use common::*;
use hostile::{Fake, FakeDaemon};
use serde_json::{json, Value};
use tapway_api::{FdbEntry, Op, PortInfo};

/// The MAC of tapwayd's host port.
fn host_mac(node: &Node) -> String {
    let ports: Vec<PortInfo> = node.client().call(Op::Ports).unwrap();
    ports.into_iter().find(|p| p.kind == "host").expect("host port").mac
}

/// Nothing of `cid` anywhere: no port, no interface, no reservation in `networks`, nothing
/// pending.
fn assert_nothing_of(node: &Node, pod: &Netns, cid: &str, networks: &[&str]) {
    assert!(node.port_of(cid).is_none(), "a port for {cid}: {:?}", node.pod_ports());
    assert!(pod.link("eth0").is_none(), "an eth0 was left in {}", pod.name);
    for n in networks {
        let res = node.reservations(n);
        assert!(!res.values().any(|o| o.starts_with(cid)), "{n} still holds an address for {cid}: {res:?}");
    }
    assert_eq!(node.pending(), json!([]));
}

#[test]
fn add_with_addresses_of_others_fails_with_106() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let conf = node.conf("1.0.0", "hv");
    let victim = Netns::new("pod");
    let vcid = unique("victim");
    let vres = Call::new("ADD", &vcid, &victim.path(), "eth0").run(&conf).ok();
    let vip = first_ip(&vres);
    let vmac = vres["interfaces"][0]["mac"].as_str().unwrap().to_string();
    let vport = node.port_of(&vcid).unwrap();
    assert!(victim.run(|| ping(GATEWAY.parse().unwrap(), 10)), "the victim reaches the gateway");

    // Another network over the same range has a host-local store of its own, so its IPAM
    // hands out the victim's address when asked; only tapwayd can refuse it.
    let other = node.conf("1.0.0", "hv2");
    let mut rt_ip = other.clone();
    rt_ip["runtimeConfig"] = json!({"ips": [format!("{vip}/24")]});
    let mut rt_mac = conf.clone();
    rt_mac["runtimeConfig"] = json!({"mac": vmac});
    let mut static_gw = conf.clone();
    static_gw["ipam"] = json!({"type": "static", "addresses": [{"address": format!("{GATEWAY}/24")}]});
    let host = host_mac(&node);
    let cases: Vec<(&str, &Value, String)> = vec![
        ("the victim's MAC (CNI_ARGS MAC=)", &conf, format!("IgnoreUnknown=1;MAC={vmac}")),
        ("the host port's MAC (CNI_ARGS MAC=)", &conf, format!("IgnoreUnknown=1;MAC={host}")),
        ("the victim's IP (CNI_ARGS IP=)", &other, format!("IgnoreUnknown=1;IP={vip}")),
        ("the victim's IP (runtimeConfig ips)", &rt_ip, String::new()),
        ("the victim's MAC (runtimeConfig mac)", &rt_mac, String::new()),
        ("the gateway's IP (static IPAM)", &static_gw, String::new()),
    ];
    let has_static = std::path::Path::new(REF_PLUGINS).join("static").exists();
    for (what, c, args) in cases {
        if c["ipam"]["type"] == "static" && !has_static {
            println!("SKIP: {what}: {REF_PLUGINS}/static is missing");
            continue;
        }
        let pod = Netns::new("pod");
        let cid = unique("taker");
        let mut call = Call::new("ADD", &cid, &pod.path(), "eth0");
        call.args = &args;
        let v = call.run(c).err(106);
        let msg = v["msg"].as_str().unwrap();
        assert!(msg.starts_with("address conflict: "), "{what}: {v}");
        assert!(v["details"].as_str().unwrap().contains("address_conflict"), "{what}: {v}");
        assert_nothing_of(&node, &pod, &cid, &["hv", "hv2"]);

        // The victim keeps its address, port, FDB entry and traffic.
        assert!(node.reservations("hv").values().any(|o| o.starts_with(&vcid)), "{what}");
        assert_eq!(node.port_of(&vcid).map(|p| p.id), Some(vport.id), "{what}");
        assert!(victim.run(|| ping(GATEWAY.parse().unwrap(), 10)), "{what}: the victim lost its traffic");
        let fdb: Vec<FdbEntry> = node.client().call(Op::Fdb).unwrap();
        let entry = fdb.iter().find(|e| e.mac == vmac).map(|e| e.port);
        assert_eq!(entry, Some(vport.id), "{what}: the victim's FDB entry moved: {fdb:?}");
    }
    Call::new("DEL", &vcid, &victim.path(), "eth0").run(&with_prev(&conf, &vres)).ok();
}

#[test]
fn add_retried_after_tapwayd_was_killed_mid_add_succeeds() {
    let r = ready_or_skip!();
    let mut node = Node::start(&r);
    let conf = node.conf("1.0.0", "k9");
    for point in ["attach:after_tap", "attach:after_config", "attach:after_save"] {
        node.stop_daemon();
        // The SERIAL lock `ready` holds keeps every other test of this binary from starting a
        // daemon (which would inherit it) meanwhile.
        std::env::set_var("TAPWAY_FAILPOINT", point);
        node.start_daemon();
        std::env::remove_var("TAPWAY_FAILPOINT");

        let pod = Netns::new("pod");
        let cid = unique("k9");
        let v = Call::new("ADD", &cid, &pod.path(), "eth0").run(&conf).err(11);
        assert!(v["msg"].as_str().unwrap().contains("tapwayd"), "{point}: {v}");
        node.stop_daemon();
        node.start_daemon();

        // The runtime retries the ADD.
        let res = Call::new("ADD", &cid, &pod.path(), "eth0").run(&conf).ok();
        let port = node.port_of(&cid).unwrap_or_else(|| panic!("{point}: no port after the retry"));
        assert_eq!(res["interfaces"][0]["mac"], port.mac.as_str(), "{point}");
        assert_eq!(pod.addrs("eth0"), vec![res["ips"][0]["address"].as_str().unwrap().to_string()]);
        assert!(pod.run(|| ping(GATEWAY.parse().unwrap(), 10)), "{point}: the retried pod has no traffic");
        assert_eq!(node.reservations("k9").len(), 1, "{point}: {:?}", node.reservations("k9"));
        assert_eq!(node.pending(), json!([]), "{point}");
        Call::new("DEL", &cid, &pod.path(), "eth0").run(&with_prev(&conf, &res)).ok();
        assert!(node.reservations("k9").is_empty(), "{point}");
    }
}

#[test]
fn del_keeps_the_address_while_tapwayd_does_not_answer() {
    let r = ready_or_skip!();
    let mut node = Node::start(&r);
    let mut conf = node.conf("1.1.0", "hold");
    conf["daemonTimeoutSeconds"] = json!(1);
    let pod = Netns::new("pod");
    let cid = unique("hold");
    let res = Call::new("ADD", &cid, &pod.path(), "eth0").run(&conf).ok();
    let held = |node: &Node| node.reservations("hold").values().any(|o| o.starts_with(&cid));
    assert!(held(&node));

    node.stop_daemon();
    for mode in [Fake::Silent, Fake::Hangup] {
        let fake = FakeDaemon::start(&node.socket, mode);
        let v = Call::new("DEL", &cid, &pod.path(), "eth0").run(&with_prev(&conf, &res)).err(11);
        assert!(v["msg"].as_str().unwrap().contains("stay reserved"), "{mode:?}: {v}");
        assert!(held(&node), "{mode:?}: host-local released the address of a port that may still exist");
        let pending = node.pending();
        assert_eq!(pending.as_array().map(Vec::len), Some(1), "{mode:?}: {pending}");
        assert_eq!(pending[0]["release_ip"], true, "{mode:?}");
        drop(fake);
    }

    // tapwayd is back (with the pod's port, re-opened from its state): the DEL gets an answer.
    node.start_daemon();
    assert!(node.port_of(&cid).is_some(), "the port survived");
    Call::new("DEL", &cid, &pod.path(), "eth0").run(&with_prev(&conf, &res)).ok();
    assert!(!held(&node), "released once the port is gone");
    assert!(node.port_of(&cid).is_none());
    assert_eq!(node.pending(), json!([]));

    // The DEL is never retried: GC, which finds the port gone, releases the address.
    let pod2 = Netns::new("pod");
    let cid2 = unique("hold");
    Call::new("ADD", &cid2, &pod2.path(), "eth0").run(&conf).ok();
    node.stop_daemon();
    let fake = FakeDaemon::start(&node.socket, Fake::Silent);
    Call::new("DEL", &cid2, "", "eth0").run(&conf).err(11);
    drop(fake);
    node.start_daemon();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    Call::new("GC", "", "", "").run(&gc).ok();
    let res2 = node.reservations("hold");
    assert!(!res2.values().any(|o| o.starts_with(&cid2)), "GC released it: {res2:?}");
    assert!(node.port_of(&cid2).is_none());
    assert_eq!(node.pending(), json!([]));
}
