//! The plugin against a real tapwayd and the reference host-local IPAM, invoked the way
//! libcni does. See `common/mod.rs` for what the tests need and how they stay contained;
//! they print `SKIP: …` and pass when the machine cannot run them.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// ADD `cid` into `pod` as eth0; the result.
fn add(pod: &Netns, cid: &str, conf: &Value) -> Value {
    Call::new("ADD", cid, &pod.path(), "eth0").run(conf).ok()
}

/// DEL as libcni does it: with the cached result as prevResult.
fn del(pod: &Netns, cid: &str, conf: &Value, result: &Value) {
    Call::new("DEL", cid, &pod.path(), "eth0").run(&with_prev(conf, result)).ok();
}

/// Nothing of `cid` is left: no port in tapwayd, no reservation in host-local.
fn assert_gone(node: &Node, network: &str, cid: &str) {
    assert!(node.port_of(cid).is_none(), "tapwayd still has a port for {cid}: {:?}", node.pod_ports());
    let res = node.reservations(network);
    assert!(
        !res.values().any(|owner| owner.starts_with(cid)),
        "host-local still holds an address for {cid}: {res:?}"
    );
}

#[test]
fn version_needs_only_the_command() {
    let mut call = Call::new("VERSION", "", "dummy", "");
    call.unset = vec!["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS"];
    for (stdin, echoed) in [
        (r#"{"cniVersion":"1.1.0"}"#, "1.1.0"),
        (r#"{"cniVersion":"0.4.0"}"#, "0.4.0"),
        (r#"{"cniVersion":"0.2.0"}"#, "1.1.0"),
        ("", "1.1.0"),
    ] {
        let v = call.run_raw(stdin.as_bytes()).ok();
        assert_eq!(v["cniVersion"], echoed, "{stdin}");
        assert_eq!(v["supportedVersions"], json!(VERSIONS));
    }
}

#[test]
fn add_result_shape_per_version() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    for ver in VERSIONS {
        let pod = Netns::new("pod");
        let cid = unique("shape");
        let conf = node.conf(ver, "shape");
        let res = add(&pod, &cid, &conf);
        let link = pod.link("eth0").expect("eth0 in the pod");

        assert_eq!(res["cniVersion"], ver);
        let ifs = res["interfaces"].as_array().unwrap();
        assert_eq!(ifs.len(), 1, "{res}");
        assert_eq!(ifs[0]["name"], "eth0");
        assert_eq!(ifs[0]["sandbox"], pod.path());
        assert_eq!(ifs[0]["mac"], link["address"], "result MAC is the interface's");
        if ver == "1.1.0" {
            assert_eq!(ifs[0]["mtu"], link["mtu"], "{res}");
        } else {
            assert!(ifs[0].get("mtu").is_none(), "no interface MTU before 1.1.0: {res}");
        }

        let ips = res["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 1, "{res}");
        let addr = ips[0]["address"].as_str().unwrap();
        assert!(addr.starts_with("10.88.0.") && addr.ends_with("/24"), "{addr}");
        assert_eq!(ips[0]["gateway"], GATEWAY);
        assert_eq!(ips[0]["interface"], 0);
        if ver.starts_with('0') {
            assert_eq!(ips[0]["version"], "4", "{res}");
        } else {
            assert!(ips[0].get("version").is_none(), "no per-IP version from 1.0.0: {res}");
        }
        assert!(
            res["routes"].as_array().unwrap().contains(&json!({"dst": "0.0.0.0/0", "gw": GATEWAY})),
            "default route in the result: {res}"
        );
        // No DNS configured: `{}` up to 1.0.0, left out from 1.1.0 (as libcni writes them).
        assert_eq!(res.get("dns").is_some(), ver != "1.1.0", "{res}");
        assert_eq!(pod.addrs("eth0"), vec![addr.to_string()]);
        let port = node.port_of(&cid).expect("tapwayd has the port");
        assert_eq!(port.owner.network.as_deref(), Some("shape"));
        assert_eq!(port.ifname, "eth0");

        del(&pod, &cid, &conf, &res);
        assert!(pod.link("eth0").is_none(), "eth0 removed by DEL");
        assert_gone(&node, "shape", &cid);
    }
}

#[test]
fn dual_stack_result() {
    let r = ready_or_skip!();
    let node = Node::start_with(&r, &["--pod-cidr", "fd00:88::/64"]);
    let mut conf = node.conf("0.4.0", "dual");
    conf["ipam"]["ranges"] = json!([
        [{"subnet": POD_CIDR, "rangeStart": "10.88.0.10", "gateway": GATEWAY}],
        [{"subnet": "fd00:88::/64", "rangeStart": "fd00:88::10", "rangeEnd": "fd00:88::ff", "gateway": "fd00:88::1"}]
    ]);
    let pod = Netns::new("pod");
    let cid = unique("dual");
    let res = add(&pod, &cid, &conf);
    let ips = res["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{res}");
    assert_eq!((ips[0]["version"].as_str(), ips[1]["version"].as_str()), (Some("4"), Some("6")));
    assert_eq!(ips[1]["gateway"], "fd00:88::1");
    let routes = res["routes"].as_array().unwrap();
    assert!(routes.contains(&json!({"dst": "0.0.0.0/0", "gw": GATEWAY})), "{res}");
    assert!(routes.contains(&json!({"dst": "::/0", "gw": "fd00:88::1"})), "{res}");
    let addrs = pod.addrs("eth0");
    assert!(addrs.iter().any(|a| a.starts_with("fd00:88::")), "{addrs:?}");
    Call::new("CHECK", &cid, &pod.path(), "eth0").run(&with_prev(&conf, &res)).ok();
    del(&pod, &cid, &conf, &res);
    assert_gone(&node, "dual", &cid);
}

#[test]
fn duplicate_ifname_fails_and_keeps_the_first() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let pod = Netns::new("pod");
    let conf = node.conf("1.0.0", "dup");
    let first = unique("first");
    let res = add(&pod, &first, &conf);
    let addr = res["ips"][0]["address"].as_str().unwrap().to_string();

    // Another container, same netns and ifname: tapwayd refuses, IPAM is rolled back.
    let second = unique("second");
    let v = Call::new("ADD", &second, &pod.path(), "eth0").run(&conf).err(101);
    assert!(v["msg"].as_str().unwrap().contains("eth0"), "{v}");
    assert_gone(&node, "dup", &second);

    // The same container again: host-local refuses the duplicate allocation.
    let again = Call::new("ADD", &first, &pod.path(), "eth0").run(&conf);
    assert_ne!(again.code, 0, "{again:?}");

    // The first attachment is untouched.
    assert_eq!(pod.addrs("eth0"), vec![addr]);
    assert_eq!(node.pod_ports().len(), 1);
    assert_eq!(node.reservations("dup").len(), 1);
    assert_eq!(node.pending(), json!([]));

    // An interface someone else made: IPAM ran, tapwayd refused, the rollback released it.
    let other = Netns::new("pod");
    let out = other.ip(&["link", "add", "eth0", "type", "bridge"]);
    assert!(out.status.success(), "{out:?}");
    let cid = unique("taken");
    Call::new("ADD", &cid, &other.path(), "eth0").run(&conf).err(101);
    assert_gone(&node, "dup", &cid);
    let still = other.ip(&["-d", "link", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&still.stdout).contains("bridge"),
        "the other eth0 is still there: {still:?}"
    );
    del(&pod, &first, &conf, &res);
}

#[test]
fn ipam_failure_leaves_nothing() {
    let r = ready_or_skip!();
    let node = Node::start(&r);

    let check_clean = |pod: &Netns, cid: &str, net: &str| {
        assert!(pod.link("eth0").is_none(), "no interface left");
        assert_gone(&node, net, cid);
        assert_eq!(node.pending(), json!([]));
    };

    // No such IPAM plugin.
    let pod = Netns::new("pod");
    let cid = unique("noipam");
    let mut conf = node.conf("1.0.0", "ipamfail");
    conf["ipam"]["type"] = json!("no-such-ipam");
    let v = Call::new("ADD", &cid, &pod.path(), "eth0").run(&conf).err(102);
    assert!(v["msg"].as_str().unwrap().contains("no-such-ipam"), "{v}");
    check_clean(&pod, &cid, "ipamfail");

    // host-local refuses its config (range outside the subnet): its error is passed through.
    let mut conf = node.conf("1.0.0", "ipamfail");
    conf["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.99.0.10");
    let out = Call::new("ADD", &cid, &pod.path(), "eth0").run(&conf);
    assert_ne!(out.code, 0);
    assert!(out.json()["msg"].as_str().unwrap().contains("host-local"), "{out:?}");
    check_clean(&pod, &cid, "ipamfail");

    // The range is exhausted: the second pod gets nothing, not even a half-made interface.
    let mut conf = node.conf("1.0.0", "tiny");
    conf["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.88.0.50");
    conf["ipam"]["ranges"][0][0]["rangeEnd"] = json!("10.88.0.50");
    let pod1 = Netns::new("pod");
    let cid1 = unique("tiny1");
    let res1 = add(&pod1, &cid1, &conf);
    let cid2 = unique("tiny2");
    let out = Call::new("ADD", &cid2, &pod.path(), "eth0").run(&conf);
    assert_ne!(out.code, 0, "{out:?}");
    check_clean(&pod, &cid2, "tiny");
    assert_eq!(node.pod_ports().len(), 1);
    del(&pod1, &cid1, &conf, &res1);
}

#[test]
fn del_is_idempotent_and_best_effort() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let conf = node.conf("1.1.0", "del");

    // Twice, with and without prevResult.
    let pod = Netns::new("pod");
    let cid = unique("twice");
    let res = add(&pod, &cid, &conf);
    del(&pod, &cid, &conf, &res);
    Call::new("DEL", &cid, &pod.path(), "eth0").run(&conf).ok();
    assert_gone(&node, "del", &cid);

    // Never added, and no netns at all.
    Call::new("DEL", &unique("never"), "", "eth0").run(&conf).ok();

    // containerd's second DEL: CNI_NETNS empty, no prevResult.
    let pod2 = Netns::new("pod");
    let cid2 = unique("nonetns");
    add(&pod2, &cid2, &conf);
    Call::new("DEL", &cid2, "", "eth0").run(&conf).ok();
    assert!(pod2.link("eth0").is_none());
    assert_gone(&node, "del", &cid2);

    // The netns is already gone.
    let mut pod3 = Netns::new("pod");
    let cid3 = unique("nsgone");
    let res3 = add(&pod3, &cid3, &conf);
    let path3 = pod3.path();
    pod3.delete();
    Call::new("DEL", &cid3, &path3, "eth0").run(&with_prev(&conf, &res3)).ok();
    Call::new("DEL", &cid3, &path3, "eth0").run(&conf).ok();
    assert_gone(&node, "del", &cid3);
    assert_eq!(node.pending(), json!([]));
}

#[test]
fn del_with_tapwayd_stopped_releases_ipam_and_detaches_later() {
    let r = ready_or_skip!();
    let mut node = Node::start(&r);
    let conf = node.conf("1.1.0", "down");
    let pod = Netns::new("pod");
    let cid = unique("down");
    let res = add(&pod, &cid, &conf);

    node.stop_daemon();
    del(&pod, &cid, &conf, &res);
    Call::new("DEL", &cid, "", "eth0").run(&conf).ok();
    assert!(node.reservations("down").is_empty(), "IPAM released while tapwayd is down");
    let pending = node.pending();
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["container_id"], cid.as_str());
    assert_eq!(pending[0]["ifname"], "eth0");

    // ADD while tapwayd is down fails with "try again later" and leaves nothing.
    let pod2 = Netns::new("pod");
    let cid2 = unique("down2");
    Call::new("ADD", &cid2, &pod2.path(), "eth0").run(&conf).err(11);
    assert!(node.reservations("down").is_empty());

    // The next invocation that reaches tapwayd does the pending detach first.
    node.start_daemon();
    let res2 = add(&pod2, &cid2, &conf);
    assert_eq!(node.pending(), json!([]));
    assert!(node.port_of(&cid).is_none());
    assert!(
        pod.link("eth0").is_none(),
        "tapwayd re-adopted the port on restart, the pending detach removed it"
    );
    del(&pod2, &cid2, &conf, &res2);
}

