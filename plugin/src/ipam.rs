//! Delegation to the IPAM plugin named by `ipam.type`: found in CNI_PATH, exec'd with the
//! plugin's own environment (CNI_COMMAND replaced) and the netconf on stdin.
//!
//! IPAM plugins can be older than the netconf (Debian's host-local 1.1.1 speaks up to 1.0.0
//! and has neither STATUS nor GC). The plugin asks the IPAM plugin's VERSION once and calls it
//! with the highest version both speak that is not newer than the netconf's.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;

use crate::error::CniError;
use crate::netconf::Loaded;
use crate::types::CniResult;
use crate::version::{self, Version};
use crate::{log_debug, log_warn};

/// What an empty pipe always takes without blocking: one page (Linux shrinks new pipes to one
/// page when a user is over `pipe-user-pages-soft`; the default is 16 pages).
const PIPE_MIN_CAPACITY: usize = 4096;

/// Finds `name` in the colon-separated `cni_path`: the first regular, executable file.
pub fn find_plugin(name: &str, cni_path: &str) -> Result<PathBuf, CniError> {
    for dir in cni_path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(CniError::Ipam { plugin: name.to_string(), msg: format!("not found in CNI_PATH {cni_path:?}") })
}

/// An IPAM plugin, ready to call.
#[derive(Debug)]
pub struct Ipam<'a> {
    name: String,
    exe: PathBuf,
    loaded: &'a Loaded,
    /// The version calls use.
    version: Version,
    /// Versions the plugin says it speaks (those the tapway plugin understands).
    supported: Vec<Version>,
}

#[derive(Deserialize)]
struct VersionInfo {
    #[serde(rename = "supportedVersions", default)]
    supported_versions: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// What IPAM plugins answered to VERSION, kept in the state directory
/// (`ipam-versions.json`) so that an invocation costs one exec of the IPAM plugin, not two.
/// Entries are keyed by the binary's path, device, inode, size and mtime: replacing or
/// upgrading the plugin invalidates its entry. Best effort: any failure means "ask again".
struct VersionCache {
    file: PathBuf,
    key: String,
}

impl VersionCache {
    fn new(state_dir: &str, exe: &Path) -> Option<VersionCache> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(exe).ok()?;
        let key = format!(
            "{}|{}|{}|{}|{}.{}",
            exe.display(),
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        );
        Some(VersionCache { file: Path::new(state_dir).join("ipam-versions.json"), key })
    }

