//! In-daemon IPAM (`"ipam": {"type": "tapway-ipam"}`) against a real tapwayd: the tapway
//! plugin allocating in its attach, and the `tapway-ipam` binary as another plugin's IPAM
//! (the reference `bridge`). The behaviour checked is host-local's: one address per range set
//! from the node's pod range, the gateway never handed out, a retried ADD gets the same
//! address, DEL and GC release, requested addresses are honoured with conflict checks, a full
//! range is a clear error that leaves nothing behind. See `common/mod.rs` for the harness.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use common::*;
use serde_json::{json, Value};
use tapway_api::{IpamReport, Op};

/// A tapway netconf whose addresses come from tapwayd; `ipam` is merged into the section.
fn conf(node: &Node, version: &str, network: &str, ipam: Value) -> Value {
    let mut c = node.conf(version, network);
    let mut section = json!({"type": "tapway-ipam"});
    if let (Some(s), Some(extra)) = (section.as_object_mut(), ipam.as_object()) {
        s.extend(extra.clone());
    }
    c["ipam"] = section;
    c
}

fn add(pod: &Netns, cid: &str, conf: &Value) -> Value {
    Call::new("ADD", cid, &pod.path(), "eth0").run(conf).ok()
}

fn del(pod: &Netns, cid: &str, conf: &Value, result: &Value) {
    Call::new("DEL", cid, &pod.path(), "eth0").run(&with_prev(conf, result)).ok();
}

/// What tapwayd says about its pod ranges.
fn ipam(node: &Node) -> IpamReport {
    node.client().call(Op::IpamList).unwrap()
}

/// Addresses in use in the first pod range (the gateway excluded) → owner's container.
fn used(node: &Node) -> BTreeMap<String, Option<String>> {
    let r = ipam(node);
    r.ranges[0].addresses.iter().map(|a| (a.address.clone(), a.container_id.clone())).collect()
}

fn tapway_ipam_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tapway-ipam"))
}

/// The `tapway-ipam` binary, called as a plugin calls its IPAM.
fn ipam_call<'a>(command: &'a str, cid: &'a str, netns: &str, path: &str) -> Call<'a> {
    let mut c = Call::new(command, cid, netns, "eth0");
    c.bin = tapway_ipam_bin();
    c.path = path.to_string();
    c
}

#[test]
fn tapwayd_allocates_in_the_attach() {
    let r = ready_or_skip!();
    let mut node = Node::start(&r);
    let c = conf(&node, "1.1.0", "dipam", json!({}));
    let (a, b) = (Netns::new("ia"), Netns::new("ib"));
    let (ca, cb) = (unique("ia"), unique("ib"));
    let ra = add(&a, &ca, &c);
    assert_eq!(ra["ips"], json!([{"address": "10.88.0.2/24", "gateway": GATEWAY, "interface": 0}]));
    assert_eq!(ra["routes"], json!([{"dst": "0.0.0.0/0", "gw": GATEWAY}]));
    assert_eq!(a.addrs("eth0"), vec!["10.88.0.2/24".to_string()]);
    // A retried ADD (the runtime lost the answer) gets the same port and address.
    assert_eq!(add(&a, &ca, &c)["ips"], ra["ips"]);
    let rb = add(&b, &cb, &c);
    assert_eq!(first_ip(&rb), "10.88.0.3");
    assert!(a.run(|| ping(first_ip(&rb).parse().unwrap(), 5)), "a → b:\n{}", node.daemon_log());
    assert!(a.run(|| ping(GATEWAY.parse().unwrap(), 5)), "a → gateway");

    let report = ipam(&node);
    assert_eq!((report.ranges[0].range.as_str(), report.ranges[0].gateway.as_str()), (POD_CIDR, GATEWAY));
    assert_eq!((report.ranges[0].size, report.ranges[0].used, report.ranges[0].free), (253, 2, 251));
    assert_eq!(
        used(&node),
        BTreeMap::from([("10.88.0.2".into(), Some(ca.clone())), ("10.88.0.3".into(), Some(cb.clone()))])
    );
    assert!(report.ranges[0].addresses.iter().all(|u| u.allocated && u.owner.starts_with("port ")));

    // The allocation survives a restart: it is the port's record.
    node.stop_daemon();
    node.start_daemon();
    assert_eq!(used(&node).len(), 2, "{:?}", ipam(&node));
    Call::new("CHECK", &ca, &a.path(), "eth0").run(&with_prev(&c, &ra)).ok();

    // DEL releases; the next pod does not get the released address at once (round robin).
    del(&a, &ca, &c, &ra);
    assert_eq!(used(&node).len(), 1);
    let a2 = Netns::new("ia2");
    let ca2 = unique("ia2");
    let r2 = add(&a2, &ca2, &c);
    assert_eq!(first_ip(&r2), "10.88.0.4", "round robin continues after the last address");
    del(&a2, &ca2, &c, &r2);
    del(&b, &cb, &c, &rb);
    assert!(used(&node).is_empty(), "{:?}", ipam(&node));
    assert!(node.pod_ports().is_empty());
}

