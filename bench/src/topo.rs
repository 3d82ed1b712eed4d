//! The topologies a scenario measures, each built in fresh, uniquely named network namespaces
//! and torn down by a [`Teardown`] (RAII):
//!
//! - `veth`: two namespaces joined by a veth pair. No switch: the generator-only rate.
//! - `tapway`: a node namespace running tapwayd, two pod namespaces attached through the real
//!   CNI plugin binary (`tapway`) with Debian's host-local IPAM, exec'd the way libcni does.
//! - `bridge`: the reference: a node namespace where Debian's `bridge` plugin (with host-local)
//!   builds a Linux bridge and veths for two pod namespaces.
//!
//! The same approach as bench/lib.sh: plugins exec'd with `CNI_*` in the environment and the
//! netconf on stdin; the bridge plugin runs inside the node namespace so that nothing is created
//! in the machine's root namespace. Every name carries the run's tag (`twr<pid>…`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use thiserror::Error;

use crate::teardown::Teardown;

/// Debian's reference CNI plugins.
pub const CNI_DIR: &str = "/usr/lib/cni";

/// Why a topology could not be built.
#[derive(Debug, Error)]
pub enum TopoError {
    /// A command could not be started.
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    /// A command failed.
    #[error("`{cmd}` failed: {msg}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its stderr/stdout, shortened.
        msg: String,
    },
    /// tapwayd did not answer on its socket.
    #[error("tapwayd did not come up on {0}; its log: {1}")]
    Daemon(String, String),
    /// A CNI result made no sense.
    #[error("CNI {0}: {1}")]
    Cni(String, String),
    /// A file could not be written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Which data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A plain veth pair: the generator's ceiling.
    Veth,
    /// tapwayd with the tapway CNI plugin.
    Tapway,
    /// The reference Linux bridge CNI.
    Bridge,
}

impl Kind {
    /// Stable lowercase name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Veth => "veth",
            Kind::Tapway => "tapway",
            Kind::Bridge => "bridge",
        }
    }
}

/// One end of the path.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Netns name (under /run/netns).
    pub netns: String,
    /// Interface inside it.
    pub ifname: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
}

/// A built topology: two pods and what must be undone.
#[derive(Debug)]
pub struct Topology {
    /// Which data path.
    pub kind: Kind,
    /// Sender side.
    pub a: Pod,
    /// Receiver side.
    pub b: Pod,
    /// tapwayd's pid (tapway only), for its CPU time.
    pub daemon_pid: Option<u32>,
    /// How the pods were attached.
    pub attach: String,
    teardown: Teardown,
}

/// Where the binaries and the run's files are.
#[derive(Debug, Clone)]
pub struct Env {
    /// Directory with tapwayd, tapwayctl and tapway.
    pub bin_dir: PathBuf,
    /// Per-run work directory (sockets, IPAM data, logs).
    pub work: PathBuf,
    /// Prefix of every name (`twr<pid>`).
    pub tag: String,
    /// `--cores` for tapwayd (empty: one unpinned worker).
    pub tapwayd_cores: String,
    /// tapwayd poll mode.
    pub poll_mode: String,
}