#[test]
fn check_passes_then_fails_when_the_address_is_removed() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let mut conf = node.conf("1.0.0", "check");
    // Routes from IPAM, one without a gateway (meaning the address' gateway).
    conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "10.96.0.0/12", "gw": GATEWAY}]);
    let pod = Netns::new("pod");
    let cid = unique("check");
    let res = add(&pod, &cid, &conf);
    assert_eq!(res["routes"], json!([{"dst": "0.0.0.0/0"}, {"dst": "10.96.0.0/12", "gw": GATEWAY}]));
    let routes = String::from_utf8_lossy(&pod.ip(&["route"]).stdout).to_string();
    assert!(routes.contains(&format!("default via {GATEWAY}")), "{routes}");
    assert!(routes.contains(&format!("10.96.0.0/12 via {GATEWAY}")), "{routes}");
    let check = |conf: &Value| Call::new("CHECK", &cid, &pod.path(), "eth0").run(conf);

    assert_eq!(check(&with_prev(&conf, &res)).ok(), Value::Null, "CHECK prints nothing");
    check(&conf).err(7);
    let mut old = with_prev(&conf, &res);
    old["cniVersion"] = json!("0.3.1");
    check(&old).err(1);

    // A port tapwayd does not have (no IPAM, so tapwayd is asked directly).
    let mut unknown = res.clone();
    unknown["interfaces"][0]["name"] = json!("eth9");
    let mut no_ipam = with_prev(&conf, &unknown);
    no_ipam.as_object_mut().unwrap().remove("ipam");
    Call::new("CHECK", &cid, &pod.path(), "eth9").run(&no_ipam).err(103);

    let addr = res["ips"][0]["address"].as_str().unwrap();
    let out = pod.ip(&["addr", "del", addr, "dev", "eth0"]);
    assert!(out.status.success(), "{out:?}");
    let v = check(&with_prev(&conf, &res)).err(104);
    assert!(v["msg"].as_str().unwrap().contains(addr.split('/').next().unwrap()), "{v}");

    del(&pod, &cid, &conf, &res);
    assert_ne!(check(&with_prev(&conf, &res)).code, 0, "CHECK after DEL fails");
}

