//! The kernel's packet generator (`pktgen`, Documentation/networking/pktgen.rst) driven through
//! its /proc interface, as the `kpktgen` engine of `tapway-bench pktgen`.
//!
//! Kernel pktgen has one kernel thread per online CPU, `kpktgend_N`, each with a control file
//! under the pktgen directory. A device is added to a thread (`add_device DEV@N`), configured by
//! writing one command per write(2) to its own file (`DEV@N`), and every thread of the network
//! namespace is started at once by writing `start` to `pgctrl`. That write blocks until every
//! device has sent its `count` (or until someone writes `stop`); the results are then read back
//! from each device file:
//!
//! ```text
//! Result: OK: 12345(c11234+d1111) usec, 1000000 (60byte,0frags)
//!   1234567pps 592Mb/sec (592592160bps) errors: 0
//! ```
//!
//! This module uses one device per thread, named `DEV@N` after the thread it runs on, so several
//! CPUs can send through the same interface (pktgen allows a device on one thread only, unless
//! each copy has its own `@` suffix).
//!
//! **Frame sizes.** tapway-bench names sizes as they are on the wire, FCS included (64..=9000 B);
//! pktgen's `pkt_size` is the frame it builds, *without* the 4-byte FCS, so a 64 B frame is
//! configured as `pkt_size 60`, and pktgen reports it as `60byte` and counts its Mb/s on those 60
//! bytes. [`KpktgenResult::mbps`] is recomputed on the nominal size (FCS included), as the
//! AF_PACKET engine counts; the kernel's own figure is kept per device in
//! [`KpktgenDeviceResult::bps`].
//!
//! **Network namespaces.** pktgen exists once per network namespace, and `pgctrl` acts on the
//! namespace of the *thread that writes it*, whatever the path it was opened by. /proc/net
//! follows the process (its main thread), not the calling thread, so after `setns` on a worker
//! thread (see `crate::netns::in_netns`) /proc/net/pktgen is still the original namespace's.
//! [`DEFAULT_ROOT`] is therefore `/proc/thread-self/net/pktgen`, and every call — including
//! [`Kpktgen::stop`] from another thread — must come from a thread inside the namespace to test
//! (threads spawned from inside it are). [`Kpktgen::run`] does this itself.
//!
//! **What the frames carry.** pktgen's UDP payload starts with its own 16-byte header (magic
//! `0xbe9be955`, sequence number, send time in s/µs), not tapway-bench's probe, and UDP checksums
//! are 0 unless [`KpktgenConfig::udp_csum`] is set.
//!
//! The commands are built by [`Kpktgen::command_script`], a pure function, so exactly what gets
//! written where is testable without pktgen.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use crate::frame::{FCS_LEN, MAX_SIZE, MIN_SIZE};

/// The pktgen directory of the calling thread's network namespace.
pub const DEFAULT_ROOT: &str = "/proc/thread-self/net/pktgen";
/// The pktgen directory of the process's (main thread's) network namespace.
pub const PROC_NET_ROOT: &str = "/proc/net/pktgen";
/// The control file that starts, stops and resets every thread.
pub const PGCTRL: &str = "pgctrl";
/// Prefix of the per-CPU thread control files.
pub const THREAD_PREFIX: &str = "kpktgend_";
/// pktgen reads at most 10 digits of a number (and drops the rest silently).
const MAX_DIGITS_VALUE: u64 = 9_999_999_999;
/// Interface names are at most IFNAMSIZ - 1 bytes.
const IFNAMSIZ: usize = 16;
/// pktgen copies a thread command's device name into a 32-byte buffer.
const PKTGEN_NAME_MAX: usize = 31;

/// Why kernel pktgen could not be used.
#[derive(Debug, Error)]
pub enum KpktgenError {
    /// The pktgen directory is missing: module not loaded, or another network namespace.
    #[error(
        "kernel pktgen is not available: {} does not exist (load it with `modprobe pktgen`; \
         the kernel needs CONFIG_NET_PKTGEN)",
        .root.join(PGCTRL).display()
    )]
    NotLoaded {
        /// The pktgen directory tried.
        root: PathBuf,
    },
    /// A configuration pktgen cannot run.
    #[error("kernel pktgen: {0}")]
    Config(String),
    /// A thread asked for does not exist.
    #[error(
        "kernel pktgen has no thread kpktgend_{thread} under {} (it has one per online CPU: {available:?})",
        .root.display()
    )]
    NoThread {
        /// The pktgen directory.
        root: PathBuf,
        /// The thread (CPU) asked for.
        thread: usize,
        /// The threads there are.
        available: Vec<usize>,
    },
    /// A control file does not open.
    #[error("opening {}: {source}{}", .path.display(), hint(.source))]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The kernel refused a command (the write failed).
    #[error(
        "writing `{command}` to {}: {source}{}{}",
        .path.display(),
        hint(.source),
        .result.as_deref().map(|r| format!(" (pktgen says: {r})")).unwrap_or_default()
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// The command.
        command: String,
        /// The error.
        source: io::Error,
        /// The file's `Result:` line after the failure, when it has one.
        result: Option<String>,
    },
    /// The kernel took only part of a command.
    #[error("{} took {written} of the {len} bytes of `{command}`", .path.display())]
    ShortWrite {
        /// The file.
        path: PathBuf,
        /// The command.
        command: String,
        /// Bytes taken.
        written: usize,
        /// Bytes offered.
        len: usize,
    },
    /// The write succeeded but pktgen's `Result:` line reports a problem (e.g. an unknown flag).
    #[error("kernel pktgen did not accept `{command}` in {}: {result}", .path.display())]
    Rejected {
        /// The file.
        path: PathBuf,
        /// The command.
        command: String,
        /// The `Result:` line.
        result: String,
    },
    /// A file does not read.
    #[error("reading {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A device has no result of a run (never started, still starting, or an error).
    #[error("{}: no result of a run; pktgen says `Result: {result}`", .path.display())]
    NoResult {
        /// The device file.
        path: PathBuf,
        /// What its `Result:` line says (empty when it has none).
        result: String,
    },
    /// A device's result does not have the expected form.
    #[error("{}: cannot parse pktgen's result `{text}`", .path.display())]
    Parse {
        /// The device file.
        path: PathBuf,
        /// The result text.
        text: String,
    },
    /// [`Kpktgen::results`] or [`Kpktgen::sofar`] before [`Kpktgen::configure`].
    #[error("kernel pktgen: no device configured yet")]
    NotConfigured,
    /// The thread that stops the run panicked.
    #[error("kernel pktgen: the thread watching the run panicked")]
    Panicked,
}

/// A hint for the errors whose reason is known.
fn hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied {
        return " (kernel pktgen needs root: CAP_NET_ADMIN)";
    }
    match e.raw_os_error() {
        Some(libc::ENODEV) => " (no such interface in this network namespace)",
        Some(libc::ENETDOWN) => " (the interface is down)",
        Some(libc::EBUSY) => " (the device is already on another pktgen thread)",
        Some(libc::EOPNOTSUPP) => {
            " (not supported by this device: clone_skb > 0 and burst > 1 need a driver that \
             shares skbs, which veth and TAP devices do not)"
        }
        Some(libc::EINVAL) => " (pktgen rejected the value, or the interface is not Ethernet)",
        _ => "",
    }
}

