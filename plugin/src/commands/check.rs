//! CHECK: the IPAM plugin still has the allocation, tapwayd still has the port, and the
//! interface in the netns matches prevResult (MAC, addresses, routes; tapwayd looks).

use ipnet::IpNet;
use tapway_api::{CheckRequest, ClientError, ErrorCode, PortSelector, RouteConfig};

use crate::daemon::Daemon;
use crate::env::CniEnv;
use crate::error::CniError;
use crate::ipam::Ipam;
use crate::log_info;
use crate::netconf::Loaded;
use crate::version::Version;

/// CHECK.
pub fn cmd_check(env: &CniEnv, loaded: &Loaded) -> Result<(), CniError> {
    if loaded.version < Version::V0_4_0 {
        return Err(CniError::IncompatibleVersion(format!(
            "config version {} does not allow CHECK",
            loaded.version
        )));
    }
    let prev =
        loaded.prev_result()?.ok_or_else(|| CniError::InvalidConfig("CHECK needs a prevResult".into()))?;
    super::check_netns(&env.netns)?;
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && (i.sandbox.is_empty() || i.sandbox == env.netns))
        .ok_or_else(|| {
            CniError::Mismatch(format!("prevResult has no interface {} in {}", env.ifname, env.netns))
        })?;
    let mac = prev.interfaces.get(idx).map(|i| i.mac.clone()).filter(|m| !m.is_empty());
    let ips: Vec<String> =
        prev.ips.iter().filter(|ip| ip.interface == Some(idx)).map(|ip| ip.address.to_string()).collect();
    // Routes are not tied to interfaces in a result. When the result has other interfaces
    // (tapway is not first in the chain), only routes via one of this interface's subnets are
    // tapway's to check.
    let nets: Vec<IpNet> =
        prev.ips.iter().filter(|ip| ip.interface == Some(idx)).map(|ip| ip.address.trunc()).collect();
    let only_ours = prev.interfaces.len() == 1;
    let routes: Vec<RouteConfig> = prev
        .routes
        .iter()
        .filter(|r| only_ours || r.gw.is_some_and(|gw| nets.iter().any(|n| n.contains(&gw))))
        .map(|r| RouteConfig { dst: r.dst.to_string(), gw: r.gw.map(|g| g.to_string()) })
        .collect();

    if let Some(ipam) = Ipam::open(loaded, &env.path)? {
        ipam.check()?;
    }

    let req = CheckRequest {
        port: PortSelector {
            netns: Some(env.netns.clone()),
            container_id: Some(env.container_id.clone()),
            ifname: env.ifname.clone(),
        },
        mac,
        ips,
        routes,
    };
    Daemon::for_conf(loaded).check(req).map_err(|e| match e {
        ClientError::Api(api) if api.code == ErrorCode::NotFound => CniError::NotAttached(format!(
            "tapwayd has no port for {}/{}: {}",
            env.container_id, env.ifname, api.message
        )),
        ClientError::Api(api) if api.code == ErrorCode::Mismatch => CniError::Mismatch(api.message),
        e => CniError::from_client(e, CniError::TryAgainLater),
    })?;
    log_info!("check passed");
    Ok(())
}