#[test]
fn status_up_and_down() {
    let r = ready_or_skip!();
    let mut node = Node::start(&r);
    let conf = node.conf("1.1.0", "status");
    let status = |conf: &Value| {
        let mut c = Call::new("STATUS", "", "", "");
        c.unset = vec!["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"];
        c.run(conf)
    };
    assert_eq!(status(&conf).ok(), Value::Null);
    let mut old = conf.clone();
    old["cniVersion"] = json!("1.0.0");
    status(&old).err(1);
    let mut no_ipam = conf.clone();
    no_ipam["ipam"]["type"] = json!("no-such-ipam");
    status(&no_ipam).err(50);

    node.stop_daemon();
    let v = status(&conf).err(50);
    assert!(v["msg"].as_str().unwrap().contains("tapwayd"), "{v}");
    node.start_daemon();
    status(&conf).ok();
}

#[test]
fn gc_removes_exactly_the_stale_attachments() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let conf = node.conf("1.1.0", "gcnet");
    let mut other_conf = node.conf("1.1.0", "othernet");
    // Its own part of the range: tapwayd refuses an address another pod has (address_conflict),
    // and the two host-local stores know nothing of each other.
    other_conf["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.88.0.200");
    let pods: Vec<Netns> = (0..4).map(|_| Netns::new("pod")).collect();
    let cids: Vec<String> = (0..4).map(|i| unique(&format!("gc{i}"))).collect();
    for i in 0..3 {
        add(&pods[i], &cids[i], &conf);
    }
    add(&pods[3], &cids[3], &other_conf);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": cids[0], "ifname": "eth0"}]);
    let gc_call = || {
        let mut c = Call::new("GC", "", "", "");
        c.unset = vec!["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"];
        c
    };
    gc_call().run(&gc).ok();

    let kept: HashSet<String> = node.pod_ports().into_iter().filter_map(|p| p.owner.container_id).collect();
    assert_eq!(kept, HashSet::from([cids[0].clone(), cids[3].clone()]));
    let owners = |net: &str| -> Vec<String> {
        node.reservations(net).values().map(|v| v.lines().next().unwrap_or("").to_string()).collect()
    };
    assert_eq!(owners("gcnet"), vec![cids[0].clone()], "IPAM released the stale ones (host-local has no GC)");
    assert_eq!(owners("othernet"), vec![cids[3].clone()], "another network is not touched");
    assert!(pods[0].link("eth0").is_some() && pods[3].link("eth0").is_some());
    assert!(pods[1].link("eth0").is_none() && pods[2].link("eth0").is_none());

    // Again: nothing more to do.
    gc_call().run(&gc).ok();
    assert_eq!(node.pod_ports().len(), 2);
    let mut old = gc.clone();
    old["cniVersion"] = json!("1.0.0");
    gc_call().run(&old).err(1);
    let mut no_list = conf.clone();
    no_list.as_object_mut().unwrap().remove("cni.dev/valid-attachments");
    gc_call().run(&no_list).err(7);
    assert_eq!(node.pod_ports().len(), 2, "a GC without the list removes nothing");
}

