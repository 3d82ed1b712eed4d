//! Pod port lifecycle: attach (create the TAP, move it into the pod, configure it, plug it in),
//! detach, check and gc.
//!
//! Attach order, each step undone if a later one fails:
//! 1. validate everything (a bad request changes nothing);
//! 2. under the attach mutex, against the port table: a port already attached as this netns +
//!    ifname or container + ifname is the answer again if the request matches it (a retried
//!    ADD), `exists` otherwise; an address, or MAC, that another port owns (another pod's
//!    IP or MAC, a gateway IP, the host port's or the uplink's MAC) is `address_conflict`;
//! 3. on a thread inside the pod netns: refuse an existing ifname (but replace a persistent TAP
//!    that nobody holds, which a tapwayd killed mid-attach leaves), create the persistent TAP
//!    there under its final name (`IFF_TUN_EXCL`), set MAC/MTU, bring it up, add addresses
//!    and routes. Creating it in place avoids a netns move, which costs tens of milliseconds
//!    of RCU synchronisation in the kernel;
//! 4. write the state file with the new port, then publish it to the workers (a failed write
//!    is the attach's error, and undoes it: no pod is attached without a record that
//!    survives a restart).
//!
//! Rollback is one move: the TAP is made non-persistent and closed, which deletes the device.
//! A kill -9 at any point leaves either nothing, a TAP that step 3 of the retry replaces, or a
//! port in the state file that the restarted daemon restores and step 2 of the retry returns
//! (the crash points of [`crate::failpoint`] test each).

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use tapway_api::validate;
use tapway_api::{
    ApiError, AttachRequest, CheckRequest, DetachResult, ErrorCode, GcRequest, GcResult, PortInfo,
    PortSelector,
};

use super::{api_err, port_info, Control};
use crate::failpoint;
use crate::netlink::{Link, LinkChanges, Netlink, NlError, TunInfo};
use crate::netns::{self, NetnsError};
use crate::port::tap::{TapError, TapPort};
use crate::table::{PortEntry, PortKind, PortMeta, SpoofGuard};
use crate::wire::Mac;

/// Transmit queue of pod TAPs (frames from the pod waiting for the switch). Public for
/// tapway-bench's `floor`, which sets its TAPs up as attach does.
pub const POD_TXQLEN: u32 = 1000;

/// A validated attach request.
#[derive(Debug, Clone)]
pub struct AttachPlan {
    /// Netns path.
    pub netns: PathBuf,
    /// Interface name in the pod.
    pub ifname: String,
    /// MAC.
    pub mac: Mac,
    /// MTU.
    pub mtu: u32,
    /// Addresses.
    pub ips: Vec<IpNet>,
    /// Routes: destination and next hop (`None`: on-link).
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
}

impl From<NlError> for ApiError {
    fn from(e: NlError) -> Self {
        api_err(ErrorCode::System, e.to_string())
    }
}

impl From<NetnsError> for ApiError {
    fn from(e: NetnsError) -> Self {
        let code = match e {
            NetnsError::Open { .. } | NetnsError::NotNetns { .. } => ErrorCode::InvalidArgument,
            _ => ErrorCode::System,
        };
        api_err(code, e.to_string())
    }
}

impl From<TapError> for ApiError {
    fn from(e: TapError) -> Self {
        api_err(ErrorCode::System, e.to_string())
    }
}

fn invalid(e: validate::Invalid) -> ApiError {
    api_err(ErrorCode::InvalidArgument, e.0)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok();
    if !ok {
        // No urandom: fall back to the clock, still unique enough for a temporary name.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8 ^ (std::process::id() as u8);
        }
    }
    b
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> Mac {
    let mut m: Mac = random_bytes();
    m[0] = (m[0] & 0xfe) | 0x02;
    m
}

