//! The state files, written atomically (temp file, rename) after every change:
//! - `<state-dir>/state.json`: every pod port with its netns, ifname, MAC, addresses and owner.
//!   A restarted tapwayd re-opens the pods' persistent TAPs from it ([`Control::restore`]), so
//!   pods keep their interfaces, addresses and traffic across a daemon restart without being
//!   recreated.
//! - `<state-dir>/services.json`: every service port, re-programmed at start. A file of its
//!   own, because it can be megabytes (10,000 services) and must not be rewritten on every pod
//!   attach.
//!
//! Both are created 0600 in a directory created 0700. A change is written before it is
//! answered as done, and a failed write (full disk, read-only or failing filesystem) is the
//! change's error: an attach is published only once its record is written, so no pod is ever
//! attached without a record that survives a restart.
//!
//! The `version` field is checked on load ([`load`]): a file of an unknown (newer) version
//! stops the daemon before it touches anything, and the file is left as it is. A file that is
//! not JSON (truncated by a power loss: the writes are not fsynced) is moved aside to
//! `<name>.unreadable` and the daemon starts empty.
//!
//! A recorded pod port whose netns or interface cannot be re-opened at start is kept as
//! *lost*: a placeholder entry holds its port number, MAC and addresses in the port table
//! (so it stays in the state file, and nobody else is attached with them), frames to it are
//! dropped (`port_gone`), and [`Control::retry_lost`] tries it again with a backoff. It is
//! published as before once it opens; a DEL or GC removes it like any port. It never goes by
//! itself: a netns path that is gone for good means the pod is gone, and its DEL or the next
//! GC will say so.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tapway_api::{ApiError, ErrorCode, IpamRecord, LostInfo, LostPort, PortInfo, ServiceSpec};

use super::{api_err, port_info, Control};
use crate::netlink::Netlink;
use crate::netns;
use crate::pool::{Frame, LocalPool};
use crate::port::tap::TapPort;
use crate::port::{PortError, PortIo};
use crate::table::{PortEntry, PortKind, PortMeta, PortTable};
use crate::wire::Mac;

/// Format version of the state files. Versions below it would be migrated on load (there
/// are none yet); versions above it are refused.
pub const STATE_VERSION: u32 = 1;

/// Longest wait between two attempts to re-open a lost port.
pub const LOST_RETRY_MAX: Duration = Duration::from_secs(10);

/// What the state file holds.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Pod ports.
    pub ports: Vec<PortInfo>,
    /// The standalone IPAM plugin's allocations ([`super::ipam`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<IpamRecord>,
    /// Each range set's last allocated address (the round robin's position).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ipam_last: BTreeMap<String, std::net::IpAddr>,
}

/// What the services file holds.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServicesFile {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Service ports.
    pub services: Vec<ServiceSpec>,
}

/// Why the state files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file has a format version this tapwayd does not know (a newer tapwayd wrote it).
    #[error(
        "{path} has format version {found}, and this tapwayd reads version {STATE_VERSION} only; \
         not starting, so as not to overwrite it (run the tapwayd that wrote it, or move the file away)"
    )]
    Version {
        /// The file.
        path: String,
        /// The version in it (0 when absent).
        found: u64,
    },
    /// Reading, writing or moving the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What the state files held at start, for [`Control::restore`].
#[derive(Debug, Default)]
pub struct Saved {
    /// Pod ports.
    pub ports: Vec<PortInfo>,
    /// Service ports.
    pub services: Vec<ServiceSpec>,
    /// IPAM allocations and positions.
    pub ipam: super::ipam::IpamBook,
}

/// Reads the state files of `dir`, checking their versions (see the module doc). Missing
/// files read as empty.
pub fn load(dir: &Path) -> Result<Saved, StateError> {
    let state = read_versioned::<State>(&dir.join("state.json"))?.unwrap_or_default();
    let services =
        read_versioned::<ServicesFile>(&dir.join("services.json"))?.map(|s| s.services).unwrap_or_default();
    let ipam = super::ipam::IpamBook {
        records: state.allocations.into_iter().map(|r| (r.key.clone(), r)).collect(),
        last: state.ipam_last,
    };
    Ok(Saved { ports: state.ports, services, ipam })
}