#[test]
fn bad_env_and_bad_json_give_the_right_codes() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let pod = Netns::new("pod");
    let conf = node.conf("1.0.0", "bad");
    let cid = unique("bad");
    let call = || Call::new("ADD", &cid, &pod.path(), "eth0");

    for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
        let mut c = call();
        c.unset = vec![var];
        let v = c.run(&conf).err(4);
        assert!(v["msg"].as_str().unwrap().contains(var), "{v}");
    }
    let mut c = call();
    c.command = "EXPLODE";
    c.run(&conf).err(4);
    let mut c = call();
    c.ifname = "bad/name";
    c.run(&conf).err(4);
    let mut c = call();
    c.container_id = "-leading-dash";
    c.run(&conf).err(4);
    let mut c = call();
    c.args = "no-equals-sign";
    c.run(&conf).err(4);
    let mut c = call();
    c.netns = "/run/netns/twit-does-not-exist".into();
    c.run(&conf).err(105);

    call().run_raw(b"{not json").err(6);
    call().run_raw(b"[1,2,3]").err(6);
    call().run_raw(b"").err(6);
    for (key, val, code) in [
        ("cniVersion", json!("0.2.0"), 1),
        ("cniVersion", json!("9.9.9"), 1),
        ("mtu", json!("big"), 6),
        ("mtu", json!(10), 7),
        ("mac", json!("01:00:5e:00:00:01"), 7),
        ("ipam", json!({"type": "../../bin/sh"}), 7),
    ] {
        let mut bad = conf.clone();
        bad[key] = val.clone();
        let v = call().run(&bad).err(code);
        assert!(!v["msg"].as_str().unwrap().is_empty(), "{key}={val}: {v}");
    }
    assert!(node.pod_ports().is_empty());
    assert!(node.reservations("bad").is_empty());
    assert!(pod.link("eth0").is_none());
}

