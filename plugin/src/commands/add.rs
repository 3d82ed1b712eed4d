//! ADD: IPAM, then tapwayd attaches the port, then the result. A rollback guard undoes the
//! IPAM allocation and the attach if anything after IPAM ADD fails. With
//! `"ipam": {"type": "tapway-ipam"}` there is no IPAM plugin to exec: tapwayd allocates the
//! addresses in the attach itself, one round trip for the whole ADD.

use std::io::Write;
use std::net::IpAddr;

use ipnet::IpNet;
use tapway_api::{AttachRequest, ClientError, ErrorCode, IpConfig as ApiIp, Owner, RouteConfig};

use crate::daemon::Daemon;
use crate::env::{CniArgs, CniEnv};
use crate::error::{is_unreachable, CniError};
use crate::ipam::Ipam;
use crate::netconf::Loaded;
use crate::state::{PendingDetach, StateDir};
use crate::tapway_ipam;
use crate::types::{CniResult, Interface, IpConfig, Route};
use crate::{log_error, log_info, log_warn};

/// Undoes a half-done ADD when dropped armed: detach (if the attach may have created the
/// port), then IPAM DEL (if IPAM ADD succeeded). Failures are logged; a detach that cannot
/// reach tapwayd is recorded as pending.
struct Rollback<'a> {
    env: &'a CniEnv,
    loaded: &'a Loaded,
    daemon: &'a Daemon,
    state: &'a StateDir,
    ipam: Option<&'a Ipam<'a>>,
    detach: bool,
    armed: bool,
}

impl Rollback<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (cid, ifname) = (&self.env.container_id, &self.env.ifname);
        if self.detach {
            match self.daemon.detach(cid, ifname) {
                Ok(d) => log_info!("rollback: port {}", if d { "detached" } else { "was not there" }),
                Err(e) if is_unreachable(&e) => {
                    log_warn!("rollback: tapwayd unreachable ({e}); detach recorded as pending");
                    let entry = PendingDetach {
                        socket: self.daemon.socket(),
                        container_id: cid.clone(),
                        ifname: ifname.clone(),
                        network: self.loaded.conf.name.clone(),
                        since: 0,
                        release_ip: false,
                    };
                    if let Err(e) = self.state.record(entry) {
                        log_error!("rollback: cannot record pending detach: {e}");
                    }
                }
                Err(e) => log_error!("rollback: detach failed: {e}"),
            }
        }
        if let Some(ipam) = self.ipam {
            match ipam.del(None) {
                Ok(()) => log_info!("rollback: IPAM {} released the addresses", ipam.name()),
                Err(e) => log_error!("rollback: IPAM DEL failed: {e}"),
            }
        }
    }
}

/// Whether a failed attach may have left a port behind: the request went out but no clear
/// answer came back, or the daemon failed half-way. A refusal (`exists`, bad argument) made
/// nothing, and detaching then could hit another attachment of the same container.
fn attach_may_have_created(e: &ClientError) -> bool {
    match e {
        ClientError::Io(_) | ClientError::NoAnswer | ClientError::Decode(_) => true,
        ClientError::Api(api) => api.code == ErrorCode::System,
        ClientError::Connect { .. } => false,
    }
}

fn default_dst(gw: IpAddr) -> IpNet {
    match gw {
        IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
        IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
    }
}

/// The routes tapwayd installs: IPAM's, plus a default route per family that has an address
/// with a gateway and no default route of its own (the daemon's rule, mirrored in the result).
fn routes_with_defaults(ipam: &CniResult) -> Vec<Route> {
    let mut routes = ipam.routes.clone();
    for v4 in [true, false] {
        let has_default = routes.iter().any(|r| r.is_default() && r.dst.addr().is_ipv4() == v4);
        let gw = ipam.ips.iter().filter_map(|ip| ip.gateway).find(|gw| gw.is_ipv4() == v4);
        if let (false, Some(gw)) = (has_default, gw) {
            routes.push(Route::new(default_dst(gw), Some(gw)));
        }
    }
    routes
}