/// What the bytes of a state file hold ([`decode`]).
#[derive(Debug, PartialEq)]
pub enum Decoded<T> {
    /// A file of [`STATE_VERSION`].
    Current(T),
    /// A file of another version (0 when it has none).
    Version(u64),
    /// Not a state file: not JSON, or not of the shape its version says.
    Unreadable(String),
}

/// Decodes a state file (`state.json` as [`State`], `services.json` as [`ServicesFile`]),
/// checking its version before its shape. Never panics (a fuzz target's entry).
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Decoded<T> {
    #[derive(Deserialize)]
    struct Head {
        version: Option<serde_json::Value>,
    }
    let head = match serde_json::from_slice::<Head>(bytes) {
        Ok(h) => h,
        Err(e) => return Decoded::Unreadable(e.to_string()),
    };
    let found = head.version.as_ref().map_or(Some(0), |v| v.as_u64()).unwrap_or(0);
    // Older known versions would be migrated here, before the typed parse.
    if found != u64::from(STATE_VERSION) {
        return Decoded::Version(found);
    }
    match serde_json::from_slice::<T>(bytes) {
        Ok(v) => Decoded::Current(v),
        Err(e) => Decoded::Unreadable(e.to_string()),
    }
}

fn read_versioned<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let shown = path.display().to_string();
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path: shown, source }),
    };
    match decode::<T>(&bytes) {
        Decoded::Current(v) => {
            // A file an older tapwayd wrote 0644 is made private now, not at the next change.
            if let Ok(m) = fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
                }
            }
            Ok(Some(v))
        }
        Decoded::Version(found) => Err(StateError::Version { path: shown, found }),
        Decoded::Unreadable(why) => {
            let aside = PathBuf::from(format!("{shown}.unreadable"));
            fs::rename(path, &aside).map_err(|source| StateError::Io { path: shown.clone(), source })?;
            tracing::error!(path = %shown, moved_to = %aside.display(), error = %why, "unreadable state file moved aside; starting without it");
            Ok(None)
        }
    }
}

/// Writes `bytes` to `path` atomically: a reader (a restarted tapwayd) sees the old or the new
/// file, never a mix, whenever this process dies. The file is 0600 and a directory it creates
/// 0700 (they name every pod's netns and addresses). On failure the temp file is removed and
/// the old file is left as it was.
///
/// No fsync: the file describes TAPs and netns that live in the running kernel, so it only
/// has to survive a tapwayd restart, which the page cache does; after a power loss or a
/// reboot there is nothing left to restore, and a truncated file is then moved aside by
/// [`load`]. The two fsyncs cost 3-12 ms per attach and detach on a loaded VM, more than the
/// rest of the attach.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        // A temp file left by an older tapwayd keeps its mode through open(2).
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// A recorded pod port that could not be re-opened.
struct Lost {
    /// The placeholder in the port table; the record is stale once the table holds another.
    entry: Arc<PortEntry>,
    info: PortInfo,
    mac: Mac,
    ips: Vec<IpNet>,
    reason: String,
    since: u64,
    attempts: u32,
    next: Instant,
}

/// The lost ports, by port number ([`Control::retry_lost`]).
#[derive(Default)]
pub struct LostPorts(BTreeMap<u16, Lost>);