#[test]
fn runtime_config_and_cni_args() {
    let r = ready_or_skip!();
    let node = Node::start(&r);

    // containerd: capitalised runtimeConfig keys, Kubernetes pod identity in CNI_ARGS.
    let mut conf = node.conf("1.1.0", "rt");
    conf["runtimeConfig"] = json!({
        "IPs": ["10.88.0.77/24"],
        "Mac": "02:11:22:33:44:55",
        "PortMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
        "Bandwidth": {"IngressRate": 10_000_000, "IngressBurst": 1_000_000, "EgressRate": 5_000_000, "EgressBurst": 500_000}
    });
    let pod = Netns::new("pod");
    let cid = unique("k8s");
    let mut c = Call::new("ADD", &cid, &pod.path(), "eth0");
    c.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1";
    let res = c.run(&conf).ok();
    assert_eq!(res["ips"][0]["address"], "10.88.0.77/24");
    assert_eq!(res["interfaces"][0]["mac"], "02:11:22:33:44:55");
    assert_eq!(pod.link("eth0").unwrap()["address"], "02:11:22:33:44:55");
    let port = node.port_of(&cid).unwrap();
    assert_eq!(port.owner.pod_namespace.as_deref(), Some("team-a"));
    assert_eq!(port.owner.pod_name.as_deref(), Some("web-0"));
    assert_eq!(port.owner.pod_uid.as_deref(), Some("u-1"));
    assert_eq!(port.owner.pod_infra_container_id.as_deref(), Some("abc"));
    // The bandwidth capability becomes tapwayd's rate limits on the pod's port.
    let bw = port.bandwidth.expect("rate limits on the port");
    assert_eq!(
        (bw.ingress_rate, bw.ingress_burst, bw.egress_rate, bw.egress_burst),
        (10_000_000, 1_000_000, 5_000_000, 500_000)
    );
    let mut d = Call::new("DEL", &cid, &pod.path(), "eth0");
    d.args = c.args;
    d.run(&with_prev(&conf, &res)).ok();

    // podman: --ip and --mac-address arrive as CNI_ARGS.
    let conf = node.conf("1.0.0", "rt");
    let pod2 = Netns::new("pod");
    let cid2 = unique("podman");
    let mut c = Call::new("ADD", &cid2, &pod2.path(), "eth0");
    c.args = "IgnoreUnknown=1;IP=10.88.0.78;MAC=02:11:22:33:44:66";
    let res2 = c.run(&conf).ok();
    assert_eq!(res2["ips"][0]["address"], "10.88.0.78/24");
    assert_eq!(pod2.link("eth0").unwrap()["address"], "02:11:22:33:44:66");
    let mut d = Call::new("DEL", &cid2, &pod2.path(), "eth0");
    d.args = c.args;
    d.run(&with_prev(&conf, &res2)).ok();
    assert_gone(&node, "rt", &cid);
    assert_gone(&node, "rt", &cid2);
}