/// Validates an attach request against the daemon's defaults.
pub fn plan_attach(req: &AttachRequest, default_mtu: u32) -> Result<AttachPlan, ApiError> {
    validate::ifname(&req.ifname).map_err(invalid)?;
    if req.netns.is_empty() {
        return Err(api_err(ErrorCode::InvalidArgument, "netns is required"));
    }
    let netns = PathBuf::from(&req.netns);
    netns::open(&netns)?;
    if let Some(id) = &req.owner.container_id {
        validate::container_id(id).map_err(invalid)?;
    }
    let mac = match &req.mac {
        Some(m) => validate::mac(m).map_err(invalid)?,
        None => random_mac(),
    };
    let mtu = req.mtu.unwrap_or(default_mtu);
    validate::mtu(mtu).map_err(invalid)?;
    if let Some(b) = &req.bandwidth {
        // 10 Tbit/s and 1 Tbit of burst: far above any NIC, low enough to never overflow.
        if [b.ingress_rate, b.egress_rate].iter().any(|r| *r > 10_000_000_000_000)
            || [b.ingress_burst, b.egress_burst].iter().any(|r| *r > 1_000_000_000_000)
        {
            return Err(api_err(ErrorCode::InvalidArgument, "bandwidth rate or burst out of range"));
        }
    }
    if req.ipam.is_some() && !req.ips.is_empty() {
        return Err(api_err(ErrorCode::InvalidArgument, "an attach that asks for ipam lists no addresses"));
    }
    let routes = req.ipam.as_ref().map_or(&req.routes, |i| &i.routes);
    let (ips, routes) = plan_ips(&req.ips, routes)?;
    Ok(AttachPlan { netns, ifname: req.ifname.clone(), mac, mtu, ips, routes })
}

/// The addresses and routes of an attach, checked, with a default route for each family that
/// has a gateway and no default route of its own.
#[allow(clippy::type_complexity)]
pub fn plan_ips(
    req_ips: &[tapway_api::IpConfig],
    req_routes: &[tapway_api::RouteConfig],
) -> Result<(Vec<IpNet>, Vec<(IpNet, Option<IpAddr>)>), ApiError> {
    let mut ips = Vec::new();
    let mut gateways: Vec<IpAddr> = Vec::new();
    for ip in req_ips {
        let net = validate::cidr(&ip.address).map_err(invalid)?;
        if let Some(gw) = &ip.gateway {
            let gw = validate::ip(gw).map_err(invalid)?;
            if gw.is_ipv4() != net.addr().is_ipv4() {
                return Err(api_err(
                    ErrorCode::InvalidArgument,
                    format!("gateway {gw} is not of the family of {net}"),
                ));
            }
            if gw == net.addr() {
                return Err(api_err(
                    ErrorCode::InvalidArgument,
                    format!("gateway {gw} is the pod's own address"),
                ));
            }
            gateways.push(gw);
        }
        if ips.contains(&net) {
            return Err(api_err(ErrorCode::InvalidArgument, format!("address {net} is listed twice")));
        }
        ips.push(net);
    }
    if req_ips.len() > 16 || req_routes.len() > 64 {
        return Err(api_err(ErrorCode::InvalidArgument, "too many addresses or routes"));
    }
    let mut routes = Vec::new();
    for r in req_routes {
        let dst = validate::route_dst(&r.dst).map_err(invalid)?;
        let gw = match &r.gw {
            Some(g) => Some(validate::ip(g).map_err(invalid)?),
            None => gateways.iter().copied().find(|g| g.is_ipv4() == dst.addr().is_ipv4()),
        };
        if gw.is_some_and(|g| g.is_ipv4() != dst.addr().is_ipv4()) {
            return Err(api_err(
                ErrorCode::InvalidArgument,
                format!("route {dst} has a next hop of another family"),
            ));
        }
        routes.push((dst, gw));
    }
    // A default route per family that has a gateway, unless one was given.
    for gw in &gateways {
        let has_default =
            routes.iter().any(|(d, _)| d.prefix_len() == 0 && d.addr().is_ipv4() == gw.is_ipv4());
        if !has_default {
            let any: IpNet =
                if gw.is_ipv4() { IpNet::V4(Default::default()) } else { IpNet::V6(Default::default()) };
            routes.push((any, Some(*gw)));
        }
    }
    Ok((ips, routes))
}

impl Control {
    fn find(&self, sel: &PortSelector) -> Option<Arc<PortEntry>> {
        self.switch
            .ports()
            .iter()
            .find(|p| {
                p.kind == PortKind::Pod
                    && p.meta.ifname == sel.ifname
                    && match (&sel.container_id, &sel.netns) {
                        (Some(c), _) if !c.is_empty() => {
                            p.meta.owner.container_id.as_deref() == Some(c.as_str())
                        }
                        (_, Some(n)) if !n.is_empty() => p.meta.netns == *n,
                        _ => false,
                    }
            })
            .cloned()
    }

