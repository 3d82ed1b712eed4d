//! Helpers of the attach-lifecycle tests (`hostile_attach.rs`, `ipam.rs`): tapwayctl as a user runs it,
//! a tapwayd that kills itself at a crash point, and the check that a victim pod is untouched.

use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::sync::{Mutex, MutexGuard};

use super::*;

/// One test at a time in a binary that sets `TAPWAY_FAILPOINT` in its own environment (which
/// every tapwayd it spawns inherits): no other test may start a daemon meanwhile.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the binary-wide test lock.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the real `tapwayctl --socket <node's> args…`.
pub fn tapwayctl(node: &Node, args: &[&str]) -> Output {
    let socket = node.socket.display().to_string();
    let mut all = vec!["--socket", socket.as_str()];
    all.extend_from_slice(args);
    run(env!("CARGO_BIN_EXE_tapwayctl"), &all)
}

/// Restarts `node`'s tapwayd with `TAPWAY_FAILPOINT=point`, so that it SIGKILLs itself when
/// the next attach reaches `point`. The caller holds [`serial`].
pub fn restart_with_failpoint(node: &mut Node, point: &str) {
    std::env::set_var("TAPWAY_FAILPOINT", point);
    node.restart(&[]);
    std::env::remove_var("TAPWAY_FAILPOINT");
}

/// The crash points of an attach, in order (see `switch/src/failpoint.rs`).
pub const POINTS: [&str; 5] = [
    "attach:before_tap",
    "attach:after_tap",
    "attach:after_config",
    "attach:after_save",
    "attach:after_publish",
];

/// Restarts `node` with its crash point at `point` and sends it `req`, which it must not
/// answer (it SIGKILLs itself at `point`); returns once it is dead. The caller holds [`serial`].
pub fn attach_killed_at(node: &mut Node, point: &str, req: &tapway_api::AttachRequest) {
    restart_with_failpoint(node, point);
    let r = node.client.call::<tapway_api::PortInfo>(tapway_api::Op::Attach(req.clone()));
    assert!(
        matches!(r, Err(tapway_api::ClientError::Io(_) | tapway_api::ClientError::NoAnswer)),
        "{point}: {r:?}"
    );
    assert_killed(node, point);
}

/// Waits for the daemon that hit its crash point and asserts it died of SIGKILL.
pub fn assert_killed(node: &mut Node, point: &str) {
    let status = node.stop().expect("the daemon was running");
    assert_eq!(
        status.signal(),
        Some(libc_sigkill()),
        "{point}: tapwayd ended with {status}:\n{}",
        node.log()
    );
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

/// The victim keeps its traffic (`peer` pings each of `addrs`) and its FDB entry.
pub fn assert_victim_intact(node: &Node, victim: &Pod, peer: &Pod, addrs: &[&str]) {
    for a in addrs {
        peer.ns.ping(a);
    }
    let fdb = node.fdb();
    let entry = fdb.iter().find(|e| e.mac == victim.port.mac);
    assert_eq!(
        entry.map(|e| e.port),
        Some(victim.port.id),
        "the victim's MAC {} must stay on its port {}: {fdb:?}",
        victim.port.mac,
        victim.port.id
    );
}