#[test]
fn prev_result_is_returned_extended() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let conf = node.conf("1.0.0", "ext");
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "vethhost0", "mac": "02:00:00:00:00:01"}],
        "ips": [{"address": "192.168.77.2/24", "interface": 0}],
        "routes": [{"dst": "192.168.0.0/16"}],
        "dns": {"nameservers": ["192.168.77.53"]}
    });
    let pod = Netns::new("pod");
    let cid = unique("ext");
    let res = Call::new("ADD", &cid, &pod.path(), "eth0").run(&with_prev(&conf, &prev)).ok();
    let ifs = res["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2, "{res}");
    assert_eq!(ifs[0], prev["interfaces"][0]);
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(res["ips"][0], prev["ips"][0]);
    assert_eq!(res["ips"][1]["interface"], 1);
    assert!(res["routes"].as_array().unwrap().contains(&json!({"dst": "192.168.0.0/16"})));
    assert_eq!(res["dns"], prev["dns"]);
    Call::new("CHECK", &cid, &pod.path(), "eth0").run(&with_prev(&conf, &res)).ok();
    del(&pod, &cid, &conf, &res);
    assert_gone(&node, "ext", &cid);
}

#[test]
fn chain_tapway_portmap_tuning_bandwidth() {
    let r = ready_or_skip!();
    for p in ["portmap", "tuning", "bandwidth"] {
        if !std::path::Path::new(REF_PLUGINS).join(p).exists() {
            println!("SKIP: {REF_PLUGINS}/{p} missing");
            return;
        }
    }
    let node = Node::start(&r);
    let pod = Netns::new("pod");
    let cid = unique("chain");
    let have_iptables = std::process::Command::new("iptables").arg("-V").output().is_ok();
    let mappings = if have_iptables {
        json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}])
    } else {
        println!("note: no iptables, portmap runs without mappings");
        json!([])
    };
    // What libcni builds from the conflist for each plugin.
    let tapway = node.conf("1.0.0", "chain");
    let portmap = json!({"cniVersion": "1.0.0", "name": "chain", "type": "portmap",
        "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": mappings}});
    let tuning = json!({"cniVersion": "1.0.0", "name": "chain", "type": "tuning",
        "sysctl": {"net.core.somaxconn": "512"}});
    // No rates: the reference bandwidth plugin shapes on a host-side veth, which a tapway pod
    // does not have (see docs/cni.md); without limits it passes the result on.
    let bandwidth = json!({"cniVersion": "1.0.0", "name": "chain", "type": "bandwidth",
        "capabilities": {"bandwidth": true}});
    // Reference plugins run in the node's netns, as the runtime of that node would run them
    // (portmap writes iptables rules there, never in the machine's own netns).
    let call = |bin: &str, cmd: &'static str| {
        let mut c = Call::new(cmd, &cid, &pod.path(), "eth0");
        c.bin = std::path::Path::new(REF_PLUGINS).join(bin);
        c.in_netns = Some(&node.ns.name);
        c
    };

    let r1 = Call::new("ADD", &cid, &pod.path(), "eth0").run(&tapway).ok();
    let r2 = call("portmap", "ADD").run(&with_prev(&portmap, &r1)).ok();
    let r3 = call("tuning", "ADD").run(&with_prev(&tuning, &r2)).ok();
    let r3 = call("bandwidth", "ADD").run(&with_prev(&bandwidth, &r3)).ok();
    // tapway's 1.0.0 result has only 1.0.0's fields, so Go plugins built on libcni < 1.2
    // (Debian's 1.1.1), which drop any others, pass it on unchanged.
    assert_eq!(r3, r1);
    let somaxconn = pod.run(|| std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap());
    assert_eq!(somaxconn.trim(), "512");
    let nat = || {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &node.ns.name, "iptables", "-t", "nat", "-S"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    if have_iptables {
        assert!(nat().contains("18080"), "portmap rule in the node netns:\n{}", nat());
    }

    // CHECK in order, with the final result.
    Call::new("CHECK", &cid, &pod.path(), "eth0").run(&with_prev(&tapway, &r3)).ok();
    let pm = call("portmap", "CHECK").run(&with_prev(&portmap, &r3));
    // portmap up to 1.2 checks IPv6 rules an IPv4-only container never got
    // (containernetworking/plugins#819); anything else is a real failure.
    assert!(pm.code == 0 || pm.stdout.contains("ipv6"), "portmap CHECK: {pm:?}");
    call("tuning", "CHECK").run(&with_prev(&tuning, &r3)).ok();

    // DEL in reverse.
    call("bandwidth", "DEL").run(&with_prev(&bandwidth, &r3)).ok();
    call("tuning", "DEL").run(&with_prev(&tuning, &r3)).ok();
    call("portmap", "DEL").run(&with_prev(&portmap, &r3)).ok();
    Call::new("DEL", &cid, &pod.path(), "eth0").run(&with_prev(&tapway, &r3)).ok();
    assert_gone(&node, "chain", &cid);
    assert!(pod.link("eth0").is_none());
    if have_iptables {
        assert!(!nat().contains("18080"), "portmap rule removed");
    }
}

