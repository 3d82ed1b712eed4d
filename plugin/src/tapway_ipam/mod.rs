//! `"ipam": {"type": "tapway-ipam"}`: addresses from tapwayd itself, with no IPAM plugin to
//! exec. The tapway plugin sends the request with its attach (one round trip to tapwayd for
//! the whole ADD); the `tapway-ipam` binary ([`plugin`]) is a spec-conformant IPAM plugin
//! that asks tapwayd the same, so that other plugins can take addresses from tapway's pool.
//!
//! The ipam section is read as host-local reads its own:
//!
//! ```json
//! "ipam": {
//!   "type": "tapway-ipam",
//!   "ranges": [[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.10", "rangeEnd": "10.244.1.200"}],
//!              [{"subnet": "fd00:244:1::/64"}]],
//!   "routes": [{"dst": "0.0.0.0/0"}],
//!   "resolvConf": "/etc/resolv.conf",
//!   "socket": "/run/tapway/tapway.sock"
//! }
//! ```
//!
//! - `ranges`: range sets, one address from each (host-local's format; the old single-range
//!   `subnet`/`rangeStart`/`rangeEnd`/`gateway` keys are one set). Every range must lie inside
//!   the node's pod ranges. Absent: one set per pod range of the node, with tapwayd's gateway.
//! - `routes`: returned in the result (and installed in the pod by the tapway plugin).
//! - `resolvConf` (a resolv.conf to read, as host-local's) or `dns` (an object, as static's):
//!   the result's DNS.
//! - `socket`: tapwayd's socket for the `tapway-ipam` binary (the tapway plugin uses its own
//!   `socket`).
//!
//! Requested addresses come from `CNI_ARGS IP=`, `runtimeConfig.ips` and `args.cni.ips`, as
//! host-local takes them.

pub mod plugin;

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use tapway_api::{IpamAllocation, IpamRange, IpamRequest, RouteConfig};

use crate::env::CniArgs;
use crate::error::CniError;
use crate::netconf::Loaded;
use crate::types::{CniResult, Dns, IpConfig, Route};

/// The `ipam.type` that means "tapwayd allocates".
pub const TYPE: &str = "tapway-ipam";

/// The ipam section's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Section {
    #[serde(default)]
    ranges: Vec<Vec<IpamRange>>,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Vec<RouteIn>,
    #[serde(default)]
    resolv_conf: Option<String>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    socket: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RouteIn {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

/// The ipam section, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// What to ask tapwayd (`requested` still empty).
    pub request: IpamRequest,
    /// DNS for the result.
    pub dns: Dns,
    /// `socket`, if set.
    pub socket: Option<String>,
}

/// Reads `loaded`'s ipam section (code 7 when it is not usable).
pub fn config(loaded: &Loaded) -> Result<Config, CniError> {
    let bad = |m: String| CniError::InvalidConfig(format!("ipam ({TYPE}): {m}"));
    let raw = loaded.raw.get("ipam").cloned().unwrap_or(Value::Null);
    let s = Section::deserialize(&raw).map_err(|e| bad(e.to_string()))?;
    let mut ranges = s.ranges;
    if let Some(subnet) = s.subnet {
        ranges.push(vec![IpamRange {
            subnet,
            range_start: s.range_start,
            range_end: s.range_end,
            gateway: s.gateway,
        }]);
    }
    if ranges.iter().any(Vec::is_empty) {
        return Err(bad("a range set has no ranges".into()));
    }
    let mut routes = Vec::new();
    for r in s.routes {
        r.dst.parse::<IpNet>().map_err(|_| bad(format!("route dst {:?} is not a CIDR", r.dst)))?;
        if let Some(gw) = &r.gw {
            gw.parse::<IpAddr>().map_err(|_| bad(format!("route gw {gw:?} is not an address")))?;
        }
        routes.push(RouteConfig { dst: r.dst, gw: r.gw });
    }
    let dns = match (s.dns, s.resolv_conf) {
        (Some(d), _) if !d.is_empty() => d,
        (_, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("resolvConf {path}: {e}")))?;
            parse_resolv_conf(&text)
        }
        _ => Dns::default(),
    };
    if let Some(sock) = s.socket.as_deref().filter(|p| !p.starts_with('/')) {
        return Err(bad(format!("socket {sock:?} is not an absolute path")));
    }
    Ok(Config { request: IpamRequest { ranges, requested: Vec::new(), routes }, dns, socket: s.socket })
}

/// The addresses the runtime asks for: `CNI_ARGS IP=`, `runtimeConfig.ips`, `args.cni.ips`.
pub fn requested(loaded: &Loaded, args: &CniArgs) -> Vec<String> {
    let mut out: Vec<String> = args.ips.iter().map(IpAddr::to_string).collect();
    out.extend(loaded.runtime.ips.iter().cloned());
    let from_args = loaded.conf.args.as_ref().and_then(|a| a.get("cni")).and_then(|c| c.get("ips"));
    if let Some(Value::Array(ips)) = from_args {
        out.extend(ips.iter().filter_map(Value::as_str).map(str::to_string));
    }
    // The same address from two sources is one request.
    let mut seen = std::collections::HashSet::new();
    out.retain(|ip| seen.insert(tapway_api::validate::host_ip(ip).ok()));
    out
}