    /// A pod's port entry, as attach and restore (and a lost port's stand-in) all make it:
    /// anti-spoofed to its MAC and addresses, rate-limited as asked, storm-controlled, on the
    /// least loaded worker.
    pub(super) fn pod_entry(
        &self,
        id: u16,
        io: Arc<dyn crate::port::PortIo>,
        mac: Mac,
        bandwidth: Option<tapway_api::Bandwidth>,
        meta: PortMeta,
    ) -> Arc<PortEntry> {
        Arc::new(PortEntry {
            id,
            kind: PortKind::Pod,
            io,
            mac,
            guard: Some(SpoofGuard::new(mac, &meta.ips)),
            worker: self.switch.least_loaded_worker(),
            counters: self.switch.port_counters(),
            police: crate::datapath::police::PortPolice::new(bandwidth).with_storm(&self.switch.config.storm),
            meta,
        })
    }

    /// Attaches a pod port.
    pub fn attach(&self, req: AttachRequest) -> Result<PortInfo, ApiError> {
        let mut plan = plan_attach(&req, self.mtu)?;
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.switch.ports();
        let same_place = |p: &&Arc<PortEntry>| {
            p.meta.ifname == req.ifname
                && (p.meta.netns == req.netns
                    || req.owner.container_id.is_some()
                        && p.meta.owner.container_id == req.owner.container_id)
        };
        if let Some(p) = table.iter().find(same_place) {
            if is_repeat(p, &req, &plan) {
                tracing::info!(port = p.id, netns = %req.netns, ifname = %req.ifname, "attach repeated; same port");
                // A lost port is tried again now: the runtime says its netns is there.
                self.revive_lost(p.id, &mut pods)?;
                return Ok(port_info(p));
            }
            let whose = match &p.meta.owner.container_id {
                Some(c) if p.meta.netns != req.netns => format!("container {c} already has"),
                _ => format!("{} already has", req.netns),
            };
            return Err(api_err(
                ErrorCode::Exists,
                format!("{whose} {} (port {}), attached with other settings", req.ifname, p.id),
            ));
        }
        if req.mac.is_none() {
            // A generated MAC that some port has (1 in 2^46 per port) is generated again.
            for _ in 0..8 {
                if !table.iter().any(|p| p.mac == plan.mac) {
                    break;
                }
                plan.mac = random_mac();
            }
        }
        let allocation = match &req.ipam {
            Some(ipam) => {
                let started = std::time::Instant::now();
                let a = self.allocate(ipam, &table)?;
                self.metrics.phase("attach_allocate", started);
                (plan.ips, plan.routes) = plan_ips(&a.ips, &a.routes)?;
                Some(a)
            }
            None => None,
        };
        let conflict = address_conflict(table.iter(), &self.gateways(), &plan.mac, &plan.ips)
            .or_else(|| self.allocated_to(&plan.ips));
        if let Some(why) = conflict {
            tracing::warn!(netns = %req.netns, ifname = %req.ifname, "attach refused: {why}");
            return Err(api_err(ErrorCode::AddressConflict, why));
        }
        let id = table
            .free_id(self.switch.config.max_ports)
            .ok_or_else(|| api_err(ErrorCode::ResourceExhausted, "the switch has no free port"))?;
        failpoint::hit("attach:before_tap");
        let started = std::time::Instant::now();
        let (tap, ifindex) = create_pod_port(&plan)?;
        self.metrics.phase("attach_interface", started);
        failpoint::hit("attach:after_config");
        let tap = Arc::new(tap);
        let meta = PortMeta {
            name: plan.ifname.clone(),
            netns: req.netns.clone(),
            ifname: plan.ifname.clone(),
            ifindex,
            mtu: plan.mtu,
            ips: plan.ips.clone(),
            owner: req.owner.clone(),
            ipam: allocation,
        };
        let entry = self.pod_entry(id, tap.clone(), plan.mac, req.bandwidth, meta);
        let info = port_info(&entry);
        let started = std::time::Instant::now();
        let published = self.publish_recorded(entry);
        self.metrics.phase("attach_record", started);
        if let Err(e) = published {
            // Unrecorded, the pod would be forgotten by the next restart: undo (non-persistent
            // + closed = deleted).
            let _ = tap.release();
            return Err(api_err(e.code, format!("{}; the attach was undone", e.message)));
        }
        pods.insert(id, tap);
        failpoint::hit("attach:after_publish");
        drop(pods);
        tracing::info!(port = id, netns = %req.netns, ifname = %req.ifname, mac = %info.mac, ips = ?info.ips, "attached");
        Ok(info)
    }