#[test]
fn twenty_parallel_adds_then_dels() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let conf = node.conf("1.1.0", "par");
    let pods: Vec<Netns> = (0..20).map(|_| Netns::new("par")).collect();
    let cids: Vec<String> = (0..20).map(|i| unique(&format!("par{i}"))).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> =
            pods.iter().zip(&cids).map(|(pod, cid)| s.spawn(|| add(pod, cid, &conf))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: HashSet<String> = results.iter().map(first_ip).collect();
    assert_eq!(ips.len(), 20, "distinct addresses: {ips:?}");
    assert_eq!(node.pod_ports().len(), 20);
    assert_eq!(node.reservations("par").len(), 20);
    for (pod, res) in pods.iter().zip(&results) {
        assert_eq!(pod.addrs("eth0"), vec![res["ips"][0]["address"].as_str().unwrap().to_string()]);
    }

    std::thread::scope(|s| {
        for ((pod, cid), res) in pods.iter().zip(&cids).zip(&results) {
            let conf = &conf;
            s.spawn(move || del(pod, cid, conf, res));
        }
    });
    assert!(node.pod_ports().is_empty(), "{:?}", node.pod_ports());
    assert!(node.reservations("par").is_empty(), "{:?}", node.reservations("par"));
    assert!(pods.iter().all(|p| p.link("eth0").is_none()), "no links left");
    assert_eq!(node.pending(), json!([]));
}

#[test]
fn pods_reach_each_other_and_the_host() {
    let r = ready_or_skip!();
    let node = Node::start(&r);
    let conf = node.conf("1.0.0", "ping");
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    let (ca, cb) = (unique("pa"), unique("pb"));
    let ra = add(&a, &ca, &conf);
    let rb = add(&b, &cb, &conf);
    let ip_a: Ipv4Addr = first_ip(&ra).parse().unwrap();
    let ip_b: Ipv4Addr = first_ip(&rb).parse().unwrap();
    let gw: Ipv4Addr = GATEWAY.parse().unwrap();

    assert!(a.run(|| ping(ip_b, 5)), "a → b ping:\n{}", node.daemon_log());
    assert!(b.run(|| ping(ip_a, 5)), "b → a ping");
    assert!(a.run(|| ping(gw, 5)), "a → host port (gateway)");

    // TCP: b listens, a connects and gets its bytes echoed.
    let listener = b.run(|| TcpListener::bind("0.0.0.0:7777").unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
    });
    let echoed = a.run(|| {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((ip_b, 7777)), Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"hello through tapway").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    });
    server.join().unwrap();
    assert_eq!(echoed, "hello through tapway");

    del(&a, &ca, &conf, &ra);
    del(&b, &cb, &conf, &rb);
}

#[test]
fn install_script_dry_run_writes_a_valid_conflist() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("install-cni.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .args([
            "--dry-run",
            "--binary",
            env!("CARGO_BIN_EXE_tapway"),
            "--subnet",
            "10.244.3.0/24",
            "--portmap",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would install") && text.contains("/etc/cni/net.d/10-tapway.conflist"), "{text}");
    let json_start = text.find('{').unwrap();
    let conflist: Value = serde_json::from_str(&text[json_start..]).unwrap();
    assert_eq!(conflist["plugins"][0]["type"], "tapway");
    assert_eq!(conflist["plugins"][0]["ipam"]["ranges"][0][0]["gateway"], "10.244.3.1");
    assert_eq!(conflist["plugins"][1]["type"], "portmap");
    let missing = std::process::Command::new("sh").arg(&script).arg("--dry-run").output().unwrap();
    assert!(!missing.status.success(), "--subnet is required");
}