/// tapwayd's allocation as an IPAM result (no interfaces; DNS added by the caller).
pub fn to_result(a: &IpamAllocation) -> Result<CniResult, CniError> {
    let bad = |m: String| CniError::Io(format!("tapwayd's allocation: {m}"));
    let mut ips = Vec::new();
    for ip in &a.ips {
        let address =
            ip.address.parse::<IpNet>().map_err(|_| bad(format!("{:?} is not a CIDR", ip.address)))?;
        let gateway = ip
            .gateway
            .as_deref()
            .map(|g| g.parse::<IpAddr>().map_err(|_| bad(format!("gateway {g:?}"))))
            .transpose()?;
        ips.push(IpConfig { address, gateway, interface: None });
    }
    let mut routes = Vec::new();
    for r in &a.routes {
        let dst = r.dst.parse::<IpNet>().map_err(|_| bad(format!("route {:?}", r.dst)))?;
        let gw =
            r.gw.as_deref().map(|g| g.parse::<IpAddr>().map_err(|_| bad(format!("gw {g:?}")))).transpose()?;
        routes.push(Route::new(dst, gw));
    }
    Ok(CniResult { interfaces: Vec::new(), ips, routes, dns: Dns::default() })
}

/// A resolv.conf as host-local reads it: `nameserver`, `domain`, `search`, `options`.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_string)),
            Some("domain") => dns.domain = words.next().unwrap_or_default().to_string(),
            Some("search") => dns.search = words.map(str::to_string).collect(),
            Some("options") => dns.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Command;

    fn loaded(ipam: Value) -> Loaded {
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "tapway", "ipam": ipam,
            "runtimeConfig": {"ips": ["10.1.0.9/24"]}, "args": {"cni": {"ips": ["10.1.0.9", "fd00::9"]}}});
        Loaded::parse(conf.to_string().as_bytes(), Command::Add).unwrap()
    }

    #[test]
    fn reads_the_section_as_host_local_does() {
        let l = loaded(serde_json::json!({"type": TYPE,
            "ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10"}]],
            "subnet": "fd00::/64", "gateway": "fd00::1",
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.96.0.0/12", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.96.0.10"]}}));
        let c = config(&l).unwrap();
        assert_eq!(c.request.ranges.len(), 2);
        assert_eq!(c.request.ranges[0][0].range_start.as_deref(), Some("10.1.0.10"));
        assert_eq!(c.request.ranges[1][0].gateway.as_deref(), Some("fd00::1"));
        assert_eq!(c.request.routes.len(), 2);
        assert_eq!(c.dns.nameservers, ["10.96.0.10"]);
        let args = CniArgs::parse("IP=10.1.0.9").unwrap();
        assert_eq!(requested(&l, &args), ["10.1.0.9", "fd00::9"], "one request per address");
        for bad in [
            serde_json::json!({"type": TYPE, "ranges": [[]]}),
            serde_json::json!({"type": TYPE, "routes": [{"dst": "x"}]}),
            serde_json::json!({"type": TYPE, "routes": [{"dst": "0.0.0.0/0", "gw": "y"}]}),
            serde_json::json!({"type": TYPE, "resolvConf": "/nonexistent/resolv.conf"}),
            serde_json::json!({"type": TYPE, "socket": "relative.sock"}),
            serde_json::json!({"type": TYPE, "ranges": "10.0.0.0/8"}),
        ] {
            assert_eq!(config(&loaded(bad.clone())).unwrap_err().code(), 7, "{bad}");
        }
        assert_eq!(config(&loaded(serde_json::json!({"type": TYPE}))).unwrap(), Config::default());
    }

    #[test]
    fn resolv_conf() {
        let d = parse_resolv_conf(
            "# generated\nnameserver 10.96.0.10\nnameserver fd00::a ; second\nsearch a.svc b.svc\ndomain cluster.local\noptions ndots:5 edns0\n",
        );
        assert_eq!(d.nameservers, ["10.96.0.10", "fd00::a"]);
        assert_eq!(d.search, ["a.svc", "b.svc"]);
        assert_eq!(d.domain, "cluster.local");
        assert_eq!(d.options, ["ndots:5", "edns0"]);
    }

    #[test]
    fn allocations_become_results() {
        let a = IpamAllocation {
            ips: vec![tapway_api::IpConfig {
                address: "10.1.0.5/24".into(),
                gateway: Some("10.1.0.1".into()),
            }],
            routes: vec![RouteConfig { dst: "0.0.0.0/0".into(), gw: None }],
        };
        let r = to_result(&a).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/24");
        assert_eq!(r.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        let bad =
            IpamAllocation { ips: vec![tapway_api::IpConfig { address: "x".into(), gateway: None }], ..a };
        assert!(to_result(&bad).is_err());
    }
}
