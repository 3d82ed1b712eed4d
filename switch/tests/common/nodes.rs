//! Multi-node harness: a "fabric" namespace holding a Linux bridge, and test nodes whose
//! tapwayd has an AF_XDP uplink: a veth whose node end (`up0`) is in the node namespace and
//! whose other end is enslaved to the fabric's bridge. Pods get addresses in one flat /16, so
//! pods of different nodes reach each other on-link, through both nodes' uplinks.
//!
//! Every namespace is owned by a guard (the fabric's veth ends go with it), so a failing test
//! cleans up too.

#![allow(dead_code)] // not every test uses every helper

use std::net::Ipv4Addr;

use super::common::*;
use tapway_api::{AttachRequest, IpConfig, Op, PortInfo};

/// Name of the uplink inside every node namespace.
pub const UPLINK: &str = "up0";

/// The L2 network between nodes: a namespace with a bridge `br0`.
pub struct Fabric {
    /// The namespace.
    pub ns: Netns,
    ports: std::sync::atomic::AtomicU32,
}

impl Fabric {
    /// A fresh fabric.
    pub fn new(tag: &str) -> Fabric {
        let ns = Netns::new(tag);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["link", "set", "br0", "up"]);
        Fabric { ns, ports: std::sync::atomic::AtomicU32::new(0) }
    }

    /// Plugs `node_ns` into the fabric: a veth `up0` there (MTU `mtu`, IPv6 off so the node's
    /// kernel stays quiet on it), its peer enslaved to `br0`.
    pub fn plug(&self, node_ns: &Netns, mtu: u32) {
        self.plug_queues(node_ns, mtu, 1);
    }

    /// Like [`Fabric::plug`], with `queues` rx/tx queues on each end.
    pub fn plug_queues(&self, node_ns: &Netns, mtu: u32, queues: u32) {
        let n = self.ports.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let fab = format!("fa{n}");
        let mtu = mtu.to_string();
        let q = queues.to_string();
        let qs = ["numrxqueues", q.as_str(), "numtxqueues", q.as_str()];
        let mut args = vec!["link", "add", &fab, "mtu", &mtu];
        args.extend_from_slice(&qs);
        args.extend_from_slice(&["type", "veth", "peer", "name", UPLINK, "netns", &node_ns.name]);
        args.extend_from_slice(&qs);
        self.ns.ip(&args);
        self.ns.ip(&["link", "set", &fab, "master", "br0", "up"]);
        let path = format!("/proc/sys/net/ipv6/conf/{UPLINK}/disable_ipv6");
        node_ns.enter(move || std::fs::write(&path, b"1").unwrap_or_else(|e| panic!("{path}: {e}")));
        node_ns.ip(&["link", "set", UPLINK, "mtu", &mtu, "up"]);
    }

    /// Starts a node (pod range `10.231.SUBNET.0/24`) whose tapwayd uses `up0` in `mode`.
    pub fn node(&self, tag: &str, subnet: u8, mode: &str, extra: &[&str]) -> Node {
        self.node_queues(tag, subnet, mode, 1, extra)
    }

    /// Like [`Fabric::node`], with `queues` queues on the uplink veth, all bound.
    pub fn node_queues(&self, tag: &str, subnet: u8, mode: &str, queues: u32, extra: &[&str]) -> Node {
        self.node_with(tag, subnet, mode, queues, 1500, extra)
    }

    /// Like [`Fabric::node_queues`], with an uplink MTU of `mtu` (the pods keep 1500).
    pub fn node_with(
        &self,
        tag: &str,
        subnet: u8,
        mode: &str,
        queues: u32,
        mtu: u32,
        extra: &[&str],
    ) -> Node {
        let list = (0..queues).map(|q| q.to_string()).collect::<Vec<_>>().join(",");
        let mut args = vec!["--uplink", UPLINK, "--xdp-mode", mode, "--uplink-queues", &list];
        args.extend_from_slice(extra);
        Node::start_prepared(tag, subnet, &args, |ns| self.plug_queues(ns, mtu, queues))
    }
}

