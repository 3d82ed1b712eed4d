//! Harness for the root-level integration tests: a test "node" network namespace running a
//! real tapwayd, pod namespaces attached through the control API, and helpers to send traffic
//! from inside a namespace.
//!
//! Every namespace, directory and daemon a test makes is owned by a guard that removes it in
//! `Drop`, so a failing (panicking) test cleans up too. Names are unique per process and per
//! call (`twt` + tag + pid + counter), so tests run in parallel safely. Nothing here touches an
//! interface or namespace it did not create, and traffic only goes to addresses inside the
//! test's own namespaces.
//!
//! Waits are bounded by generous deadlines that only expire when something is broken: no test
//! passes or fails on how fast something happened.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod attach;
pub mod metrics;
pub mod watch;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use serde::de::DeserializeOwned;
use tapway_api::{
    ApiError, AttachRequest, Client, ClientError, FdbEntry, IpConfig, Op, PortInfo, PortStats, StatsReport,
    StatusInfo,
};

pub mod flood;
pub mod learn;

/// How long a wait may take before the test calls it broken. Generous on purpose: only a
/// broken switch gets anywhere near it.
pub const DEADLINE: Duration = Duration::from_secs(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True (after printing SKIP) when this machine cannot run the tests: they need root and `ip`.
/// Under `TAPWAY_IT_REQUIRE=1` (scripts/test.sh as root) a missing prerequisite panics instead,
/// as in the plugin's and the bench's tests, so a machine that cannot run them fails rather than
/// passes. (A root machine without `/dev/net/tun` fails either way: tapwayd cannot work there,
/// and CI should say so rather than pass.)
pub fn skip() -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        "needs root"
    } else if !Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        "needs iproute2 (`ip`)"
    } else {
        return false;
    };
    assert!(
        std::env::var("TAPWAY_IT_REQUIRE").as_deref() != Ok("1"),
        "integration test cannot run: {why} (TAPWAY_IT_REQUIRE=1)"
    );
    println!("SKIP: {why}");
    true
}

/// A unique short name: `twt` + tag + pid + counter.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("twt{tag}{}x{n}", std::process::id())
}

