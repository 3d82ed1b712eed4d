//! Persistence and the control socket against a real tapwayd (docs/security.md, "Persistence
//! and the control socket"): slow and trickling clients, netns paths that are not
//! namespaces, a pod netns missing at restart, state files of another version, file modes and
//! a full disk. Needs root; skips (passes) without it.
//!
//! Pod ranges: 10.231.110.0/24 .. 10.231.119.0/24.

mod common;

use std::path::Path;
use std::time::Duration;

use common::persist::*;
use common::*;
use tapway_api::{
    Attachment, DetachResult, ErrorCode, GcRequest, GcResult, Op, Owner, PortInfo, PortSelector, Protocol,
    ServiceKey, ServiceSpec, StatusInfo,
};

/// Outer bound for waits that involve a daemon-side deadline (10 s) or a lost port's retry
/// (at most 10 s apart): only a broken daemon gets near it.
const LONG: Duration = Duration::from_secs(90);

fn selector(ns: &Netns) -> PortSelector {
    PortSelector { netns: Some(ns.path()), container_id: None, ifname: "eth0".into() }
}

/// Calls `op` until it is not refused for want of a connection slot.
fn call_past_refusals<T: serde::de::DeserializeOwned>(node: &Node, op: Op) -> T {
    let start = std::time::Instant::now();
    loop {
        match node.try_call::<T>(op.clone()) {
            Ok(v) => return v,
            Err(e) if e.code == ErrorCode::ResourceExhausted && start.elapsed() < LONG => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("{op:?}: {e}"),
        }
    }
}

fn switch_counter(node: &Node, name: &str) -> u64 {
    node.stats().switch.get(name).copied().unwrap_or(0)
}

#[test]
fn a_trickling_client_is_cut_off_and_its_slot_comes_back() {
    if skip() {
        return;
    }
    let node = Node::start("ht", 110);
    let mut conn = std::os::unix::net::UnixStream::connect(&node.socket).expect("connect");
    let stop = std::sync::atomic::AtomicBool::new(false);
    // One byte every 500 ms: every read() returns well within any per-read timeout, but the
    // line never completes. The daemon must close it (after its 10 s request deadline).
    let (cut_tx, cut_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| cut_tx.send(trickle(&mut conn, Duration::from_millis(500), &stop)));
        let cut = cut_rx.recv_timeout(LONG);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(cut.ok(), Some(true), "the trickling client was never cut off");
    });
    assert!(switch_counter(&node, "ctl_timed_out") >= 1, "{:?}", node.stats().switch);
    // Its slot is back: only the asking connection holds one.
    wait_for("the trickler's slot comes back", LONG, || node.status().control_connections == 1);
    let _pod = node.pod("htp");
}

#[test]
fn slow_clients_do_not_lock_out_an_attach() {
    if skip() {
        return;
    }
    let node = Node::start("hs", 111);
    let max = node.status().control_max;
    assert_eq!(max, 64);
    // More slow clients than slots, each reconnecting as soon as it is cut off.
    let tricklers = Tricklers::start(&node.socket, max + 8, Duration::from_millis(200));
    wait_for("every slot is taken by a slow client", LONG, || {
        tricklers.connected.load(std::sync::atomic::Ordering::SeqCst) >= (max + 8) as u64
    });
    // A real attach gets through while they go on: a waiting client gives up its slot.
    let ns = Netns::new("hsp");
    let ip = node.next_ip();
    let port: PortInfo = call_past_refusals(&node, Op::Attach(node.attach_request(&ns, ip)));
    assert!(port.id > 0);
    let status: StatusInfo = call_past_refusals(&node, Op::Status);
    assert!(status.control_connections <= max, "{} connections served at once", status.control_connections);
    ns.ping(&node.gateway());
    drop(tricklers);
    let s = node.stats().switch;
    assert!(s["ctl_evicted"] >= 1, "no slow client was evicted: {s:?}");
    wait_for("the slow clients' slots come back", LONG, || node.status().control_connections == 1);
}