    /// Detaches a pod port; `detached: false` when there was none.
    pub fn detach(&self, sel: &PortSelector) -> Result<DetachResult, ApiError> {
        validate::ifname(&sel.ifname).map_err(invalid)?;
        if sel.container_id.as_deref().unwrap_or("").is_empty()
            && sel.netns.as_deref().unwrap_or("").is_empty()
        {
            return Err(api_err(ErrorCode::InvalidArgument, "detach needs netns or container_id"));
        }
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = self.find(sel) else {
            self.resave_if_dirty()?;
            return Ok(DetachResult { detached: false });
        };
        let started = std::time::Instant::now();
        self.switch.update(|t| (t.without(entry.id), ()));
        self.switch.fdb.flush_port(entry.id);
        // Service flows to and from the pod end now (UDP flushed, TCP reset; control/services.rs),
        // rather than be sent to a MAC no port has any more.
        let port_ips: Vec<std::net::IpAddr> = entry.meta.ips.iter().map(|n| n.addr()).collect();
        self.forget_backend_ips(&port_ips);
        self.switch.neigh.flush_port(entry.id);
        let tap = pods.remove(&entry.id);
        drop(pods);
        self.metrics.phase("detach_unplug", started);
        let started = std::time::Instant::now();
        // Delete the interface here, so the kernel's slow unregistering happens on this
        // thread and not in the worker that closes the fd last.
        let netns = PathBuf::from(&entry.meta.netns);
        if netns::open(&netns).is_ok() {
            let (ifname, index) = (entry.meta.ifname.clone(), entry.meta.ifindex);
            let res = netns::run_in(&netns, || -> Result<(), ApiError> {
                let mut nl = Netlink::new()?;
                if nl.link_by_name(&ifname)?.is_some_and(|l| l.index == index) {
                    nl.del_link(index)?;
                }
                Ok(())
            });
            if let Err(e) = res {
                tracing::warn!(port = entry.id, error = %e, "could not delete the pod interface; it goes with its fd");
            }
        }
        if let Some(tap) = &tap {
            // Fallback when the delete failed: the device goes with the last fd.
            let _ = tap.release();
        }
        self.metrics.phase("detach_interface", started);
        let started = std::time::Instant::now();
        let saved = self.save_state();
        self.metrics.phase("detach_record", started);
        saved.map_err(|e| api_err(e.code, format!("port {} is detached, but {}", entry.id, e.message)))?;
        tracing::info!(port = entry.id, netns = %entry.meta.netns, ifname = %entry.meta.ifname, "detached");
        Ok(DetachResult { detached: true })
    }

