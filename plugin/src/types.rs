//! CNI results: one in-memory form, read from and written in every supported version.
//!
//! A result is written with exactly the fields its version's spec lists, whatever was read:
//!
//! | level        | 0.3.0, 0.3.1, 0.4.0                  | 1.0.0                     | 1.1.0                                  |
//! |--------------|--------------------------------------|---------------------------|----------------------------------------|
//! | top          | cniVersion interfaces ips routes dns | same                      | same                                   |
//! | interfaces[] | name mac sandbox                     | name mac sandbox          | name mac mtu sandbox socketPath pciID  |
//! | ips[]        | version address gateway interface    | address gateway interface | address gateway interface              |
//! | routes[]     | dst gw                               | dst gw                    | dst gw mtu advmss priority table scope |
//! | dns          | nameservers domain search options    | same                      | same                                   |
//!
//! So a field another plugin put in a prevResult that its version does not have (a 1.0.0
//! `interfaces[].mtu` from a libcni ≥ 1.2 plugin) is dropped on output, as a plugin built on
//! that version's reference library drops it: plugins on an older library after tapway in a
//! chain pass its result on unchanged. Unknown keys are dropped on input, as libcni's typed
//! decoding does. Empty fields are left out, as libcni's `omitempty` does, including a zero
//! `mtu`, `advmss` or `priority` (libcni cannot tell 0 from unset there; `table` and `scope` 0
//! are kept). An empty `dns` is written as `{}` up to 1.0.0 and left out from 1.1.0, as the
//! library that implements each version (libcni < 1.2, ≥ 1.2) does.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::CniError;
use crate::version::Version;

/// An optional number where 0 means unset, as Go's `int` with `omitempty` reads it.
fn nonzero<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.filter(|n| *n != 0))
}

/// An interface in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address.
    #[serde(default)]
    pub mac: String,
    /// MTU (written from 1.1.0).
    #[serde(default, deserialize_with = "nonzero")]
    pub mtu: Option<u32>,
    /// Netns path for an interface inside the container; empty for host-side interfaces.
    #[serde(default)]
    pub sandbox: String,
    /// Socket path, e.g. vhost-user (written from 1.1.0; tapway sets none).
    #[serde(rename = "socketPath", default)]
    pub socket_path: Option<String>,
    /// PCI ID of a device (written from 1.1.0; tapway sets none).
    #[serde(rename = "pciID", default)]
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

/// A route in a result. The attributes after `gw` are written from 1.1.0.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent means the default gateway of the family.
    #[serde(default)]
    pub gw: Option<IpAddr>,
    /// Route MTU.
    #[serde(default, deserialize_with = "nonzero")]
    pub mtu: Option<u32>,
    /// Advertised MSS.
    #[serde(default, deserialize_with = "nonzero")]
    pub advmss: Option<u32>,
    /// Metric.
    #[serde(default, deserialize_with = "nonzero")]
    pub priority: Option<u32>,
    /// Routing table.
    #[serde(default)]
    pub table: Option<u32>,
    /// Scope.
    #[serde(default)]
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

/// A result as one version writes it; fields the version lacks are `None`. Field order is the
/// spec's.
#[derive(Serialize)]
struct OutResult<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<OutInterface<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<OutIp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<OutRoute>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<&'a Dns>,
}

#[derive(Serialize)]
struct OutInterface<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    mac: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "str::is_empty")]
    sandbox: &'a str,
    #[serde(rename = "socketPath", skip_serializing_if = "Option::is_none")]
    socket_path: Option<&'a str>,
    #[serde(rename = "pciID", skip_serializing_if = "Option::is_none")]
    pci_id: Option<&'a str>,
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

#[derive(Serialize)]
struct OutRoute {
    dst: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advmss: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<u32>,
}

