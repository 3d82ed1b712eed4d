//! Harness for the plugin's integration tests: a "node" network namespace running its own
//! tapwayd, "pod" namespaces, and the plugin invoked exactly as libcni/cnitool does (CNI_*
//! environment, netconf on stdin) with the reference host-local IPAM.
//!
//! Needs root, `ip`, /usr/lib/cni/host-local and a built tapwayd (`target/debug/tapwayd`, next
//! to the test binary's `deps/` directory; `TAPWAYD_BIN` overrides). CI runs
//! `cargo build --workspace` before `cargo test`. Without any of these each test prints
//! `SKIP: …` and passes, unless `TAPWAY_IT_REQUIRE=1`, which turns skips into failures.
//!
//! Every namespace has a unique name (`twit-<what>-<pid>-<n>`) and is removed by a Drop guard,
//! so a failing test leaves nothing behind. Nothing here touches an interface it did not
//! create, and all traffic stays inside these namespaces.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tapway_api::{Client, Op, PortInfo};

/// The reference plugins (Debian's containernetworking-plugins).
pub const REF_PLUGINS: &str = "/usr/lib/cni";
/// The pod range every test node uses (nodes are separate namespaces, so they may overlap).
pub const POD_CIDR: &str = "10.88.0.0/24";
/// The gateway tapwayd puts on the node's host port.
pub const GATEWAY: &str = "10.88.0.1";

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// One test at a time: each starts its own tapwayd, and the machine may have 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// A name no other test, process or person uses.
pub fn unique(what: &str) -> String {
    format!("twit-{what}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The `tapway` binary under test.
pub fn plugin_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tapway"))
}

/// `CNI_PATH`: the reference plugins, then the directory of the plugin under test.
pub fn cni_path() -> String {
    let dir = plugin_bin().parent().map(|p| p.display().to_string()).unwrap_or_default();
    format!("{REF_PLUGINS}:{dir}")
}

fn tapwayd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TAPWAYD_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/cni-<hash> → target/debug/tapwayd
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(Path::parent).map(|d| d.join("tapwayd")).unwrap_or_default()
}

/// Whether the machine can run these tests; prints why not. Holds the serialising lock.
pub struct Ready {
    _serial: MutexGuard<'static, ()>,
    pub tapwayd: PathBuf,
}

fn skip(why: &str) -> Option<Ready> {
    if std::env::var("TAPWAY_IT_REQUIRE").as_deref() == Ok("1") {
        panic!("integration test cannot run: {why} (TAPWAY_IT_REQUIRE=1)");
    }
    println!("SKIP: {why}");
    None
}

/// `ready()` or return from the test (it printed why it skips).
#[allow(unused_macros)]
macro_rules! ready_or_skip {
    () => {
        match crate::common::ready() {
            Some(r) => r,
            None => return,
        }
    };
}

/// Checks root, `ip`, host-local and tapwayd. `None` (after printing SKIP) when missing.
pub fn ready() -> Option<Ready> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not root (namespaces and TAP devices need CAP_NET_ADMIN)");
    }
    if !Path::new(REF_PLUGINS).join("host-local").exists() {
        return skip("/usr/lib/cni/host-local is missing (apt install containernetworking-plugins)");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return skip("`ip` (iproute2) is missing");
    }
    let tapwayd = tapwayd_bin();
    if !tapwayd.exists() {
        return skip(&format!("{} is missing: run `cargo build --workspace` first", tapwayd.display()));
    }
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    Some(Ready { _serial: serial, tapwayd })
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().unwrap()
}

/// A network namespace made by `ip netns add`, deleted on drop.
pub struct Netns {
    pub name: String,
    deleted: bool,
}

