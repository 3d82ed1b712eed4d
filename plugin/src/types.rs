//! CNI results: one in-memory form, read from and written in every supported version.
//!
//! * 0.3.0, 0.3.1, 0.4.0: each IP carries `"version": "4"|"6"`; interfaces have no MTU.
//! * 1.0.0, 1.1.0: no per-IP `version`; interfaces may carry `mtu`, `socketPath`, `pciID`.
//!
//! Route fields beyond `dst`/`gw` (`mtu`, `advmss`, `priority`, `table`, `scope`) came with 1.1.0
//! but the reference library writes them in every version when set, so they are kept as given.
//! The `dns` object is always written, as the reference library does.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CniError;
use crate::version::Version;

/// An interface in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (1.x results only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for an interface inside the container; empty for host-side interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// vhost-user socket path (1.x results only; tapway sets none).
    #[serde(rename = "socketPath", default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// PCI ID of a device (1.x results only; tapway sets none).
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address in a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: IpNet,
    /// Gateway of its subnet.
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface that has the address.
    pub interface: Option<usize>,
}

/// A route in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent means the default gateway of the family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Route MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    /// A plain route to `dst` via `gw`.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }

    /// Whether this is a default route (`0.0.0.0/0` or `::/0`).
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }
}

/// DNS settings, as in results and netconfs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A CNI result (ADD output, prevResult, IPAM output), version-independent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
}

/// What every supported version's result looks like on input: a superset.
#[derive(Deserialize)]
struct RawResult {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(default)]
    interfaces: Option<Vec<Interface>>,
    #[serde(default)]
    ips: Option<Vec<RawIp>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[derive(Deserialize)]
struct RawIp {
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Serialize)]
struct OutResult<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Interface>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<OutIp>,
    #[serde(skip_serializing_if = "<[Route]>::is_empty")]
    routes: &'a [Route],
    dns: &'a Dns,
}

#[derive(Serialize)]
struct OutIp {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

impl CniResult {
    /// Reads a result of any supported version. A result that names an unsupported version
    /// (0.1.0/0.2.0 use a different layout) is refused with code 1.
    pub fn from_value(v: &Value) -> Result<CniResult, CniError> {
        if !v.is_object() {
            return Err(CniError::Decode("result is not a JSON object".into()));
        }
        let raw = RawResult::deserialize(v).map_err(|e| CniError::Decode(format!("result: {e}")))?;
        if let Some(ver) = raw.cni_version.as_deref().filter(|s| !s.is_empty()) {
            match Version::parse(ver) {
                Some(parsed) if parsed.is_supported() => {}
                _ => {
                    return Err(CniError::IncompatibleVersion(format!(
                        "result has unsupported cniVersion {ver:?}"
                    )))
                }
            }
        }
        let interfaces = raw.interfaces.unwrap_or_default();
        let mut ips = Vec::new();
        for ip in raw.ips.unwrap_or_default() {
            if let Some(idx) = ip.interface {
                if idx >= interfaces.len() {
                    return Err(CniError::Decode(format!(
                        "result: address {} refers to interface {idx}, but there are {} interfaces",
                        ip.address,
                        interfaces.len()
                    )));
                }
            }
            if let Some(ver) = ip.version.as_deref() {
                let family_ok = match ver {
                    "4" => ip.address.addr().is_ipv4(),
                    "6" => ip.address.addr().is_ipv6(),
                    _ => false,
                };
                if !family_ok {
                    return Err(CniError::Decode(format!(
                        "result: address {} has version {ver:?}",
                        ip.address
                    )));
                }
            }
            ips.push(IpConfig { address: ip.address, gateway: ip.gateway, interface: ip.interface });
        }
        Ok(CniResult {
            interfaces,
            ips,
            routes: raw.routes.unwrap_or_default(),
            dns: raw.dns.unwrap_or_default(),
        })
    }

    /// Writes the result in `version`'s layout.
    pub fn to_value(&self, version: Version) -> Value {
        serde_json::to_value(self.layout(version)).unwrap_or(Value::Null)
    }

    /// The result as the plugin prints it: `version`'s layout, indented, keys in the spec's
    /// order (`cniVersion`, `interfaces`, `ips`, `routes`, `dns`), newline-terminated.
    pub fn to_json_pretty(&self, version: Version) -> Result<Vec<u8>, serde_json::Error> {
        let mut bytes = serde_json::to_vec_pretty(&self.layout(version))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    fn layout(&self, version: Version) -> OutResult<'_> {
        let interfaces = self
            .interfaces
            .iter()
            .map(|i| {
                if version.is_1x() {
                    i.clone()
                } else {
                    Interface { mtu: None, socket_path: None, pci_id: None, ..i.clone() }
                }
            })
            .collect();
        let ips = self
            .ips
            .iter()
            .map(|ip| OutIp {
                version: (!version.is_1x()).then_some(if ip.address.addr().is_ipv4() { "4" } else { "6" }),
                interface: ip.interface,
                address: ip.address,
                gateway: ip.gateway,
            })
            .collect();
        OutResult { cni_version: version.to_string(), interfaces, ips, routes: &self.routes, dns: &self.dns }
    }