/// Attaches a pod to `node` with address `ip`/16 in the flat cluster network (gateway: the
/// node's host port), IPv6 off.
pub fn flat_pod(node: &Node, tag: &str) -> Pod {
    let ns = Netns::new(tag);
    disable_ipv6(&ns);
    let ip: Ipv4Addr = node.next_ip();
    let req = AttachRequest {
        netns: ns.path(),
        ifname: "eth0".into(),
        ips: vec![IpConfig { address: format!("{ip}/16"), gateway: Some(node.gateway()) }],
        ..Default::default()
    };
    let port: PortInfo = node.call(Op::Attach(req));
    Pod { port, ip, ns }
}

/// A switch counter (0 when absent).
pub fn counter(node: &Node, name: &str) -> u64 {
    node.stats().switch.get(name).copied().unwrap_or(0)
}

/// Asserts that every buffer of `node`'s uplink is accounted for: the transmit chunks are free
/// or in flight, the pool buffers it holds are on the kernel's receive side, in flight or held,
/// none is left in flight once the traffic is over, and the pool buffers it sent without a
/// copy went back.
pub fn assert_umem_balanced(node: &Node) {
    let s = node.wait_stats("uplink transmissions complete", |s| {
        s.switch.get("uplink_chunks_in_flight") == Some(&0) && s.switch.get("uplink_pool_tx_lent") == Some(&0)
    });
    let get = |k: &str| *s.switch.get(k).unwrap_or_else(|| panic!("no {k} in {:?}", s.switch));
    let total = get("uplink_chunks_total");
    assert!(total > 0);
    assert_eq!(get("uplink_chunks_free"), total, "transmit chunks lost: {:?}", s.switch);
    assert_eq!(get("uplink_pool_lost"), 0, "pool buffers lost by the uplink: {:?}", s.switch);
    assert!(get("uplink_pool_rx_lent") > 0, "the fill ring holds no buffer: {:?}", s.switch);
}

/// Asserts that a stopped daemon got every frame-pool buffer back (its log says so).
pub fn assert_pool_returned(node: &Node) {
    let log = node.log();
    let line = log
        .lines()
        .find(|l| l.contains("frame pool at shutdown"))
        .unwrap_or_else(|| panic!("no frame pool report in the log:\n{log}"));
    assert!(line.contains("outstanding=0"), "frame-pool buffers not returned: {line}");
}

/// Whether an XDP program is attached to `up0` in `ns`.
pub fn xdp_attached(ns: &Netns) -> bool {
    let out = ns.ip(&["-d", "link", "show", UPLINK]);
    out.contains("prog/xdp") || out.contains("xdpgeneric") || out.contains("xdpdrv") || out.contains(" xdp ")
}

/// A tapwayd started by hand in an existing namespace (a [`Node`] makes its own), for tests
/// that stop it abruptly and start another in the same place. Killed on drop.
pub struct Daemon {
    child: Option<std::process::Child>,
    /// Its control socket.
    pub socket: std::path::PathBuf,
}

impl Daemon {
    /// Starts tapwayd in `ns` with its socket and state under `dir`, plus `extra` flags, and
    /// waits for its socket.
    pub fn start(ns: &Netns, dir: &std::path::Path, extra: &[&str]) -> Daemon {
        let socket = dir.join("tapway.sock");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tapwayd.log"))
            .expect("open the daemon log");
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_tapwayd")])
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("dup the log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn tapwayd");
        let mut d = Daemon { child: Some(child), socket };
        let start = std::time::Instant::now();
        loop {
            if let Some(Ok(Some(st))) = d.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "tapwayd exited ({st}): {}",
                    std::fs::read_to_string(dir.join("tapwayd.log")).unwrap_or_default()
                );
            }
            if std::os::unix::net::UnixStream::connect(&d.socket).is_ok() {
                return d;
            }
            assert!(start.elapsed() < DEADLINE, "tapwayd did not open its socket");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Status over the control socket.
    pub fn status(&self) -> tapway_api::StatusInfo {
        tapway_api::Client::new(&self.socket).call(Op::Status).expect("status")
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        if let Ok(pid) = i32::try_from(c.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
        }
        let start = std::time::Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