    fn load(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        std::fs::read(&self.file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn get(&self) -> Option<Vec<String>> {
        self.load().remove(&self.key)
    }

    fn put(&self, versions: &[String]) {
        use std::os::unix::fs::DirBuilderExt;
        let Some(dir) = self.file.parent() else { return };
        if std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).is_err() {
            return;
        }
        let mut all = self.load();
        // Entries of replaced binaries of the same path are dropped.
        let path = self.key.split('|').next().unwrap_or_default().to_string();
        all.retain(|k, _| k.split('|').next() != Some(path.as_str()));
        all.insert(self.key.clone(), versions.to_vec());
        let tmp = dir.join(format!(".ipam-versions.json.{}", std::process::id()));
        let Ok(bytes) = serde_json::to_vec(&all) else { return };
        if std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &self.file)).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

impl<'a> Ipam<'a> {
    /// The IPAM plugin of this netconf, version negotiated; `None` when the netconf has no
    /// `ipam`.
    pub fn open(loaded: &'a Loaded, cni_path: &str) -> Result<Option<Ipam<'a>>, CniError> {
        let Some(name) = loaded.ipam_type().filter(|t| *t != crate::tapway_ipam::TYPE) else {
            // No IPAM, or tapwayd's own (sent with the attach, released with the detach).
            return Ok(None);
        };
        let exe = find_plugin(name, cni_path)?;
        let mut ipam = Ipam {
            name: name.to_string(),
            exe,
            loaded,
            version: loaded.version,
            supported: vec![loaded.version],
        };
        ipam.negotiate()?;
        Ok(Some(ipam))
    }

    /// The plugin's name (`ipam.type`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version calls use.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether the IPAM plugin speaks `v` (STATUS and GC need 1.1.0, CHECK 0.4.0).
    pub fn speaks(&self, v: Version) -> bool {
        self.version >= v && self.supported.contains(&v)
    }

    fn negotiate(&mut self) -> Result<(), CniError> {
        let cache = VersionCache::new(self.loaded.state_dir(), &self.exe);
        let versions = match cache.as_ref().and_then(VersionCache::get) {
            Some(v) => Some(v),
            None => {
                let stdin = format!("{{\"cniVersion\":\"{}\"}}", self.loaded.version);
                let info = self.exec("VERSION", &[], stdin.as_bytes()).and_then(|out| {
                    serde_json::from_slice::<VersionInfo>(&out)
                        .map_err(|e| self.fail(format!("VERSION: {e}")))
                });
                match info {
                    Ok(info) if !info.supported_versions.is_empty() => {
                        if let Some(c) = &cache {
                            c.put(&info.supported_versions);
                        }
                        Some(info.supported_versions)
                    }
                    _ => None,
                }
            }
        };
        let Some(versions) = versions else {
            // A plugin too old for VERSION: call it with the netconf's version, as the
            // reference library would.
            log_warn!("IPAM {} did not answer VERSION; calling it with {}", self.name, self.version);
            return Ok(());
        };
        self.supported = versions.iter().filter_map(|s| Version::parse(s)).collect();
        self.version = version::negotiate(self.loaded.version, &versions).ok_or_else(|| {
            CniError::IncompatibleVersion(format!(
                "IPAM plugin {} speaks {versions:?}, none of which works with config version {}",
                self.name, self.loaded.version
            ))
        })?;
        log_debug!("IPAM {} speaks {versions:?}; calling it with {}", self.name, self.version);
        Ok(())
    }

    fn fail(&self, msg: String) -> CniError {
        CniError::Ipam { plugin: self.name.clone(), msg }
    }

    /// IPAM ADD: the addresses, routes and DNS for the container.
    pub fn add(&self) -> Result<CniResult, CniError> {
        let out = self.exec("ADD", &[], &self.loaded.delegate_stdin(self.version)?)?;
        let value: Value = serde_json::from_slice(&out)
            .map_err(|e| self.fail(format!("ADD printed no JSON result: {e}")))?;
        CniResult::from_value(&value).map_err(|e| self.fail(format!("ADD result: {e}")))
    }

    /// IPAM DEL for this invocation's container, or (GC) for another one.
    pub fn del(&self, other: Option<(&str, &str)>) -> Result<(), CniError> {
        let vars: Vec<(&str, &str)> = match other {
            Some((cid, ifname)) => {
                vec![("CNI_CONTAINERID", cid), ("CNI_IFNAME", ifname), ("CNI_NETNS", ""), ("CNI_ARGS", "")]
            }
            None => Vec::new(),
        };
        self.exec("DEL", &vars, &self.loaded.delegate_stdin(self.version)?).map(drop)
    }

    /// IPAM CHECK; skipped (Ok) when the plugin predates CHECK.
    pub fn check(&self) -> Result<(), CniError> {
        if self.version < Version::V0_4_0 {
            return Ok(());
        }
        self.exec("CHECK", &[], &self.loaded.delegate_stdin(self.version)?).map(drop)
    }

    /// IPAM STATUS, when the plugin speaks 1.1.0; `Ok(false)` when it cannot be asked.
    pub fn status(&self) -> Result<bool, CniError> {
        if !self.speaks(Version::V1_1_0) {
            return Ok(false);
        }
        self.exec("STATUS", &[], &self.loaded.delegate_stdin(Version::V1_1_0)?).map(|_| true)
    }

    /// IPAM GC, when the plugin speaks 1.1.0; `Ok(false)` when it cannot be asked.
    pub fn gc(&self) -> Result<bool, CniError> {
        if !self.speaks(Version::V1_1_0) {
            return Ok(false);
        }
        self.exec("GC", &[], &self.loaded.delegate_stdin(Version::V1_1_0)?).map(|_| true)
    }

    /// Runs the plugin once and returns its stdout; a non-zero exit becomes the plugin's
    /// error object (code passed through) or, without one, a code-102 error.
    /// Talks to a running IPAM plugin whose stdin may not fit in a pipe: a writer thread feeds
    /// stdin while this thread reads stdout and a second one stderr, so neither side blocks.
    fn exec_large(
        &self,
        child: &mut std::process::Child,
        command: &str,
        stdin: &[u8],
    ) -> Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>), CniError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let io = std::thread::scope(|s| -> std::io::Result<()> {
            let mut child_in = child.stdin.take();
            let writer = s.spawn(move || -> std::io::Result<()> {
                if let Some(w) = child_in.as_mut() {
                    w.write_all(stdin)?;
                }
                Ok(())
            });
            let mut child_err = child.stderr.take();
            let err_ref = &mut err;
            let reader = s.spawn(move || {
                if let Some(e) = child_err.as_mut() {
                    let _ = e.read_to_end(err_ref);
                }
            });
            if let Some(o) = child.stdout.as_mut() {
                o.read_to_end(&mut out)?;
            }
            let _ = reader.join();
            // A plugin that exits without reading stdin (VERSION of some) closes the pipe.
            match writer.join() {
                Ok(Err(e)) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
                _ => Ok(()),
            }
        });
        let status = child.wait().map_err(|e| self.fail(format!("waiting for {command}: {e}")))?;
        io.map_err(|e| self.fail(format!("{command}: talking to the plugin: {e}")))?;
        Ok((status, out, err))
    }