/// ADD.
pub fn cmd_add(env: &CniEnv, loaded: &Loaded, out: &mut dyn Write) -> Result<(), CniError> {
    let args = CniArgs::parse(&env.args)?;
    super::check_netns(&env.netns)?;
    let prev = loaded.prev_result()?;
    let daemon = Daemon::for_conf(loaded);
    let state = StateDir::new(loaded.state_dir());
    // Before attaching: an old entry for this same container/interface must not remove the
    // port made now.
    super::drain_pending(&daemon, loaded, &env.path);
    let ipam = Ipam::open(loaded, &env.path)?;
    let in_daemon = match loaded.ipam_type() {
        Some(tapway_ipam::TYPE) => {
            let mut c = tapway_ipam::config(loaded)?;
            c.request.requested = tapway_ipam::requested(loaded, &args);
            Some(c)
        }
        _ => None,
    };

    let mut guard =
        Rollback { env, loaded, daemon: &daemon, state: &state, ipam: None, detach: false, armed: true };
    let from_ipam = match &ipam {
        Some(i) => {
            let r = i.add()?;
            guard.ipam = Some(i);
            log_info!(
                "IPAM {} (v{}) gave {:?}",
                i.name(),
                i.version(),
                r.ips.iter().map(|ip| ip.address.to_string()).collect::<Vec<_>>()
            );
            r
        }
        None => CniResult::default(),
    };
    let extra = |r: &&Route| {
        r.mtu.is_some()
            || r.advmss.is_some()
            || r.priority.is_some()
            || r.table.is_some()
            || r.scope.is_some()
    };
    for r in from_ipam.routes.iter().filter(extra) {
        log_warn!(
            "route {} has attributes tapwayd does not set (mtu/advmss/priority/table/scope); ignored",
            r.dst
        );
    }

    let mac = loaded.mac(&args);
    let req = AttachRequest {
        netns: env.netns.clone(),
        ifname: env.ifname.clone(),
        mac: mac.clone(),
        mtu: loaded.conf.mtu,
        ips: from_ipam
            .ips
            .iter()
            .map(|ip| ApiIp { address: ip.address.to_string(), gateway: ip.gateway.map(|g| g.to_string()) })
            .collect(),
        routes: from_ipam
            .routes
            .iter()
            .map(|r| RouteConfig { dst: r.dst.to_string(), gw: r.gw.map(|g| g.to_string()) })
            .collect(),
        owner: Owner {
            container_id: Some(env.container_id.clone()),
            network: Some(loaded.conf.name.clone()),
            pod_namespace: args.pod_namespace.clone(),
            pod_name: args.pod_name.clone(),
            pod_uid: args.pod_uid.clone(),
            pod_infra_container_id: args.pod_infra_container_id.clone(),
        },
        bandwidth: loaded.runtime.bandwidth,
        ipam: in_daemon.as_ref().map(|c| c.request.clone()),
    };
    let port = daemon.attach(req).map_err(|e| {
        guard.detach = attach_may_have_created(&e);
        CniError::from_client(e, CniError::TryAgainLater)
    })?;
    guard.detach = true;
    log_info!("attached port {} ({}, mtu {}) in {}", port.id, port.mac, port.mtu, env.netns);
    let from_ipam = match &in_daemon {
        Some(c) => {
            let allocation = port.ipam.as_ref().ok_or_else(|| {
                CniError::DaemonProtocol("tapwayd attached the port without the allocation asked for".into())
            })?;
            CniResult { dns: c.dns.clone(), ..tapway_ipam::to_result(allocation)? }
        }
        None => from_ipam,
    };

    let ours = CniResult {
        interfaces: vec![Interface {
            name: env.ifname.clone(),
            mac: if port.mac.is_empty() { mac.unwrap_or_default() } else { port.mac.clone() },
            mtu: (port.mtu > 0).then_some(port.mtu),
            sandbox: env.netns.clone(),
            socket_path: None,
            pci_id: None,
        }],
        ips: from_ipam.ips.iter().map(|ip| IpConfig { interface: Some(0), ..ip.clone() }).collect(),
        routes: routes_with_defaults(&from_ipam),
        dns: loaded.result_dns(&from_ipam.dns),
    };
    let result = match prev {
        Some(mut p) => {
            p.extend(ours);
            p
        }
        None => ours,
    };
    let bytes = result
        .to_json_pretty(loaded.version)
        .map_err(|e| CniError::Io(format!("encoding the result: {e}")))?;
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CniError::Io(format!("writing the result: {e}")))?;
    guard.disarm();
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_follow_the_daemon_rule() {
        let ipam = CniResult {
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: None,
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                    interface: None,
                },
            ],
            routes: vec![Route::new("::/0".parse().unwrap(), None)],
            ..Default::default()
        };
        let r = routes_with_defaults(&ipam);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], Route::new("0.0.0.0/0".parse().unwrap(), Some("10.1.0.1".parse().unwrap())));
        let no_gw = CniResult {
            ips: vec![IpConfig { address: "10.1.0.5/24".parse().unwrap(), gateway: None, interface: None }],
            ..Default::default()
        };
        assert!(routes_with_defaults(&no_gw).is_empty());
    }

    #[test]
    fn rollback_decision() {
        use tapway_api::ApiError;
        assert!(!attach_may_have_created(&ClientError::Api(ApiError::new(ErrorCode::Exists, "x"))));
        assert!(!attach_may_have_created(&ClientError::Api(ApiError::new(ErrorCode::InvalidArgument, "x"))));
        assert!(!attach_may_have_created(&ClientError::Api(ApiError::new(ErrorCode::AddressConflict, "x"))));
        assert!(attach_may_have_created(&ClientError::Api(ApiError::new(ErrorCode::System, "x"))));
        assert!(attach_may_have_created(&ClientError::NoAnswer));
        let refused = ClientError::Connect { path: "/x".into(), source: std::io::ErrorKind::NotFound.into() };
        assert!(!attach_may_have_created(&refused));
    }
}