/// How long to wait after the `attempts`-th failed attempt: 1, 2, 4, 8, then 10 s.
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(6)).min(LOST_RETRY_MAX)
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The I/O of a lost port: never readable (an eventfd nobody writes, so its worker sleeps as
/// usual), and every frame sent to it is dropped as `port_gone`.
struct LostIo {
    idle: Option<nix::sys::eventfd::EventFd>,
}

impl PortIo for LostIo {
    fn recv_frame(&self, _worker: usize, _pool: &mut LocalPool) -> Result<Option<Frame>, PortError> {
        Ok(None)
    }

    fn send(&self, _worker: usize, _frame: &[u8]) -> Result<(), PortError> {
        Err(PortError::Gone)
    }

    fn readiness_fd(&self, _worker: usize) -> Option<RawFd> {
        self.idle.as_ref().map(|e| e.as_raw_fd())
    }
}

/// The MAC and addresses of a record; an error when the record itself is unusable.
fn parse_record(info: &PortInfo) -> Result<(Mac, Vec<IpNet>), String> {
    use tapway_api::validate;
    let mac = validate::mac(&info.mac).map_err(|e| e.0)?;
    let ips = info.ips.iter().map(|i| validate::cidr(i).map_err(|e| e.0)).collect::<Result<Vec<_>, _>>()?;
    if info.id == 0 {
        return Err("port number 0 is the host port's".into());
    }
    Ok((mac, ips))
}

impl Control {
    fn state_error(&self, path: &Path, e: &std::io::Error) -> ApiError {
        tracing::error!(path = %path.display(), error = %e, "cannot write the state file");
        api_err(ErrorCode::System, format!("cannot write the state file {}: {e}", path.display()))
    }

    /// Saves the pod ports; the error (full disk...) is the caller's to answer.
    pub fn save_state(&self) -> Result<(), ApiError> {
        let _one_writer = self.save_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.write_ports(&self.switch.ports())
    }

    /// Records `entry` in the state file and only then publishes it to the workers, under the
    /// writers' lock (so no concurrent save can write a table without it after this one).
    /// Nothing is published when the write fails.
    pub fn publish_recorded(&self, entry: Arc<PortEntry>) -> Result<(), ApiError> {
        let _one_writer = self.save_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.write_ports(&self.switch.ports().with(entry.clone()))?;
        crate::failpoint::hit("attach:after_save");
        self.switch.update(|t| (t.with(entry), ()));
        Ok(())
    }

    /// Writes the state file again if the last write failed: a DEL retried after a failed
    /// write finds no port, and must not answer success while the file still lists it.
    pub fn resave_if_dirty(&self) -> Result<(), ApiError> {
        if self.state_dirty.load(Ordering::SeqCst) {
            self.save_state()
        } else {
            Ok(())
        }
    }

    fn write_ports(&self, table: &PortTable) -> Result<(), ApiError> {
        let book = self.ipam.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let state = State {
            version: STATE_VERSION,
            ports: table.iter().filter(|p| p.kind == PortKind::Pod).map(|p| port_info(p)).collect(),
            allocations: book.records.into_values().collect(),
            ipam_last: book.last.into_iter().collect(),
        };
        let res = self.write_state_file("state.json", &state);
        self.state_dirty.store(res.is_err(), Ordering::SeqCst);
        res
    }

    /// Saves the service ports (the caller holds the service lock, so writes are ordered).
    pub fn save_services(&self, services: Vec<&ServiceSpec>) -> Result<(), ApiError> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            version: u32,
            services: Vec<&'a ServiceSpec>,
        }
        self.write_state_file("services.json", &Borrowed { version: STATE_VERSION, services })
    }

    fn write_state_file<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ApiError> {
        let path = self.state_dir.join(name);
        // Compact: the services file is megabytes with 10,000 services.
        serde_json::to_vec(value)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomic(&path, &bytes))
            .map_err(|e| self.state_error(&path, &e))
    }
}