impl Netns {
    /// A fresh namespace.
    pub fn new(what: &str) -> Netns {
        let name = unique(what);
        let out = ip(&["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        Netns { name, deleted: false }
    }

    /// `/run/netns/<name>`, as CNI_NETNS.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Deletes it now (the "netns gone" case).
    pub fn delete(&mut self) {
        if !self.deleted {
            let _ = ip(&["netns", "del", &self.name]);
            self.deleted = true;
        }
    }

    /// Runs `ip -n <ns> args…`.
    pub fn ip(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The interface `ifname` in this namespace as `ip -j addr` shows it; `None` if absent.
    pub fn link(&self, ifname: &str) -> Option<Value> {
        let out = self.ip(&["-j", "addr", "show", "dev", ifname]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.first().cloned()
    }

    /// IPv4/IPv6 global addresses of `ifname` (CIDR).
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        let Some(link) = self.link(ifname) else { return Vec::new() };
        link["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|ai| ai["scope"] == "global")
                    .map(|ai| format!("{}/{}", ai["local"].as_str().unwrap_or(""), ai["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                let ns = File::open(&path).unwrap();
                // SAFETY: setns on an open netns fd; it only changes this (scoped, short-lived)
                // thread's network namespace.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A node: a namespace running tapwayd, with a scratch directory for its state, the plugin's
/// state, host-local's data and the logs.
pub struct Node {
    pub ns: Netns,
    pub dir: PathBuf,
    pub socket: PathBuf,
    tapwayd: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Node {
    /// Starts tapwayd in a fresh node namespace and waits until it answers.
    pub fn start(r: &Ready) -> Node {
        Node::start_with(r, &[])
    }

    /// Starts tapwayd with extra flags (e.g. a second `--pod-cidr`).
    pub fn start_with(r: &Ready, extra: &[&str]) -> Node {
        let ns = Netns::new("node");
        let dir = std::env::temp_dir().join(&ns.name);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let socket = dir.join("run/tapway.sock");
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut node = Node { ns, dir, socket, tapwayd: r.tapwayd.clone(), extra, child: None };
        node.start_daemon();
        node
    }

    /// (Re)starts tapwayd.
    pub fn start_daemon(&mut self) {
        assert!(self.child.is_none(), "tapwayd already running");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("tapwayd.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(&self.tapwayd)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.dir.join("tapwayd-state"))
            .args(["--pod-cidr", POD_CIDR, "--poll-mode", "adaptive", "--log-level", "info"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.client().call::<Value>(Op::Status).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("tapwayd exited with {status}:\n{}", self.daemon_log());
            }
            assert!(Instant::now() < deadline, "tapwayd did not answer in 15 s:\n{}", self.daemon_log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops tapwayd (SIGTERM, then SIGKILL after 5 s).
    pub fn stop_daemon(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill on the pid of a child this harness spawned and has not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                let _ = std::fs::remove_file(&self.socket);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket).with_timeout(Duration::from_secs(10))
    }

    /// Pod ports tapwayd has.
    pub fn pod_ports(&self) -> Vec<PortInfo> {
        let ports: Vec<PortInfo> = self.client().call(Op::Ports).unwrap();
        ports.into_iter().filter(|p| p.kind != "host").collect()
    }

    /// The pod port of `cid`, if any.
    pub fn port_of(&self, cid: &str) -> Option<PortInfo> {
        self.pod_ports().into_iter().find(|p| p.owner.container_id.as_deref() == Some(cid))
    }

    /// Addresses host-local has reserved for `network`: file name → "containerID\nifname".
    pub fn reservations(&self, network: &str) -> BTreeMap<String, String> {
        let dir = self.dir.join("ipam").join(network);
        let Ok(rd) = std::fs::read_dir(dir) else { return BTreeMap::new() };
        rd.filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n != "lock" && !n.starts_with("last_reserved_ip")
            })
            .map(|e| {
                (
                    e.file_name().to_string_lossy().to_string(),
                    std::fs::read_to_string(e.path()).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The plugin's pending detaches.
    pub fn pending(&self) -> Value {
        std::fs::read(self.dir.join("cni/pending.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(json!([]))
    }

    /// A netconf for this node: tapway with host-local, in `version`.
    pub fn conf(&self, version: &str, network: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": network,
            "type": "tapway",
            "socket": self.socket,
            "stateDir": self.dir.join("cni"),
            "logFile": self.dir.join("cni.log"),
            "logLevel": "debug",
            "ipam": {
                "type": "host-local",
                "dataDir": self.dir.join("ipam"),
                "ranges": [[{"subnet": POD_CIDR, "rangeStart": "10.88.0.10", "gateway": GATEWAY}]]
            }
        })
    }

    pub fn daemon_log(&self) -> String {
        tail(&self.dir.join("tapwayd.log"), 40)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_daemon();
        if std::thread::panicking() {
            eprintln!("--- tapwayd log ({}):\n{}", self.dir.display(), self.daemon_log());
            eprintln!("--- plugin log:\n{}", tail(&self.dir.join("cni.log"), 40));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a plugin run printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout as JSON (panics with everything printed when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts success and returns stdout as JSON (Null when empty).
    pub fn ok(&self) -> Value {
        assert_eq!(self.code, 0, "plugin failed: {self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts failure with the CNI error `code` and returns the error object.
    pub fn err(&self, code: u64) -> Value {
        assert_ne!(self.code, 0, "plugin unexpectedly succeeded: {self:?}");
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "wrong code: {self:?}");
        for k in ["cniVersion", "msg", "details"] {
            assert!(v.get(k).is_some(), "error object lacks {k}: {v}");
        }
        v
    }
}

/// One CNI invocation.
pub struct Call<'a> {
    pub bin: PathBuf,
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: String,
    pub ifname: &'a str,
    pub args: &'a str,
    pub path: String,
    /// Run inside this namespace (`ip netns exec`), as a runtime in that node would.
    pub in_netns: Option<&'a str>,
    /// Variables to leave out entirely.
    pub unset: Vec<&'a str>,
}

impl<'a> Call<'a> {
    /// The plugin under test, with the usual environment.
    pub fn new(command: &'a str, container_id: &'a str, netns: &str, ifname: &'a str) -> Call<'a> {
        Call {
            bin: plugin_bin(),
            command,
            container_id,
            netns: netns.to_string(),
            ifname,
            args: "",
            path: cni_path(),
            in_netns: None,
            unset: Vec::new(),
        }
    }

    /// Runs with `stdin`, the environment cleared to PATH and the CNI variables.
    pub fn run(&self, stdin: &Value) -> Out {
        self.run_raw(stdin.to_string().as_bytes())
    }

    pub fn run_raw(&self, stdin: &[u8]) -> Out {
        let mut cmd = match self.in_netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.env_clear().env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let vars = [
            ("CNI_COMMAND", self.command.to_string()),
            ("CNI_CONTAINERID", self.container_id.to_string()),
            ("CNI_NETNS", self.netns.clone()),
            ("CNI_IFNAME", self.ifname.to_string()),
            ("CNI_ARGS", self.args.to_string()),
            ("CNI_PATH", self.path.clone()),
        ];
        for (k, v) in vars {
            if !self.unset.contains(&k) {
                cmd.env(k, v);
            }
        }
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }
}

/// Adds `prevResult` to a netconf.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// The IPv4 address (without prefix) of the first IP of a result.
pub fn first_ip(result: &Value) -> String {
    let cidr = result["ips"][0]["address"].as_str().unwrap_or_default();
    cidr.split('/').next().unwrap_or_default().to_string()
}

/// Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends ICMP echo requests from the calling thread's netns to `dst` until one is answered
/// (raw socket, as `ping` does) or `tries` have gone unanswered.
pub fn ping(dst: std::net::Ipv4Addr, tries: u32) -> bool {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // SAFETY: fd is a socket we own; tv is a valid timeval for the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let id = (std::process::id() & 0xffff) as u16;
    // SAFETY: sockaddr_in is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_addr.s_addr = u32::from(dst).to_be();
    let mut answered = false;
    'outer: for seq in 0..tries {
        let mut pkt = vec![8u8, 0, 0, 0];
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&(seq as u16).to_be_bytes());
        pkt.extend_from_slice(b"tapway-integration-ping");
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
        // SAFETY: pkt and addr are valid for the lengths given.
        unsafe {
            libc::sendto(
                fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let mut buf = [0u8; 1500];
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n < ihl + 8 {
                continue;
            }
            let icmp = &buf[ihl..n];
            let src = std::net::Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            if icmp[0] == 0 && src == dst && icmp[4..6] == id.to_be_bytes() {
                answered = true;
                break 'outer;
            }
        }
    }
    // SAFETY: closing the socket this function opened.
    unsafe { libc::close(fd) };
    answered
}