#[test]
fn dual_stack_and_result_versions() {
    let r = ready_or_skip!();
    let node = Node::start_with(&r, &["--pod-cidr", "fd00:88::/64"]);
    for (i, version) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let c = conf(&node, version, "dual", json!({"dns": {"nameservers": ["10.96.0.10"]}}));
        let pod = Netns::new("dual");
        let cid = unique("dual");
        let res = add(&pod, &cid, &c);
        assert_eq!(res["cniVersion"], *version);
        let ips: Vec<&str> =
            res["ips"].as_array().unwrap().iter().map(|i| i["address"].as_str().unwrap()).collect();
        let n = i + 2;
        assert_eq!(ips, [format!("10.88.0.{n}/24"), format!("fd00:88::{n:x}/64")], "{res}");
        assert_eq!(res["ips"][1]["gateway"], "fd00:88::1");
        assert_eq!(res["dns"]["nameservers"], json!(["10.96.0.10"]));
        let mut have = pod.addrs("eth0");
        have.retain(|a| !a.starts_with("fe80"));
        assert_eq!(have.len(), 2, "{have:?}");
        del(&pod, &cid, &c, &res);
    }
    let report = ipam(&node);
    assert_eq!(report.ranges.len(), 2);
    assert!(report.ranges.iter().all(|r| r.used == 0), "{report:?}");
}

#[test]
fn requested_addresses_and_conflicts() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let c = conf(&node, "1.0.0", "req", json!({}));
    let (a, b, x) = (Netns::new("ra"), Netns::new("rb"), Netns::new("rx"));
    let (ca, cb, cx) = (unique("ra"), unique("rb"), unique("rx"));
    let mut call = Call::new("ADD", &ca, &a.path(), "eth0");
    call.args = "IgnoreUnknown=1;IP=10.88.0.50";
    let ra = call.run(&c).ok();
    assert_eq!(first_ip(&ra), "10.88.0.50", "CNI_ARGS IP=");
    let mut rc = c.clone();
    rc["runtimeConfig"] = json!({"ips": ["10.88.0.60/24"]});
    let rb = add(&b, &cb, &rc);
    assert_eq!(first_ip(&rb), "10.88.0.60", "runtimeConfig.ips");

    // Taken, the gateway, outside the range: refused, and nothing is left behind.
    let cases = [
        ("IP=10.88.0.50", 106, "in use"),
        ("IP=10.88.0.1", 106, "gateway"),
        ("IP=10.89.0.5", 100, "none of the ranges"),
    ];
    for (args, code, why) in cases {
        let mut call = Call::new("ADD", &cx, &x.path(), "eth0");
        call.args = args;
        let e = call.run(&c).err(code);
        assert!(e["msg"].as_str().unwrap().contains(why), "{args}: {e}");
        assert!(node.port_of(&cx).is_none() && x.link("eth0").is_none(), "{args}: something left");
    }
    assert_eq!(used(&node).len(), 2);
    del(&a, &ca, &c, &ra);
    del(&b, &cb, &rc, &rb);
}