/// `v` where the version has the field, else `None`.
fn when<T>(has: bool, v: Option<T>) -> Option<T> {
    v.filter(|_| has)
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
        let attrs = version.has_result_attributes();
        let interfaces = self
            .interfaces
            .iter()
            .map(|i| OutInterface {
                name: &i.name,
                mac: &i.mac,
                mtu: when(attrs, i.mtu.filter(|m| *m != 0)),
                sandbox: &i.sandbox,
                socket_path: when(attrs, i.socket_path.as_deref().filter(|s| !s.is_empty())),
                pci_id: when(attrs, i.pci_id.as_deref().filter(|s| !s.is_empty())),
            })
            .collect();
        let ips = self
            .ips
            .iter()
            .map(|ip| OutIp {
                version: version.has_ip_version().then_some(if ip.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                }),
                interface: ip.interface,
                address: ip.address,
                gateway: ip.gateway,
            })
            .collect();
        let routes = self
            .routes
            .iter()
            .map(|r| OutRoute {
                dst: r.dst,
                gw: r.gw,
                mtu: when(attrs, r.mtu.filter(|n| *n != 0)),
                advmss: when(attrs, r.advmss.filter(|n| *n != 0)),
                priority: when(attrs, r.priority.filter(|n| *n != 0)),
                table: when(attrs, r.table),
                scope: when(attrs, r.scope),
            })
            .collect();
        let dns = (!self.dns.is_empty() || !version.omits_empty_dns()).then_some(&self.dns);
        OutResult { cni_version: version.to_string(), interfaces, ips, routes, dns }
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
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    /// A result with every field of every version set (both families, so `version` shows
    /// both values).
    fn full() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:05".into(),
                mtu: Some(1500),
                sandbox: "/run/netns/p".into(),
                socket_path: Some("/run/vhost/eth0.sock".into()),
                pci_id: Some("0000:00:04.0".into()),
            }],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(0),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                    interface: Some(0),
                },
            ],
            routes: vec![Route {
                dst: "10.0.0.0/8".parse().unwrap(),
                gw: Some("10.1.0.1".parse().unwrap()),
                mtu: Some(1400),
                advmss: Some(1360),
                priority: Some(5),
                table: Some(100),
                scope: Some(253),
            }],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                domain: "cluster.local".into(),
                search: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
        }
    }

    /// A plain pod result: [`full`] without the optional extras.
    fn sample() -> CniResult {
        let mut r = full();
        r.interfaces[0].socket_path = None;
        r.interfaces[0].pci_id = None;
        r.ips[1].gateway = None;
        r.routes = vec![Route::new("0.0.0.0/0".parse().unwrap(), Some("10.1.0.1".parse().unwrap()))];
        r.dns = Dns { nameservers: vec!["10.96.0.10".into()], ..Default::default() };
        r
    }

    /// The keys of each level of a result, copied from the "Result"/"ADD Success" section of
    /// each version's SPEC.md (containernetworking/cni tags spec-v0.3.0 … spec-v1.1.0), not
    /// from this module's code.
    struct Shape {
        version: &'static str,
        top: &'static [&'static str],
        interface: &'static [&'static str],
        ip: &'static [&'static str],
        route: &'static [&'static str],
        dns: &'static [&'static str],
    }

    const TOP: &[&str] = &["cniVersion", "interfaces", "ips", "routes", "dns"];
    const DNS: &[&str] = &["nameservers", "domain", "search", "options"];
    /// 0.3.0, 0.3.1, 0.4.0 (0.3.0's text says `ip`, a typo fixed in 0.3.1; every library
    /// used `ips`).
    const IF_0X: &[&str] = &["name", "mac", "sandbox"];
    const IP_0X: &[&str] = &["version", "address", "gateway", "interface"];
    const ROUTE_0X: &[&str] = &["dst", "gw"];

    const SHAPES: [Shape; 5] = [
        Shape { version: "0.3.0", top: TOP, interface: IF_0X, ip: IP_0X, route: ROUTE_0X, dns: DNS },
        Shape { version: "0.3.1", top: TOP, interface: IF_0X, ip: IP_0X, route: ROUTE_0X, dns: DNS },
        Shape { version: "0.4.0", top: TOP, interface: IF_0X, ip: IP_0X, route: ROUTE_0X, dns: DNS },
        // 1.0.0: "removed `version` field" of the IPs.
        Shape {
            version: "1.0.0",
            top: TOP,
            interface: &["name", "mac", "sandbox"],
            ip: &["address", "gateway", "interface"],
            route: &["dst", "gw"],
            dns: DNS,
        },
        Shape {
            version: "1.1.0",
            top: TOP,
            interface: &["name", "mac", "mtu", "sandbox", "socketPath", "pciID"],
            ip: &["address", "gateway", "interface"],
            route: &["dst", "gw", "mtu", "advmss", "priority", "table", "scope"],
            dns: DNS,
        },
    ];

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
    }

    fn set(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Asserts the exact key set of every level of `out`.
    fn assert_shape(
        out: &Value,
        top: &[&str],
        interface: &[&str],
        ip: &[&str],
        route: &[&str],
        dns: &[&str],
    ) {
        assert_eq!(keys(out), set(top), "top level: {out}");
        for (level, want) in [("interfaces", interface), ("ips", ip), ("routes", route)] {
            let items = out[level].as_array().map(Vec::as_slice).unwrap_or_default();
            for item in items {
                assert_eq!(keys(item), set(want), "{level}[]: {out}");
            }
        }
        if let Some(d) = out.get("dns") {
            assert_eq!(keys(d), set(dns), "dns: {out}");
        }
    }

    #[test]
    fn every_version_has_a_shape() {
        let shapes: Vec<&str> = SHAPES.iter().map(|s| s.version).collect();
        assert_eq!(shapes, crate::version::SUPPORTED);
    }

    #[test]
    fn result_has_exactly_the_spec_fields_of_its_version() {
        for s in &SHAPES {
            let v = Version::parse(s.version).unwrap();
            for out in
                [full().to_value(v), serde_json::from_slice(&full().to_json_pretty(v).unwrap()).unwrap()]
            {
                assert_eq!(out["cniVersion"], s.version);
                assert_shape(&out, s.top, s.interface, s.ip, s.route, s.dns);
                if s.ip.contains(&"version") {
                    assert_eq!(out["ips"][0]["version"], "4", "{out}");
                    assert_eq!(out["ips"][1]["version"], "6", "{out}");
                }
            }
        }
    }

    #[test]
    fn ipam_result_has_no_interfaces() {
        // "Delegated IPAM plugins must return an abbreviated Success object. Specifically, it
        // is missing the `interfaces` array, as well as the `interface` entry in `ips`."
        let mut r = full();
        r.interfaces.clear();
        for ip in &mut r.ips {
            ip.interface = None;
        }
        for s in &SHAPES {
            let out = r.to_value(Version::parse(s.version).unwrap());
            let top: Vec<&str> = s.top.iter().copied().filter(|k| *k != "interfaces").collect();
            let ip: Vec<&str> = s.ip.iter().copied().filter(|k| *k != "interface").collect();
            assert_shape(&out, &top, &[], &ip, s.route, s.dns);
        }
    }

    /// The results of the spec's "Add example" (SPEC.md appendix, 1.0.0 and 1.1.0): host-local's,
    /// then bridge's (tuning's differs only in a MAC). The examples leave out `cniVersion`.
    fn spec_examples_1x() -> [Value; 2] {
        [
            json!({
                "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1"}],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dns": {"nameservers": ["10.1.0.1"]}
            }),
            json!({
                "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
                "routes": [{"dst": "0.0.0.0/0"}],
                "interfaces": [
                    {"name": "cni0", "mac": "00:11:22:33:44:55"},
                    {"name": "veth3243", "mac": "55:44:33:22:11:11"},
                    {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
                ],
                "dns": {"nameservers": ["10.1.0.1"]}
            }),
        ]
    }

    #[test]
    fn spec_examples_round_trip() {
        for ver in ["1.0.0", "1.1.0"] {
            for mut example in spec_examples_1x() {
                example["cniVersion"] = json!(ver);
                let v = Version::parse(ver).unwrap();
                let r = CniResult::from_value(&example).unwrap();
                assert_eq!(r.to_value(v), example, "{ver}");
                let printed: Value = serde_json::from_slice(&r.to_json_pretty(v).unwrap()).unwrap();
                assert_eq!(printed, example, "{ver}");
            }
        }
        // 0.4.0's list example: bridge's result as tuning's prevResult (the spec's text has
        // trailing commas; here without them). 0.3.0 and 0.3.1 have the same layout.
        for ver in ["0.3.0", "0.3.1", "0.4.0"] {
            let example = json!({
                "cniVersion": ver,
                "ips": [{"version": "4", "address": "10.0.0.5/32", "interface": 2}],
                "interfaces": [
                    {"name": "cni0", "mac": "00:11:22:33:44:55"},
                    {"name": "veth3243", "mac": "55:44:33:22:11:11"},
                    {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
                ],
                "dns": {"nameservers": ["10.1.0.1"]}
            });
            let r = CniResult::from_value(&example).unwrap();
            assert_eq!(r.to_value(Version::parse(ver).unwrap()), example, "{ver}");
        }
        // Every 1.1.0 field set, as the field list describes them.
        let all = full().to_value(Version::V1_1_0);
        assert_eq!(CniResult::from_value(&all).unwrap().to_value(Version::V1_1_0), all);
    }

    #[test]
    fn fields_the_version_lacks_are_dropped_on_output() {
        // A 1.0.0 prevResult from a plugin on libcni >= 1.2 (which writes 1.1.0's fields at
        // 1.0.0 too), with keys no version has: re-emitted as a 1.0.0 plugin would.
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:05", "mtu": 1500,
                "sandbox": "/run/netns/p", "socketPath": "/s", "pciID": "0000:00:04.0", "x": 1}],
            "ips": [{"version": "4", "address": "10.1.0.5/24", "interface": 0, "y": true}],
            "routes": [{"dst": "10.0.0.0/8", "gw": "10.1.0.1", "mtu": 1400, "table": 7}],
            "dns": {"nameservers": ["10.96.0.10"], "z": []},
            "extra": {}
        });
        let r = CniResult::from_value(&prev).unwrap();
        assert_eq!(
            r.to_value(Version::V1_0_0),
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:05", "sandbox": "/run/netns/p"}],
                "ips": [{"address": "10.1.0.5/24", "interface": 0}],
                "routes": [{"dst": "10.0.0.0/8", "gw": "10.1.0.1"}],
                "dns": {"nameservers": ["10.96.0.10"]}
            })
        );
        // Down to 0.4.0: `version` comes back, computed from the address.
        assert_eq!(
            r.to_value(Version::V0_4_0)["ips"],
            json!([{"version": "4", "address": "10.1.0.5/24", "interface": 0}])
        );
    }

    #[test]
    fn zero_and_empty_are_unset() {
        let v = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "", "mtu": 0, "sandbox": "", "socketPath": "", "pciID": null}],
            "routes": [{"dst": "10.0.0.0/8", "mtu": 0, "advmss": 0, "priority": 0, "table": 0, "scope": 0}]
        });
        let r = CniResult::from_value(&v).unwrap();
        assert_eq!(r.interfaces[0].mtu, None);
        assert_eq!(
            r.to_value(Version::V1_1_0),
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [{"name": "eth0"}],
                "routes": [{"dst": "10.0.0.0/8", "table": 0, "scope": 0}]
            })
        );
    }

    #[test]
    fn empty_dns_per_version() {
        for v in crate::version::SUPPORTED {
            let v = Version::parse(v).unwrap();
            let out = CniResult::default().to_value(v);
            if v >= Version::V1_1_0 {
                assert_eq!(out, json!({"cniVersion": v.to_string()}));
            } else {
                assert_eq!(out, json!({"cniVersion": v.to_string(), "dns": {}}));
            }
        }
    }

    #[test]
    fn result_1x_layout() {
        let out = sample().to_value(Version(1, 1, 0));
        assert_eq!(
            out,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:05", "mtu": 1500, "sandbox": "/run/netns/p"}],
                "ips": [
                    {"interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                    {"interface": 0, "address": "fd00::5/64"}
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
                "dns": {"nameservers": ["10.96.0.10"]}
            })
        );
        let mut no_mtu = out;
        no_mtu["cniVersion"] = json!("1.0.0");
        no_mtu["interfaces"][0].as_object_mut().unwrap().remove("mtu");
        assert_eq!(sample().to_value(Version(1, 0, 0)), no_mtu);
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
            let mut expect = full();
            if !v.has_result_attributes() {
                expect.interfaces[0] =
                    Interface { mtu: None, socket_path: None, pci_id: None, ..expect.interfaces[0].clone() };
                expect.routes[0] = Route::new(expect.routes[0].dst, expect.routes[0].gw);
            }
            assert_eq!(CniResult::from_value(&full().to_value(v)).unwrap(), expect, "{v}");
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
