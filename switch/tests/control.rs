//! Control-plane integration tests: the socket, its error answers, and the port lifecycle
//! (attach, detach, check, gc) against a real tapwayd. Needs root; skips (passes) without it.
//!
//! Pod ranges: 10.231.21.0/24 .. 10.231.37.0/24, one per test (datapath.rs uses 1..=10,
//! workers.rs 41).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;

use common::*;
use tapway_api::{
    ApiError, AttachRequest, Attachment, CheckRequest, Client, ClientError, DetachResult, ErrorCode,
    GcRequest, GcResult, IpConfig, Op, Owner, PortInfo, PortSelector, Response, RouteConfig,
};

/// Sends `line` as it is and decodes the answer, which must be an error; returns it.
fn raw_error(node: &Node, line: &[u8]) -> ApiError {
    let answer =
        node.client.raw_line(line).unwrap_or_else(|e| panic!("no answer to {:?}: {e}", shorten(line)));
    let resp: Response =
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("unreadable answer {answer:?}: {e}"));
    assert_eq!(resp.v, 1, "{answer}");
    assert!(!resp.ok && resp.result.is_none(), "{:?} was accepted: {answer}", shorten(line));
    let err = resp.error.unwrap_or_else(|| panic!("error answer without an error object: {answer}"));
    assert!(!err.message.is_empty(), "error without a message: {answer}");
    err
}

fn shorten(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    if s.len() > 80 {
        format!("{}... ({} bytes)", &s[..80], line.len())
    } else {
        s.into_owned()
    }
}

/// Pod ports by (netns, ifname), for "nothing changed" comparisons.
fn port_keys(node: &Node) -> Vec<(u16, String, String, String)> {
    node.ports().into_iter().map(|p| (p.id, p.netns, p.ifname, p.mac)).collect()
}

fn selector(ns: &Netns, ifname: &str) -> PortSelector {
    PortSelector { netns: Some(ns.path()), container_id: None, ifname: ifname.into() }
}

fn detach(node: &Node, sel: PortSelector) -> bool {
    node.call::<DetachResult>(Op::Detach(sel)).detached
}