#[test]
fn a_full_range_is_a_clear_error_and_leaves_nothing() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let c = conf(
        &node,
        "1.1.0",
        "full",
        json!({"ranges": [[{"subnet": POD_CIDR, "rangeStart": "10.88.0.10", "rangeEnd": "10.88.0.11"}]]}),
    );
    let pods: Vec<Netns> = (0..3).map(|_| Netns::new("full")).collect();
    let cids: Vec<String> = (0..3).map(|i| unique(&format!("full{i}"))).collect();
    let r0 = add(&pods[0], &cids[0], &c);
    let r1 = add(&pods[1], &cids[1], &c);
    assert_eq!([first_ip(&r0), first_ip(&r1)], ["10.88.0.10", "10.88.0.11"]);
    let e = Call::new("ADD", &cids[2], &pods[2].path(), "eth0").run(&c).err(107);
    assert!(e["msg"].as_str().unwrap().contains("10.88.0.10-10.88.0.11"), "{e}");
    assert!(node.port_of(&cids[2]).is_none() && pods[2].link("eth0").is_none());
    assert_eq!(used(&node).len(), 2);
    del(&pods[0], &cids[0], &c, &r0);
    let r2 = add(&pods[2], &cids[2], &c);
    assert_eq!(first_ip(&r2), "10.88.0.10", "the freed address once it is the only one");

    // A range outside the pod range is refused as a configuration tapwayd cannot serve.
    let outside = conf(&node, "1.1.0", "full", json!({"ranges": [[{"subnet": "10.99.0.0/24"}]]}));
    let x = Netns::new("fullx");
    let e = Call::new("ADD", &unique("fullx"), &x.path(), "eth0").run(&outside).err(100);
    assert!(e["msg"].as_str().unwrap().contains("not inside the node's pod ranges"), "{e}");

    // GC releases everything not among the valid attachments.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": cids[1], "ifname": "eth0"}]);
    Call::new("GC", "", "", "").run(&gc).ok();
    assert_eq!(used(&node), BTreeMap::from([("10.88.0.11".to_string(), Some(cids[1].clone()))]));
    assert!(pods[2].link("eth0").is_none(), "GC removed the stale pod's interface");
    del(&pods[1], &cids[1], &c, &r1);
}

/// The reference bridge plugin, run in the node namespace, with `tapway-ipam` as its IPAM:
/// its pods take addresses from tapway's pool, next to tapway's own pods, without a clash.
#[test]
fn tapway_ipam_serves_another_plugin() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let bridge_name = format!("twb{}", std::process::id() % 100_000);
    let bridge = json!({
        "cniVersion": "1.0.0", "name": "other", "type": "bridge", "bridge": bridge_name,
        "ipam": {"type": "tapway-ipam", "socket": node.socket,
                 "ranges": [[{"subnet": POD_CIDR, "rangeStart": "10.88.0.100", "rangeEnd": "10.88.0.101"}]]}
    });
    let mut path = cni_path();
    path.push(':');
    path.push_str(&tapway_ipam_bin().parent().unwrap().display().to_string());
    let pod = Netns::new("br");
    let cid = unique("br");
    let mut call = Call::new("ADD", &cid, &pod.path(), "eth0");
    call.bin = PathBuf::from(REF_PLUGINS).join("bridge");
    call.path = path.clone();
    call.in_netns = Some(&node.ns.name);
    let res = call.run(&bridge).ok();
    assert_eq!(first_ip(&res), "10.88.0.100", "{res}");
    assert_eq!(used(&node).get("10.88.0.100"), Some(&Some(cid.clone())));
    let report = ipam(&node);
    assert_eq!(report.allocations.len(), 1);
    assert!(report.ranges[0].addresses[0].owner.starts_with("allocation other/"), "{report:?}");

    // A tapway pod never gets that address, even when it asks for it.
    let tp = Netns::new("brt");
    let ct = unique("brt");
    let mut ask = Call::new("ADD", &ct, &tp.path(), "eth0");
    ask.args = "IP=10.88.0.100";
    ask.run(&conf(&node, "1.0.0", "dipam", json!({}))).err(106);

    // The IPAM plugin itself, as bridge calls it: ADD is idempotent, CHECK, GC, DEL.
    let netns = pod.path();
    let again = ipam_call("ADD", &cid, &netns, &path).run(&bridge).ok();
    assert_eq!(again["ips"], json!([{"address": "10.88.0.100/24", "gateway": GATEWAY}]), "{again}");
    assert!(again.get("interfaces").is_none(), "an IPAM result has no interfaces");
    ipam_call("CHECK", &cid, &netns, &path).run(&bridge).ok();
    ipam_call("CHECK", "nobody", &netns, &path).run(&bridge).err(3);
    let mut v11 = bridge.clone();
    v11["cniVersion"] = json!("1.1.0");
    ipam_call("STATUS", &cid, &netns, &path).run(&v11).ok();
    ipam_call("ADD", "second", &netns, &path).run(&bridge).ok();
    ipam_call("ADD", "third", &netns, &path).run(&bridge).err(107);
    let mut gc = v11.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": cid, "ifname": "eth0"}]);
    ipam_call("GC", &cid, &netns, &path).run(&gc).ok();
    assert_eq!(ipam(&node).allocations.len(), 1, "GC released the allocation of `second`");
    let version = ipam_call("VERSION", &cid, &netns, &path).run(&json!({"cniVersion": "1.0.0"})).ok();
    assert_eq!(version["supportedVersions"].as_array().unwrap().len(), 5);

    let mut call = Call::new("DEL", &cid, &pod.path(), "eth0");
    call.bin = PathBuf::from(REF_PLUGINS).join("bridge");
    call.path = path;
    call.in_netns = Some(&node.ns.name);
    call.run(&with_prev(&bridge, &res)).ok();
    assert!(ipam(&node).allocations.is_empty() && used(&node).is_empty(), "{:?}", ipam(&node));
    let _ = node.ns.ip(&["link", "del", &bridge_name]);
}