/// What kernel pktgen should send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KpktgenConfig {
    /// Sending interface, in the network namespace of the calling thread.
    pub dev: String,
    /// pktgen threads (CPUs) to use, one device `DEV@N` each; empty: `0..threads`.
    pub cores: Vec<usize>,
    /// Number of threads when `cores` is empty.
    pub threads: usize,
    /// Frame size on the wire, FCS included (64..=9000); pktgen gets `pkt_size = size - 4`.
    pub size: u16,
    /// Frames to send in total, split across the threads; 0: until stopped.
    pub count: u64,
    /// Frames per second in total, split across the threads; `None`: as fast as possible.
    /// pktgen paces each thread with an integer delay of `10^9 / rate` ns.
    pub rate_pps: Option<u64>,
    /// Stop after this long ([`Kpktgen::run`] only).
    pub duration: Option<Duration>,
    /// Destination address.
    pub dst_ip: Ipv4Addr,
    /// Destination MAC (pktgen does no ARP: all zeroes would be sent otherwise).
    pub dst_mac: [u8; 6],
    /// Source addresses, first and last (pktgen steps through them in order); `None`: the
    /// interface's first IPv4 address. tapway drops sources a pod does not own.
    pub src_ip: Option<(Ipv4Addr, Ipv4Addr)>,
    /// UDP destination port.
    pub dst_port: u16,
    /// UDP source port of flow 0; flow `i` uses `src_port + i`.
    pub src_port: u16,
    /// Number of flows (UDP source ports). Thread `t` of `T` sends flows
    /// `t*flows/T .. (t+1)*flows/T`, so each flow comes from one thread; at least one per thread.
    pub flows: u16,
    /// Pick each frame's source port at random within the thread's range (`flag UDPSRC_RND`)
    /// instead of in turn.
    pub udp_src_random: bool,
    /// Fill in UDP checksums (`flag UDPCSUM`); pktgen sends 0 (no checksum) otherwise.
    pub udp_csum: bool,
    /// Frames queued per doorbell (`burst`, xmit_more); `None`: pktgen's default, 1.
    /// More than 1 is refused by veth and TAP devices.
    pub burst: Option<u32>,
    /// Times each built skb is sent again before a new one is built (`clone_skb`); `None`:
    /// pktgen's default, 0. More than 0 is refused by veth and TAP devices.
    pub clone_skb: Option<u64>,
}

impl KpktgenConfig {
    /// One thread, 64 B frames, one flow from port 10000 to port 9009 (the sink's default),
    /// flat out until stopped.
    pub fn new(dev: &str, dst_ip: Ipv4Addr, dst_mac: [u8; 6]) -> KpktgenConfig {
        KpktgenConfig {
            dev: dev.to_string(),
            cores: Vec::new(),
            threads: 1,
            size: 64,
            count: 0,
            rate_pps: None,
            duration: None,
            dst_ip,
            dst_mac,
            src_ip: None,
            dst_port: 9009,
            src_port: 10000,
            flows: 1,
            udp_src_random: false,
            udp_csum: false,
            burst: None,
            clone_skb: None,
        }
    }

    /// The pktgen threads used, in order.
    pub fn thread_ids(&self) -> Vec<usize> {
        if self.cores.is_empty() {
            (0..self.threads).collect()
        } else {
            self.cores.clone()
        }
    }

    /// The pktgen device names, `DEV@N`, one per thread.
    pub fn devices(&self) -> Vec<String> {
        self.thread_ids().iter().map(|t| format!("{}@{t}", self.dev)).collect()
    }

    /// pktgen's `pkt_size`: the nominal size without the FCS.
    pub fn pkt_size(&self) -> u16 {
        self.size.saturating_sub(FCS_LEN as u16)
    }

    /// Checks what pktgen would refuse or silently get wrong.
    pub fn validate(&self) -> Result<(), KpktgenError> {
        let bad = |m: String| Err(KpktgenError::Config(m));
        let d = &self.dev;
        if d.is_empty()
            || d.len() >= IFNAMSIZ
            || d.chars().any(|c| c == '@' || c == '/' || c == '=' || c == '"' || c.is_whitespace())
        {
            return bad(format!("`{d}` is not an interface name"));
        }
        let ids = self.thread_ids();
        let n = ids.len();
        if n == 0 {
            return bad("at least one thread is needed".into());
        }
        let mut seen = ids.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != n {
            return bad(format!("cores {ids:?} name a CPU twice"));
        }
        if let Some(long) = self.devices().into_iter().find(|x| x.len() > PKTGEN_NAME_MAX) {
            return bad(format!("device name {long} is longer than {PKTGEN_NAME_MAX} bytes"));
        }
        let size = usize::from(self.size);
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return bad(format!("frame size {size} B is outside {MIN_SIZE}..={MAX_SIZE} B (FCS included)"));
        }
        let n64 = n as u64;
        if self.count != 0 && self.count < n64 {
            // A device with count 0 would never stop.
            return bad(format!("count {} is less than one frame per thread ({n} threads)", self.count));
        }
        if self.count.div_ceil(n64) > MAX_DIGITS_VALUE {
            return bad(format!("count {} is more than pktgen takes per thread", self.count));
        }
        if let Some(r) = self.rate_pps {
            if r < n64 {
                return bad(format!("rate {r} is less than 1 frame/s per thread ({n} threads)"));
            }
            if r.div_ceil(n64) > MAX_DIGITS_VALUE {
                return bad(format!("rate {r} is more than pktgen takes per thread"));
            }
        }
        if self.flows == 0 {
            return bad("flows must be at least 1".into());
        }
        if usize::from(self.flows) < n {
            return bad(format!(
                "{} flow(s) for {n} threads: each thread needs a flow of its own",
                self.flows
            ));
        }
        // pktgen's udp_src_max is exclusive and a u16.
        if u32::from(self.src_port) + u32::from(self.flows) > u32::from(u16::MAX) {
            return bad(format!(
                "source ports {}..{} go past 65534",
                self.src_port,
                u32::from(self.src_port) + u32::from(self.flows)
            ));
        }
        if let Some((a, b)) = self.src_ip {
            if a > b {
                return bad(format!("source range {a}-{b} is backwards"));
            }
        }
        if self.dst_mac == [0; 6] {
            return bad("the destination MAC is 00:00:00:00:00:00".into());
        }
        if let Some(c) = self.clone_skb {
            if c > MAX_DIGITS_VALUE {
                return bad(format!("clone_skb {c} is more than pktgen takes"));
            }
        }
        if self.burst == Some(0) {
            return bad("burst must be at least 1".into());
        }
        Ok(())
    }
}

