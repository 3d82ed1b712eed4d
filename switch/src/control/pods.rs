//! Pod port lifecycle: attach (create the TAP, move it into the pod, configure it, plug it in),
//! detach, check and gc.
//!
//! Attach order, each step undone if a later one fails:
//! 1. validate everything (a bad request changes nothing);
//! 2. refuse a port already attached as this netns + ifname or container + ifname;
//! 3. on a thread inside the pod netns: refuse an existing ifname, create the persistent TAP
//!    there under its final name (`IFF_TUN_EXCL`), set MAC/MTU, bring it up, add addresses
//!    and routes. Creating it in place avoids a netns move, which costs tens of milliseconds
//!    of RCU synchronisation in the kernel;
//! 4. publish the new port to the workers and save the state file.
//!
//! Rollback is one move: the TAP is made non-persistent and closed, which deletes the device.

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
use crate::netlink::{LinkChanges, Netlink, NlError};
use crate::netns::{self, NetnsError};
use crate::port::tap::{TapError, TapPort};
use crate::stats::PortCounters;
use crate::table::{PortEntry, PortKind, PortMeta, SpoofGuard};
use crate::wire::Mac;

/// Transmit queue of pod TAPs (frames from the pod waiting for the switch).
const POD_TXQLEN: u32 = 1000;

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
            NetnsError::Open { .. } | NetnsError::NotNetns(_) => ErrorCode::InvalidArgument,
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
    let mut ips = Vec::new();
    let mut gateways: Vec<IpAddr> = Vec::new();
    for ip in &req.ips {
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
    if req.ips.len() > 16 || req.routes.len() > 64 {
        return Err(api_err(ErrorCode::InvalidArgument, "too many addresses or routes"));
    }
    let mut routes = Vec::new();
    for r in &req.routes {
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
    Ok(AttachPlan { netns, ifname: req.ifname.clone(), mac, mtu, ips, routes })
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

    /// Attaches a pod port.
    pub fn attach(&self, req: AttachRequest) -> Result<PortInfo, ApiError> {
        let plan = plan_attach(&req, self.mtu)?;
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.switch.ports();
        if let Some(p) = table.iter().find(|p| p.meta.netns == req.netns && p.meta.ifname == req.ifname) {
            return Err(api_err(
                ErrorCode::Exists,
                format!("port {} is already attached as {} in {}", p.id, req.ifname, req.netns),
            ));
        }
        if let Some(c) = &req.owner.container_id {
            if let Some(p) = table
                .iter()
                .find(|p| p.meta.owner.container_id.as_ref() == Some(c) && p.meta.ifname == req.ifname)
            {
                return Err(api_err(
                    ErrorCode::Exists,
                    format!("container {c} already has {} (port {})", req.ifname, p.id),
                ));
            }
        }
        let id = table
            .free_id(self.switch.config.max_ports)
            .ok_or_else(|| api_err(ErrorCode::ResourceExhausted, "the switch has no free port"))?;
        let (tap, ifindex) = create_pod_port(&plan)?;
        let tap = Arc::new(tap);
        let entry = Arc::new(PortEntry {
            id,
            kind: PortKind::Pod,
            io: tap.clone(),
            mac: plan.mac,
            guard: Some(SpoofGuard::new(plan.mac, &plan.ips)),
            worker: self.switch.least_loaded_worker(),
            counters: PortCounters::default(),
            police: crate::datapath::police::PortPolice::new(req.bandwidth),
            meta: PortMeta {
                name: plan.ifname.clone(),
                netns: req.netns.clone(),
                ifname: plan.ifname.clone(),
                ifindex,
                mtu: plan.mtu,
                ips: plan.ips.clone(),
                owner: req.owner.clone(),
            },
        });
        let info = port_info(&entry);
        self.switch.update(|t| (t.with(entry), ()));
        pods.insert(id, tap);
        drop(pods);
        self.save_state();
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
        let Some(entry) = self.find(sel) else { return Ok(DetachResult { detached: false }) };
        self.switch.update(|t| (t.without(entry.id), ()));
        self.switch.fdb.flush_port(entry.id);
        self.switch.neigh.flush_port(entry.id);
        let tap = pods.remove(&entry.id);
        drop(pods);
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
        self.save_state();
        tracing::info!(port = entry.id, netns = %entry.meta.netns, ifname = %entry.meta.ifname, "detached");
        Ok(DetachResult { detached: true })
    }

    /// Verifies a port against what it should look like.
    pub fn check(&self, req: &CheckRequest) -> Result<(), ApiError> {
        validate::ifname(&req.port.ifname).map_err(invalid)?;
        let entry = self.find(&req.port).ok_or_else(|| {
            api_err(ErrorCode::NotFound, format!("no port {} for this container/netns", req.port.ifname))
        })?;
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
        if nl.link_by_name(&plan.ifname)?.is_some() {
            return Err(exists());
        }
        let tap = TapPort::open(&plan.ifname, true, true).map_err(|e| {
            if TapPort::is_busy(&e) {
                exists()
            } else {
                e.into()
            }
        })?;
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