/// The pod ports in the state file, as (netns, ifname).
fn state_ports(node: &Node) -> Vec<(String, String)> {
    let path = node.dir.join("state").join("state.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("the state file is JSON");
    assert_eq!(v["version"], 1, "{text}");
    let mut out: Vec<(String, String)> = v["ports"]
        .as_array()
        .expect("ports array")
        .iter()
        .map(|p| {
            (p["netns"].as_str().unwrap_or("").to_string(), p["ifname"].as_str().unwrap_or("").to_string())
        })
        .collect();
    out.sort();
    out
}

/// Sends `line` on a new connection and returns the answer line. Unlike `Client::raw_line`
/// it reads the answer even when the write failed because the daemon already answered and
/// closed.
fn ask(socket: &std::path::Path, line: &[u8]) -> String {
    let mut conn = UnixStream::connect(socket).expect("connect");
    conn.set_read_timeout(io_timeout()).expect("timeout");
    let _ = conn.write_all(line);
    let mut answer = String::new();
    BufReader::new(conn).read_line(&mut answer).expect("read the answer");
    assert!(!answer.is_empty(), "the daemon closed without an answer");
    answer
}

/// Runs `f` on a thread whose (thread-only) effective uid is `nobody`.
fn as_nobody<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: the raw syscall changes the credentials of this thread only (unlike glibc's
        // process-wide setresuid wrapper); no memory is involved, and the thread ends after `f`.
        let rc = unsafe {
            libc::syscall(libc::SYS_setresuid, -1 as libc::c_long, 65534 as libc::c_long, -1 as libc::c_long)
        };
        assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

#[test]
fn socket_is_private_and_status_describes_the_daemon() {
    if skip() {
        return;
    }
    let node = Node::start("st", 21);
    let meta = std::fs::metadata(&node.socket).expect("socket metadata");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "control socket mode");

    let st = node.status();
    assert_eq!(st.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(st.poll_mode, "adaptive", "default poll mode");
    assert_eq!(st.workers.len(), 1, "one worker by default: {st:?}");
    assert_eq!(st.workers[0].id, 0);
    assert_eq!(st.workers[0].ports, vec![0], "worker 0 owns the host port");
    assert_eq!(st.ports, 1);
    assert_eq!(st.pod_cidr.as_deref(), Some("10.231.21.0/24"));
    assert_eq!(st.gateway.as_deref(), Some("10.231.21.1"));
    assert_eq!(st.host_port, "tapway0");
    assert_eq!((st.fdb_max, st.fdb_aging_secs), (16384, 300), "defaults");
    assert!(st.pool_total > 0 && st.pool_free <= st.pool_total, "{st:?}");
    assert!(st.not_ready.is_empty(), "a running daemon with free ports is ready: {st:?}");
    let addrs = node.ns.ip(&["-o", "addr", "show", "dev", "tapway0"]);
    assert!(addrs.contains("inet 10.231.21.1/24"), "gateway address on the host port: {addrs}");
    assert!(node.ns.ip(&["-o", "link", "show", "dev", "tapway0"]).contains(",UP"), "host port up");

    let pod = node.pod("sp");
    let st = node.status();
    assert_eq!(st.ports, 2);
    assert!(st.workers[0].ports.contains(&pod.port.id), "{st:?}");

    // Another uid cannot even connect (mode 0600)...
    let path = node.socket.clone();
    let refused = as_nobody(move || Client::new(path).raw_line(b"{\"v\":1,\"op\":\"status\"}\n"));
    match refused {
        Err(ClientError::Connect { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{source}")
        }
        other => panic!("uid 65534 reached a 0600 socket: {other:?}"),
    }
    // ...and if the mode is loosened, SO_PEERCRED still keeps it out.
    std::fs::set_permissions(&node.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let path = node.socket.clone();
    // (Not through `Client`: the daemon answers a refused peer without reading its request,
    // so the client's write can fail first. See BUGS.md #3.)
    let answer = as_nobody(move || ask(&path, b"{\"v\":1,\"op\":\"ports\"}\n"));
    let resp: Response = serde_json::from_str(&answer).expect("a response");
    assert_eq!(resp.error.map(|e| e.code), Some(ErrorCode::PermissionDenied), "{answer}");
    assert_eq!(node.status().ports, 2);
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    if skip() {
        return;
    }
    let node = Node::start("br", 22);
    let _pod = node.pod("bp");
    let ports = port_keys(&node);
    let state = state_ports(&node);

    let huge = {
        let mut l = vec![b'a'; tapway_api::MAX_REQUEST_BYTES + 1000];
        l.push(b'\n');
        l
    };
    let huge_json = {
        let mut l = br#"{"v":1,"op":"ports","pad":""#.to_vec();
        l.resize(l.len() + tapway_api::MAX_REQUEST_BYTES, b'x');
        l.extend_from_slice(b"\"}\n");
        l
    };
    let cases: Vec<(&str, Vec<u8>, ErrorCode, &str)> = vec![
        ("not JSON", b"{not json\n".to_vec(), ErrorCode::BadRequest, ""),
        ("binary", b"\xff\xfe\x00\x01\n".to_vec(), ErrorCode::BadRequest, ""),
        ("array", b"[1,2]\n".to_vec(), ErrorCode::BadRequest, ""),
        ("string", b"\"status\"\n".to_vec(), ErrorCode::BadRequest, ""),
        ("no version", br#"{"op":"status"}"#.to_vec(), ErrorCode::BadRequest, ""),
        ("version as string", br#"{"v":"1","op":"status"}"#.to_vec(), ErrorCode::BadRequest, ""),
        ("version 2", br#"{"v":2,"op":"status"}"#.to_vec(), ErrorCode::UnsupportedVersion, "version"),
        ("version 0", br#"{"v":0,"op":"ports"}"#.to_vec(), ErrorCode::UnsupportedVersion, "version"),
        ("no op", br#"{"v":1}"#.to_vec(), ErrorCode::BadRequest, "op"),
        ("unknown op", br#"{"v":1,"op":"explode"}"#.to_vec(), ErrorCode::BadRequest, "unknown op"),
        ("op not a string", br#"{"v":1,"op":7}"#.to_vec(), ErrorCode::BadRequest, ""),
        (
            "attach ips wrong type",
            br#"{"v":1,"op":"attach","ips":"nope"}"#.to_vec(),
            ErrorCode::BadRequest,
            "",
        ),
        (
            "detach ifname wrong type",
            br#"{"v":1,"op":"detach","ifname":7}"#.to_vec(),
            ErrorCode::BadRequest,
            "",
        ),
        ("oversized garbage", huge, ErrorCode::TooLarge, ""),
        ("oversized JSON", huge_json, ErrorCode::TooLarge, ""),
    ];
    for (what, line, code, needle) in cases {
        let mut line = line;
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let err = raw_error(&node, &line);
        assert_eq!(err.code, code, "{what}: {err:?}");
        assert!(err.message.contains(needle), "{what}: message {:?} lacks {needle:?}", err.message);
        assert_eq!(port_keys(&node), ports, "{what} changed the ports");
    }

    // A big request under the limit is fine: the limit is on bytes, not on shape.
    let mut padded = br#"{"v":1,"op":"ports""#.to_vec();
    padded.resize(padded.len() + tapway_api::MAX_REQUEST_BYTES - 100, b' ');
    padded.extend_from_slice(b"}\n");
    let answer = node.client.raw_line(&padded).expect("answer");
    assert!(serde_json::from_str::<Response>(&answer).expect("response").ok, "{answer}");

    // A bad line does not end the connection: the next request on it is served.
    let mut conn = UnixStream::connect(&node.socket).expect("connect");
    conn.set_read_timeout(io_timeout()).expect("timeout");
    conn.write_all(b"garbage\n\n{\"v\":1,\"op\":\"status\"}\n").expect("write");
    let mut reader = BufReader::new(conn);
    let mut first = String::new();
    reader.read_line(&mut first).expect("first answer");
    let mut second = String::new();
    reader.read_line(&mut second).expect("second answer");
    let first: Response = serde_json::from_str(&first).expect("first response");
    let second: Response = serde_json::from_str(&second).expect("second response");
    assert_eq!(first.error.map(|e| e.code), Some(ErrorCode::BadRequest));
    assert!(second.ok, "{second:?}");

    assert_eq!(port_keys(&node), ports);
    assert_eq!(state_ports(&node), state, "the state file changed");
}

#[test]
fn bad_attach_arguments_are_refused_and_change_nothing() {
    if skip() {
        return;
    }
    let node = Node::start("ba", 23);
    let pod = Netns::new("bap");
    let ip: std::net::Ipv4Addr = "10.231.23.2".parse().expect("ip");
    let ports = port_keys(&node);
    let node_links = node.ns.links();
    let file = node.dir.join("not-a-netns");
    std::fs::write(&file, b"plain file").expect("write file");

    type Mutate = Box<dyn Fn(&mut AttachRequest)>;
    let cases: Vec<(&str, Mutate)> = vec![
        ("netns missing", Box::new(|r| r.netns = "/run/netns/twt-does-not-exist".into())),
        ("netns regular file", Box::new(move |r| r.netns = file.display().to_string())),
        ("netns a directory", Box::new(|r| r.netns = "/run".into())),
        ("netns empty", Box::new(|r| r.netns.clear())),
        ("ifname empty", Box::new(|r| r.ifname.clear())),
        ("ifname too long", Box::new(|r| r.ifname = "eth0123456789012".into())),
        ("ifname with slash", Box::new(|r| r.ifname = "eth/0".into())),
        ("ifname with space", Box::new(|r| r.ifname = "eth 0".into())),
        ("ifname dot", Box::new(|r| r.ifname = ".".into())),
        ("address without prefix", Box::new(|r| r.ips[0].address = "10.231.23.2".into())),
        ("address not an IP", Box::new(|r| r.ips[0].address = "pod/24".into())),
        ("prefix too long", Box::new(|r| r.ips[0].address = "10.231.23.2/33".into())),
        ("network address", Box::new(|r| r.ips[0].address = "10.231.23.0/24".into())),
        ("broadcast address", Box::new(|r| r.ips[0].address = "10.231.23.255/24".into())),
        ("multicast address", Box::new(|r| r.ips[0].address = "224.0.0.5/24".into())),
        ("gateway not an IP", Box::new(|r| r.ips[0].gateway = Some("gw".into()))),
        ("gateway of the other family", Box::new(|r| r.ips[0].gateway = Some("fd00::1".into()))),
        ("gateway is the pod", Box::new(|r| r.ips[0].gateway = Some("10.231.23.2".into()))),
        ("address twice", Box::new(|r| r.ips.push(r.ips[0].clone()))),
        ("MAC multicast", Box::new(|r| r.mac = Some("01:00:5e:00:00:01".into()))),
        ("MAC zero", Box::new(|r| r.mac = Some("00:00:00:00:00:00".into()))),
        ("MAC not hex", Box::new(|r| r.mac = Some("02:00:00:00:00:zz".into()))),
        ("MAC short", Box::new(|r| r.mac = Some("02:00:00:00:01".into()))),
        ("MTU too small", Box::new(|r| r.mtu = Some(575))),
        ("MTU too big", Box::new(|r| r.mtu = Some(65536))),
        ("MTU zero", Box::new(|r| r.mtu = Some(0))),
        ("route not a CIDR", Box::new(|r| r.routes = vec![RouteConfig { dst: "x".into(), gw: None }])),
        (
            "route via the other family",
            Box::new(|r| {
                r.routes = vec![RouteConfig { dst: "10.9.0.0/16".into(), gw: Some("fd00::1".into()) }]
            }),
        ),
        ("container id", Box::new(|r| r.owner.container_id = Some("-bad id".into()))),
    ];
    for (what, mutate) in cases {
        let mut req = node.attach_request(&pod, ip);
        mutate(&mut req);
        let err = node.try_call::<PortInfo>(Op::Attach(req)).expect_err(what);
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{what}: {err}");
        assert_eq!(port_keys(&node), ports, "{what}: ports changed");
        assert_eq!(pod.links(), vec!["lo"], "{what}: the pod netns changed");
        assert_eq!(node.ns.links(), node_links, "{what}: a TAP was left in the node netns");
    }

    // The namespace is untouched and usable: the good request works.
    let port: PortInfo = node.call(Op::Attach(node.attach_request(&pod, ip)));
    assert_eq!(port.ips, vec!["10.231.23.2/24"]);
    pod.ping(&node.gateway());
}

#[test]
fn duplicate_interfaces_are_refused() {
    if skip() {
        return;
    }
    let node = Node::start("du", 24);
    let a = {
        let ns = Netns::new("dua");
        let ip = node.next_ip();
        let mut r = node.attach_request(&ns, ip);
        r.owner =
            Owner { container_id: Some("ctr-a".into()), network: Some("n".into()), ..Default::default() };
        let port: PortInfo = node.call(Op::Attach(r));
        Pod { port, ip, ns }
    };
    let ports = port_keys(&node);
    let node_links = node.ns.links();

    // Same netns and ifname again, even with another address.
    let req = node.attach_request(&a.ns, "10.231.24.50".parse().expect("ip"));
    let err = node.try_call::<PortInfo>(Op::Attach(req)).expect_err("attached twice");
    assert_eq!(err.code, ErrorCode::Exists, "{err}");
    assert_eq!(port_keys(&node), ports);

    // Same container and ifname in another netns.
    let other = Netns::new("duo");
    let mut req = node.attach_request(&other, "10.231.24.51".parse().expect("ip"));
    req.owner.container_id = Some("ctr-a".into());
    let err = node.try_call::<PortInfo>(Op::Attach(req)).expect_err("same container twice");
    assert_eq!(err.code, ErrorCode::Exists, "{err}");
    assert_eq!(other.links(), vec!["lo"]);

    // An eth0 that tapway did not make.
    let taken = Netns::new("dut");
    if !taken.exec("ip", &["link", "add", "eth0", "type", "dummy"]).status.success() {
        taken.ip(&["tuntap", "add", "dev", "eth0", "mode", "tap"]);
    }
    let before = taken.ip(&["-o", "link", "show", "dev", "eth0"]);
    let err = node
        .try_call::<PortInfo>(Op::Attach(node.attach_request(&taken, "10.231.24.52".parse().expect("ip"))))
        .expect_err("attached over an existing eth0");
    assert_eq!(err.code, ErrorCode::Exists, "{err}");
    assert_eq!(taken.ip(&["-o", "link", "show", "dev", "eth0"]), before, "the existing eth0 was touched");
    assert_eq!(port_keys(&node), ports);
    assert_eq!(node.ns.links(), node_links, "a TAP was left in the node netns");

    // Another name in the same netns is fine, and the first pod was not disturbed.
    let mut req = node.attach_request(&taken, "10.231.24.52".parse().expect("ip"));
    req.ifname = "eth1".into();
    node.call::<PortInfo>(Op::Attach(req));
    taken.ping(&node.gateway());
    a.ns.ping(&node.gateway());
}

#[test]
fn detach_is_idempotent_and_removes_everything() {
    if skip() {
        return;
    }
    let node = Node::start("dt", 25);
    let a = node.pod("dta");
    let b = node.pod("dtb");
    a.ns.ping(&b.ip.to_string());
    let mut want = vec![(a.ns.path(), "eth0".to_string()), (b.ns.path(), "eth0".to_string())];
    want.sort();
    assert_eq!(state_ports(&node), want);
    assert!(node.fdb().iter().any(|e| e.mac == a.port.mac));

    assert!(detach(&node, selector(&a.ns, "eth0")), "first detach");
    assert_eq!(a.ns.links(), vec!["lo"], "the pod interface is gone");
    assert!(!node.ports().iter().any(|p| p.id == a.port.id), "the port is gone");
    assert!(!node.fdb().iter().any(|e| e.mac == a.port.mac || e.port == a.port.id), "FDB flushed");
    assert_eq!(state_ports(&node), vec![(b.ns.path(), "eth0".to_string())]);
    assert!(!detach(&node, selector(&a.ns, "eth0")), "second detach");
    assert!(!detach(&node, selector(&b.ns, "eth1")), "never attached");

    // By container ID, as CNI DEL does.
    let c = Netns::new("dtc");
    let mut req = node.attach_request(&c, node.next_ip());
    req.owner.container_id = Some("ctr-c".into());
    node.call::<PortInfo>(Op::Attach(req));
    let by_id = || PortSelector { netns: None, container_id: Some("ctr-c".into()), ifname: "eth0".into() };
    assert!(detach(&node, by_id()));
    assert_eq!(c.links(), vec!["lo"]);
    assert!(!detach(&node, by_id()));

    // A detach that names nothing is an error, not a no-op.
    let ports = port_keys(&node);
    let none = PortSelector { netns: None, container_id: None, ifname: "eth0".into() };
    let err = node.try_call::<DetachResult>(Op::Detach(none)).expect_err("detach without a selector");
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    let err = node.try_call::<DetachResult>(Op::Detach(selector(&b.ns, "no/such"))).expect_err("bad ifname");
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(port_keys(&node), ports);

    // The survivor still works and the detached netns can be attached again.
    b.ns.ping(&node.gateway());
    let again: PortInfo = node.call(Op::Attach(node.attach_request(&a.ns, a.ip)));
    a.ns.ping(&b.ip.to_string());
    assert!(node.fdb().iter().any(|e| e.mac == again.mac && e.port == again.id));
}

#[test]
fn check_passes_on_a_fresh_port_and_catches_drift() {
    if skip() {
        return;
    }
    let node = Node::start("ck", 26);
    let ns = Netns::new("cka");
    let mut req = node.attach_request(&ns, "10.231.26.2".parse().expect("ip"));
    req.mac = Some("02:aa:bb:cc:dd:01".into());
    req.mtu = Some(1400);
    req.owner.container_id = Some("ctr-k".into());
    let port: PortInfo = node.call(Op::Attach(req));
    assert_eq!((port.mac.as_str(), port.mtu), ("02:aa:bb:cc:dd:01", 1400));
    let link = ns.ip(&["-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1400") && link.contains("02:aa:bb:cc:dd:01"), "{link}");
    let ports = port_keys(&node);

    let full = CheckRequest {
        port: selector(&ns, "eth0"),
        mac: Some("02:aa:bb:cc:dd:01".into()),
        ips: vec!["10.231.26.2/24".into()],
        routes: vec![RouteConfig { dst: "0.0.0.0/0".into(), gw: Some("10.231.26.1".into()) }],
    };
    let check = |req: CheckRequest| node.try_call::<serde_json::Value>(Op::Check(req));
    check(CheckRequest { port: selector(&ns, "eth0"), ..Default::default() }).expect("bare check");
    check(full.clone()).expect("full check");
    let by_id = PortSelector { netns: None, container_id: Some("ctr-k".into()), ifname: "eth0".into() };
    check(CheckRequest { port: by_id, ..Default::default() }).expect("check by container ID");

    let code = |req: CheckRequest| check(req).expect_err("check should fail").code;
    assert_eq!(
        code(CheckRequest { mac: Some("02:aa:bb:cc:dd:02".into()), ..full.clone() }),
        ErrorCode::Mismatch
    );
    assert_eq!(
        code(CheckRequest { ips: vec!["10.231.26.99/24".into()], ..full.clone() }),
        ErrorCode::Mismatch
    );
    let route = RouteConfig { dst: "10.9.0.0/16".into(), gw: None };
    assert_eq!(code(CheckRequest { routes: vec![route], ..full.clone() }), ErrorCode::Mismatch);
    assert_eq!(code(CheckRequest { port: selector(&ns, "eth1"), ..Default::default() }), ErrorCode::NotFound);
    assert_eq!(code(CheckRequest { mac: Some("nope".into()), ..full.clone() }), ErrorCode::InvalidArgument);
    assert_eq!(port_keys(&node), ports, "check changed the ports");

    // Drift made behind tapway's back.
    ns.ip(&["addr", "del", "10.231.26.2/24", "dev", "eth0"]);
    let err =
        check(CheckRequest { port: selector(&ns, "eth0"), ..Default::default() }).expect_err("address gone");
    assert_eq!(err.code, ErrorCode::Mismatch, "{err}");
    assert!(err.message.contains("10.231.26.2"), "{err}");
    ns.ip(&["addr", "add", "10.231.26.2/24", "dev", "eth0"]);
    check(CheckRequest { port: selector(&ns, "eth0"), ..Default::default() }).expect("address back");
    ns.ip(&["link", "set", "eth0", "down"]);
    let err =
        check(CheckRequest { port: selector(&ns, "eth0"), ..Default::default() }).expect_err("link down");
    assert_eq!(err.code, ErrorCode::Mismatch, "{err}");
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth0", "address", "02:aa:bb:cc:dd:09"]);
    let err =
        check(CheckRequest { port: selector(&ns, "eth0"), mac: full.mac.clone(), ..Default::default() })
            .expect_err("MAC changed");
    assert_eq!(err.code, ErrorCode::Mismatch, "{err}");
    assert_eq!(port_keys(&node), ports, "check changed the ports");
}

#[test]
fn gc_removes_exactly_the_stale_ports_of_its_network() {
    if skip() {
        return;
    }
    let node = Node::start("gc", 27);
    let owner = |cid: Option<&str>, net: Option<&str>| Owner {
        container_id: cid.map(Into::into),
        network: net.map(Into::into),
        ..Default::default()
    };
    // (tag, ifname, owner): one netns per container, as CNI does; `keep` lists the ports that
    // must survive `gc n` with valid = [ctr-1/eth0].
    let specs = [
        ("g1", "eth0", owner(Some("ctr-1"), Some("n")), true),
        ("g1", "net1", owner(Some("ctr-1"), Some("n")), false), // same container, other ifname
        ("g2", "eth0", owner(Some("ctr-2"), Some("n")), false),
        ("g3", "eth0", owner(Some("ctr-3"), Some("n")), false),
        ("g4", "eth0", owner(Some("ctr-4"), Some("other")), true), // another network
        ("g5", "eth0", owner(None, None), true),                   // made by hand
    ];
    let mut namespaces: Vec<(&str, Netns)> = Vec::new();
    let mut attached = Vec::new();
    for (tag, ifname, own, keep) in &specs {
        if !namespaces.iter().any(|(t, _)| t == tag) {
            namespaces.push((tag, Netns::new(tag)));
        }
        let ns = &namespaces.iter().find(|(t, _)| t == tag).expect("netns").1;
        let ip = node.next_ip();
        let mut req = node.attach_request(ns, ip);
        req.ifname = ifname.to_string();
        if *ifname != "eth0" {
            req.ips = vec![IpConfig { address: format!("{ip}/24"), gateway: None }];
            // one default route
        }
        req.owner = own.clone();
        let port: PortInfo = node.call(Op::Attach(req));
        attached.push((port, ns.path(), *keep));
    }

    let gc = |valid: Vec<Attachment>| node.call::<GcResult>(Op::Gc(GcRequest { network: "n".into(), valid }));
    let valid = vec![Attachment { container_id: "ctr-1".into(), ifname: "eth0".into() }];
    let mut removed: Vec<u16> = gc(valid.clone()).removed.into_iter().map(|p| p.id).collect();
    removed.sort_unstable();
    let mut stale: Vec<u16> = attached.iter().filter(|(_, _, keep)| !keep).map(|(p, _, _)| p.id).collect();
    stale.sort_unstable();
    assert_eq!(removed, stale, "gc removed the wrong ports");
    let left: Vec<u16> = node.ports().iter().map(|p| p.id).collect();
    for (port, netns, keep) in &attached {
        assert_eq!(left.contains(&port.id), *keep, "port {} ({netns} {})", port.id, port.ifname);
        let ns_name = netns.trim_start_matches("/run/netns/");
        let links = run_ok("ip", &["-n", ns_name, "-o", "link", "show"]);
        assert_eq!(links.contains(&format!(": {}:", port.ifname)), *keep, "{netns}: {links}");
    }
    assert!(gc(valid).removed.is_empty(), "a second gc removes nothing");

    let err = node
        .try_call::<GcResult>(Op::Gc(GcRequest { network: String::new(), valid: vec![] }))
        .expect_err("gc without a network");
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    // The valid port still forwards.
    namespaces[0].1.ping(&node.gateway());
}

#[test]
fn a_pod_netns_deleted_under_its_port_is_survivable() {
    if skip() {
        return;
    }
    let node = Node::start("gn", 28);
    let a = node.pod("gna");
    let b = node.pod("gnb");
    let c = node.pod("gnc");
    c.ns.ping(&a.ip.to_string());
    let (c_path, c_id) = (c.ns.path(), c.port.id);
    drop(c.ns); // the pod is gone before CNI DEL, as when a runtime tears down first

    a.ns.ping(&b.ip.to_string());
    b.ns.ping(&node.gateway());
    let sel = PortSelector { netns: Some(c_path), container_id: None, ifname: "eth0".into() };
    assert!(detach(&node, sel.clone()), "detach of a port whose netns is gone");
    assert!(!node.ports().iter().any(|p| p.id == c_id));
    assert!(!detach(&node, sel));
    a.ns.ping(&b.ip.to_string());
    assert_eq!(node.status().ports, 3);
}

#[test]
fn concurrent_attaches_and_detaches_are_serialized_safely() {
    if skip() {
        return;
    }
    let node = Node::start("cc", 29);
    let namespaces: Vec<Netns> = (0..6).map(|_| Netns::new("ccp")).collect();
    let ports: Vec<PortInfo> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .map(|ns| {
                let node = &node;
                s.spawn(move || node.call::<PortInfo>(Op::Attach(node.attach_request(ns, node.next_ip()))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("attach thread")).collect()
    });
    let ids: std::collections::BTreeSet<u16> = ports.iter().map(|p| p.id).collect();
    let macs: std::collections::BTreeSet<&str> = ports.iter().map(|p| p.mac.as_str()).collect();
    assert_eq!((ids.len(), macs.len()), (6, 6), "{ports:#?}");
    assert!(!ids.contains(&0));
    assert_eq!(node.status().ports, 7);
    assert_eq!(state_ports(&node).len(), 6);
    namespaces[0].ping(&node.gateway());
    namespaces[5].ping(&ports[0].ips[0].replace("/24", ""));

    let detached: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> =
            namespaces.iter().map(|ns| s.spawn(|| detach(&node, selector(ns, "eth0")))).collect();
        handles.into_iter().map(|h| h.join().expect("detach thread")).collect()
    });
    assert_eq!(detached, vec![true; 6]);
    assert_eq!(node.status().ports, 1);
    assert!(state_ports(&node).is_empty());
    for ns in &namespaces {
        assert_eq!(ns.links(), vec!["lo"], "{}", ns.name);
    }
}

#[test]
fn sigterm_stops_cleanly_and_pods_keep_their_interfaces() {
    if skip() {
        return;
    }
    let mut node = Node::start("sg", 30);
    let a = node.pod("sga");
    let status = node.stop().expect("the daemon was running");
    assert!(status.success(), "tapwayd exit status after SIGTERM: {status}\n{}", node.log());
    assert!(!node.socket.exists(), "the socket file is removed on shutdown");
    let addr = a.ns.ip(&["-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 10.231.30.2/24"), "the pod interface stays in place: {addr}");
    let ports = state_ports(&node);
    assert_eq!(ports, vec![(a.ns.path(), "eth0".to_string())], "the state file still lists the pod");
}

#[test]
fn sigterm_stops_even_when_the_socket_file_is_gone() {
    if skip() {
        return;
    }
    // Someone removed the socket (or its directory, e.g. a test's temp dir) under tapwayd: the
    // shutdown must not depend on connecting to that path.
    let mut node = Node::start("sq", 39);
    std::fs::remove_file(&node.socket).expect("remove the socket file");
    // Node::stop sends SIGTERM and SIGKILLs after 10 s: a hung shutdown ends killed, not success.
    let status = node.stop().expect("the daemon was running");
    assert!(status.success(), "tapwayd exit status after SIGTERM: {status}\n{}", node.log());
}

#[test]
fn a_second_daemon_and_bad_flags_are_refused() {
    if skip() {
        return;
    }
    let node = Node::start("sd", 31);
    let a = node.pod("sda");
    let socket = node.socket.display().to_string();
    let state = node.dir.join("state2").display().to_string();

    // A second tapwayd on the same node and socket must not start, nor disturb the first.
    let (status, err) =
        run_daemon(&node.ns, &["--socket", &socket, "--state-dir", &state, "--pod-cidr", "10.231.31.0/24"]);
    assert!(!status.success(), "a second daemon started on a socket in use: {err}");
    assert!(node.socket.exists(), "the second daemon removed the first one's socket");
    assert_eq!(node.status().ports, 2, "the first daemon still answers");
    a.ns.ping(&node.gateway());

    // Bad flags: exit status 2, a message, and nothing created.
    let other = Netns::new("sdo");
    let own_socket = node.dir.join("bad.sock").display().to_string();
    for bad in [
        &["--pod-cidr", "10.231.32.0/31"][..],
        &["--pod-cidr", "not-a-cidr"],
        &["--mtu", "100"],
        &["--poll-mode", "sometimes"],
        &["--cores", ""],
        &["--fdb-max", "0"],
        &["--host-port", "a-name-far-too-long"],
    ] {
        let mut args = vec!["--socket", own_socket.as_str(), "--state-dir", state.as_str()];
        args.extend_from_slice(bad);
        let (status, err) = run_daemon(&other, &args);
        assert_eq!(status.code(), Some(2), "tapwayd {bad:?}: {status}: {err}");
        assert!(!err.trim().is_empty(), "tapwayd {bad:?} said nothing");
    }
    assert_eq!(other.links(), vec!["lo"], "a refused configuration created interfaces");
    assert!(!std::path::Path::new(&own_socket).exists());
}

#[test]
fn a_second_daemon_reports_the_socket_in_use_and_leaves_nothing() {
    if skip() {
        return;
    }
    let node = Node::start("si", 34);
    let socket = node.socket.display().to_string();
    let state = node.dir.join("state2").display().to_string();
    let args = ["--socket", socket.as_str(), "--state-dir", state.as_str(), "--pod-cidr", "10.231.34.0/24"];
    let (status, err) = run_daemon(&node.ns, &args);
    assert!(!status.success());
    assert!(err.contains("in use"), "same netns: {err}");
    let other = Netns::new("sio");
    let (status, err) = run_daemon(&other, &args);
    assert!(!status.success());
    assert!(err.contains("in use"), "other netns: {err}");
    assert_eq!(other.links(), vec!["lo"], "the refused daemon left its host port behind");
}

#[test]
fn ipv6_gateway_is_the_first_host_address() {
    if skip() {
        return;
    }
    let node = Node::start_with("g6", 33, &["--pod-cidr", "fd00:231:33::/64"]);
    let host = node.ports().into_iter().find(|p| p.kind == "host").expect("host port");
    assert_eq!(host.ips, vec!["10.231.33.1/24", "fd00:231:33::1/64"]);
}

#[test]
fn detaching_a_port_under_load_keeps_the_switch_healthy() {
    if skip() {
        return;
    }
    let node = Node::start("dl", 35);
    let a = node.pod("dla");
    let b = node.pod("dlb");
    let c = node.pod("dlc");
    let listener = tcp_listen_in(&b.ns, &format!("{}:5300", b.ip));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(io_timeout()).expect("timeout");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        let mut started = Some(started_tx);
        while let Ok(n) = std::io::Read::read(&mut conn, &mut buf) {
            if n == 0 {
                break;
            }
            total += n;
            if total >= 8 << 20 {
                if let Some(tx) = started.take() {
                    let _ = tx.send(conn.try_clone().expect("clone the receiving end"));
                }
            }
        }
    });
    let conn = tcp_connect_in(&a.ns, &format!("{}:5300", b.ip));
    let writer = conn.try_clone().expect("clone the connection");
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        let chunk = vec![0x5au8; 1 << 20];
        while writer.write_all(&chunk).is_ok() {}
    });
    let receiving = started_rx.recv().expect("the stream got going");
    // Pull b's port out from under the stream, then end both sides (they cannot reach each
    // other any more).
    assert!(detach(&node, selector(&b.ns, "eth0")));
    assert_eq!(b.ns.links(), vec!["lo"]);
    conn.shutdown(std::net::Shutdown::Both).expect("shutdown");
    receiving.shutdown(std::net::Shutdown::Both).expect("shutdown");
    sender.join().expect("sender");
    receiver.join().expect("receiver");

    // The switch is fine: the others still talk, the port is gone, a new one works.
    a.ns.ping(&c.ip.to_string());
    c.ns.ping(&node.gateway());
    assert_eq!(node.status().ports, 3);
    let again: PortInfo = node.call(Op::Attach(node.attach_request(&b.ns, b.ip)));
    a.ns.ping(&b.ip.to_string());
    assert!(node.fdb().iter().any(|e| e.mac == again.mac && e.port == again.id));
}

#[test]
fn attach_detach_churn_leaks_nothing() {
    if skip() {
        return;
    }
    let node = Node::start("ch", 36);
    let keep = node.pod("chk");
    let ns = Netns::new("chp");
    let ip = node.next_ip();
    // One cycle first, so lazily made things (netlink sockets, threads) exist before counting.
    node.call::<PortInfo>(Op::Attach(node.attach_request(&ns, ip)));
    assert!(detach(&node, selector(&ns, "eth0")));
    let fds = node.open_fds();
    let node_links = node.ns.links();
    let ports = port_keys(&node);
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..10 {
        let port: PortInfo = node.call(Op::Attach(node.attach_request(&ns, ip)));
        ids.insert(port.id);
        if i % 3 == 0 {
            ns.ping(&keep.ip.to_string());
        }
        assert!(detach(&node, selector(&ns, "eth0")), "cycle {i}");
        assert_eq!(ns.links(), vec!["lo"], "cycle {i}");
    }
    assert_eq!(port_keys(&node), ports);
    assert_eq!(node.ns.links(), node_links, "TAPs left in the node netns");
    assert!(!node.fdb().iter().any(|e| e.port != 0 && e.port != keep.port.id), "{:#?}", node.fdb());
    assert!(ids.len() <= 2, "port numbers are reused, not used up: {ids:?}");
    // Workers drop a detached port's fd when they next look at the port table.
    let start = std::time::Instant::now();
    while node.open_fds() > fds {
        assert!(
            start.elapsed() < DEADLINE,
            "the daemon holds {} fds, {fds} before the churn",
            node.open_fds()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    keep.ns.ping(&node.gateway());
}

#[test]
fn the_connection_limit_holds_and_recovers() {
    if skip() {
        return;
    }
    let node = Node::start("cl", 37);
    // Open by the daemon's side: a connection it closed reads EOF at once.
    let open = |c: &UnixStream| {
        c.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 1];
        let open = matches!(std::io::Read::read(&mut &*c, &mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        c.set_nonblocking(false).expect("blocking");
        open
    };
    let mut held = Vec::new();
    let mut refused = 0;
    // More than the 64 slots: a new connection either takes the slot of one that has waited
    // over a second for its next request (that one is closed) or is refused.
    for _ in 0..80 {
        let mut conn = UnixStream::connect(&node.socket).expect("connect");
        conn.set_read_timeout(io_timeout()).expect("timeout");
        // A refused connection is answered and closed at once, so this write may find it
        // closed already; the answer is there to read either way.
        let _ = conn.write_all(b"{\"v\":1,\"op\":\"status\"}\n");
        let mut line = String::new();
        BufReader::new(conn.try_clone().expect("clone")).read_line(&mut line).expect("an answer");
        let resp: Response = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        if resp.ok {
            held.push(conn); // keep it open (and its daemon thread waiting for a request)
        } else {
            assert_eq!(resp.error.map(|e| e.code), Some(ErrorCode::ResourceExhausted));
            refused += 1;
        }
        held.retain(|c| open(c));
        assert!(held.len() <= 64, "{} connections served at once; the limit is 64", held.len());
    }
    drop(held);
    let start = std::time::Instant::now();
    loop {
        match node.client.call::<tapway_api::StatusInfo>(Op::Status) {
            Ok(_) => break,
            Err(e) => assert!(start.elapsed() < DEADLINE, "the daemon never served again: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let evicted = node.stats().switch["ctl_evicted"];
    assert!(refused + evicted >= 16, "80 connections for 64 slots: {refused} refused, {evicted} evicted");
}
