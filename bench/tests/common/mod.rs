//! Harness of tapway-bench's root integration tests: skip rules and network namespaces that
//! remove themselves.
//!
//! The tests need root and `ip`. Without them each test prints `SKIP: …` and passes, unless
//! `TAPWAY_IT_REQUIRE=1` (set by scripts/test.sh as root), which turns a skip into a failure.
//! Names are unique per process and call (`twbt<pid>x<n>…`), and every namespace is deleted by a
//! Drop guard, so a failing test leaves nothing behind. Traffic stays inside these namespaces.

#![allow(dead_code, clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True (after printing SKIP) when the machine cannot run root tests; panics instead under
/// `TAPWAY_IT_REQUIRE=1`.
pub fn skip() -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        Some("needs root")
    } else if !Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        Some("needs iproute2 (`ip`)")
    } else {
        None
    };
    match why {
        None => false,
        Some(w) => {
            assert!(
                std::env::var("TAPWAY_IT_REQUIRE").as_deref() != Ok("1"),
                "integration test cannot run: {w} (TAPWAY_IT_REQUIRE=1)"
            );
            println!("SKIP: {w}");
            true
        }
    }
}

/// A unique name prefix.
pub fn unique() -> String {
    format!("twbt{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Runs `ip args…`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Two namespaces `<tag>a` and `<tag>b` joined by a veth pair, both ends `eth0`, with
/// 10.213.9.1/24 and 10.213.9.2/24; deleted on drop.
pub struct VethPair {
    /// Sender namespace.
    pub a: String,
    /// Receiver namespace.
    pub b: String,
}

impl VethPair {
    pub fn new() -> VethPair {
        let tag = unique();
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        ip(&["netns", "add", &a]);
        let mut pair = VethPair { a: a.clone(), b: String::new() };
        ip(&["netns", "add", &b]);
        pair.b = b.clone();
        ip(&["-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b]);
        for (ns, addr) in [(&a, "10.213.9.1/24"), (&b, "10.213.9.2/24")] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        pair
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            if !ns.is_empty() {
                let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            }
        }
    }
}

/// Namespaces whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}