/// Part `i` of `total` split `n` ways: the remainder goes to the first parts.
fn split(total: u64, i: usize, n: usize) -> u64 {
    let (i, n) = (i as u64, n as u64);
    total / n + u64::from(i < total % n)
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// One device's result of a run, as pktgen reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KpktgenDeviceResult {
    /// The device, `DEV@N`.
    pub device: String,
    /// Microseconds from start to stop.
    pub usec: u64,
    /// Of which busy (pktgen's `c`).
    pub busy_usec: u64,
    /// Of which idle: waiting for the pace or the driver (pktgen's `d`).
    pub idle_usec: u64,
    /// Frames sent.
    pub packets: u64,
    /// pktgen's frame size, FCS excluded.
    pub pkt_size: u64,
    /// Page fragments per frame (-1 when pktgen held no skb at the end).
    pub frags: i64,
    /// Frames per second.
    pub pps: u64,
    /// pktgen's Mb/s (on `pkt_size`, FCS excluded, rounded down).
    pub kernel_mbps: u64,
    /// pktgen's bits per second (on `pkt_size`, FCS excluded).
    pub bps: u64,
    /// Frames the driver refused or dropped.
    pub errors: u64,
}

/// A run's result, summed over the threads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpktgenResult {
    /// Frames sent.
    pub packets: u64,
    /// Microseconds of the longest device run (the threads run concurrently).
    pub usec: u64,
    /// Frames per second: the sum of the devices' rates.
    pub pps: u64,
    /// Megabits per second of frames at their nominal size, FCS included (as the AF_PACKET
    /// engine counts), summed over the devices.
    pub mbps: f64,
    /// Frames the drivers refused or dropped.
    pub errors: u64,
    /// Nominal frame size (FCS included).
    pub size: u16,
    /// Per device, in thread order.
    pub devices: Vec<KpktgenDeviceResult>,
}

impl KpktgenResult {
    /// Sums device results. `size` is the nominal frame size, FCS included.
    pub fn sum(size: u16, devices: Vec<KpktgenDeviceResult>) -> KpktgenResult {
        let mut r =
            KpktgenResult { packets: 0, usec: 0, pps: 0, mbps: 0.0, errors: 0, size, devices: Vec::new() };
        for d in &devices {
            r.packets = r.packets.saturating_add(d.packets);
            r.usec = r.usec.max(d.usec);
            r.pps = r.pps.saturating_add(d.pps);
            r.errors = r.errors.saturating_add(d.errors);
            r.mbps += d.pps as f64 * (d.pkt_size as f64 + FCS_LEN as f64) * 8.0 / 1e6;
        }
        r.devices = devices;
        r
    }

    /// Seconds of the longest device run.
    pub fn elapsed_s(&self) -> f64 {
        self.usec as f64 / 1e6
    }

    /// The line kernel pktgen users expect.
    pub fn line(&self) -> String {
        format!(
            "kpktgen: sent {} frames ({} B) in {:.3} s: {} pps {:.1} Mb/s, errors {}, {} thread(s)",
            self.packets,
            self.size,
            self.elapsed_s(),
            self.pps,
            self.mbps,
            self.errors,
            self.devices.len()
        )
    }
}

/// The text after the last `Result:` that starts a line, if any.
fn result_text(text: &str) -> Option<&str> {
    text.match_indices("Result:")
        .filter(|&(i, _)| {
            let before = text.get(..i).unwrap_or("");
            before.rsplit('\n').next().unwrap_or("").trim().is_empty()
        })
        .last()
        .and_then(|(i, m)| text.get(i + m.len()..))
        .map(|r| r.trim_start_matches([' ', '\t']))
}

/// The first line of a result text.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// A cursor over a result text; every step returns `None` instead of panicking.
struct Cur<'a>(&'a str);

impl Cur<'_> {
    fn ws(&mut self) {
        self.0 = self.0.trim_start();
    }

    fn lit(&mut self, s: &str) -> Option<()> {
        self.0 = self.0.strip_prefix(s)?;
        Some(())
    }

    fn u64(&mut self) -> Option<u64> {
        let n = self.0.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, rest) = self.0.split_at_checked(n)?;
        let v = digits.parse().ok()?;
        self.0 = rest;
        Some(v)
    }

    fn i64(&mut self) -> Option<i64> {
        let neg = self.lit("-").is_some();
        let v = i64::try_from(self.u64()?).ok()?;
        Some(if neg { -v } else { v })
    }
}

/// Parses `OK: 12345(c11234+d1111) usec, 1000000 (60byte,0frags)\n  1234567pps 592Mb/sec
/// (592592160bps) errors: 0` (what follows `Result:`).
fn parse_ok(s: &str, device: &str) -> Option<KpktgenDeviceResult> {
    let mut c = Cur(s);
    c.lit("OK:")?;
    c.ws();
    let usec = c.u64()?;
    c.lit("(c")?;
    let busy_usec = c.u64()?;
    // The kernel prints `c…+d…`; accept it without the `+` too.
    let _ = c.lit("+");
    c.lit("d")?;
    let idle_usec = c.u64()?;
    c.lit(")")?;
    c.ws();
    c.lit("usec,")?;
    c.ws();
    let packets = c.u64()?;
    c.ws();
    c.lit("(")?;
    let pkt_size = c.u64()?;
    c.lit("byte,")?;
    let frags = c.i64()?;
    c.lit("frags)")?;
    c.ws();
    let pps = c.u64()?;
    c.lit("pps")?;
    c.ws();
    let kernel_mbps = c.u64()?;
    c.lit("Mb/sec")?;
    c.ws();
    c.lit("(")?;
    let bps = c.u64()?;
    c.lit("bps)")?;
    c.ws();
    c.lit("errors:")?;
    c.ws();
    let errors = c.u64()?;
    Some(KpktgenDeviceResult {
        device: device.to_string(),
        usec,
        busy_usec,
        idle_usec,
        packets,
        pkt_size,
        frags,
        pps,
        kernel_mbps,
        bps,
        errors,
    })
}

/// Parses the result of a run from the text of device file `path` (named `DEV@N`). Never panics.
pub fn parse_result(path: &Path, text: &str) -> Result<KpktgenDeviceResult, KpktgenError> {
    let device = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let Some(r) = result_text(text) else {
        return Err(KpktgenError::NoResult { path: path.to_path_buf(), result: String::new() });
    };
    // "OK: count=1000" after a configuration write is OK, but no run result.
    let is_run =
        r.strip_prefix("OK:").is_some_and(|x| x.trim_start().starts_with(|c: char| c.is_ascii_digit()));
    if !is_run {
        return Err(KpktgenError::NoResult { path: path.to_path_buf(), result: first_line(r) });
    }
    parse_ok(r, &device).ok_or_else(|| KpktgenError::Parse {
        path: path.to_path_buf(),
        text: r.lines().take(2).map(str::trim).collect::<Vec<_>>().join(" "),
    })
}

/// Frames sent so far by a device, from `pkts-sofar: N` (the `Current:` section); `None` when the
/// text has none.
pub fn parse_sofar(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("pkts-sofar:")?;
    let mut c = Cur(rest);
    c.ws();
    c.u64()
}