    fn exec(&self, command: &str, vars: &[(&str, &str)], stdin: &[u8]) -> Result<Vec<u8>, CniError> {
        let started = Instant::now();
        let mut proc = Proc::new(&self.exe);
        proc.env("CNI_COMMAND", command).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in vars {
            proc.env(k, v);
        }
        let mut child =
            proc.spawn().map_err(|e| self.fail(format!("cannot run {}: {e}", self.exe.display())))?;
        let (status, out, err) = if stdin.len() <= PIPE_MIN_CAPACITY {
            // The usual case (a netconf is well under a page): the whole stdin fits in the
            // empty pipe, so it is written without blocking, and stdout and stderr are read
            // together by `wait_with_output` (poll) on this thread. No helper threads: on a
            // loaded node each one is a clone and a stack the kernel has to schedule.
            let written = match child.stdin.take() {
                Some(mut w) => w.write_all(stdin),
                None => Ok(()),
            };
            let output =
                child.wait_with_output().map_err(|e| self.fail(format!("waiting for {command}: {e}")))?;
            // A plugin that exits without reading stdin (VERSION of some) closes the pipe.
            match written {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(self.fail(format!("{command}: talking to the plugin: {e}")))
                }
                _ => (output.status, output.stdout, output.stderr),
            }
        } else {
            self.exec_large(&mut child, command, stdin)?
        };
        log_debug!(
            "IPAM {} {command} took {:.1} ms, exit {status}, stdout {:?}",
            self.name,
            started.elapsed().as_secs_f64() * 1000.0,
            String::from_utf8_lossy(&out)
        );
        let stderr_text = String::from_utf8_lossy(&err).trim().to_string();
        if !stderr_text.is_empty() {
            log_debug!("IPAM {} {command} stderr: {stderr_text}", self.name);
        }
        if status.success() {
            return Ok(out);
        }
        if let Ok(e) = serde_json::from_slice::<ErrorObject>(&out) {
            if !e.msg.is_empty() || e.code != 0 {
                return Err(CniError::IpamFailed {
                    plugin: self.name.clone(),
                    code: e.code,
                    msg: e.msg,
                    details: e.details,
                });
            }
        }
        let text = if stderr_text.is_empty() {
            String::from_utf8_lossy(&out).trim().to_string()
        } else {
            stderr_text
        };
        Err(self.fail(format!("{command} failed ({status}): {text}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::env::Command;

    /// Serialises these tests: writing an executable while another thread forks can make its
    /// exec fail with ETXTBSY (the child briefly holds the write descriptor).
    static EXEC_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn exec_lock() -> std::sync::MutexGuard<'static, ()> {
        EXEC_LOCK.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fake IPAM plugin: a shell script in a fresh directory.
    fn fake_plugin(name: &str, script: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "tapway-ipam-test-{}-{}-{}",
            std::process::id(),
            name,
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    /// A netconf whose state directory is a scratch one (never /var/lib/tapway).
    fn loaded(version: &str, ipam: &str) -> Loaded {
        let state = std::env::temp_dir().join(format!("tapway-ipam-test-{}-state", std::process::id()));
        let conf = format!(
            r#"{{"cniVersion":"{version}","name":"n","type":"tapway","stateDir":"{}","ipam":{{"type":"{ipam}"}}}}"#,
            state.display()
        );
        Loaded::parse(conf.as_bytes(), Command::Add).unwrap()
    }

    const HOST_LOCAL_LIKE: &str = r#"
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0"]}';;
ADD) v=$(sed -n 's/.*"cniVersion":"\([^"]*\)".*/\1/p'); echo "{\"cniVersion\":\"$v\",\"ips\":[{\"address\":\"10.9.0.5/24\",\"gateway\":\"10.9.0.1\"}],\"dns\":{}}";;
DEL) exit 0;;
CHECK) echo '{"code":999,"msg":"host-local: Failed to find address added by container x"}'; exit 1;;
*) echo '{"code":4,"msg":"unknown command"}'; exit 1;;
esac"#;