fn cmdline(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

fn short(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    if s.len() > 600 {
        let mut end = 600;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

/// Runs a command to completion; its stdout on success.
pub fn run(program: &str, args: &[&str]) -> Result<String, TopoError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TopoError::Spawn(program.into(), e))?;
    if !out.status.success() {
        let mut msg = short(&out.stderr);
        if msg.is_empty() {
            msg = short(&out.stdout);
        }
        return Err(TopoError::Failed {
            cmd: cmdline(program, args),
            msg: format!("{} ({msg})", out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Creates netns `name` (lo up) and registers its deletion.
fn add_netns(t: &mut Teardown, name: &str) -> Result<(), TopoError> {
    run("ip", &["netns", "add", name])?;
    let n = name.to_string();
    t.push(format!("netns {name}"), move || quiet("ip", &["netns", "del", &n]));
    run("ip", &["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Stops a child: SIGTERM, up to 5 s, then SIGKILL; always reaped.
pub fn stop_child(mut c: Child) {
    if let Ok(pid) = i32::try_from(c.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Execs a CNI plugin the way libcni does. `runner`: netns to run the plugin in (the node).
fn cni(
    runner: Option<&str>,
    plugin: &Path,
    command: &str,
    cid: &str,
    pod_netns: &str,
    conf: &str,
    cni_path: &str,
) -> Result<String, TopoError> {
    let mut cmd = match runner {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(plugin);
            c
        }
        None => Command::new(plugin),
    };
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", format!("/run/netns/{pod_netns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let name = plugin.display().to_string();
    let mut child = cmd.spawn().map_err(|e| TopoError::Spawn(name.clone(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(conf.as_bytes()).map_err(|e| TopoError::Io(format!("{name} stdin"), e))?;
    }
    let out = child.wait_with_output().map_err(|e| TopoError::Spawn(name.clone(), e))?;
    if !out.status.success() {
        return Err(TopoError::Cni(
            format!("{command} {pod_netns} via {name}"),
            format!("{} {}", short(&out.stdout), short(&out.stderr)),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// First IPv4 address of a CNI result.
pub fn result_ipv4(result: &str) -> Option<Ipv4Addr> {
    let v: Value = serde_json::from_str(result).ok()?;
    v.get("ips")?.as_array()?.iter().find_map(|ip| {
        let a = ip.get("address")?.as_str()?;
        a.split('/').next()?.parse::<Ipv4Addr>().ok()
    })
}

/// The netconf of the tapway network (as bench/lib.sh's `tapway_netconf`).
pub fn tapway_netconf(sock: &Path, state: &Path, ipam: &Path, subnet: &str, gw: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "benchnet", "type": "tapway",
        "socket": sock, "stateDir": state,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet, "gateway": gw}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ipam}
    })
    .to_string()
}

/// The netconf of the reference bridge network (as bench/lib.sh's `bridge_netconf`).
pub fn bridge_netconf(bridge: &str, ipam: &Path, subnet: &str, gw: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "benchbr", "type": "bridge", "bridge": bridge,
        "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet, "gateway": gw}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ipam}
    })
    .to_string()
}

impl Topology {
    /// Builds `kind` with names from `env.tag`.
    pub fn build(kind: Kind, env: &Env) -> Result<Topology, TopoError> {
        match kind {
            Kind::Veth => Self::veth(env),
            Kind::Tapway => Self::tapway(env),
            Kind::Bridge => Self::bridge(env),
        }
    }

    fn veth(env: &Env) -> Result<Topology, TopoError> {
        let mut t = Teardown::default();
        let (na, nb) = (format!("{}v1", env.tag), format!("{}v2", env.tag));
        add_netns(&mut t, &na)?;
        add_netns(&mut t, &nb)?;
        run("ip", &["-n", &na, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &nb])?;
        for (ns, ip) in [(&na, "10.213.3.1/24"), (&nb, "10.213.3.2/24")] {
            run("ip", &["-n", ns, "addr", "add", ip, "dev", "eth0"])?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(Topology {
            kind: Kind::Veth,
            a: Pod { netns: na, ifname: "eth0".into(), ip: Ipv4Addr::new(10, 213, 3, 1) },
            b: Pod { netns: nb, ifname: "eth0".into(), ip: Ipv4Addr::new(10, 213, 3, 2) },
            daemon_pid: None,
            attach: "veth pair".into(),
            teardown: t,
        })
    }

    fn tapway(env: &Env) -> Result<Topology, TopoError> {
        let mut t = Teardown::default();
        let node = format!("{}tn", env.tag);
        add_netns(&mut t, &node)?;
        let dir = env.work.join("tapway");
        std::fs::create_dir_all(&dir).map_err(|e| TopoError::Io(dir.display().to_string(), e))?;
        let sock = dir.join("tapway.sock");
        let log = dir.join("tapwayd.log");
        let logf = std::fs::File::create(&log).map_err(|e| TopoError::Io(log.display().to_string(), e))?;
        let logf2 = logf.try_clone().map_err(|e| TopoError::Io(log.display().to_string(), e))?;
        let tapwayd = env.bin_dir.join("tapwayd");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node])
            .arg(&tapwayd)
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--pod-cidr", "10.213.1.0/24", "--poll-mode", &env.poll_mode, "--log-level", "warn"]);
        if !env.tapwayd_cores.is_empty() {
            cmd.args(["--cores", &env.tapwayd_cores]);
        }
        // Own process group: a terminal's Ctrl-C reaches tapway-bench only, which then tears
        // down in order (CNI DEL before the daemon stops).
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(logf)
            .stderr(logf2)
            .spawn()
            .map_err(|e| TopoError::Spawn(tapwayd.display().to_string(), e))?;
        let pid = child.id();
        // `ip netns exec` execs tapwayd, so the child's pid is the daemon's.
        let holder = std::sync::Arc::new(std::sync::Mutex::new(Some(child)));
        let h2 = holder.clone();
        t.push("tapwayd", move || {
            if let Some(c) = h2.lock().unwrap_or_else(|e| e.into_inner()).take() {
                stop_child(c);
            }
        });
        let ctl = env.bin_dir.join("tapwayctl");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = Command::new(&ctl)
                .arg("--socket")
                .arg(&sock)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            let exited = holder
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() >= deadline {
                let l = std::fs::read(&log).unwrap_or_default();
                return Err(TopoError::Daemon(sock.display().to_string(), short(&l)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let plugin = env.bin_dir.join("tapway");
        let conf =
            tapway_netconf(&sock, &dir.join("cni-state"), &dir.join("ipam"), "10.213.1.0/24", "10.213.1.1");
        let cni_path = format!("{CNI_DIR}:{}", env.bin_dir.display());
        let mut pods = Vec::new();
        for i in 1..=2 {
            let ns = format!("{}t{i}", env.tag);
            add_netns(&mut t, &ns)?;
            let cid = format!("{}-t{i}", env.tag);
            let (p, c, n, cp) = (plugin.clone(), conf.clone(), ns.clone(), cni_path.clone());
            let c2 = cid.clone();
            t.push(format!("CNI DEL {ns}"), move || {
                let _ = cni(None, &p, "DEL", &c2, &n, &c, &cp);
            });
            let res = cni(None, &plugin, "ADD", &cid, &ns, &conf, &cni_path)?;
            let ip = result_ipv4(&res)
                .ok_or_else(|| TopoError::Cni(format!("ADD {ns}"), format!("no IPv4 address in {res}")))?;
            pods.push(Pod { netns: ns, ifname: "eth0".into(), ip });
        }
        let b = pods.pop().ok_or_else(|| TopoError::Cni("ADD".into(), "no pod".into()))?;
        let a = pods.pop().ok_or_else(|| TopoError::Cni("ADD".into(), "no pod".into()))?;
        Ok(Topology {
            kind: Kind::Tapway,
            a,
            b,
            daemon_pid: Some(pid),
            attach: format!("CNI plugin {} + host-local", plugin.display()),
            teardown: t,
        })
    }

    fn bridge(env: &Env) -> Result<Topology, TopoError> {
        let mut t = Teardown::default();
        let node = format!("{}bn", env.tag);
        add_netns(&mut t, &node)?;
        let dir = env.work.join("bridge");
        std::fs::create_dir_all(&dir).map_err(|e| TopoError::Io(dir.display().to_string(), e))?;
        let plugin = PathBuf::from(CNI_DIR).join("bridge");
        let conf =
            bridge_netconf(&format!("{}br", env.tag), &dir.join("ipam"), "10.213.2.0/24", "10.213.2.1");
        let mut pods = Vec::new();
        for i in 1..=2 {
            let ns = format!("{}b{i}", env.tag);
            add_netns(&mut t, &ns)?;
            let cid = format!("{}-b{i}", env.tag);
            let (p, c, n, nd) = (plugin.clone(), conf.clone(), ns.clone(), node.clone());
            let c2 = cid.clone();
            t.push(format!("CNI DEL {ns}"), move || {
                let _ = cni(Some(&nd), &p, "DEL", &c2, &n, &c, CNI_DIR);
            });
            let res = cni(Some(&node), &plugin, "ADD", &cid, &ns, &conf, CNI_DIR)?;
            let ip = result_ipv4(&res)
                .ok_or_else(|| TopoError::Cni(format!("ADD {ns}"), format!("no IPv4 address in {res}")))?;
            pods.push(Pod { netns: ns, ifname: "eth0".into(), ip });
        }
        let b = pods.pop().ok_or_else(|| TopoError::Cni("ADD".into(), "no pod".into()))?;
        let a = pods.pop().ok_or_else(|| TopoError::Cni("ADD".into(), "no pod".into()))?;
        Ok(Topology {
            kind: Kind::Bridge,
            a,
            b,
            daemon_pid: None,
            attach: format!("CNI plugin {} + host-local, run in the node netns", plugin.display()),
            teardown: t,
        })
    }

    /// Pings b from a until it answers (at most ~5 s): the path works before it is measured.
    pub fn check(&self) -> Result<(), TopoError> {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.a.netns,
                "ping",
                "-n",
                "-q",
                "-c",
                "2",
                "-i",
                "0.2",
                "-w",
                "5",
                &self.b.ip.to_string(),
            ],
        )
        .map(|_| ())
    }

    /// Tears down now (also done on drop).
    pub fn teardown(mut self) {
        self.teardown.run();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn first_ipv4_of_a_cni_result() {
        let r = r#"{"cniVersion":"1.0.0","ips":[{"address":"fd00::5/64"},{"address":"10.213.1.7/24","gateway":"10.213.1.1"}]}"#;
        assert_eq!(result_ipv4(r), Some(Ipv4Addr::new(10, 213, 1, 7)));
        assert_eq!(result_ipv4(r#"{"ips":[{"address":"fd00::5/64"}]}"#), None);
        assert_eq!(result_ipv4("not json"), None);
    }

    #[test]
    fn netconfs_name_the_plugin_and_host_local() {
        let t: Value = serde_json::from_str(&tapway_netconf(
            Path::new("/s.sock"),
            Path::new("/st"),
            Path::new("/ipam"),
            "10.0.0.0/24",
            "10.0.0.1",
        ))
        .unwrap();
        assert_eq!(t["type"], "tapway");
        assert_eq!(t["socket"], "/s.sock");
        assert_eq!(t["ipam"]["type"], "host-local");
        assert_eq!(t["ipam"]["ranges"][0][0]["subnet"], "10.0.0.0/24");
        assert_eq!(t["ipam"]["dataDir"], "/ipam");
        let b: Value =
            serde_json::from_str(&bridge_netconf("br0", Path::new("/ipam2"), "10.0.1.0/24", "10.0.1.1"))
                .unwrap();
        assert_eq!(b["type"], "bridge");
        assert_eq!(b["bridge"], "br0");
        assert_eq!(b["isGateway"], true);
        assert_eq!(b["ipam"]["ranges"][0][0]["gateway"], "10.0.1.1");
    }
}