impl Control {
    /// Re-programs the services and re-opens the pod ports of `saved` (see [`load`]). A port
    /// that does not open is kept as lost (module doc); a record that can never work (a bad
    /// MAC or address, a port number already taken) is dropped with an error in the log.
    /// Returns how many ports were re-opened.
    pub fn restore(&self, saved: Saved) -> usize {
        *self.ipam.lock().unwrap_or_else(|p| p.into_inner()) = saved.ipam;
        let services = self.restore_services(saved.services);
        if services > 0 {
            tracing::info!(services, "service ports restored from the state file");
        }
        let (mut restored, mut dropped) = (0, 0);
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        for info in saved.ports {
            let (netns, ifname) = (info.netns.clone(), info.ifname.clone());
            let parsed = parse_record(&info).and_then(|r| match self.switch.ports().get(info.id) {
                Some(_) => Err(format!("port number {} is taken", info.id)),
                None => Ok(r),
            });
            let (mac, ips) = match parsed {
                Ok(r) => r,
                Err(why) => {
                    tracing::error!(port = info.id, %netns, %ifname, error = %why, "unusable pod port record dropped");
                    dropped += 1;
                    continue;
                }
            };
            match self.reopen(&info, mac, &ips) {
                Ok((tap, entry)) => {
                    self.switch.update(|t| (t.with(entry), ()));
                    pods.insert(info.id, tap);
                    restored += 1;
                }
                Err(e) => {
                    tracing::warn!(port = info.id, %netns, %ifname, error = %e.message, "pod port not re-opened; kept as lost and retried");
                    let entry = self.placeholder(&info, mac, &ips);
                    self.switch.update(|t| (t.with(entry.clone()), ()));
                    let next = Instant::now() + retry_delay(1);
                    let (reason, since) = (e.message, unix_now());
                    lost.0.insert(info.id, Lost { entry, info, mac, ips, reason, since, attempts: 1, next });
                }
            }
        }
        drop((lost, pods));
        if restored > 0 {
            tracing::info!(restored, "pod ports re-opened from the state file");
        }
        if dropped > 0 {
            let _ = self.save_state();
        }
        restored
    }

    /// Tries the lost ports whose retry time has come (called once a second); a port that
    /// opens is published under its number again.
    pub fn retry_lost(&self) {
        if self.lost.lock().unwrap_or_else(|p| p.into_inner()).0.is_empty() {
            return; // the common case, without waiting for an attach in progress
        }
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let due: Vec<u16> = {
            let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
            let table = self.switch.ports();
            // Detached (DEL, GC) meanwhile: the placeholder is gone from the table.
            lost.0.retain(|id, l| table.get(*id).is_some_and(|e| Arc::ptr_eq(e, &l.entry)));
            let now = Instant::now();
            lost.0.iter().filter(|(_, l)| l.next <= now).map(|(id, _)| *id).collect()
        };
        for id in due {
            let _ = self.revive_lost(id, &mut pods);
        }
    }

    /// Tries to re-open port `id` now if it is lost (the caller holds the pods lock, passed as
    /// `pods`); Ok when it is not lost or re-opened, the attempt's error otherwise.
    pub(super) fn revive_lost(
        &self,
        id: u16,
        pods: &mut std::collections::HashMap<u16, Arc<TapPort>>,
    ) -> Result<(), ApiError> {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.switch.ports();
        let Some(l) = lost.0.get_mut(&id) else { return Ok(()) };
        if !table.get(id).is_some_and(|e| Arc::ptr_eq(e, &l.entry)) {
            lost.0.remove(&id);
            return Ok(());
        }
        match self.reopen(&l.info, l.mac, &l.ips) {
            Ok((tap, entry)) => {
                self.switch.update(|t| (t.with(entry), ()));
                pods.insert(id, tap);
                tracing::info!(port = id, netns = %l.info.netns, ifname = %l.info.ifname, attempts = l.attempts, "lost pod port re-opened");
                lost.0.remove(&id);
                Ok(())
            }
            Err(e) => {
                l.attempts = l.attempts.saturating_add(1);
                l.next = Instant::now() + retry_delay(l.attempts);
                if l.reason != e.message {
                    tracing::info!(port = id, error = %e.message, "lost pod port still not re-opened");
                    l.reason = e.message.clone();
                }
                Err(api_err(ErrorCode::System, format!("port {id} is lost: {}", e.message)))
            }
        }
    }

    /// Port `id`'s loss, if it is lost.
    pub fn lost_info(&self, id: u16) -> Option<LostInfo> {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.switch.ports();
        let l = lost.0.get(&id).filter(|l| table.get(id).is_some_and(|e| Arc::ptr_eq(e, &l.entry)))?;
        Some(lost_info(l))
    }

    /// The lost ports, for `status`.
    pub fn lost_ports(&self) -> Vec<LostPort> {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.switch.ports();
        lost.0
            .iter()
            .filter(|(id, l)| table.get(**id).is_some_and(|e| Arc::ptr_eq(e, &l.entry)))
            .map(|(id, l)| LostPort {
                id: *id,
                netns: l.info.netns.clone(),
                ifname: l.info.ifname.clone(),
                lost: lost_info(l),
            })
            .collect()
    }