/// Kernel pktgen under one /proc directory.
#[derive(Debug, Clone)]
pub struct Kpktgen {
    root: PathBuf,
    /// Device files configured by [`Kpktgen::configure`], in thread order.
    devices: Vec<PathBuf>,
    /// Nominal frame size configured.
    size: u16,
}

impl Default for Kpktgen {
    /// pktgen of the calling thread's network namespace ([`DEFAULT_ROOT`]).
    fn default() -> Self {
        Kpktgen::new(DEFAULT_ROOT)
    }
}

impl Kpktgen {
    /// pktgen under `root` (normally [`DEFAULT_ROOT`]; a fake tree in tests).
    pub fn new(root: impl Into<PathBuf>) -> Kpktgen {
        Kpktgen { root: root.into(), devices: Vec::new(), size: 0 }
    }

    /// The pktgen directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether pktgen is there: `Err(NotLoaded)`, whose message says `modprobe pktgen`, if not.
    pub fn available(root: &Path) -> Result<(), KpktgenError> {
        match fs::metadata(root.join(PGCTRL)) {
            Ok(m) if m.is_file() => Ok(()),
            _ => Err(KpktgenError::NotLoaded { root: root.to_path_buf() }),
        }
    }

    /// The pktgen threads (CPU numbers of the `kpktgend_N` files), sorted.
    pub fn threads(&self) -> Result<Vec<usize>, KpktgenError> {
        Kpktgen::available(&self.root)?;
        let rd = fs::read_dir(&self.root)
            .map_err(|source| KpktgenError::Read { path: self.root.clone(), source })?;
        let mut v: Vec<usize> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_prefix(THREAD_PREFIX)?.parse().ok())
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Exactly which file gets which command, in order, to configure `cfg` (not `start`):
    /// `reset` to `pgctrl` (removes every device from every thread, so no leftover device runs
    /// on `start`), `add_device DEV@N` to each `kpktgend_N`, then each device's parameters.
    pub fn command_script(&self, cfg: &KpktgenConfig) -> Result<Vec<(PathBuf, String)>, KpktgenError> {
        cfg.validate()?;
        let ids = cfg.thread_ids();
        let n = ids.len();
        let mut s = vec![(self.root.join(PGCTRL), "reset".to_string())];
        for (&t, dev) in ids.iter().zip(cfg.devices()) {
            s.push((self.root.join(format!("{THREAD_PREFIX}{t}")), format!("add_device {dev}")));
        }
        for (i, dev) in cfg.devices().into_iter().enumerate() {
            let p = self.root.join(dev);
            let mut cmd = |c: String| s.push((p.clone(), c));
            cmd(format!("count {}", if cfg.count == 0 { 0 } else { split(cfg.count, i, n) }));
            cmd(format!("pkt_size {}", cfg.pkt_size()));
            match cfg.rate_pps {
                Some(r) => cmd(format!("ratep {}", split(r, i, n))),
                None => cmd("delay 0".into()),
            }
            cmd(format!("dst {}", cfg.dst_ip));
            cmd(format!("dst_mac {}", fmt_mac(&cfg.dst_mac)));
            if let Some((a, b)) = cfg.src_ip {
                cmd(format!("src_min {a}"));
                cmd(format!("src_max {b}"));
            }
            cmd(format!("udp_dst_min {}", cfg.dst_port));
            cmd(format!("udp_dst_max {}", cfg.dst_port));
            // Flows first..last of this thread; pktgen's udp_src_max is exclusive.
            let flows = u32::from(cfg.flows);
            let first = u32::from(cfg.src_port) + i as u32 * flows / n as u32;
            let end = u32::from(cfg.src_port) + (i as u32 + 1) * flows / n as u32;
            cmd(format!("udp_src_min {first}"));
            cmd(format!("udp_src_max {end}"));
            if cfg.udp_src_random {
                cmd("flag UDPSRC_RND".into());
            }
            if cfg.udp_csum {
                cmd("flag UDPCSUM".into());
            }
            if let Some(c) = cfg.clone_skb {
                cmd(format!("clone_skb {c}"));
            }
            if let Some(b) = cfg.burst {
                cmd(format!("burst {b}"));
            }
        }
        Ok(s)
    }

    /// Configures pktgen for `cfg`: checks that pktgen and the threads are there, then writes
    /// [`Kpktgen::command_script`], checking each command's `Result:` line.
    pub fn configure(&mut self, cfg: &KpktgenConfig) -> Result<(), KpktgenError> {
        let script = self.command_script(cfg)?;
        let have = self.threads()?;
        for t in cfg.thread_ids() {
            if !have.contains(&t) {
                return Err(KpktgenError::NoThread { root: self.root.clone(), thread: t, available: have });
            }
        }
        self.devices.clear();
        for (path, command) in &script {
            write_command(path, command)?;
            if path.file_name().is_some_and(|n| n != PGCTRL) {
                check_result(path, command)?;
            }
        }
        self.devices = cfg.devices().into_iter().map(|d| self.root.join(d)).collect();
        self.size = cfg.size;
        Ok(())
    }

    /// Starts every configured device and returns when all are done (their `count` sent) or
    /// stopped ([`Kpktgen::stop`] from another thread of the same network namespace, or a
    /// signal to this thread).
    pub fn start(&self) -> Result<(), KpktgenError> {
        write_command(&self.root.join(PGCTRL), "start")
    }

    /// Stops every device of this network namespace; a blocked [`Kpktgen::start`] returns.
    pub fn stop(&self) -> Result<(), KpktgenError> {
        write_command(&self.root.join(PGCTRL), "stop")
    }

    /// Removes every device from every thread.
    pub fn reset(&self) -> Result<(), KpktgenError> {
        write_command(&self.root.join(PGCTRL), "reset")
    }

    /// Frames sent so far by the configured devices (`pkts-sofar`), for a progress line.
    pub fn sofar(&self) -> Result<u64, KpktgenError> {
        if self.devices.is_empty() {
            return Err(KpktgenError::NotConfigured);
        }
        let mut n = 0u64;
        for p in &self.devices {
            n = n.saturating_add(parse_sofar(&read_text(p)?).unwrap_or(0));
        }
        Ok(n)
    }

    /// The configured devices' results of the last run, summed.
    pub fn results(&self) -> Result<KpktgenResult, KpktgenError> {
        if self.devices.is_empty() {
            return Err(KpktgenError::NotConfigured);
        }
        let mut v = Vec::with_capacity(self.devices.len());
        for p in &self.devices {
            v.push(parse_result(p, &read_text(p)?)?);
        }
        Ok(KpktgenResult::sum(self.size, v))
    }