/// 250 pods through one node, ADDs and DELs running together 20 at a time: no address is
/// ever held twice, and nothing is left behind (no address, port or interface).
#[test]
fn two_hundred_fifty_pods_add_and_del_in_parallel() {
    const PODS: usize = 250;
    const PARALLEL: usize = 20;
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let c = conf(&node, "1.1.0", "many", json!({}));
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("m")).collect();
    let cids: Vec<String> = (0..PODS).map(|i| unique(&format!("m{i}"))).collect();
    // Operations in order: ADD i, and once 20 pods are up, DEL of the pod 20 back with each ADD.
    let mut ops: Vec<(bool, usize)> = Vec::new();
    for i in 0..PODS {
        ops.push((true, i));
        if i >= PARALLEL {
            ops.push((false, i - PARALLEL));
        }
    }
    ops.extend((PODS - PARALLEL..PODS).map(|i| (false, i)));
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Value>>> = Mutex::new(vec![None; PODS]);
    let added = Condvar::new();
    let live: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    let peak = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let op = {
                    let mut n = next.lock().unwrap();
                    let Some(op) = ops.get(*n).copied() else { return };
                    *n += 1;
                    op
                };
                match op {
                    (true, i) => {
                        let res = add(&pods[i], &cids[i], &c);
                        let ip = first_ip(&res);
                        {
                            let mut l = live.lock().unwrap();
                            if let Some(other) = l.insert(ip.clone(), i) {
                                panic!("{ip} handed to pod {i} while pod {other} holds it");
                            }
                            let mut p = peak.lock().unwrap();
                            *p = (*p).max(l.len());
                        }
                        results.lock().unwrap()[i] = Some(res);
                        added.notify_all();
                    }
                    (false, i) => {
                        // The runtime never DELs a container before its ADD returned.
                        let res = {
                            let mut r = results.lock().unwrap();
                            while r[i].is_none() {
                                r = added.wait(r).unwrap();
                            }
                            r[i].clone().unwrap()
                        };
                        // Out of `live` first: once DEL starts, the address may be reused.
                        live.lock().unwrap().remove(&first_ip(&res));
                        del(&pods[i], &cids[i], &c, &res);
                    }
                }
            });
        }
    });
    let all: HashSet<String> =
        results.into_inner().unwrap().iter().map(|r| first_ip(r.as_ref().unwrap())).collect();
    let peak = peak.into_inner().unwrap();
    println!("250 pods: {} distinct addresses, at most {peak} live at once", all.len());
    assert!(all.iter().all(|ip| ip.parse::<Ipv4Addr>().is_ok_and(|a| a.octets()[..3] == [10, 88, 0])));
    assert!(node.pod_ports().is_empty(), "ports left: {:?}", node.pod_ports());
    assert!(used(&node).is_empty(), "addresses left: {:?}", ipam(&node));
    assert!(ipam(&node).allocations.is_empty());
    assert!(pods.iter().all(|p| p.link("eth0").is_none()), "interfaces left");
    assert_eq!(node.pending(), json!([]));
}