    /// Every port as `ports` lists it, lost ones marked.
    pub fn port_list(&self) -> Vec<PortInfo> {
        let lost: BTreeMap<u16, LostInfo> = self.lost_ports().into_iter().map(|l| (l.id, l.lost)).collect();
        self.switch
            .ports()
            .iter()
            .map(|p| PortInfo { lost: lost.get(&p.id).cloned(), ..port_info(p) })
            .collect()
    }

    /// The stand-in for a lost port: its number, MAC and addresses, no I/O.
    fn placeholder(&self, info: &PortInfo, mac: Mac, ips: &[IpNet]) -> Arc<PortEntry> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let idle = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).ok();
        self.pod_entry(info.id, Arc::new(LostIo { idle }), mac, info.bandwidth, self.meta_of(info, 0, ips))
    }

    fn meta_of(&self, info: &PortInfo, ifindex: u32, ips: &[IpNet]) -> PortMeta {
        PortMeta {
            name: info.name.clone(),
            netns: info.netns.clone(),
            ifname: info.ifname.clone(),
            ifindex,
            mtu: info.mtu,
            ips: ips.to_vec(),
            owner: info.owner.clone(),
            ipam: info.ipam.clone(),
        }
    }

    /// Re-opens a recorded port's TAP in its netns (not published yet).
    fn reopen(
        &self,
        info: &PortInfo,
        mac: Mac,
        ips: &[IpNet],
    ) -> Result<(Arc<TapPort>, Arc<PortEntry>), ApiError> {
        let netns = Path::new(&info.netns);
        // TUNSETIFF finds the device by name in the netns of the thread that opened the fd.
        let (tap, link) = netns::run_in(netns, || {
            let link = Netlink::new()?
                .link_by_name(&info.ifname)?
                .ok_or_else(|| api_err(ErrorCode::NotFound, format!("interface {} is gone", info.ifname)))?;
            if link.mac != Some(mac) {
                return Err(api_err(
                    ErrorCode::Mismatch,
                    format!("interface {} has another MAC", info.ifname),
                ));
            }
            Ok((TapPort::open(&info.ifname, true, false)?, link))
        })?;
        let tap = Arc::new(tap);
        let entry =
            self.pod_entry(info.id, tap.clone(), mac, info.bandwidth, self.meta_of(info, link.index, ips));
        Ok((tap, entry))
    }
}