    #[test]
    fn finds_plugins_in_path_order() {
        let _serial = exec_lock();
        let dir = fake_plugin("fake-ipam", "exit 0");
        let path = format!("/nonexistent::{}:/usr/bin", dir.display());
        assert_eq!(find_plugin("fake-ipam", &path).unwrap(), dir.join("fake-ipam"));
        let e = find_plugin("no-such-ipam", &path).unwrap_err();
        assert_eq!(e.code(), 102);
        std::fs::write(dir.join("not-exec"), "x").unwrap();
        assert!(find_plugin("not-exec", &dir.display().to_string()).is_err());
    }

    #[test]
    fn negotiates_and_adds() {
        let _serial = exec_lock();
        let dir = fake_plugin("hl", HOST_LOCAL_LIKE);
        let l = loaded("1.1.0", "hl");
        let ipam = Ipam::open(&l, &dir.display().to_string()).unwrap().unwrap();
        assert_eq!(ipam.version(), Version(1, 0, 0));
        assert!(!ipam.speaks(Version::V1_1_0));
        assert!(!ipam.status().unwrap());
        assert!(!ipam.gc().unwrap());
        let r = ipam.add().unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.9.0.5/24");
        ipam.del(None).unwrap();
        ipam.del(Some(("other", "eth0"))).unwrap();
        let e = ipam.check().unwrap_err();
        assert_eq!(e.code(), 999);
        assert!(e.to_string().contains("Failed to find address"), "{e}");

        let old = loaded("0.3.1", "hl");
        let ipam = Ipam::open(&old, &dir.display().to_string()).unwrap().unwrap();
        assert_eq!(ipam.version(), Version(0, 3, 1));
        assert!(ipam.check().is_ok(), "0.3.1 has no CHECK");
        let _ = std::fs::remove_dir_all(old.state_dir());
    }

    #[test]
    fn version_answers_are_cached_per_binary() {
        let _serial = exec_lock();
        let dir = fake_plugin(
            "counted",
            r#"echo x >> "$(dirname "$0")/calls"; echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'"#,
        );
        let l = loaded("1.1.0", "counted");
        let path = dir.display().to_string();
        let calls = || std::fs::read_to_string(dir.join("calls")).unwrap_or_default().lines().count();
        for _ in 0..3 {
            assert_eq!(Ipam::open(&l, &path).unwrap().unwrap().version(), Version(1, 0, 0));
        }
        assert_eq!(calls(), 1, "VERSION asked once");
        // A new binary at the same path is asked again.
        let exe = dir.join("counted");
        let text = std::fs::read_to_string(&exe).unwrap().replace("0.4.0", "0.3.1\",\"0.4.0");
        std::fs::write(&exe, text).unwrap();
        let ipam = Ipam::open(&l, &path).unwrap().unwrap();
        assert_eq!(calls(), 2);
        assert!(ipam.supported.contains(&Version(0, 3, 1)));
        let cache: serde_json::Value = serde_json::from_slice(
            &std::fs::read(Path::new(l.state_dir()).join("ipam-versions.json")).unwrap(),
        )
        .unwrap();
        let keys: Vec<&String> =
            cache.as_object().unwrap().keys().filter(|k| k.contains("counted")).collect();
        assert_eq!(keys.len(), 1, "the old binary's entry is gone: {cache}");
        let _ = std::fs::remove_dir_all(l.state_dir());
    }