#[test]
fn netns_paths_that_are_not_namespaces_are_refused_at_once() {
    if skip() {
        return;
    }
    let node = Node::start("hf", 112);
    let fifo = node.dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let file = node.dir.join("plain");
    std::fs::write(&file, b"not a namespace").expect("write");
    let ns = Netns::new("hfp");
    let cases = [
        (fifo.display().to_string(), "a FIFO"),
        ("/dev/zero".to_string(), "a character device"),
        (file.display().to_string(), "a regular file"),
        (node.dir.display().to_string(), "a directory"),
    ];
    for (path, what) in cases {
        let mut req = node.attach_request(&ns, node.next_ip());
        req.netns = path.clone();
        // A blocking open of the FIFO would hang here until the client's 30 s timeout, which
        // `try_call` turns into a panic.
        let e = node.try_call::<PortInfo>(Op::Attach(req)).expect_err("attach with a non-netns path");
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{path}: {e}");
        assert!(e.message.contains(what), "{path}: {e}");
    }
    assert_eq!(ns.links(), vec!["lo"]);
    assert_eq!(node.status().ports, 1);
    // The daemon stays responsive: a real pod attaches and works.
    let pod = node.pod("hfq");
    pod.ns.ping(&node.gateway());
}

#[test]
fn a_pod_netns_missing_at_restart_is_kept_lost_and_comes_back() {
    if skip() {
        return;
    }
    let mut node = Node::start("hl", 113);
    let a = node.pod("hla");
    let b = node.pod("hlb");
    // c is owned by a CNI network, for GC.
    let c_ns = Netns::new("hlc");
    let mut c_req = node.attach_request(&c_ns, node.next_ip());
    c_req.owner =
        Owner { container_id: Some("ctr-hl-c".into()), network: Some("net113".into()), ..Default::default() };
    let c: PortInfo = node.call(Op::Attach(c_req));
    let d = node.pod("hld");
    let f = node.pod("hlf");
    a.ns.ping(&b.ip.to_string());
    let all = state_ids(&node);
    assert_eq!(all.len(), 5);

    node.stop().expect("the daemon was running");
    let mut outage = NetnsOutage::begin(&a.ns);
    let _c_away = NetnsOutage::begin(&c_ns);
    let _d_away = NetnsOutage::begin(&d.ns);
    let mut f_away = NetnsOutage::begin(&f.ns);
    node.restart(&[]);

    let st = node.status();
    let lost: Vec<u16> = st.lost.iter().map(|l| l.id).collect();
    assert_eq!(lost, vec![a.port.id, c.id, d.port.id, f.port.id], "{st:#?}");
    let la = &st.lost[0];
    assert!(la.lost.reason.contains("not a network namespace"), "{la:?}");
    assert!(la.lost.since > 0 && la.lost.attempts >= 1, "{la:?}");
    assert_eq!(st.ports, 6, "lost ports keep their numbers");
    let ports = node.ports();
    let pa = ports.iter().find(|p| p.id == a.port.id).expect("a is listed");
    assert!(pa.lost.is_some() && pa.mac == a.port.mac && pa.ips == a.port.ips, "{pa:?}");
    assert!(ports.iter().find(|p| p.id == b.port.id).is_some_and(|p| p.lost.is_none()));
    assert_eq!(state_ids(&node), all, "the state file still lists every pod");
    let socket = node.socket.display().to_string();
    let ctl = |cmd: &str| run_ok(env!("CARGO_BIN_EXE_tapwayctl"), &["--socket", &socket, cmd]);
    let shown = ctl("status");
    assert!(shown.contains(&format!("LOST port {}: eth0 in {}", a.port.id, a.ns.path())), "{shown}");
    let row = ctl("ports").lines().find(|l| l.contains(&a.port.mac)).map(str::to_string);
    assert!(row.as_deref().is_some_and(|r| r.contains(" lost ")), "{row:?}");
    b.ns.ping(&node.gateway());
    let e = node
        .try_call::<serde_json::Value>(Op::Check(tapway_api::CheckRequest {
            port: selector(&a.ns),
            ..Default::default()
        }))
        .expect_err("check of a lost port");
    assert_eq!(e.code, ErrorCode::Mismatch, "{e}");
    // Nobody else is attached with a lost port's address or MAC.
    let x = Netns::new("hlx");
    let e = node.try_call::<PortInfo>(Op::Attach(node.attach_request(&x, a.ip))).expect_err("a's IP");
    assert_eq!(e.code, ErrorCode::AddressConflict, "{e}");
    let mut req = node.attach_request(&x, node.next_ip());
    req.mac = Some(a.port.mac.clone());
    let e = node.try_call::<PortInfo>(Op::Attach(req)).expect_err("a's MAC");
    assert_eq!(e.code, ErrorCode::AddressConflict, "{e}");
    // A new pod does not get a lost port's number.
    let e = node.pod("hle");
    assert!(![a.port.id, c.id, d.port.id].contains(&e.port.id), "a lost port's number was given away");

    // A lost port goes with its DEL or with GC, like any port.
    let r: DetachResult = node.call(Op::Detach(selector(&d.ns)));
    assert!(r.detached);
    let gc: GcResult = node.call(Op::Gc(GcRequest {
        network: "net113".into(),
        valid: vec![Attachment { container_id: "ctr-other".into(), ifname: "eth0".into() }],
    }));
    assert_eq!(gc.removed.iter().map(|p| p.id).collect::<Vec<_>>(), vec![c.id]);
    assert_eq!(node.status().lost.iter().map(|l| l.id).collect::<Vec<_>>(), vec![a.port.id, f.port.id]);
    let ids = |v: &[u16]| v.iter().map(|i| u64::from(*i)).collect::<Vec<_>>();
    assert_eq!(state_ids(&node), ids(&[a.port.id, b.port.id, f.port.id, e.port.id]));

    // f's netns comes back and the runtime retries its ADD: re-opened at once, same port.
    f_away.end();
    let again: PortInfo = node.call(Op::Attach(node.attach_request(&f.ns, f.ip)));
    assert_eq!((again.id, again.mac.as_str()), (f.port.id, f.port.mac.as_str()));
    assert!(!node.status().lost.iter().any(|l| l.id == f.port.id), "f is back without waiting for a retry");
    f.ns.ping(&b.ip.to_string());

    // a's netns comes back: a is re-opened under its number and its traffic resumes.
    outage.end();
    wait_for("the lost port is re-opened", LONG, || node.status().lost.is_empty());
    let pa = node.ports().into_iter().find(|p| p.id == a.port.id).expect("a is listed");
    assert!(pa.lost.is_none() && pa.mac == a.port.mac, "{pa:?}");
    a.ns.ping(&b.ip.to_string());
    e.ns.ping(&a.ip.to_string());
    assert_eq!(state_ids(&node), ids(&[a.port.id, b.port.id, f.port.id, e.port.id]));
    let r: DetachResult = node.call(Op::Detach(selector(&a.ns)));
    assert!(r.detached);
    assert_eq!(a.ns.links(), vec!["lo"], "a re-opened port detaches as any");
}