fn lost_info(l: &Lost) -> LostInfo {
    LostInfo {
        reason: l.reason.clone(),
        since: l.since,
        attempts: l.attempts,
        next_retry_secs: l.next.saturating_duration_since(Instant::now()).as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::SeqCst);
            TempDir(std::env::temp_dir().join(format!("tapway-state-{tag}-{}-{n}", std::process::id())))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = TempDir::new("replace");
        let p = dir.0.join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!p.with_extension("tmp").exists());
    }

    #[test]
    fn files_are_private() {
        let dir = TempDir::new("modes");
        let p = dir.0.join("sub").join("state.json");
        // A leftover temp file with a loose mode, and an old 0644 file.
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p.with_extension("tmp"), b"x").unwrap();
        fs::set_permissions(p.with_extension("tmp"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(mode(&p), 0o600);
        let fresh = dir.0.join("fresh").join("services.json");
        write_atomic(&fresh, b"{}").unwrap();
        assert_eq!(mode(&fresh), 0o600);
        assert_eq!(mode(fresh.parent().unwrap()), 0o700, "a state dir it creates is 0700");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = TempDir::new("fail");
        let p = dir.0.join("state.json");
        write_atomic(&p, b"old").unwrap();
        // The temp path is a directory: the open fails, as on a full or read-only disk.
        fs::create_dir(p.with_extension("tmp")).unwrap();
        assert!(write_atomic(&p, b"new").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
    }

    #[test]
    fn versions_are_checked() {
        let dir = TempDir::new("version");
        fs::create_dir_all(&dir.0).unwrap();
        let p = dir.0.join("state.json");
        // Missing files: empty.
        assert!(load(&dir.0).unwrap().ports.is_empty());
        // The current version loads.
        fs::write(&p, br#"{"version":1,"ports":[{"id":3,"kind":"pod","mac":"02:00:00:00:00:03"}]}"#).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load(&dir.0).unwrap().ports[0].id, 3);
        assert_eq!(mode(&p), 0o600, "an old 0644 file is made private on load");
        // Newer, zero, absent or odd versions are refused, and the file is left alone.
        for text in [
            r#"{"version":99,"ports":[]}"#,
            r#"{"version":0,"ports":[]}"#,
            r#"{"ports":[]}"#,
            r#"{"version":"1","ports":[]}"#,
        ] {
            fs::write(&p, text).unwrap();
            let e = load(&dir.0).unwrap_err();
            assert!(matches!(e, StateError::Version { .. }), "{text}: {e}");
            assert_eq!(fs::read_to_string(&p).unwrap(), text);
        }
        let e = {
            fs::write(&p, r#"{"version":99,"ports":[]}"#).unwrap();
            load(&dir.0).unwrap_err().to_string()
        };
        assert!(e.contains("format version 99") && e.contains("version 1"), "{e}");
        // The services file too.
        fs::remove_file(&p).unwrap();
        fs::write(dir.0.join("services.json"), r#"{"version":2,"services":[]}"#).unwrap();
        assert!(matches!(load(&dir.0), Err(StateError::Version { found: 2, .. })));
    }

    #[test]
    fn an_unreadable_file_is_moved_aside() {
        let dir = TempDir::new("corrupt");
        fs::create_dir_all(&dir.0).unwrap();
        let p = dir.0.join("state.json");
        fs::write(&p, br#"{"version":1,"ports":[{"id":"#).unwrap();
        assert!(load(&dir.0).unwrap().ports.is_empty());
        assert!(!p.exists());
        assert_eq!(
            fs::read(dir.0.join("state.json.unreadable")).unwrap(),
            br#"{"version":1,"ports":[{"id":"#
        );
        // Right version, wrong shape: moved aside too.
        fs::write(&p, br#"{"version":1,"ports":"none"}"#).unwrap();
        assert!(load(&dir.0).unwrap().ports.is_empty());
        assert!(!p.exists());
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decode::<State>(&bytes);
            let _ = decode::<ServicesFile>(&bytes);
        }

        #[test]
        fn json_shaped_state_never_panics(v in 0u64..3, id in 0u32..70000, mac in "[0-9a-f:]{0,20}", ip in "[0-9./a-f:]{0,20}") {
            let text = format!(r#"{{"version":{v},"ports":[{{"id":{id},"mac":"{mac}","ips":["{ip}"]}}]}}"#);
            if let Decoded::Current(s) = decode::<State>(text.as_bytes()) {
                let _ = s.ports.iter().map(parse_record).count();
            }
        }
    }

    #[test]
    fn retries_back_off_to_a_bound() {
        let d: Vec<u64> = (1..=8).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 10, 10, 10, 10]);
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(u32::MAX), LOST_RETRY_MAX);
    }

    #[test]
    fn a_lost_port_never_reads_and_drops_what_it_is_sent() {
        let io = LostIo { idle: None };
        assert!(matches!(io.send(0, b"frame"), Err(PortError::Gone)));
        let io = LostIo {
            idle: nix::sys::eventfd::EventFd::from_value_and_flags(
                0,
                nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
            )
            .ok(),
        };
        assert!(io.readiness_fd(0).is_some(), "a worker can sleep on it");
    }

    #[test]
    fn bad_records_are_refused() {
        let good = PortInfo {
            id: 2,
            mac: "02:00:00:00:00:02".into(),
            ips: vec!["10.0.0.2/24".into()],
            ..Default::default()
        };
        assert!(parse_record(&good).is_ok());
        assert!(parse_record(&PortInfo { mac: "nope".into(), ..good.clone() }).is_err());
        assert!(parse_record(&PortInfo { ips: vec!["10.0.0.2".into()], ..good.clone() }).is_err());
        assert!(parse_record(&PortInfo { id: 0, ..good }).is_err());
    }
}