    #[test]
    fn status_and_gc_when_the_plugin_speaks_1_1_0() {
        let _serial = exec_lock();
        let dir = fake_plugin(
            "modern",
            r#"case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}';;
*) echo "$CNI_COMMAND $(cat)" >> "$(dirname "$0")/calls";;
esac"#,
        );
        let mut l = loaded("1.1.0", "modern");
        l.raw.insert(
            "cni.dev/valid-attachments".into(),
            serde_json::json!([{"containerID": "c1", "ifname": "eth0"}]),
        );
        let ipam = Ipam::open(&l, &dir.display().to_string()).unwrap().unwrap();
        assert!(ipam.speaks(Version::V1_1_0));
        assert!(ipam.status().unwrap());
        assert!(ipam.gc().unwrap());
        let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
        let lines: Vec<&str> = calls.lines().collect();
        assert!(lines[0].starts_with("STATUS {"), "{calls}");
        assert!(lines[1].starts_with("GC {") && lines[1].contains("valid-attachments"), "{calls}");
        assert!(lines[1].contains(r#""cniVersion":"1.1.0""#), "{calls}");
        let _ = std::fs::remove_dir_all(l.state_dir());
    }

    #[test]
    fn stdin_of_any_size_reaches_the_plugin() {
        let _serial = exec_lock();
        // Echoes the size of its stdin in the result, and writes 100 KiB to stderr and reads
        // stdin only after that, so a writer that blocked on stdin before reading would hang.
        let dir = fake_plugin(
            "sizer",
            r#"case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}';;
ADD) head -c 102400 /dev/zero >&2; n=$(wc -c); echo "{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.9.0.5/24\"}],\"dns\":{\"domain\":\"n$n\"}}";;
esac"#,
        );
        for pad in [10, 3000, 200_000] {
            let mut l = loaded("1.0.0", "sizer");
            l.raw.insert("pad".into(), serde_json::Value::String("x".repeat(pad)));
            let expect = serde_json::to_vec(&l.raw).unwrap().len();
            let ipam = Ipam::open(&l, &dir.display().to_string()).unwrap().unwrap();
            let r = ipam.add().unwrap();
            let got: usize = r.dns.domain.trim_start_matches('n').trim().parse().unwrap();
            // The plugin's stdin is the netconf re-encoded (cniVersion may be rewritten).
            assert!(
                got + 64 > expect && got > pad,
                "pad {pad}: plugin read {got} bytes, netconf is {expect}"
            );
            let _ = std::fs::remove_dir_all(l.state_dir());
        }
    }

    #[test]
    fn broken_plugins() {
        let _serial = exec_lock();
        let dir = fake_plugin("junk", "echo 'not json'; echo 'boom' >&2; exit 3");
        let l = loaded("1.0.0", "junk");
        let ipam = Ipam::open(&l, &dir.display().to_string()).unwrap().unwrap();
        assert_eq!(ipam.version(), Version(1, 0, 0), "falls back to the netconf's version");
        let e = ipam.add().unwrap_err();
        assert_eq!(e.code(), 102);
        assert!(e.to_string().contains("boom"), "{e}");

        let dir = fake_plugin("garbage", "cat >/dev/null; echo '[]'");
        let l = loaded("1.0.0", "garbage");
        let ipam = Ipam::open(&l, &dir.display().to_string()).unwrap().unwrap();
        assert_eq!(ipam.add().unwrap_err().code(), 102);

        let dir = fake_plugin("newonly", r#"echo '{"cniVersion":"1.1.0","supportedVersions":["1.1.0"]}'"#);
        let l = loaded("0.4.0", "newonly");
        assert_eq!(Ipam::open(&l, &dir.display().to_string()).unwrap_err().code(), 1);
        let _ = std::fs::remove_dir_all(l.state_dir());
    }
}