/// Runs install-cni.sh with `args` and returns the conflist it would write (dry run).
fn install_script_conflist(args: &[&str]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("install-cni.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .args(["--dry-run", "--binary", env!("CARGO_BIN_EXE_tapway")])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap()
}

#[test]
fn install_script_dual_stack_and_ranges_from_tapwayd() {
    let c = install_script_conflist(&["--subnet", "10.244.3.0/24", "--subnet", "fd00:10:244:3::/64"]);
    let ipam = &c["plugins"][0]["ipam"];
    // IPv6 gets host-local's default gateway, network + 1, which is tapwayd's too.
    assert_eq!(
        ipam["ranges"],
        json!([[{"subnet": "10.244.3.0/24", "gateway": "10.244.3.1"}], [{"subnet": "fd00:10:244:3::/64"}]])
    );
    assert_eq!(ipam["routes"], json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]));
    // Nodes on one L2 (uplinks): the node's range with the cluster's prefix.
    let c = install_script_conflist(&["--subnet", "10.244.3.0/26", "--cluster-cidr", "10.244.0.0/16"]);
    assert_eq!(
        c["plugins"][0]["ipam"]["ranges"],
        json!([[{"subnet": "10.244.0.0/16", "rangeStart": "10.244.3.2", "rangeEnd": "10.244.3.62", "gateway": "10.244.3.1"}]])
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("install-cni.sh");
    let outside = std::process::Command::new("sh")
        .arg(&script)
        .args(["--dry-run", "--skip-binary", "--subnet", "10.244.3.0/24", "--cluster-cidr", "10.245.0.0/16"])
        .output()
        .unwrap();
    assert!(!outside.status.success(), "a node range outside the cluster CIDR is refused");

    // --from-tapwayd reads `tapwayctl --json status`: today's `pod_cidr`, and a `pod_cidrs`
    // list (dual-stack) when tapwayd reports one.
    let dir = std::env::temp_dir().join(format!("tapway-install-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("tapwayctl");
    for (status, want) in [
        ("{\n  \"pod_cidr\": \"10.244.7.0/24\",\n  \"gateway\": \"10.244.7.1/24\"\n}", json!([[{"subnet": "10.244.7.0/24", "gateway": "10.244.7.1"}]])),
        (
            "{\n  \"pod_cidr\": \"10.244.8.0/24\",\n  \"pod_cidrs\": [\n    \"10.244.8.0/24\",\n    \"fd00:8::/64\"\n  ],\n  \"uptime_secs\": 3\n}",
            json!([[{"subnet": "10.244.8.0/24", "gateway": "10.244.8.1"}], [{"subnet": "fd00:8::/64"}]]),
        ),
    ] {
        std::fs::write(&fake, format!("#!/bin/sh\ncat <<'EOF'\n{status}\nEOF\n")).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let c = install_script_conflist(&["--skip-binary", "--from-tapwayd", "--tapwayctl", fake.to_str().unwrap()]);
        assert_eq!(c["plugins"][0]["ipam"]["ranges"], want, "{status}");
    }
    // No range yet: a dry run says so instead of waiting.
    std::fs::write(&fake, "#!/bin/sh\necho '{\"pod_cidr\": null}'\n").unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("install-cni.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .args(["--dry-run", "--skip-binary", "--from-tapwayd", "--tapwayctl", fake.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no pod range"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn install_script_keep_running_follows_the_range_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("tapway-install-keep-{}", std::process::id()));
    let conf_dir = dir.join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let fake = dir.join("tapwayctl");
    let set_range = |cidr: &str| {
        let tmp = dir.join("tapwayctl.new");
        std::fs::write(&tmp, format!("#!/bin/sh\nprintf '{{\\n  \"pod_cidr\": \"{cidr}\"\\n}}\\n'\n"))
            .unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &fake).unwrap();
    };
    set_range("10.244.9.0/24");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("install-cni.sh");
    let mut child = std::process::Command::new("sh")
        .arg(&script)
        .args(["--skip-binary", "--from-tapwayd", "--keep-running", "--interval", "1", "--tapwayctl"])
        .arg(&fake)
        .arg("--conf-dir")
        .arg(&conf_dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let conflist = conf_dir.join("10-tapway.conflist");
    let subnet = || -> Option<String> {
        let c: Value = serde_json::from_str(&std::fs::read_to_string(&conflist).ok()?).ok()?;
        c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"].as_str().map(String::from)
    };
    let wait_for = |want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while subnet().as_deref() != Some(want) {
            assert!(std::time::Instant::now() < deadline, "conflist never got {want}: {:?}", subnet());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("10.244.9.0/24");
    set_range("10.244.10.0/24");
    wait_for("10.244.10.0/24");
    // SIGTERM ends it with 0 (it is PID 1 of the DaemonSet's cni-conf container).
    sigterm(child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM to a child, through kill(1).
fn sigterm(pid: u32) {
    let ok = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    assert!(ok.success());
}