#[test]
fn a_state_file_of_a_newer_version_stops_the_daemon_untouched() {
    if skip() {
        return;
    }
    let ns = Netns::new("hv");
    let dir = std::env::temp_dir().join(unique("hv"));
    let _cleanup = DirGuard(dir.clone());
    for name in ["state.json", "services.json"] {
        let state = dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the state dir");
        let text = r#"{"version":99,"ports":[],"services":[],"from":"a newer tapwayd"}"#;
        std::fs::write(&state, text).expect("write the state file");
        let before = std::fs::metadata(&state).expect("stat").modified().expect("mtime");
        let socket = dir.join("s.sock").display().to_string();
        let args = [
            "--socket",
            socket.as_str(),
            "--state-dir",
            dir.to_str().expect("utf-8"),
            "--pod-cidr",
            "10.231.114.0/24",
        ];
        let (status, err) = run_daemon(&ns, &args);
        assert_eq!(status.code(), Some(3), "{name}: {status}: {err}");
        assert!(err.contains("version 99") && err.contains(name), "{name}: {err}");
        assert_eq!(std::fs::read_to_string(&state).expect("read"), text, "{name} was changed");
        assert_eq!(std::fs::metadata(&state).expect("stat").modified().expect("mtime"), before);
        assert_eq!(ns.links(), vec!["lo"], "{name}: the refused daemon created interfaces");
        assert!(!Path::new(&socket).exists());
    }
}

