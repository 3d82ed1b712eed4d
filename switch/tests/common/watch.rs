//! Helpers for the Kubernetes watch tests: a fake API server inside a node netns, the objects
//! it serves, and servers in pods that say who answered.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tapway_api::{KubeStatus, Op, ServiceInfo};
use tapway_fake_apiserver::FakeApiServer;

use super::servers::Server;
use super::{tcp_connect_in, udp_in, Netns, Node, Pod, DEADLINE};

/// Binds 127.0.0.1:`port` (0: any) inside `ns`, where tapwayd will reach it on loopback.
pub fn listen_in(ns: &Netns, port: u16) -> TcpListener {
    ns.enter(move || TcpListener::bind(("127.0.0.1", port)).expect("bind the fake API server"))
}

/// A fake API server serving in `ns`, and the kubeconfig naming it (at `kubeconfig`).
pub fn serve_fake_in(ns: &Netns, fake: &FakeApiServer, kubeconfig: &std::path::Path) {
    fake.serve(listen_in(ns, 0)).expect("serve the fake API server");
    fake.write_kubeconfig(kubeconfig).expect("write the kubeconfig");
}

/// A kubeconfig path for a test.
pub fn kubeconfig_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.kubeconfig", super::unique(tag)))
}

/// A ClusterIP Service with one TCP port `port` (name `http`) and one UDP port 53 (`dns`).
pub fn service(ns: &str, name: &str, vip: &str, port: u16) -> Value {
    json!({"kind": "Service", "apiVersion": "v1",
           "metadata": {"namespace": ns, "name": name},
           "spec": {"type": "ClusterIP", "clusterIP": vip, "clusterIPs": [vip],
                    "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080},
                              {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]}})
}

/// The EndpointSlice `name` of Service `svc` with `ips` ready on 8080/TCP and 5353/UDP.
pub fn slice(ns: &str, name: &str, svc: &str, ips: &[String]) -> Value {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true}}))
        .collect();
    json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
           "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4", "endpoints": eps,
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                     {"name": "dns", "port": 5353, "protocol": "UDP"}]})
}

/// A Node with pod ranges.
pub fn node_object(name: &str, cidrs: &[&str]) -> Value {
    json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name},
           "spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs}})
}

/// The watch part of the node's status.
pub fn kube_status(node: &Node) -> KubeStatus {
    node.status().kube.unwrap_or_else(|| panic!("status has no kube part:\n{}", node.log()))
}

/// Waits (generously) until `f` holds of the watch status.
pub fn wait_kube(node: &Node, what: &str, f: impl Fn(&KubeStatus) -> bool) -> KubeStatus {
    let start = Instant::now();
    loop {
        let s = kube_status(node);
        if f(&s) {
            return s;
        }
        assert!(start.elapsed() < DEADLINE * 3, "{what}: {s:?}\n{}", node.log());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the service list satisfies `f`.
pub fn wait_services(node: &Node, what: &str, f: impl Fn(&[ServiceInfo]) -> bool) -> Vec<ServiceInfo> {
    let start = Instant::now();
    loop {
        let l: Vec<ServiceInfo> = node.call(Op::ServiceList);
        if f(&l) {
            return l;
        }
        assert!(start.elapsed() < DEADLINE * 3, "{what}: {l:?}\n{}", node.log());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// TCP on 8080 in `pod`: each connection gets the pod's address and a newline.
pub fn hello_server(pod: &Pod) -> Server {
    super::servers::tcp_server(pod, 8080)
}

/// UDP on 5353 in `pod`: answers every datagram with the pod's address (and the datagram).
pub fn udp_hello_server(pod: &Pod) -> Server {
    super::servers::udp_server(pod, 5353)
}

/// Which backend answers a new TCP connection from `client` to `addr`.
pub fn who_answers(client: &Pod, addr: &str) -> String {
    let conn = tcp_connect_in(&client.ns, addr);
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).unwrap_or_else(|e| panic!("greeting from {addr}: {e}"));
    line.trim().to_string()
}

/// Which backend answers a UDP datagram from `client` to `addr`.
pub fn who_answers_udp(client: &Pod, addr: &str) -> String {
    let sock = udp_in(&client.ns, "0.0.0.0:0");
    sock.connect(addr).expect("connect udp");
    sock.send(b"who?").expect("send");
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("answer from {addr}: {e}"));
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    answer.strip_suffix(":who?").map(str::to_string).unwrap_or(answer)
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Starts tapwayd in a fresh netns WITHOUT `--pod-cidr` (the pod range comes from the Node),
/// running `prepare` on the netns first; returns before the socket is up.
pub fn start_without_pod_cidr(tag: &str, subnet: u8, extra: &[&str], prepare: impl FnOnce(&Netns)) -> Node {
    use std::process::{Command, Stdio};
    let ns = Netns::new(tag);
    prepare(&ns);
    let dir = std::env::temp_dir().join(super::unique(tag));
    std::fs::create_dir_all(&dir).expect("create the test dir");
    let socket = dir.join("tapway.sock");
    let log = std::fs::File::create(dir.join("tapwayd.log")).expect("create the daemon log");
    let daemon = Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_tapwayd")])
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--log-level", "info"])
        .args(extra)
        .env("NO_COLOR", "1")
        .env_remove("NODE_NAME")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup the log fd"))
        .stderr(log)
        .spawn()
        .expect("spawn tapwayd");
    let client = tapway_api::Client::new(&socket).with_timeout(Duration::from_secs(30));
    Node {
        daemon: Some(daemon),
        socket,
        dir,
        prefix: format!("10.231.{subnet}"),
        client,
        next_host: std::sync::atomic::AtomicU32::new(2),
        ns,
    }
}

/// Waits for a node started by [`start_without_pod_cidr`] to open its socket (it may still
/// wait for the pod range).
pub fn wait_open(node: &mut Node) {
    node.wait_ready();
}

/// Waits for a node started by [`start_without_pod_cidr`] to serve: its socket opens during
/// the wait for the pod range already, so this waits for a `status` with no `not_ready`.
pub fn wait_socket(node: &mut Node) {
    wait_open(node);
    let start = Instant::now();
    loop {
        // A connect may fail for a moment while the real socket replaces the stand-in.
        if let Ok(st) = node.client.call::<tapway_api::StatusInfo>(Op::Status) {
            if st.not_ready.is_empty() {
                return;
            }
        }
        assert!(start.elapsed() < DEADLINE, "tapwayd did not get ready:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}