/// Runs a command, returning its output (never panics on a non-zero status).
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command and panics with its output unless it succeeds; returns stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace made with `ip netns add`, deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    /// Name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with a unique name and brings its loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The path a CNI runtime would pass (`/run/netns/NAME`).
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NAME args...`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_ok("ip", &all)
    }

    /// `ip netns exec NAME program args...`, status unchecked.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Pings `dst` from this namespace until two replies came back; panics if none do before
    /// a generous deadline.
    pub fn ping(&self, dst: &str) {
        self.ping_with(dst, &[]);
    }

    /// Pings `dst` with extra `ping` flags (e.g. a size and `-M do`), as [`Netns::ping`].
    pub fn ping_with(&self, dst: &str, extra: &[&str]) {
        let mut args = vec!["-n", "-q", "-c", "2", "-i", "0.2", "-w", "20"];
        args.extend_from_slice(extra);
        args.push(dst);
        let out = self.exec("ping", &args);
        assert!(
            out.status.success(),
            "ping {} from {} failed ({}):\n{}{}",
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Names of the links in this namespace.
    pub fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets `f` opens belong to the
    /// namespace and may be used from any thread afterwards.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = File::open(self.path()).unwrap_or_else(|e| panic!("open {}: {e}", self.path()));
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test netns");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = run("ip", &["netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!("cleanup: ip netns del {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// A pod: its namespace and the port tapwayd attached in it.
#[derive(Debug)]
pub struct Pod {
    /// The port as `attach` answered.
    pub port: PortInfo,
    /// The pod's IPv4 address (without prefix).
    pub ip: Ipv4Addr,
    /// The namespace (declared last: dropped after everything that uses it).
    pub ns: Netns,
}

impl Pod {
    /// The pod's MAC as bytes.
    pub fn mac(&self) -> [u8; 6] {
        tapway_api::validate::mac(&self.port.mac).expect("the daemon reports a valid MAC")
    }

    /// The ifindex of the pod interface inside its namespace.
    pub fn ifindex(&self) -> u32 {
        let ifname = self.port.ifname.clone();
        self.ns.enter(move || nix::net::if_::if_nametoindex(ifname.as_str()).expect("pod interface exists"))
    }
}

/// A test node: a namespace running tapwayd with its host port, a temp dir for the socket,
/// state and log, and a client.
pub struct Node {
    /// The daemon (killed first on drop).
    daemon: Option<Child>,
    /// The control socket.
    pub socket: PathBuf,
    /// The temp dir (socket, state, log).
    pub dir: PathBuf,
    /// The pod range's first three octets, e.g. `10.231.4`.
    pub prefix: String,
    /// Client of the control socket.
    pub client: Client,
    next_host: AtomicU32,
    /// The node namespace (dropped after the daemon is gone).
    pub ns: Netns,
}

/// Runs tapwayd in `ns` with `socket`, state under `dir` and pod range `PREFIX.0/24`, plus
/// `extra` flags, its output going to `log`.
fn spawn_tapwayd(ns: &Netns, socket: &Path, dir: &Path, prefix: &str, extra: &[&str], log: File) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_tapwayd")])
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--pod-cidr", &format!("{prefix}.0/24"), "--log-level", "info"])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup the log fd"))
        .stderr(log)
        .spawn()
        .expect("spawn tapwayd")
}

impl Node {
    /// Starts tapwayd in a fresh node namespace with pod range `10.231.SUBNET.0/24`.
    pub fn start(tag: &str, subnet: u8) -> Node {
        Node::start_with(tag, subnet, &[])
    }

    /// Like [`Node::start`], with extra daemon flags.
    pub fn start_with(tag: &str, subnet: u8, extra: &[&str]) -> Node {
        Node::start_prepared(tag, subnet, extra, |_| {})
    }

    /// Like [`Node::start_with`], running `prepare` on the node namespace before the daemon
    /// starts (e.g. to set sysctls).
    pub fn start_prepared(tag: &str, subnet: u8, extra: &[&str], prepare: impl FnOnce(&Netns)) -> Node {
        let ns = Netns::new(tag);
        prepare(&ns);
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).expect("create the test dir");
        let socket = dir.join("tapway.sock");
        let prefix = format!("10.231.{subnet}");
        let log = File::create(dir.join("tapwayd.log")).expect("create the daemon log");
        let daemon = spawn_tapwayd(&ns, &socket, &dir, &prefix, extra, log);
        let client = Client::new(&socket).with_timeout(Duration::from_secs(30));
        let mut node =
            Node { daemon: Some(daemon), socket, dir, prefix, client, next_host: AtomicU32::new(2), ns };
        node.wait_ready();
        node
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(child) = self.daemon.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("tapwayd exited before it was ready ({status}):\n{}", self.log());
                }
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "tapwayd did not open its socket:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's process id (`ip netns exec` execs it, so it is the child's).
    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("the daemon runs").id()
    }

    /// How many file descriptors the daemon has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("read the daemon's fds").count()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tapwayd.log")).unwrap_or_default()
    }

    /// The gateway address (on the host port).
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Calls `op`, panicking on any error.
    pub fn call<T: DeserializeOwned>(&self, op: Op) -> T {
        let what = format!("{op:?}");
        self.client.call(op).unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Calls `op`, returning the daemon's error answer; panics on transport errors.
    pub fn try_call<T: DeserializeOwned>(&self, op: Op) -> Result<T, ApiError> {
        match self.client.call(op) {
            Ok(v) => Ok(v),
            Err(ClientError::Api(e)) => Err(e),
            Err(e) => panic!("control call failed outside the API: {e}"),
        }
    }

    /// Every port.
    pub fn ports(&self) -> Vec<PortInfo> {
        self.call(Op::Ports)
    }

    /// All counters.
    pub fn stats(&self) -> StatsReport {
        self.call(Op::Stats)
    }

    /// Counters of port `id`.
    pub fn port_stats(&self, id: u16) -> PortStats {
        self.stats()
            .ports
            .into_iter()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("no stats for port {id}"))
    }

    /// The FDB.
    pub fn fdb(&self) -> Vec<FdbEntry> {
        self.call(Op::Fdb)
    }

    /// Status.
    pub fn status(&self) -> StatusInfo {
        self.call(Op::Status)
    }

    /// The next free pod address (`.2`, `.3`, ...).
    pub fn next_ip(&self) -> Ipv4Addr {
        let host = self.next_host.fetch_add(1, Ordering::SeqCst);
        format!("{}.{host}", self.prefix).parse().expect("a valid pod address")
    }

    /// An attach request for `eth0` in `ns` with address `ip`/24 and the node's gateway.
    pub fn attach_request(&self, ns: &Netns, ip: Ipv4Addr) -> AttachRequest {
        AttachRequest {
            netns: ns.path(),
            ifname: "eth0".into(),
            ips: vec![IpConfig { address: format!("{ip}/24"), gateway: Some(self.gateway()) }],
            ..Default::default()
        }
    }

    /// Makes a pod namespace with IPv6 off (so its kernel stays silent unless asked to talk)
    /// and attaches `eth0` in it with the next free address.
    pub fn quiet_pod(&self, tag: &str) -> Pod {
        let ns = Netns::new(tag);
        disable_ipv6(&ns);
        let ip = self.next_ip();
        let port: PortInfo = self.call(Op::Attach(self.attach_request(&ns, ip)));
        Pod { port, ip, ns }
    }

    /// Makes a pod namespace and attaches `eth0` in it with the next free address.
    pub fn pod(&self, tag: &str) -> Pod {
        let ns = Netns::new(tag);
        let ip = self.next_ip();
        let port: PortInfo = self.call(Op::Attach(self.attach_request(&ns, ip)));
        Pod { port, ip, ns }
    }

    /// Polls `f` on the stats until it returns true; panics (showing the last stats) after
    /// the deadline.
    pub fn wait_stats(&self, what: &str, f: impl Fn(&StatsReport) -> bool) -> StatsReport {
        let start = Instant::now();
        loop {
            let s = self.stats();
            if f(&s) {
                return s;
            }
            assert!(start.elapsed() < DEADLINE, "{what}: counters never got there: {s:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts the daemon with the same socket, state dir and pod range (after [`Node::stop`]
    /// or while it runs), and waits until it answers.
    pub fn restart(&mut self, extra: &[&str]) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("tapwayd.log"))
            .expect("open the daemon log");
        let daemon = spawn_tapwayd(&self.ns, &self.socket, &self.dir, &self.prefix, extra, log);
        self.daemon = Some(daemon);
        self.wait_ready();
    }

    /// Stops the daemon (SIGTERM, then SIGKILL if it lingers) and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.daemon.take()?;
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("tapwayd ignored SIGTERM for 10 s; killing it");
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let status = self.stop();
        if std::thread::panicking() {
            eprintln!("---- tapwayd log ({:?}) ----\n{}---- end of log ----", status, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Turns IPv6 off in `ns`, for interfaces made from now on.
pub fn disable_ipv6(ns: &Netns) {
    // /proc/sys/net shows the netns of the thread that opens it.
    ns.enter(|| {
        for path in
            ["/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"]
        {
            std::fs::write(path, b"1").unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    });
}

/// Runs tapwayd with `args` in `ns` until it exits (it is killed, and the test fails, if it
/// is still running after the deadline); returns its exit status and stderr.
pub fn run_daemon(ns: &Netns, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_tapwayd")])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tapwayd");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tapwayd") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
            }
            let _ = child.wait();
            panic!("tapwayd {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap_or_default())
}

/// Drop counter `reason` of a port's stats (0 when absent).
pub fn drops(p: &PortStats, reason: &str) -> u64 {
    p.drops.get(reason).copied().unwrap_or(0)
}

/// Port `id` in a stats report.
pub fn port_of(s: &StatsReport, id: u16) -> &PortStats {
    s.ports.iter().find(|p| p.id == id).unwrap_or_else(|| panic!("no stats for port {id}"))
}

// ---------------------------------------------------------------------------------------------
// Traffic helpers.

/// A socket timeout that only a broken switch reaches.
pub fn io_timeout() -> Option<Duration> {
    Some(DEADLINE)
}

/// A UDP socket bound to `addr` inside `ns`.
pub fn udp_in(ns: &Netns, addr: &str) -> UdpSocket {
    let addr = addr.to_string();
    ns.enter(move || {
        let s = UdpSocket::bind(&addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
        s.set_read_timeout(io_timeout()).expect("set read timeout");
        s
    })
}

/// A TCP listener on `addr` inside `ns`.
pub fn tcp_listen_in(ns: &Netns, addr: &str) -> TcpListener {
    let addr = addr.to_string();
    ns.enter(move || TcpListener::bind(&addr).unwrap_or_else(|e| panic!("listen {addr}: {e}")))
}

/// A TCP connection from inside `ns` to `addr`.
pub fn tcp_connect_in(ns: &Netns, addr: &str) -> TcpStream {
    let addr = addr.to_string();
    ns.enter(move || {
        let sa: std::net::SocketAddr = addr.parse().expect("socket address");
        let s = TcpStream::connect_timeout(&sa, DEADLINE).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(io_timeout()).expect("set read timeout");
        s.set_write_timeout(io_timeout()).expect("set write timeout");
        s
    })
}

/// Size of the blocks the TCP pattern stamps with their index.
const BLOCK: usize = 4096;

/// The deterministic byte stream of [`tcp_transfer`]: a fixed pseudo-random 1 MiB base whose
/// every 4 KiB block starts with its index in the stream (so loss, duplication and reordering
/// all show, not only corruption).
pub struct Pattern {
    base: Vec<u8>,
}

impl Pattern {
    /// Chunk size the stream is produced in.
    pub const CHUNK: usize = 1 << 20;

    /// The pattern for `seed`.
    pub fn new(seed: u64) -> Pattern {
        let mut x = seed | 1;
        let mut base = Vec::with_capacity(Self::CHUNK);
        while base.len() < Self::CHUNK {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            base.extend_from_slice(&x.to_le_bytes());
        }
        Pattern { base }
    }

    /// Chunk `n` of the stream.
    pub fn chunk(&self, n: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.base);
        let blocks = (Self::CHUNK / BLOCK) as u64;
        for (i, block) in out.chunks_mut(BLOCK).enumerate() {
            block[..8].copy_from_slice(&(n * blocks + i as u64).to_le_bytes());
        }
    }
}

/// Sends `mib` MiB of [`Pattern`] over TCP from `from` to `to_ip:port` (a listener in `to`),
/// and has the receiver check every byte. Returns the bytes received intact.
pub fn tcp_transfer(from: &Netns, to: &Netns, to_ip: &str, port: u16, mib: u64, seed: u64) -> u64 {
    let listener = tcp_listen_in(to, &format!("{to_ip}:{port}"));
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(io_timeout()).expect("set read timeout");
        let pattern = Pattern::new(seed);
        let (mut want, mut got) = (Vec::new(), vec![0u8; Pattern::CHUNK]);
        let mut total = 0u64;
        for n in 0..mib {
            conn.read_exact(&mut got).unwrap_or_else(|e| panic!("receiver: chunk {n} of {mib}: {e}"));
            pattern.chunk(n, &mut want);
            if got != want {
                let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                panic!(
                    "receiver: data differs in chunk {n} at byte {at} (stream offset {})",
                    n * Pattern::CHUNK as u64 + at as u64
                );
            }
            total += got.len() as u64;
        }
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).expect("receiver: read to end");
        assert!(rest.is_empty(), "receiver: {} bytes past the end of the stream", rest.len());
        total
    });
    let mut conn = tcp_connect_in(from, &format!("{to_ip}:{port}"));
    let pattern = Pattern::new(seed);
    let mut buf = Vec::new();
    for n in 0..mib {
        pattern.chunk(n, &mut buf);
        conn.write_all(&buf).unwrap_or_else(|e| panic!("sender: chunk {n}: {e}"));
    }
    conn.shutdown(std::net::Shutdown::Write).expect("sender: shutdown");
    receiver.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// A send-only `AF_PACKET` socket bound to one interface of a namespace, for frames the
/// kernel's stack would never build.
pub struct RawSocket {
    fd: OwnedFd,
}

impl RawSocket {
    /// Opens one on the interface `ifindex` of `ns`.
    pub fn open(ns: &Netns, ifindex: u32) -> RawSocket {
        ns.enter(move || {
            // SAFETY: plain socket(2) call; the result is checked before use.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = 0; // send only: receive nothing
            sll.sll_ifindex = i32::try_from(ifindex).expect("ifindex fits in i32");
            let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `sll` is a valid sockaddr_ll of `len` bytes that outlives the call.
            let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(sll).cast(), len) };
            assert_eq!(rc, 0, "bind AF_PACKET socket: {}", std::io::Error::last_os_error());
            RawSocket { fd }
        })
    }

    /// Sends one frame as it is; panics unless the kernel took all of it.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: the pointer and length describe `frame`, which outlives the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            usize::try_from(n).ok(),
            Some(frame.len()),
            "sending a {}-byte raw frame: {}",
            frame.len(),
            std::io::Error::last_os_error()
        );
    }
}

/// The internet checksum of `bytes`.
pub fn inet_checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 + UDP frame (valid header checksum, UDP checksum 0 = none).
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(20 + 8 + payload.len()).expect("small payload");
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let csum = inet_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    let ulen = u16::try_from(8 + payload.len()).expect("small payload");
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&ulen.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// An Ethernet ARP request from `mac`/`ip` asking for `target`.
pub fn arp_request(mac: [u8; 6], sender_mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// A small deterministic PRNG for test data (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Receives datagrams on `sock` until one carrying exactly `marker` arrives; returns the
/// payloads that came before it. Panics if the marker never comes.
pub fn recv_until(sock: &UdpSocket, marker: &[u8]) -> Vec<Vec<u8>> {
    let mut before = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("waiting for the marker datagram: {e}"));
        if &buf[..n] == marker {
            return before;
        }
        before.push(buf[..n].to_vec());
    }
}
pub mod conntrack;
pub mod persist;
pub mod servers;