    /// Configures, starts, and stops at `cfg.duration` or when `stop` becomes true (whichever
    /// comes first; `count` may end it before), then reads the results. `sent` follows
    /// `pkts-sofar` every 100 ms. Call it on a thread inside the network namespace to test.
    pub fn run(
        &mut self,
        cfg: &KpktgenConfig,
        stop: &AtomicBool,
        sent: &AtomicU64,
    ) -> Result<KpktgenResult, KpktgenError> {
        self.configure(cfg)?;
        let this = &*self;
        let done = AtomicBool::new(false);
        let (started, watched) = std::thread::scope(|s| {
            // A thread spawned here shares this thread's network namespace, which `stop` needs.
            let watcher = s.spawn(|| this.watch(cfg.duration, stop, sent, &done));
            let started = this.start();
            done.store(true, Ordering::Release);
            (started, watcher.join())
        });
        started?;
        watched.map_err(|_| KpktgenError::Panicked)??;
        // pktgen marks a device stopped just before it writes its result, so `start` can return
        // a moment before the last result is there.
        let mut tries = 0;
        let r = loop {
            match self.results() {
                Err(KpktgenError::NoResult { .. } | KpktgenError::Parse { .. }) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        sent.store(r.packets, Ordering::Relaxed);
        Ok(r)
    }

    /// Writes `stop` once `duration` has passed or `stop` is set, again every 500 ms until
    /// `done` (a `stop` that lands before pktgen's threads have picked up `start` is lost).
    fn watch(
        &self,
        duration: Option<Duration>,
        stop: &AtomicBool,
        sent: &AtomicU64,
        done: &AtomicBool,
    ) -> Result<(), KpktgenError> {
        let t0 = Instant::now();
        let mut last_stop: Option<Instant> = None;
        let mut last_progress = t0;
        while !done.load(Ordering::Acquire) {
            let now = Instant::now();
            if now.duration_since(last_progress) >= Duration::from_millis(100) {
                if let Ok(n) = self.sofar() {
                    sent.store(n, Ordering::Relaxed);
                }
                last_progress = now;
            }
            let due = stop.load(Ordering::Relaxed) || duration.is_some_and(|d| now.duration_since(t0) >= d);
            let again = match last_stop {
                None => true,
                Some(t) => now.duration_since(t) >= Duration::from_millis(500),
            };
            if due && again {
                self.stop()?;
                last_stop = Some(now);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Reads a pktgen file (lossily: the kernel writes ASCII, a fake tree may not).
fn read_text(path: &Path) -> Result<String, KpktgenError> {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|source| KpktgenError::Read { path: path.to_path_buf(), source })
}

/// The last `Result:` line of a pktgen file, if it reads and has one.
fn result_line(path: &Path) -> Option<String> {
    fs::read(path).ok().and_then(|b| result_text(&String::from_utf8_lossy(&b)).map(first_line))
}

/// Writes one command, newline-terminated, in a single write(2): pktgen parses one command per
/// write, and `pgctrl` strips the trailing newline (kernels before 6.15 strip the last byte
/// whatever it is). Opened for append without create: on /proc the offset is ignored and a
/// missing file is an error; in a fake tree the commands pile up in order.
fn write_command(path: &Path, command: &str) -> Result<(), KpktgenError> {
    let line = format!("{command}\n");
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|source| KpktgenError::Open { path: path.to_path_buf(), source })?;
    match f.write(line.as_bytes()) {
        Ok(n) if n == line.len() => Ok(()),
        Ok(written) => Err(KpktgenError::ShortWrite {
            path: path.to_path_buf(),
            command: command.to_string(),
            written,
            len: line.len(),
        }),
        Err(source) => Err(KpktgenError::Write {
            path: path.to_path_buf(),
            command: command.to_string(),
            source,
            result: result_line(path),
        }),
    }
}

/// After a successful write: pktgen reports some refusals (an unknown flag, an unknown
/// `xmit_mode`, "ERROR: ...") only in the file's `Result:` line.
fn check_result(path: &Path, command: &str) -> Result<(), KpktgenError> {
    match result_line(path) {
        Some(r) if !r.starts_with("OK") => {
            Err(KpktgenError::Rejected { path: path.to_path_buf(), command: command.to_string(), result: r })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x2a];

    /// From Documentation/networking/pktgen.rst ("Viewing devices"), a device file after a run.
    const DOC_SAMPLE: &str = "\
Params: count 10000000  min_pkt_size: 60  max_pkt_size: 60
     frags: 0  delay: 0  clone_skb: 1000000  ifname: eth1
     flows: 0 flowlen: 0
     dst_min: 10.10.11.2  dst_max:
     src_min:   src_max:
     src_mac: 00:00:00:00:00:00  dst_mac: 00:04:23:AC:FD:82
     udp_src_min: 9  udp_src_max: 9  udp_dst_min: 9  udp_dst_max: 9
     src_mac_count: 0  dst_mac_count: 0
     Flags:
Current:
     pkts-sofar: 10000000  errors: 39664
     started: 1103053986245187us  stopped: 1103053999346329us idle: 880401us
     seq_num: 10000011  cur_dst_mac_offset: 0  cur_src_mac_offset: 0
     cur_saddr: 0x10a0a0a  cur_daddr: 0x20b0a0a
     cur_udp_dst: 9  cur_udp_src: 9
     flows: 0
Result: OK: 13101142(c12220741+d880401) usec, 10000000 (60byte,0frags)
  763292pps 390Mb/sec (390805504bps) errors: 39664
";

    /// From today's Documentation/networking/pktgen.rst, indented as it is there.
    const RST_SAMPLE: &str = "    /proc/net/pktgen/eth4@0

    Params: count 100000  min_pkt_size: 60  max_pkt_size: 60
\tfrags: 0  delay: 0  clone_skb: 64  ifname: eth4@0
\tflows: 0 flowlen: 0
\tqueue_map_min: 0  queue_map_max: 0
\tdst_min: 192.168.81.2  dst_max:
\tsrc_min:   src_max:
\tsrc_mac: 90:e2:ba:0a:56:b4 dst_mac: 00:1b:21:3c:9d:f8
\tudp_src_min: 9  udp_src_max: 109  udp_dst_min: 9  udp_dst_max: 9
\tsrc_mac_count: 0  dst_mac_count: 0
\tFlags: UDPSRC_RND  NO_TIMESTAMP  QUEUE_MAP_CPU
    Current:
\tpkts-sofar: 100000  errors: 0
\tstarted: 623913381008us  stopped: 623913396439us idle: 25us
\tseq_num: 100001  cur_dst_mac_offset: 0  cur_src_mac_offset: 0
\tcur_saddr: 192.168.8.3  cur_daddr: 192.168.81.2
\tcur_udp_dst: 9  cur_udp_src: 42
\tcur_queue_map: 0
\tflows: 0
    Result: OK: 15430(c15405+d25) usec, 100000 (60byte,0frags)
    6480562pps 3110Mb/sec (3110669760bps) errors: 0
";

    /// As a 6.x kernel prints it, with the IMIX counters of a run with imix_weights.
    const IMIX_SAMPLE: &str = "\
Params: count 200000  min_pkt_size: 60  max_pkt_size: 60
     imix_weights: 256,1 859,3 205,2
     frags: 0  delay: 0  clone_skb: 0  ifname: eth0@1
Current:
     pkts-sofar: 200000  errors: 0
     imix_size_counts: 256,32082 859,99796 205,68122
     started: 12us  stopped: 17992374us idle: 27684us
Result: OK: 17992362(c17964678+d27684) usec, 200000 (859byte,0frags)
  11115pps 47Mb/sec (47977140bps) errors: 0
";

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kpktgen-test-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn cfg() -> KpktgenConfig {
        KpktgenConfig::new("eth0", Ipv4Addr::new(10, 213, 1, 3), MAC)
    }

    fn script_of(c: &KpktgenConfig) -> Vec<(String, String)> {
        Kpktgen::new("/pg")
            .command_script(c)
            .expect("script")
            .into_iter()
            .map(|(p, s)| (p.display().to_string(), s))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn script_one_thread_defaults() {
        assert_eq!(
            script_of(&cfg()),
            pairs(&[
                ("/pg/pgctrl", "reset"),
                ("/pg/kpktgend_0", "add_device eth0@0"),
                ("/pg/eth0@0", "count 0"),
                ("/pg/eth0@0", "pkt_size 60"),
                ("/pg/eth0@0", "delay 0"),
                ("/pg/eth0@0", "dst 10.213.1.3"),
                ("/pg/eth0@0", "dst_mac 02:00:00:00:00:2a"),
                ("/pg/eth0@0", "udp_dst_min 9009"),
                ("/pg/eth0@0", "udp_dst_max 9009"),
                ("/pg/eth0@0", "udp_src_min 10000"),
                ("/pg/eth0@0", "udp_src_max 10001"),
            ])
        );
    }

    #[test]
    fn script_threads_split_count_rate_flows() {
        let mut c = cfg();
        c.cores = vec![2, 5, 7];
        c.size = 1518;
        c.count = 1000;
        c.rate_pps = Some(100_000);
        c.flows = 8;
        c.src_ip = Some((Ipv4Addr::new(10, 213, 1, 2), Ipv4Addr::new(10, 213, 1, 2)));
        c.udp_src_random = true;
        c.udp_csum = true;
        c.clone_skb = Some(0);
        c.burst = Some(1);
        let s = script_of(&c);
        let head: Vec<_> = s.iter().take(4).cloned().collect();
        assert_eq!(
            head,
            pairs(&[
                ("/pg/pgctrl", "reset"),
                ("/pg/kpktgend_2", "add_device eth0@2"),
                ("/pg/kpktgend_5", "add_device eth0@5"),
                ("/pg/kpktgend_7", "add_device eth0@7"),
            ])
        );
        let dev = |d: &str| -> Vec<String> {
            s.iter().filter(|(p, _)| p == &format!("/pg/{d}")).map(|(_, c)| c.clone()).collect()
        };
        let per = |count: &str, rate: &str, a: &str, b: &str| -> Vec<String> {
            [
                count,
                "pkt_size 1514",
                rate,
                "dst 10.213.1.3",
                "dst_mac 02:00:00:00:00:2a",
                "src_min 10.213.1.2",
                "src_max 10.213.1.2",
                "udp_dst_min 9009",
                "udp_dst_max 9009",
                a,
                b,
                "flag UDPSRC_RND",
                "flag UDPCSUM",
                "clone_skb 0",
                "burst 1",
            ]
            .iter()
            .map(|x| x.to_string())
            .collect()
        };
        // 1000 = 334 + 333 + 333; 100000 = 33334 + 33333 + 33333; flows 8 = 2 + 3 + 3.
        assert_eq!(dev("eth0@2"), per("count 334", "ratep 33334", "udp_src_min 10000", "udp_src_max 10002"));
        assert_eq!(dev("eth0@5"), per("count 333", "ratep 33333", "udp_src_min 10002", "udp_src_max 10005"));
        assert_eq!(dev("eth0@7"), per("count 333", "ratep 33333", "udp_src_min 10005", "udp_src_max 10008"));
        assert_eq!(s.len(), 4 + 3 * 15);
    }

    #[test]
    fn fcs_conversion_and_sizes() {
        for (wire, pkt) in [(64u16, 60u16), (128, 124), (1518, 1514), (9000, 8996)] {
            let mut c = cfg();
            c.size = wire;
            assert_eq!(c.pkt_size(), pkt);
            assert!(script_of(&c).contains(&("/pg/eth0@0".to_string(), format!("pkt_size {pkt}"))));
        }
        for bad in [0u16, 60, 63, 9001, u16::MAX] {
            let mut c = cfg();
            c.size = bad;
            assert!(matches!(c.validate(), Err(KpktgenError::Config(_))), "{bad}");
        }
    }

    #[test]
    fn threads_from_count() {
        let mut c = cfg();
        c.threads = 4;
        c.flows = 4;
        assert_eq!(c.devices(), ["eth0@0", "eth0@1", "eth0@2", "eth0@3"]);
        let s = script_of(&c);
        for t in 0..4 {
            assert!(s.contains(&(format!("/pg/kpktgend_{t}"), format!("add_device eth0@{t}"))));
            assert!(s.contains(&(format!("/pg/eth0@{t}"), format!("udp_src_min {}", 10000 + t))));
            assert!(s.contains(&(format!("/pg/eth0@{t}"), format!("udp_src_max {}", 10001 + t))));
        }
    }

    #[test]
    fn invalid_configs() {
        type Mutation = Box<dyn Fn(&mut KpktgenConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("empty dev", Box::new(|c| c.dev = String::new())),
            ("dev with @", Box::new(|c| c.dev = "eth0@1".into())),
            ("dev with space", Box::new(|c| c.dev = "eth 0".into())),
            ("dev too long", Box::new(|c| c.dev = "a".repeat(16))),
            ("no threads", Box::new(|c| c.threads = 0)),
            (
                "duplicate core",
                Box::new(|c| {
                    c.cores = vec![1, 1];
                    c.flows = 2;
                }),
            ),
            (
                "count < threads",
                Box::new(|c| {
                    c.threads = 4;
                    c.flows = 4;
                    c.count = 3;
                }),
            ),
            ("count too big", Box::new(|c| c.count = 10_000_000_000)),
            (
                "rate < threads",
                Box::new(|c| {
                    c.threads = 2;
                    c.flows = 2;
                    c.rate_pps = Some(1);
                }),
            ),
            ("rate 0", Box::new(|c| c.rate_pps = Some(0))),
            ("no flows", Box::new(|c| c.flows = 0)),
            ("flows < threads", Box::new(|c| c.threads = 2)),
            (
                "ports overflow",
                Box::new(|c| {
                    c.src_port = 65535;
                }),
            ),
            (
                "src backwards",
                Box::new(|c| c.src_ip = Some((Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1)))),
            ),
            ("zero mac", Box::new(|c| c.dst_mac = [0; 6])),
            ("burst 0", Box::new(|c| c.burst = Some(0))),
        ];
        for (what, f) in cases {
            let mut c = cfg();
            f(&mut c);
            let e = Kpktgen::new("/pg").command_script(&c).expect_err(what);
            assert!(matches!(e, KpktgenError::Config(_)), "{what}: {e}");
        }
        // The edges that are fine.
        let mut c = cfg();
        c.src_port = 65534;
        c.count = 10_000_000_000 - 1;
        assert!(c.validate().is_ok());
        c.threads = 2;
        c.flows = 2;
        c.src_port = 65533;
        c.count = 2;
        c.rate_pps = Some(2);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn parses_doc_sample() {
        let r = parse_result(Path::new("/pg/eth1"), DOC_SAMPLE).expect("parse");
        assert_eq!(
            r,
            KpktgenDeviceResult {
                device: "eth1".into(),
                usec: 13101142,
                busy_usec: 12220741,
                idle_usec: 880401,
                packets: 10000000,
                pkt_size: 60,
                frags: 0,
                pps: 763292,
                kernel_mbps: 390,
                bps: 390805504,
                errors: 39664,
            }
        );
        assert_eq!(parse_sofar(DOC_SAMPLE), Some(10000000));
    }

    #[test]
    fn parses_rst_sample() {
        let r = parse_result(Path::new("/proc/net/pktgen/eth4@0"), RST_SAMPLE).expect("parse");
        assert_eq!(
            (r.device.as_str(), r.usec, r.busy_usec, r.idle_usec, r.packets, r.pkt_size, r.frags),
            ("eth4@0", 15430, 15405, 25, 100000, 60, 0)
        );
        assert_eq!((r.pps, r.kernel_mbps, r.bps, r.errors), (6480562, 3110, 3110669760, 0));
        assert_eq!(parse_sofar(RST_SAMPLE), Some(100000));
        // One device at 6.48 Mpps of 64 B frames: 3317.8 Mb/s with the FCS, 3110 without.
        let sum = KpktgenResult::sum(64, vec![r]);
        assert!((sum.mbps - 6480562.0 * 512.0 / 1e6).abs() < 1e-6, "{}", sum.mbps);
    }

    #[test]
    fn result_must_start_a_line() {
        let t = "x Result: OK: 1(c1+d0) usec, 1 (60byte,0frags)\n  1pps 0Mb/sec (480bps) errors: 0\n";
        assert!(matches!(parse_result(Path::new("d"), t), Err(KpktgenError::NoResult { .. })));
    }

    #[test]
    fn parses_imix_sample_and_negative_frags() {
        let r = parse_result(Path::new("/pg/eth0@1"), IMIX_SAMPLE).expect("parse");
        assert_eq!(
            (r.device.as_str(), r.packets, r.pkt_size, r.pps, r.bps),
            ("eth0@1", 200000, 859, 11115, 47977140)
        );
        let t = "Result: OK: 10(c10+d0) usec, 5 (60byte,-1frags)\n  500000pps 240Mb/sec (240000000bps) errors: 1\n";
        let r = parse_result(Path::new("x"), t).expect("parse");
        assert_eq!((r.frags, r.errors), (-1, 1));
    }

    #[test]
    fn not_a_run_result() {
        for (text, says) in [
            ("Params: count 1000\nResult: Idle\n", "Idle"),
            ("Result: OK: pkt_size=60\n", "OK: pkt_size=60"),
            ("Result: Starting\n", "Starting"),
            (
                "Result: ERROR: pkt_dev->odev == NULL in setup_inject.\n",
                "ERROR: pkt_dev->odev == NULL in setup_inject.",
            ),
            ("", ""),
            ("no result here", ""),
        ] {
            match parse_result(Path::new("/pg/eth0@0"), text) {
                Err(KpktgenError::NoResult { result, .. }) => assert_eq!(result, says, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_results_are_errors() {
        for text in [
            "Result: OK: 12(c1+d1) usec, 5 (60byte,0frags)\n",
            "Result: OK: 12(c1+d1) usec, 5 (60byte,0frags)\n  10pps 0Mb/sec (480bps) errors:",
            "Result: OK: 12(c1+d1) usec, 99999999999999999999999 (60byte,0frags)\n  10pps 0Mb/sec (480bps) errors: 0",
            "Result: OK: 12(c1+d1) usec, 5 (60byte,--1frags)\n  10pps 0Mb/sec (480bps) errors: 0",
            "Result: OK: 12 usec, 5 (60byte,0frags)\n  10pps 0Mb/sec (480bps) errors: 0",
        ] {
            assert!(matches!(parse_result(Path::new("d"), text), Err(KpktgenError::Parse { .. })), "{text:?}");
        }
        // Every truncation of a real result fails cleanly.
        let full = DOC_SAMPLE.find("Result:").map(|i| &DOC_SAMPLE[i..]).expect("result");
        // (A cut inside the last number still parses, as a smaller number.)
        let last = full.rfind("errors: ").expect("errors") + "errors: ".len();
        for cut in 0..=last {
            assert!(parse_result(Path::new("d"), &full[..cut]).is_err(), "{cut}");
        }
        assert!(parse_result(Path::new("d"), full.trim_end()).is_ok());
    }

    #[test]
    fn parser_never_panics_on_random_input() {
        // xorshift64*: deterministic, no dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let pieces = [
            "Result:",
            " OK:",
            "OK: ",
            "(c",
            "+d",
            ") usec,",
            "byte,",
            "frags)",
            "pps",
            "Mb/sec",
            "bps)",
            "errors:",
            "pkts-sofar:",
            "\n",
            " ",
            "-",
            "0",
            "18446744073709551615",
            "18446744073709551616",
            "42",
            "é",
            "\u{1F600}",
            "\u{0}",
            "Result: OK: 1(c1+d0) usec, 1 (60byte,0frags)\n  1pps 0Mb/sec (480bps) errors: 0",
        ];
        let sample = DOC_SAMPLE.as_bytes();
        for _ in 0..20_000 {
            let mut s = String::new();
            let n = next() % 24;
            for _ in 0..n {
                let r = next();
                if r % 3 == 0 {
                    s.push(char::from_u32((r >> 8) as u32 % 0x11_0000).unwrap_or('?'));
                } else {
                    s.push_str(pieces[(r >> 8) as usize % pieces.len()]);
                }
            }
            let _ = parse_result(Path::new("d"), &s);
            let _ = parse_sofar(&s);
            // A real sample with one byte changed.
            let mut b = sample.to_vec();
            let i = next() as usize % b.len();
            b[i] = (next() & 0x7f) as u8;
            let t = String::from_utf8_lossy(&b);
            let _ = parse_result(Path::new("d"), &t);
            let _ = parse_sofar(&t);
        }
    }

    /// A fake pktgen tree: pgctrl, `threads` thread files, and device files with `results`.
    fn fake_tree(tag: &str, threads: usize, devices: &[(&str, &str)]) -> PathBuf {
        let d = tmpdir(tag);
        fs::write(d.join(PGCTRL), "Packet Generator for packet performance testing. Version: 2.75\n")
            .expect("pgctrl");
        for t in 0..threads {
            fs::write(
                d.join(format!("{THREAD_PREFIX}{t}")),
                format!("Running: \nStopped: \nResult: OK: add_device=x@{t}\n"),
            )
            .expect("thread");
        }
        for (name, text) in devices {
            fs::write(d.join(name), text).expect("device");
        }
        d
    }

    fn written(path: &Path, after: &str) -> Vec<String> {
        let t = fs::read_to_string(path).expect("read");
        t.split_once(after).map(|(_, r)| r).unwrap_or(&t).lines().map(str::to_string).collect()
    }

    const RES_A: &str = "Current:\n     pkts-sofar: 1000000  errors: 3\nResult: OK: 1000000(c900000+d100000) usec, 1000000 (60byte,0frags)\n  1000000pps 480Mb/sec (480000000bps) errors: 3\n";
    const RES_B: &str = "Current:\n     pkts-sofar: 500000  errors: 0\nResult: OK: 1250000(c1250000+d0) usec, 500000 (60byte,0frags)\n  400000pps 192Mb/sec (192000000bps) errors: 0\n";

    #[test]
    fn drives_a_fake_tree() {
        let root = fake_tree("drive", 4, &[("veth0@1", RES_A), ("veth0@3", RES_B)]);
        let mut c = KpktgenConfig::new("veth0", Ipv4Addr::new(10, 0, 0, 2), MAC);
        c.cores = vec![1, 3];
        c.flows = 2;
        c.count = 1_500_000;
        let mut k = Kpktgen::new(&root);
        assert!(matches!(k.results(), Err(KpktgenError::NotConfigured)));
        k.configure(&c).expect("configure");
        assert_eq!(written(&root.join(PGCTRL), "2.75\n"), ["reset"]);
        assert_eq!(written(&root.join("kpktgend_1"), "add_device=x@1\n"), ["add_device veth0@1"]);
        assert_eq!(written(&root.join("kpktgend_3"), "add_device=x@3\n"), ["add_device veth0@3"]);
        assert!(written(&root.join("kpktgend_0"), "add_device=x@0\n").is_empty());
        assert_eq!(
            written(&root.join("veth0@1"), RES_A),
            [
                "count 750000",
                "pkt_size 60",
                "delay 0",
                "dst 10.0.0.2",
                "dst_mac 02:00:00:00:00:2a",
                "udp_dst_min 9009",
                "udp_dst_max 9009",
                "udp_src_min 10000",
                "udp_src_max 10001"
            ]
        );
        assert!(written(&root.join("veth0@3"), RES_B).contains(&"udp_src_min 10001".to_string()));
        k.start().expect("start");
        k.stop().expect("stop");
        assert_eq!(written(&root.join(PGCTRL), "2.75\n"), ["reset", "start", "stop"]);
        assert_eq!(k.sofar().expect("sofar"), 1_500_000);
        let r = k.results().expect("results");
        assert_eq!(r.packets, 1_500_000);
        assert_eq!(r.usec, 1_250_000);
        assert_eq!(r.pps, 1_400_000);
        assert_eq!(r.errors, 3);
        assert_eq!(r.size, 64);
        // On 64 B (FCS included): 1.4 Mpps * 512 bit.
        assert!((r.mbps - 716.8).abs() < 1e-9, "{}", r.mbps);
        assert_eq!(r.devices.iter().map(|d| d.device.as_str()).collect::<Vec<_>>(), ["veth0@1", "veth0@3"]);
        assert_eq!(r.devices[0].kernel_mbps, 480);
        assert!(r
            .line()
            .starts_with("kpktgen: sent 1500000 frames (64 B) in 1.250 s: 1400000 pps 716.8 Mb/s"));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn run_on_a_fake_tree_stops_and_reads() {
        let root = fake_tree("run", 1, &[("eth0@0", RES_B)]);
        let mut k = Kpktgen::new(&root);
        let stop = AtomicBool::new(true);
        let sent = AtomicU64::new(0);
        let r = k.run(&cfg(), &stop, &sent).expect("run");
        assert_eq!((r.packets, sent.load(Ordering::Relaxed)), (500_000, 500_000));
        let ctl = written(&root.join(PGCTRL), "2.75\n");
        assert_eq!(ctl.first().map(String::as_str), Some("reset"));
        assert!(ctl.contains(&"start".to_string()));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn run_without_a_result_fails() {
        let root = fake_tree("noresult", 1, &[("eth0@0", "Result: OK: udp_src_max=10001\n")]);
        let e = Kpktgen::new(&root)
            .run(&cfg(), &AtomicBool::new(true), &AtomicU64::new(0))
            .expect_err("no result");
        assert!(
            matches!(e, KpktgenError::NoResult { ref result, .. } if result == "OK: udp_src_max=10001"),
            "{e}"
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn missing_pieces() {
        let none = tmpdir("none").join("pktgen");
        let e = Kpktgen::available(&none).expect_err("missing");
        let msg = e.to_string();
        assert!(msg.contains("modprobe pktgen"), "{msg}");
        assert!(msg.contains(&none.join("pgctrl").display().to_string()), "{msg}");
        assert!(matches!(Kpktgen::new(&none).configure(&cfg()), Err(KpktgenError::NotLoaded { .. })));

        // Thread 2 asked for, threads 0 and 1 there.
        let root = fake_tree("nothread", 2, &[]);
        let mut c = cfg();
        c.cores = vec![2];
        match Kpktgen::new(&root).configure(&c) {
            Err(KpktgenError::NoThread { thread: 2, available, .. }) => assert_eq!(available, [0, 1]),
            other => panic!("{other:?}"),
        }
        // add_device worked but no device file appeared (pktgen would have made it).
        let e = Kpktgen::new(&root).configure(&cfg()).expect_err("no device file");
        assert!(matches!(&e, KpktgenError::Open { path, .. } if path.ends_with("eth0@0")), "{e}");
        let _ = fs::remove_dir_all(&root);
        let _ = fs::remove_dir_all(none.parent().expect("parent"));
    }

    #[test]
    fn rejected_by_result_line() {
        let root = fake_tree("rejected", 1, &[("eth0@0", "Result: Flag -:UDPSRC_RND:- unknown\n")]);
        let e = Kpktgen::new(&root).configure(&cfg()).expect_err("rejected");
        match &e {
            KpktgenError::Rejected { command, result, .. } => {
                assert_eq!(command, "count 0");
                assert!(result.starts_with("Flag -:UDPSRC_RND:- unknown"));
            }
            other => panic!("{other:?}"),
        }
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn results_need_a_run() {
        let root = fake_tree(
            "idle",
            1,
            &[("eth0@0", "Current:\n     pkts-sofar: 7  errors: 0\nResult: OK: udp_src_max=10001\n")],
        );
        let mut k = Kpktgen::new(&root);
        k.configure(&cfg()).expect("configure");
        assert_eq!(k.sofar().expect("sofar"), 7);
        assert!(matches!(k.results(), Err(KpktgenError::NoResult { .. })));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn error_hints() {
        let e = KpktgenError::Write {
            path: "/pg/kpktgend_0".into(),
            command: "add_device nope@0".into(),
            source: io::Error::from_raw_os_error(libc::ENODEV),
            result: Some("ERROR: can not add device nope@0".into()),
        };
        let m = e.to_string();
        assert!(
            m.contains("no such interface") && m.contains("pktgen says: ERROR: can not add device nope@0"),
            "{m}"
        );
        let e = KpktgenError::Open {
            path: "/pg/pgctrl".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
    }
}
