//! In-daemon IPAM through the control API and the real `tapwayctl`: an attach that asks
//! tapwayd for its addresses, across a kill -9 at each crash point of an attach (ports and
//! addresses must not disagree afterwards), and `tapwayctl attach --ipam` / `tapwayctl ipam`.
//! Needs root; skips (passes) without it.
//!
//! Pod ranges: 10.231.11.0/24, 10.231.12.0/24 (of the 11..12 this file owns).

mod common;

use common::attach::*;
use common::*;
use tapway_api::{IpamReport, IpamRequest, Op, Owner, PortInfo};

/// Addresses in use in the node's pod range (its gateway excluded).
fn in_use(node: &Node) -> Vec<String> {
    let r: IpamReport = node.call(Op::IpamList);
    r.ranges[0].addresses.iter().map(|a| a.address.clone()).collect()
}

#[test]
fn ipam_attach_retried_after_kill_9_at_each_point_holds_one_address() {
    if skip() {
        return;
    }
    let _serial = serial();
    let mut node = Node::start("ipk", 11);
    let victim = node.quiet_pod("ipkv");
    let victim_ip = victim.ip.to_string();
    for point in POINTS {
        let ns = Netns::new("ipkp");
        let mut req = node.attach_request(&ns, victim.ip);
        req.ips.clear();
        req.ipam = Some(IpamRequest::default());
        req.owner = Owner { container_id: Some(unique("ik9")), ..Default::default() };

        attach_killed_at(&mut node, point, &req);
        node.restart(&[]);
        // Only a recorded port holds an address: the victim's, and the new pod's once saved.
        let saved = matches!(point, "attach:after_save" | "attach:after_publish");
        assert_eq!(in_use(&node).len(), 1 + usize::from(saved), "{point}: {:?}", in_use(&node));

        let port: PortInfo = node
            .client
            .call(Op::Attach(req.clone()))
            .unwrap_or_else(|e| panic!("{point}: retried attach failed: {e}\n{}", node.log()));
        let got = port.ipam.as_ref().expect("the allocation is answered");
        assert_eq!(got.ips.len(), 1, "{point}");
        assert_eq!(got.ips[0].gateway.as_deref(), Some(node.gateway().as_str()), "{point}");
        let addr = got.ips[0].address.split('/').next().unwrap_or_default().to_string();
        assert_ne!(addr, victim_ip, "{point}: the victim's address");
        assert_eq!(port.ips, vec![got.ips[0].address.clone()], "{point}: the port has it");
        // A second retry is the same port with the same address.
        let again: PortInfo = node.call(Op::Attach(req));
        assert_eq!((again.id, again.ips.clone()), (port.id, port.ips.clone()), "{point}");
        let mut want = vec![victim_ip.clone(), addr.clone()];
        want.sort();
        let mut have = in_use(&node);
        have.sort();
        assert_eq!(have, want, "{point}: exactly the two ports' addresses");
        ns.ping(&node.gateway());
        ns.ping(&victim_ip);

        let sel =
            tapway_api::PortSelector { netns: Some(ns.path()), container_id: None, ifname: "eth0".into() };
        let d: tapway_api::DetachResult = node.call(Op::Detach(sel));
        assert!(d.detached, "{point}");
        assert_eq!(in_use(&node), vec![victim_ip.clone()], "{point}: the detach released it");
    }
}

#[test]
fn tapwayctl_attach_ipam_and_list() {
    if skip() {
        return;
    }
    let _serial = serial();
    let node = Node::start("ipc", 12);
    let ns = Netns::new("ipcp");
    let out = tapwayctl(&node, &["--json", "attach", "--netns", &ns.path(), "--ipam"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let port: PortInfo = serde_json::from_slice(&out.stdout).expect("a port");
    assert_eq!(port.ips, vec!["10.231.12.2/24".to_string()]);
    ns.ping(&node.gateway());
    let asked = Netns::new("ipcq");
    let out = tapwayctl(&node, &["attach", "--netns", &asked.path(), "--ipam", "--ip", "10.231.12.77"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Taken, and a gateway: address conflict (exit 9).
    let third = Netns::new("ipcr");
    for ip in ["10.231.12.77", "10.231.12.1"] {
        let out = tapwayctl(&node, &["attach", "--netns", &third.path(), "--ipam", "--ip", ip]);
        assert_eq!(out.status.code(), Some(9), "{ip}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let list = tapwayctl(&node, &["ipam"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("10.231.12.0/24  gateway 10.231.12.1  size 253  used 2  free 251"), "{text}");
    assert!(text.contains("10.231.12.77") && text.contains(&format!("port {}", port.id)), "{text}");
    let json = tapwayctl(&node, &["--json", "ipam"]);
    let r: IpamReport = serde_json::from_slice(&json.stdout).expect("an ipam report");
    assert_eq!(r.ranges[0].used, 2);
    assert!(r.ranges[0].addresses.iter().all(|a| a.allocated));
}