    /// Verifies a port against what it should look like.
    pub fn check(&self, req: &CheckRequest) -> Result<(), ApiError> {
        validate::ifname(&req.port.ifname).map_err(invalid)?;
        let entry = self.find(&req.port).ok_or_else(|| {
            api_err(ErrorCode::NotFound, format!("no port {} for this container/netns", req.port.ifname))
        })?;
        if let Some(lost) = self.lost_info(entry.id) {
            return Err(api_err(ErrorCode::Mismatch, format!("port {} is lost: {}", entry.id, lost.reason)));
        }
        let want_mac = match &req.mac {
            Some(m) => Some(validate::mac(m).map_err(invalid)?),
            None => None,
        };
        let mut want_ips = Vec::new();
        for ip in &req.ips {
            want_ips.push(validate::cidr(ip).map_err(invalid)?);
        }
        if want_ips.is_empty() {
            want_ips = entry.meta.ips.clone();
        }
        let mut want_routes = Vec::new();
        for r in &req.routes {
            let dst = validate::route_dst(&r.dst).map_err(invalid)?;
            let gw = r.gw.as_deref().map(validate::ip).transpose().map_err(invalid)?;
            want_routes.push((dst, gw));
        }
        let netns = PathBuf::from(&entry.meta.netns);
        let (ifname, index) = (entry.meta.ifname.clone(), entry.meta.ifindex);
        netns::run_in(&netns, || -> Result<(), ApiError> {
            let mut nl = Netlink::new()?;
            let mismatch = |m: String| api_err(ErrorCode::Mismatch, m);
            let link = nl
                .link_by_name(&ifname)?
                .ok_or_else(|| mismatch(format!("interface {ifname} is missing")))?;
            if link.index != index {
                return Err(mismatch(format!("interface {ifname} is not the one tapway attached")));
            }
            if let Some(m) = want_mac {
                if link.mac != Some(m) {
                    return Err(mismatch(format!(
                        "interface {ifname} has MAC {:?}, expected {}",
                        link.mac.map(|m| validate::format_mac(&m)),
                        validate::format_mac(&m)
                    )));
                }
            }
            if !link.up {
                return Err(mismatch(format!("interface {ifname} is down")));
            }
            let have = nl.addrs(index)?;
            if let Some(missing) = want_ips.iter().find(|ip| !have.contains(ip)) {
                return Err(mismatch(format!("address {missing} is missing on {ifname}")));
            }
            let routes = nl.routes()?;
            for (dst, gw) in &want_routes {
                let found = routes.iter().any(|r| r.dst == *dst && (gw.is_none() || r.gw == *gw));
                if !found {
                    return Err(mismatch(format!("route to {dst} is missing")));
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Detaches every port of `req.network` whose attachment is not listed as valid.
    pub fn gc(&self, req: &GcRequest) -> Result<GcResult, ApiError> {
        if req.network.is_empty() {
            return Err(api_err(ErrorCode::InvalidArgument, "gc needs the network name"));
        }
        let stale: Vec<_> = self
            .switch
            .ports()
            .iter()
            .filter(|p| p.meta.owner.network.as_deref() == Some(req.network.as_str()))
            .filter(|p| {
                let Some(c) = &p.meta.owner.container_id else { return false };
                !req.valid.iter().any(|a| a.container_id == *c && a.ifname == p.meta.ifname)
            })
            .map(|p| {
                (
                    port_info(p),
                    PortSelector {
                        netns: None,
                        container_id: p.meta.owner.container_id.clone(),
                        ifname: p.meta.ifname.clone(),
                    },
                )
            })
            .collect();
        let mut removed = Vec::new();
        for (info, sel) in stale {
            if self.detach(&sel)?.detached {
                removed.push(info);
            }
        }
        Ok(GcResult { removed })
    }
}

/// Why attaching `mac` and `ips` would take what belongs to another port: another pod's MAC
/// or address, a gateway address (on the host port, of each pod range), the host port's or
/// the uplink's MAC. `None` when it takes nothing. Anti-spoofing would otherwise let the pod
/// use them and the FDB move the MAC to it.
pub fn address_conflict<'a>(
    ports: impl IntoIterator<Item = &'a Arc<PortEntry>>,
    gateways: &[IpNet],
    mac: &Mac,
    ips: &[IpNet],
) -> Option<String> {
    let same_addr = |a: &IpNet| ips.iter().find(|ip| ip.addr() == a.addr());
    if let Some(ip) = gateways.iter().find_map(same_addr) {
        return Some(format!("address {} is the gateway's", ip.addr()));
    }
    for p in ports {
        let whose = || match p.kind {
            PortKind::Host => format!("the host port {}", p.meta.ifname),
            PortKind::Uplink => format!("the uplink {}", p.meta.ifname),
            PortKind::Pod => format!("port {} ({} in {})", p.id, p.meta.ifname, p.meta.netns),
        };
        if p.mac == *mac {
            return Some(format!("MAC {} belongs to {}", validate::format_mac(mac), whose()));
        }
        if let Some(ip) = p.meta.ips.iter().find_map(same_addr) {
            return Some(format!("address {} belongs to {}", ip.addr(), whose()));
        }
    }
    None
}

/// Whether `req` asks again for the port `p` already is (same netns, interface, owner and,
/// where the request sets them, MAC, MTU, addresses and rate limits): a retried ADD, e.g.
/// after tapwayd died between saving the port and answering.
fn is_repeat(p: &PortEntry, req: &AttachRequest, plan: &AttachPlan) -> bool {
    let mut want = plan.ips.clone();
    let mut have = p.meta.ips.clone();
    want.sort();
    have.sort();
    let same_ips = match &req.ipam {
        // Allocated by tapwayd: the same if it was, and it holds every address asked for.
        Some(ipam) => {
            p.meta.ipam.is_some()
                && ipam
                    .requested
                    .iter()
                    .all(|r| super::ipam::requested(r).is_ok_and(|a| have.iter().any(|h| h.addr() == a)))
        }
        None => p.meta.ipam.is_none() && want == have,
    };
    p.kind == PortKind::Pod
        && p.meta.netns == req.netns
        && p.meta.ifname == req.ifname
        && p.meta.owner.container_id == req.owner.container_id
        && (req.mac.is_none() || p.mac == plan.mac)
        && (req.mtu.is_none() || p.meta.mtu == plan.mtu)
        && same_ips
        && p.police.config == req.bandwidth
}

/// tapwayd's own pod TAP, as the kernel describes it: a persistent TAP with a vnet header and
/// no packet-information prefix, single-queue.
const OUR_TAP: TunInfo = TunInfo { tap: true, pi: false, vnet_hdr: true, persist: true, multi_queue: false };

/// Whether `link` is a pod TAP that a tapwayd killed mid-attach left behind: a TAP made the
/// way tapwayd makes them that no process holds open (a TAP's carrier is on exactly while an
/// fd is attached). Such a device forwards nothing and belongs to no port, so an attach of its
/// name replaces it; anything else of that name (a veth, a TAP in use) is the runtime's.
fn left_behind(link: &Link) -> bool {
    link.tun == Some(OUR_TAP) && link.carrier == Some(false)
}

/// Creates the pod's TAP inside its netns and configures it; returns the TAP and its ifindex.
fn create_pod_port(plan: &AttachPlan) -> Result<(TapPort, u32), ApiError> {
    let exists = || {
        api_err(
            ErrorCode::Exists,
            format!("interface {} already exists in {}", plan.ifname, plan.netns.display()),
        )
    };
    netns::run_in(&plan.netns, || -> Result<(TapPort, u32), ApiError> {
        let mut nl = Netlink::new()?;
        if let Some(link) = nl.link_by_name(&plan.ifname)? {
            if !left_behind(&link) {
                return Err(exists());
            }
            tracing::warn!(
                netns = %plan.netns.display(),
                ifname = %plan.ifname,
                "replacing a persistent TAP that no process holds (left by a tapwayd killed mid-attach)"
            );
            nl.del_link(link.index)?;
        }
        let tap = TapPort::open(&plan.ifname, true, true).map_err(|e| {
            if TapPort::is_busy(&e) {
                exists()
            } else {
                e.into()
            }
        })?;
        failpoint::hit("attach:after_tap");
        match configure(&mut nl, plan) {
            Ok(index) => Ok((tap, index)),
            Err(e) => {
                // Non-persistent + closed = deleted.
                let _ = tap.release();
                Err(e)
            }
        }
    })
}

/// Sets MAC, MTU, up, addresses and routes of the new TAP (in the pod netns).
fn configure(nl: &mut Netlink, plan: &AttachPlan) -> Result<u32, ApiError> {
    let link = nl
        .link_by_name(&plan.ifname)?
        .ok_or_else(|| api_err(ErrorCode::System, format!("TAP {} vanished after creation", plan.ifname)))?;
    let index = link.index;
    let changes = LinkChanges {
        mac: Some(plan.mac),
        mtu: Some(plan.mtu),
        txqlen: Some(POD_TXQLEN),
        ..Default::default()
    };
    nl.set_link(index, &changes)?;
    // Before up: the link-local address is then the EUI-64 one anti-spoofing expects.
    nl.set_addr_gen_eui64(index)?;
    nl.set_link(index, &LinkChanges { up: Some(true), ..Default::default() })?;
    for ip in &plan.ips {
        nl.add_addr(index, *ip)?;
    }
    for (dst, gw) in &plan.routes {
        // A next hop outside every local subnet (e.g. a /32 address) needs an on-link route.
        if let Some(g) = gw {
            if !plan.ips.iter().any(|n| n.contains(g)) {
                nl.add_route(IpNet::from(*g), None, index)?;
            }
        }
        nl.add_route(*dst, *gw, index)?;
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapway_api::{IpConfig, RouteConfig};

    fn req() -> AttachRequest {
        AttachRequest {
            netns: "/proc/self/ns/net".into(),
            ifname: "eth0".into(),
            ips: vec![IpConfig { address: "10.0.0.5/24".into(), gateway: Some("10.0.0.1".into()) }],
            ..Default::default()
        }
    }

    #[test]
    fn plan_adds_default_route_and_mac() {
        let p = plan_attach(&req(), 1500).unwrap();
        assert_eq!(p.routes, vec![("0.0.0.0/0".parse().unwrap(), Some("10.0.0.1".parse().unwrap()))]);
        assert_eq!(p.mac[0] & 3, 2, "locally administered unicast");
        assert_eq!(p.mtu, 1500);
        let mut r = req();
        r.routes = vec![
            RouteConfig { dst: "0.0.0.0/0".into(), gw: None },
            RouteConfig { dst: "10.96.0.0/12".into(), gw: Some("10.0.0.254".into()) },
        ];
        let p = plan_attach(&r, 1500).unwrap();
        assert_eq!(p.routes.len(), 2);
        assert_eq!(
            p.routes[0].1,
            Some("10.0.0.1".parse().unwrap()),
            "route without gw uses the address' gateway"
        );
    }

    fn entry(id: u16, kind: PortKind, mac: Mac, ips: &[&str]) -> Arc<PortEntry> {
        let meta = PortMeta {
            ifname: format!("if{id}"),
            netns: format!("/run/netns/p{id}"),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            ..Default::default()
        };
        Arc::new(PortEntry {
            mac,
            meta,
            ..PortEntry::test(id, kind, Arc::new(crate::port::mem::MemPort::new(1)))
        })
    }

    #[test]
    fn conflicts_with_every_owned_address() {
        const HOST: Mac = [2, 0, 0, 0, 0, 0xaa];
        const UPLINK: Mac = [2, 0, 0, 0, 0, 0xbb];
        const POD: Mac = [2, 0, 0, 0, 0, 0x05];
        let ports = [
            entry(0, PortKind::Host, HOST, &["10.0.0.1/24", "fd00::1/64"]),
            entry(1, PortKind::Uplink, UPLINK, &[]),
            entry(2, PortKind::Pod, POD, &["10.0.0.5/24", "fd00::5/64"]),
        ];
        let gateways: Vec<IpNet> = vec!["10.0.0.1/24".parse().unwrap(), "fd00::1/64".parse().unwrap()];
        let check = |mac: Mac, ips: &[&str]| {
            let ips: Vec<IpNet> = ips.iter().map(|i| i.parse().unwrap()).collect();
            address_conflict(ports.iter(), &gateways, &mac, &ips)
        };
        let fresh: Mac = [2, 0, 0, 0, 0, 0x06];
        assert_eq!(check(fresh, &["10.0.0.6/24", "fd00::6/64"]), None);
        let cases: [(&str, Mac, &[&str], &str); 7] = [
            ("another pod's IPv4", fresh, &["10.0.0.5/24"], "address 10.0.0.5 belongs to port 2"),
            ("another pod's IPv4, other prefix", fresh, &["10.0.0.5/32"], "belongs to port 2"),
            ("another pod's IPv6", fresh, &["10.0.0.6/24", "fd00::5/128"], "address fd00::5 belongs"),
            ("IPv4 gateway", fresh, &["10.0.0.1/24"], "10.0.0.1 is the gateway's"),
            ("IPv6 gateway", fresh, &["fd00::1/64"], "fd00::1 is the gateway's"),
            ("host MAC", HOST, &["10.0.0.6/24"], "MAC 02:00:00:00:00:aa belongs to the host port"),
            ("uplink MAC", UPLINK, &["10.0.0.6/24"], "belongs to the uplink"),
        ];
        for (what, mac, ips, want) in cases {
            let got = check(mac, ips).unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(got.contains(want), "{what}: {got}");
        }
        let got = check(POD, &["10.0.0.6/24"]).expect("another pod's MAC");
        assert!(got.contains("MAC 02:00:00:00:00:05 belongs to port 2 (if2 in /run/netns/p2)"), "{got}");
        // Gateways count even without a host port in the table.
        let none: [Arc<PortEntry>; 0] = [];
        let ips: Vec<IpNet> = vec!["10.0.0.1/32".parse().unwrap()];
        assert!(address_conflict(none.iter(), &gateways, &fresh, &ips).is_some());
    }

    #[test]
    fn repeat_matches_only_the_same_attachment() {
        let mut r = req();
        r.owner.container_id = Some("c1".into());
        r.netns = "/run/netns/p2".into();
        r.ifname = "if2".into();
        r.mac = Some("02:00:00:00:00:05".into());
        r.ips[0].address = "10.0.0.5/24".into();
        let mut p = entry(2, PortKind::Pod, [2, 0, 0, 0, 0, 5], &["10.0.0.5/24"]);
        Arc::get_mut(&mut p).unwrap().meta.owner.container_id = Some("c1".into());
        Arc::get_mut(&mut p).unwrap().meta.mtu = 1500;
        // plan_attach opens the netns; the plan is built by hand here.
        let plan = |r: &AttachRequest| AttachPlan {
            netns: r.netns.clone().into(),
            ifname: r.ifname.clone(),
            mac: r.mac.as_deref().map(|m| validate::mac(m).unwrap()).unwrap_or([2, 9, 9, 9, 9, 9]),
            mtu: r.mtu.unwrap_or(1500),
            ips: r.ips.iter().map(|i| i.address.parse().unwrap()).collect(),
            routes: Vec::new(),
        };
        assert!(is_repeat(&p, &r, &plan(&r)));
        let mut no_mac = r.clone();
        no_mac.mac = None;
        assert!(is_repeat(&p, &no_mac, &plan(&no_mac)), "a generated MAC is not a difference");
        type Mutation = Box<dyn Fn(&mut AttachRequest)>;
        let differ: Vec<(&str, Mutation)> = vec![
            ("container", Box::new(|r| r.owner.container_id = Some("c2".into()))),
            ("no container", Box::new(|r| r.owner.container_id = None)),
            ("netns", Box::new(|r| r.netns = "/run/netns/p3".into())),
            ("mac", Box::new(|r| r.mac = Some("02:00:00:00:00:06".into()))),
            ("mtu", Box::new(|r| r.mtu = Some(9000))),
            ("ip", Box::new(|r| r.ips[0].address = "10.0.0.6/24".into())),
            ("bandwidth", Box::new(|r| r.bandwidth = Some(Default::default()))),
        ];
        for (what, mutate) in differ {
            let mut r2 = r.clone();
            mutate(&mut r2);
            assert!(!is_repeat(&p, &r2, &plan(&r2)), "{what}");
        }
    }

    #[test]
    fn only_an_unheld_tap_of_ours_is_left_behind() {
        let link = |tun: Option<TunInfo>, carrier: Option<bool>| Link {
            index: 2,
            name: "eth0".into(),
            mac: None,
            mtu: 1500,
            up: false,
            carrier,
            tun,
        };
        assert!(left_behind(&link(Some(OUR_TAP), Some(false))));
        assert!(!left_behind(&link(Some(OUR_TAP), Some(true))), "held open by a process");
        assert!(!left_behind(&link(Some(OUR_TAP), None)), "carrier unknown");
        assert!(!left_behind(&link(None, Some(false))), "a veth or bridge");
        for other in [
            TunInfo { tap: false, ..OUR_TAP },
            TunInfo { pi: true, ..OUR_TAP },
            TunInfo { vnet_hdr: false, ..OUR_TAP },
            TunInfo { persist: false, ..OUR_TAP },
            TunInfo { multi_queue: true, ..OUR_TAP },
        ] {
            assert!(!left_behind(&link(Some(other), Some(false))), "{other:?}");
        }
    }

    #[test]
    fn plan_rejects_bad_input() {
        type Mutation = Box<dyn Fn(&mut AttachRequest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("ifname", Box::new(|r| r.ifname = "this-name-is-too-long".into())),
            ("netns missing", Box::new(|r| r.netns = "/nonexistent".into())),
            ("netns not ns", Box::new(|r| r.netns = "/etc/hostname".into())),
            ("netns empty", Box::new(|r| r.netns.clear())),
            ("mac", Box::new(|r| r.mac = Some("01:00:00:00:00:01".into()))),
            ("mtu", Box::new(|r| r.mtu = Some(70000))),
            ("cidr", Box::new(|r| r.ips[0].address = "10.0.0.5".into())),
            ("gw family", Box::new(|r| r.ips[0].gateway = Some("fd00::1".into()))),
            ("gw self", Box::new(|r| r.ips[0].gateway = Some("10.0.0.5".into()))),
            ("dup ip", Box::new(|r| r.ips.push(r.ips[0].clone()))),
            ("route", Box::new(|r| r.routes.push(RouteConfig { dst: "x".into(), gw: None }))),
            (
                "route gw",
                Box::new(|r| {
                    r.routes.push(RouteConfig { dst: "10.1.0.0/16".into(), gw: Some("fd00::1".into()) })
                }),
            ),
            ("container id", Box::new(|r| r.owner.container_id = Some("-bad".into()))),
        ];
        for (what, mutate) in cases {
            let mut r = req();
            mutate(&mut r);
            let e = plan_attach(&r, 1500).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{what}: {e}");
        }
    }
}