    /// Appends `other`'s interfaces, addresses (re-indexed), routes and DNS (only where this
    /// result has none), as a plugin that is not first in a chain extends its prevResult.
    pub fn extend(&mut self, other: CniResult) {
        let base = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(
            other.ips.into_iter().map(|ip| IpConfig { interface: ip.interface.map(|i| i + base), ..ip }),
        );
        for r in other.routes {
            if !self.routes.contains(&r) {
                self.routes.push(r);
            }
        }
        if self.dns.is_empty() {
            self.dns = other.dns;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:05".into(),
                mtu: Some(1500),
                sandbox: "/run/netns/p".into(),
                socket_path: None,
                pci_id: None,
            }],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(0),
                },
                IpConfig { address: "fd00::5/64".parse().unwrap(), gateway: None, interface: Some(0) },
            ],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), Some("10.1.0.1".parse().unwrap()))],
            dns: Dns { nameservers: vec!["10.96.0.10".into()], ..Default::default() },
        }
    }

    #[test]
    fn result_1x_layout() {
        for v in [Version(1, 0, 0), Version(1, 1, 0)] {
            let out = sample().to_value(v);
            assert_eq!(
                out,
                json!({
                    "cniVersion": v.to_string(),
                    "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:05", "mtu": 1500, "sandbox": "/run/netns/p"}],
                    "ips": [
                        {"interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                        {"interface": 0, "address": "fd00::5/64"}
                    ],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
                    "dns": {"nameservers": ["10.96.0.10"]}
                })
            );
        }
    }

    #[test]
    fn result_0x_layout() {
        for v in [Version(0, 3, 0), Version(0, 3, 1), Version(0, 4, 0)] {
            let out = sample().to_value(v);
            assert_eq!(
                out,
                json!({
                    "cniVersion": v.to_string(),
                    "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:05", "sandbox": "/run/netns/p"}],
                    "ips": [
                        {"version": "4", "interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                        {"version": "6", "interface": 0, "address": "fd00::5/64"}
                    ],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
                    "dns": {"nameservers": ["10.96.0.10"]}
                })
            );
        }
    }

    #[test]
    fn round_trip_every_version() {
        for v in crate::version::SUPPORTED {
            let v = Version::parse(v).unwrap();
            let mut expect = sample();
            if !v.is_1x() {
                expect.interfaces[0].mtu = None;
            }
            assert_eq!(CniResult::from_value(&sample().to_value(v)).unwrap(), expect, "{v}");
        }
    }

    #[test]
    fn printed_in_spec_order() {
        let text = String::from_utf8(sample().to_json_pretty(Version(1, 1, 0)).unwrap()).unwrap();
        let pos = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
        assert!(pos("cniVersion") < pos("interfaces"));
        assert!(pos("interfaces") < pos("ips") && pos("ips") < pos("routes") && pos("routes") < pos("dns"));
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn empty_result_keeps_dns() {
        assert_eq!(
            CniResult::default().to_value(Version(1, 0, 0)),
            json!({"cniVersion": "1.0.0", "dns": {}})
        );
    }

    #[test]
    fn reads_host_local_output() {
        // host-local 1.1.1 with cniVersion 1.0.0 and 0.3.1.
        let v1 = json!({"cniVersion":"1.0.0","ips":[{"address":"10.22.0.10/24","gateway":"10.22.0.1"}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{}});
        let r = CniResult::from_value(&v1).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.22.0.10/24");
        assert_eq!(r.ips[0].interface, None);
        assert_eq!(r.routes[0].gw, None);
        assert!(r.routes[0].is_default());
        let v031 = json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.22.0.10/24","gateway":"10.22.0.1"}],"dns":{}});
        assert_eq!(CniResult::from_value(&v031).unwrap().ips.len(), 1);
        let full_route = json!({"cniVersion":"1.1.0","routes":[{"dst":"10.0.0.0/8","gw":"10.1.0.1","mtu":1400,"advmss":1360,"priority":5,"table":100,"scope":0}]});
        let r = CniResult::from_value(&full_route).unwrap();
        assert_eq!(r.routes[0].table, Some(100));
        assert_eq!(r.to_value(Version(1, 1, 0))["routes"], full_route["routes"]);
    }

    #[test]
    fn refuses_bad_results() {
        for bad in [
            json!({"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}),
            json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2"}]}),
            json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24","interface":1}]}),
            json!({"cniVersion":"0.4.0","ips":[{"version":"6","address":"10.0.0.2/24"}]}),
            json!({"cniVersion":"1.0.0","routes":[{"gw":"10.0.0.1"}]}),
            json!("nope"),
        ] {
            assert!(CniResult::from_value(&bad).is_err(), "{bad}");
        }
        assert_eq!(CniResult::from_value(&json!({"cniVersion":"0.2.0"})).unwrap_err().code(), 1);
        assert_eq!(CniResult::from_value(&json!([])).unwrap_err().code(), 6);
    }

    #[test]
    fn extend_reindexes() {
        let mut prev = CniResult {
            interfaces: vec![Interface { name: "host0".into(), ..Default::default() }],
            ips: vec![IpConfig {
                address: "192.168.0.2/24".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), Some("10.1.0.1".parse().unwrap()))],
            dns: Dns::default(),
        };
        prev.extend(sample());
        assert_eq!(prev.interfaces.len(), 2);
        assert_eq!(prev.ips[1].interface, Some(1));
        assert_eq!(prev.ips[2].interface, Some(1));
        assert_eq!(prev.routes.len(), 1, "identical routes are not repeated");
        assert_eq!(prev.dns.nameservers, vec!["10.96.0.10".to_string()]);
    }
}