/// Removes a directory when dropped.
struct DirGuard(std::path::PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn service(port: u16) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        key: ServiceKey { vip: "10.96.115.1".parse().expect("ip"), port, protocol: Protocol::Tcp },
        affinity: tapway_api::Affinity::None,
        backends: vec![tapway_api::BackendSpec::ready("10.231.115.2".parse().expect("ip"), 8080)],
    }
}

#[test]
fn state_files_are_private() {
    if skip() {
        return;
    }
    let node = Node::start("hm", 115);
    let _pod = node.pod("hmp");
    let _: serde_json::Value = node.call(Op::ServiceSet(service(80)));
    let dir = node.dir.join("state");
    assert_eq!(mode_of(&dir), 0o700);
    for name in ["state.json", "services.json"] {
        assert_eq!(mode_of(&dir.join(name)), 0o600, "{name}");
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("read the state dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

#[test]
fn a_full_disk_fails_the_change_and_leaves_nothing_half_done() {
    if skip() {
        return;
    }
    let node = Node::start("hd", 116);
    // The state dir is a small tmpfs (declared after the node: unmounted first).
    let disk = Tmpfs::mount_for(node.pid(), &node.dir.join("state"), 64 << 10);
    let state_ids = |_: &Node| state_ids_at(&disk.view());
    let a = node.pod("hda");
    let _: serde_json::Value = node.call(Op::ServiceSet(service(80)));
    let filler = disk.fill("filler");
    let ports_before = node.ports();

    // Attach: an error, and no interface, no port, no record.
    let b = Netns::new("hdb");
    let e =
        node.try_call::<PortInfo>(Op::Attach(node.attach_request(&b, node.next_ip()))).expect_err("attach");
    assert_eq!(e.code, ErrorCode::System, "{e}");
    assert!(e.message.contains("state file") && e.message.contains("undone"), "{e}");
    assert_eq!(b.links(), vec!["lo"], "the undone attach left its interface");
    assert_eq!(node.ports(), ports_before);
    assert_eq!(state_ids(&node), vec![u64::from(a.port.id)], "the record of the undone attach");

    // Service changes: an error, and the table unchanged.
    let e = node.try_call::<serde_json::Value>(Op::ServiceSet(service(81))).expect_err("service set");
    assert_eq!(e.code, ErrorCode::System, "{e}");
    let e =
        node.try_call::<serde_json::Value>(Op::ServiceDelete(service(80).key)).expect_err("service delete");
    assert_eq!(e.code, ErrorCode::System, "{e}");
    let listed: Vec<tapway_api::ServiceInfo> = node.call(Op::ServiceList);
    assert_eq!(listed.iter().map(|s| s.spec.key.port).collect::<Vec<_>>(), vec![80]);

    // Detach: the port goes, the answer says the record could not be written, and a retried
    // DEL keeps failing until the record is written.
    let e = node.try_call::<DetachResult>(Op::Detach(selector(&a.ns))).expect_err("detach");
    assert_eq!(e.code, ErrorCode::System, "{e}");
    assert!(e.message.contains("is detached"), "{e}");
    assert!(!node.ports().iter().any(|p| p.id == a.port.id));
    assert!(
        node.try_call::<DetachResult>(Op::Detach(selector(&a.ns))).is_err(),
        "retried DEL on a full disk"
    );

    // Room again: the retried DEL writes the record and succeeds; so does the attach.
    std::fs::remove_file(&filler).expect("remove the filler");
    let r: DetachResult = node.call(Op::Detach(selector(&a.ns)));
    assert!(!r.detached);
    assert!(!state_ids(&node).contains(&u64::from(a.port.id)));
    let port: PortInfo = node.call(Op::Attach(node.attach_request(&b, node.next_ip())));
    assert_eq!(state_ids(&node), vec![u64::from(port.id)]);
    b.ping(&node.gateway());

    // A read-only state dir: the same.
    disk.remount("ro");
    let c = Netns::new("hdc");
    let e =
        node.try_call::<PortInfo>(Op::Attach(node.attach_request(&c, node.next_ip()))).expect_err("attach");
    assert!(e.code == ErrorCode::System && e.message.contains("undone"), "{e}");
    assert_eq!(c.links(), vec!["lo"]);
    disk.remount("rw");
    let _: PortInfo = node.call(Op::Attach(node.attach_request(&c, node.next_ip())));
    assert_eq!(state_ids(&node).len(), 2);
    drop(disk);
}
