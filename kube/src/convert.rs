//! Kubernetes objects → service ports, over the k8s-openapi types: the one code path that both
//! `tapwayctl sync` and tapwayd's watcher use. It follows kube-proxy's rules:
//!
//! * Services of type `ClusterIP` (the default), `NodePort` and `LoadBalancer` are served on
//!   their cluster IPs (`spec.clusterIPs`, else `spec.clusterIP`), IPv4 and IPv6 alike; node
//!   ports and load-balancer addresses are not (a note says so). `ExternalName` and headless
//!   Services have no VIP and are skipped.
//! * Every `spec.ports[]` entry × every VIP is one service port, named `ns/svc:port-name`
//!   (`ns/svc` when the port has no name). SCTP ports are skipped.
//! * An EndpointSlice belongs to the Service named by its `kubernetes.io/service-name` label in
//!   its namespace. Its addresses back the VIPs of their family only, on the slice port whose
//!   name and protocol are those of the service port. Each address becomes a backend of weight
//!   1 carrying the endpoint's `ready`, `serving` and `terminating` conditions.
//! * A Service without EndpointSlices is still programmed, with no backends: clients get a TCP
//!   RST or ICMP unreachable, as with kube-proxy.
//!
//! The objects are first reduced to [`Svc`] and [`Slice`] (what tapway needs of them, small
//! and comparable, which is what the watcher keeps), then [`specs_of`] turns one Service and
//! its slices into service ports. Nothing fails on one bad object: it is listed in
//! [`KubeImport::skipped`] with the reason, and the rest is imported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;
use tapway_api::{Affinity, BackendSpec, Protocol, ServiceKey, ServiceSpec, DEFAULT_AFFINITY_TIMEOUT};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The largest `sessionAffinityConfig.clientIP.timeoutSeconds` Kubernetes accepts (one day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// Result of converting a kubectl List.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeImport {
    /// The service ports to program, sorted by key; backends sorted, without duplicates.
    pub services: Vec<ServiceSpec>,
    /// Objects (or Service ports, or addresses) left out, each with `Kind ns/name` and why.
    pub skipped: Vec<String>,
    /// What was imported but is served only in part (e.g. a NodePort Service's cluster IP).
    pub notes: Vec<String>,
}

/// What a conversion has to say besides its result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What was left out, and why.
    pub skipped: Vec<String>,
    /// What is served only in part.
    pub notes: Vec<String>,
}

/// Why the input as a whole could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// The top level is a string, number, boolean or null.
    #[error("expected a Kubernetes List, object or array of objects, got a JSON {0}")]
    NotObjectOrArray(&'static str),
    /// The top-level `items` is neither an array nor null.
    #[error("\"items\" is a JSON {0}, not an array")]
    ItemsNotArray(&'static str),
    /// An object with neither `items` nor a `kind`, or a List without `items`.
    #[error("no \"items\": the input is neither a kubectl List nor a Kubernetes object")]
    NoItems,
}

/// `(namespace, name)` of an object.
pub type ObjKey = (String, String);

/// A Service worth programming: what tapway needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    /// Namespace.
    pub ns: String,
    /// Name.
    pub name: String,
    /// The cluster IPs, without duplicates.
    pub vips: Vec<IpAddr>,
    /// The usable ports.
    pub ports: Vec<SvcPort>,
    /// Session affinity.
    pub affinity: Affinity,
}

/// One usable `spec.ports[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcPort {
    /// `name` (empty when absent).
    pub name: String,
    /// `port`.
    pub port: u16,
    /// `protocol`.
    pub protocol: Protocol,
}

impl SvcPort {
    fn label(&self) -> String {
        let proto = self.protocol.name().to_ascii_uppercase();
        if self.name.is_empty() {
            format!("{}/{proto}", self.port)
        } else {
            format!("{} ({}/{proto})", self.name, self.port)
        }
    }
}

/// An EndpointSlice of addresses of one family: what tapway needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// Namespace.
    pub ns: String,
    /// `ns/name`, for messages.
    pub label: String,
    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    pub service: String,
    /// Ports: (name, protocol, port).
    pub ports: Vec<(String, Protocol, u16)>,
    /// Addresses with their conditions: (ip, ready, serving, terminating).
    pub endpoints: Vec<(IpAddr, bool, bool, bool)>,
}

impl Slice {
    /// The Service this slice belongs to.
    pub fn owner(&self) -> ObjKey {
        (self.ns.clone(), self.service.clone())
    }
}

/// Converts `kubectl get services,endpointslices -A -o json` output (a `List`, a single object
/// or a bare array of objects) into service ports. See the [module docs](self).
pub fn import(json: &Value) -> Result<KubeImport, KubeError> {
    let items = top_level_items(json)?;
    let mut rep = Report::default();
    let mut services: Vec<Svc> = Vec::new();
    let mut slices: Vec<Slice> = Vec::new();
    // Every Service seen, programmed or skipped, by (namespace, name).
    let mut seen: HashSet<ObjKey> = HashSet::new();

    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            rep.skipped.push(format!("item {i}: a JSON {}, not an object", type_name(item)));
            continue;
        };
        // Which type to read the object as: the only fields looked at before it is typed.
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = obj.get("apiVersion").and_then(Value::as_str);
        let label = head_label(obj.get("metadata"));
        match kind {
            "Service" if matches!(api_version, None | Some("v1")) => {
                let svc = match Service::deserialize(*item) {
                    Ok(s) => s,
                    Err(e) => {
                        rep.skipped
                            .push(format!("Service {}: not a valid v1 Service: {e}", ns_label(&label)));
                        continue;
                    }
                };
                let Some(name) = nonempty(&svc.metadata.name) else {
                    rep.skipped.push(format!("Service {}: no metadata.name", ns_label(&label)));
                    continue;
                };
                let ns = namespace_of(&svc.metadata);
                if !seen.insert((ns.clone(), name.to_string())) {
                    rep.skipped.push(format!("Service {ns}/{name}: listed twice, the first one is used"));
                    continue;
                }
                if let Some(svc) = parse_service(&svc, &mut rep) {
                    services.push(svc);
                }
            }
            "EndpointSlice"
                if matches!(api_version, None | Some("discovery.k8s.io/v1" | "discovery.k8s.io/v1beta1")) =>
            {
                // v1beta1 has the fields tapway reads under the same names.
                let parsed = if api_version == Some("discovery.k8s.io/v1beta1") {
                    let mut item = (*item).clone();
                    if let Some(o) = item.as_object_mut() {
                        o.remove("apiVersion");
                    }
                    EndpointSlice::deserialize(item)
                } else {
                    EndpointSlice::deserialize(*item)
                };
                match parsed {
                    Ok(s) => {
                        if let Some(slice) = parse_slice(&s, &mut rep) {
                            slices.push(slice);
                        }
                    }
                    Err(e) => rep.skipped.push(format!(
                        "EndpointSlice {}: not a valid discovery.k8s.io/v1 EndpointSlice: {e}",
                        ns_label(&label)
                    )),
                }
            }
            "" => rep.skipped.push(format!("item {i} ({}): no kind", label.display())),
            _ => {
                let version = api_version.map(|v| format!(" ({v})")).unwrap_or_default();
                rep.skipped.push(format!(
                    "{kind}{version} {}: not a Service (v1) or EndpointSlice (discovery.k8s.io/v1)",
                    label.display()
                ));
            }
        }
    }

    // Slices by the Service they belong to.
    let mut by_service: HashMap<ObjKey, Vec<&Slice>> = HashMap::new();
    for slice in &slices {
        let owner = slice.owner();
        if !seen.contains(&owner) {
            rep.skipped.push(format!(
                "EndpointSlice {}: no Service {}/{} in the input",
                slice.label, slice.ns, slice.service
            ));
            continue;
        }
        by_service.entry(owner).or_default().push(slice);
    }

    let mut table: BTreeMap<ServiceKey, ServiceSpec> = BTreeMap::new();
    for svc in &services {
        let owned = by_service.get(&(svc.ns.clone(), svc.name.clone()));
        let owned: &[&Slice] = owned.map(Vec::as_slice).unwrap_or(&[]);
        for spec in specs_of(svc, owned, &mut rep.notes) {
            if let Some(other) = table.get(&spec.key) {
                rep.skipped.push(already_served(svc, &spec, &other.name));
                continue;
            }
            table.insert(spec.key, spec);
        }
    }
    Ok(KubeImport { services: table.into_values().collect(), skipped: rep.skipped, notes: rep.notes })
}

/// The message for a service port whose key another Service's port already has.
pub fn already_served(svc: &Svc, spec: &ServiceSpec, other: &str) -> String {
    let port = svc
        .ports
        .iter()
        .find(|p| p.port == spec.key.port && p.protocol == spec.key.protocol && spec.name.ends_with(&p.name))
        .map(SvcPort::label)
        .unwrap_or_else(|| spec.key.port.to_string());
    format!("Service {}/{} port {port}: {} is already served for {other}", svc.ns, svc.name, spec.key)
}

/// The service ports of one Service, from its slices: one per port × VIP, sorted by key.
pub fn specs_of(svc: &Svc, slices: &[&Slice], notes: &mut Vec<String>) -> Vec<ServiceSpec> {
    let mut out = Vec::with_capacity(svc.ports.len() * svc.vips.len());
    for port in &svc.ports {
        let name = if port.name.is_empty() {
            format!("{}/{}", svc.ns, svc.name)
        } else {
            format!("{}/{}:{}", svc.ns, svc.name, port.name)
        };
        for &vip in &svc.vips {
            let key = ServiceKey { vip, port: port.port, protocol: port.protocol };
            let backends = backends_of(&name, vip, port, slices, notes);
            out.push(ServiceSpec { name: name.clone(), key, affinity: svc.affinity, backends });
        }
    }
    out
}

/// The objects of the input.
pub(crate) fn top_level_items(json: &Value) -> Result<Vec<&Value>, KubeError> {
    match json {
        Value::Array(items) => Ok(items.iter().collect()),
        Value::Object(obj) => match obj.get("items") {
            Some(Value::Array(items)) => Ok(items.iter().collect()),
            // Go marshals an empty (nil) item slice as null.
            Some(Value::Null) => Ok(Vec::new()),
            Some(other) => Err(KubeError::ItemsNotArray(type_name(other))),
            None => match obj.get("kind").and_then(Value::as_str) {
                Some(kind) if !kind.is_empty() && !kind.ends_with("List") => Ok(vec![json]),
                _ => Err(KubeError::NoItems),
            },
        },
        other => Err(KubeError::NotObjectOrArray(type_name(other))),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `metadata.namespace` and `metadata.name` of an object not typed yet, for messages only.
pub(crate) struct Label {
    namespace: Option<String>,
    name: Option<String>,
}

impl Label {
    /// `ns/name`, or `name` without a namespace.
    pub(crate) fn display(&self) -> String {
        let name = self.name.as_deref().unwrap_or("?");
        match &self.namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        }
    }
}

pub(crate) fn head_label(meta: Option<&Value>) -> Label {
    let field = |f: &str| {
        meta.and_then(|m| m.get(f)).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
    };
    Label { namespace: field("namespace"), name: field("name") }
}

/// `ns/name` of a namespaced object, the namespace defaulted.
pub(crate) fn ns_label(l: &Label) -> String {
    format!("{}/{}", l.namespace.as_deref().unwrap_or("default"), l.name.as_deref().unwrap_or("?"))
}

pub(crate) fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// The namespace; `default` when absent, as kubectl assumes.
pub fn namespace_of(meta: &ObjectMeta) -> String {
    nonempty(&meta.namespace).unwrap_or("default").to_string()
}

/// `(namespace, name)` of an object; the name empty when absent.
pub fn key_of(meta: &ObjectMeta) -> ObjKey {
    (namespace_of(meta), meta.name.clone().unwrap_or_default())
}

/// Reduces a Service to what tapway serves of it, or `None` (with the reason in `rep`) when
/// nothing of it is served.
pub fn parse_service(obj: &Service, rep: &mut Report) -> Option<Svc> {
    let ns = namespace_of(&obj.metadata);
    let Some(name) = nonempty(&obj.metadata.name).map(str::to_string) else {
        rep.skipped.push(format!("Service {ns}/?: no metadata.name"));
        return None;
    };
    let label = format!("{ns}/{name}");
    let mut skip = |why: String| rep.skipped.push(format!("Service {label}: {why}"));
    let Some(spec) = &obj.spec else {
        skip("no spec".to_string());
        return None;
    };

    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    match kind {
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        "ExternalName" => {
            let target = spec.external_name.as_deref().unwrap_or("?");
            skip(format!("type ExternalName (a DNS alias of {target}): no cluster IP to serve"));
            return None;
        }
        other => {
            skip(format!("unknown type {other:?}"));
            return None;
        }
    }

    // The VIPs: spec.clusterIPs, else spec.clusterIP.
    let raw: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    if raw.iter().any(|v| v.as_str() == "None") {
        skip("headless (clusterIP None): no cluster IP to serve".to_string());
        return None;
    }
    let mut vips: Vec<IpAddr> = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    for s in raw {
        if s.trim().is_empty() {
            continue;
        }
        match parse_ip(s.trim()) {
            Some(ip) if !vips.contains(&ip) => vips.push(ip),
            Some(_) => {}
            None => bad.push(format!("{s:?}")),
        }
    }
    if vips.is_empty() {
        if bad.is_empty() {
            skip("no clusterIP (not allocated yet?)".to_string());
        } else {
            skip(format!("clusterIP {} is not an IP address", bad.join(", ")));
        }
        return None;
    }
    for b in bad {
        skip(format!("clusterIP {b} is not an IP address, ignored"));
    }

    let ports_raw = spec.ports.as_deref().unwrap_or(&[]);
    if ports_raw.is_empty() {
        skip("no ports".to_string());
        return None;
    }
    let mut ports: Vec<SvcPort> = Vec::new();
    for (j, p) in ports_raw.iter().enumerate() {
        match parse_service_port(p) {
            Ok(port) => ports.push(port),
            Err(why) => {
                let at = match nonempty(&p.name) {
                    Some(n) => format!("port {n} ({})", p.port),
                    None if p.port != 0 => format!("port {}", p.port),
                    None => format!("ports[{j}]"),
                };
                skip(format!("{at}: {why}"));
            }
        }
    }

    let affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout = match t {
                None => DEFAULT_AFFINITY_TIMEOUT,
                Some(v) => match u32::try_from(v) {
                    Ok(s) if (1..=MAX_AFFINITY_TIMEOUT).contains(&s) => s,
                    _ => {
                        rep.notes.push(format!(
                            "Service {label}: sessionAffinityConfig.clientIP.timeoutSeconds {v} is not \
                             in 1-{MAX_AFFINITY_TIMEOUT}, using {DEFAULT_AFFINITY_TIMEOUT}"
                        ));
                        DEFAULT_AFFINITY_TIMEOUT
                    }
                },
            };
            Affinity::ClientIp { timeout }
        }
        _ => Affinity::None,
    };

    match kind {
        "NodePort" => rep.notes.push(format!(
            "Service {label}: type NodePort, only the cluster IP is served, not the node ports"
        )),
        "LoadBalancer" => rep.notes.push(format!(
            "Service {label}: type LoadBalancer, only the cluster IP is served, not the node ports \
             nor the load-balancer addresses"
        )),
        _ => {}
    }
    if spec.external_ips.as_ref().is_some_and(|a| !a.is_empty()) {
        rep.notes.push(format!("Service {label}: externalIPs are not served"));
    }
    if spec.internal_traffic_policy.as_deref() == Some("Local") {
        rep.notes.push(format!(
            "Service {label}: internalTrafficPolicy Local is not applied, every endpoint is a backend"
        ));
    }

    if ports.is_empty() {
        return None;
    }
    Some(Svc { ns, name, vips, ports, affinity })
}

fn parse_service_port(p: &ServicePort) -> Result<SvcPort, String> {
    let protocol = parse_protocol(p.protocol.as_deref())?;
    let Some(port) = u16::try_from(p.port).ok().filter(|&n| n != 0) else {
        return Err("port is missing or not in 1-65535".to_string());
    };
    Ok(SvcPort { name: p.name.clone().unwrap_or_default(), port, protocol })
}

/// `protocol` of a Service or EndpointSlice port: TCP when absent.
fn parse_protocol(v: Option<&str>) -> Result<Protocol, String> {
    match v {
        None => Ok(Protocol::Tcp),
        Some(s) if s.eq_ignore_ascii_case("sctp") => Err("protocol SCTP is not supported".to_string()),
        Some(s) => s.parse().map_err(|_| format!("unknown protocol {s:?}")),
    }
}

/// An IP address as Kubernetes accepts it: IPv4 octets may have leading zeros (decimal).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

/// Reduces an EndpointSlice to its addresses and ports, or `None` (with the reason in `rep`)
/// when it backs nothing tapway serves.
pub fn parse_slice(obj: &EndpointSlice, rep: &mut Report) -> Option<Slice> {
    let ns = namespace_of(&obj.metadata);
    let label = format!("{ns}/{}", nonempty(&obj.metadata.name).unwrap_or("?"));
    let mut skip = |why: String| rep.skipped.push(format!("EndpointSlice {label}: {why}"));
    if nonempty(&obj.metadata.name).is_none() {
        skip("no metadata.name".to_string());
        return None;
    }
    let service =
        obj.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).filter(|s| !s.is_empty());
    let Some(service) = service else {
        skip(format!("no {SERVICE_NAME_LABEL} label"));
        return None;
    };
    let v6 = match obj.address_type.as_str() {
        "IPv4" => false,
        "IPv6" => true,
        "FQDN" => {
            skip("addressType FQDN is not supported (IPv4 and IPv6 only)".to_string());
            return None;
        }
        "" => {
            skip("no addressType".to_string());
            return None;
        }
        other => {
            skip(format!("unknown addressType {other:?}"));
            return None;
        }
    };

    // A slice port without a number, or of a protocol we do not serve, matches no service
    // port; kube-proxy ignores it too.
    let ports = obj
        .ports
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter_map(|p| {
            let protocol = parse_protocol(p.protocol.as_deref()).ok()?;
            let port = p.port.and_then(|n| u16::try_from(n).ok()).filter(|&n| n != 0)?;
            Some((p.name.clone().unwrap_or_default(), protocol, port))
        })
        .collect();

    let mut endpoints = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    let family = if v6 { "IPv6" } else { "IPv4" };
    for ep in &obj.endpoints {
        let cond = ep.conditions.as_ref();
        let ready = cond.and_then(|c| c.ready).unwrap_or(true);
        let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
        for a in &ep.addresses {
            match parse_ip(a.trim()) {
                Some(ip) if ip.is_ipv6() == v6 => endpoints.push((ip, ready, serving, terminating)),
                _ => bad.push(format!("{a:?}")),
            }
        }
    }
    if !bad.is_empty() {
        skip(format!("address {} is not an {family} address, ignored", bad.join(", ")));
    }
    Some(Slice { ns, label, service: service.clone(), ports, endpoints })
}

/// The backends of service port `port` on `vip`, from the Service's slices: sorted, one per
/// address and port.
fn backends_of(
    name: &str,
    vip: IpAddr,
    port: &SvcPort,
    slices: &[&Slice],
    notes: &mut Vec<String>,
) -> Vec<BackendSpec> {
    let mut found: BTreeMap<(IpAddr, u16), BackendSpec> = BTreeMap::new();
    let mut conflicts: Vec<(IpAddr, u16)> = Vec::new();
    for slice in slices {
        for (pname, protocol, target) in &slice.ports {
            if *pname != port.name || *protocol != port.protocol {
                continue;
            }
            for &(ip, ready, serving, terminating) in &slice.endpoints {
                if ip.is_ipv6() != vip.is_ipv6() {
                    continue;
                }
                let b = BackendSpec { ip, port: *target, weight: 1, ready, serving, terminating };
                match found.get_mut(&(ip, *target)) {
                    None => {
                        found.insert((ip, *target), b);
                    }
                    Some(old) if *old == b => {}
                    Some(old) => {
                        // The same address in two slices with different conditions (an
                        // endpoint moving between slices): keep the most usable state, so the
                        // result does not depend on the order of the slices.
                        if usability(&b) > usability(old) {
                            *old = b;
                        }
                        if !conflicts.contains(&(ip, *target)) {
                            conflicts.push((ip, *target));
                        }
                    }
                }
            }
        }
    }
    for (ip, target) in conflicts {
        if let Some(b) = found.get(&(ip, target)) {
            let at = if ip.is_ipv6() { format!("[{ip}]:{target}") } else { format!("{ip}:{target}") };
            notes.push(format!(
                "{name} on {vip}: backend {at} has different conditions in different EndpointSlices; \
                 using ready={} serving={} terminating={}",
                b.ready, b.serving, b.terminating
            ));
        }
    }
    found.into_values().collect()
}

/// Orders conditions from least to most usable for new flows.
fn usability(b: &BackendSpec) -> (bool, bool, bool) {
    (b.ready, b.serving, !b.terminating)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIXTURE: &str = include_str!("../../switch/tests/fixtures/kube-services.json");

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(vip: &str, port: u16, protocol: Protocol) -> ServiceKey {
        ServiceKey { vip: ip(vip), port, protocol }
    }

    fn backend(addr: &str, port: u16, ready: bool, serving: bool, terminating: bool) -> BackendSpec {
        BackendSpec { ip: ip(addr), port, weight: 1, ready, serving, terminating }
    }

    fn up(addr: &str, port: u16) -> BackendSpec {
        BackendSpec::ready(ip(addr), port)
    }

    fn list(items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
    }

    fn service(ns: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"namespace": ns, "name": name}, "spec": spec})
    }

    fn slice(ns: &str, name: &str, svc: &str, family: &str, ports: Value, endpoints: Value) -> Value {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": family,
               "metadata": {"namespace": ns, "name": name,
                            "labels": {"kubernetes.io/service-name": svc}},
               "ports": ports, "endpoints": endpoints})
    }

    fn ep(addr: &str) -> Value {
        json!({"addresses": [addr], "conditions": {"ready": true, "serving": true, "terminating": false}})
    }

    fn run(v: Value) -> KubeImport {
        import(&v).unwrap()
    }

    #[test]
    fn fixture_exact() {
        let v: Value = serde_json::from_str(FIXTURE).unwrap();
        let got = import(&v).unwrap();
        let web = [up("10.244.1.5", 0), up("10.244.2.7", 0), backend("10.244.3.9", 0, false, true, true)];
        let with_port = |port: u16| -> Vec<BackendSpec> {
            web.iter().map(|b| BackendSpec { port, ..b.clone() }).collect()
        };
        let want = KubeImport {
            services: vec![
                ServiceSpec {
                    name: "default/web:dns".into(),
                    key: key("10.96.45.12", 53, Protocol::Udp),
                    affinity: Affinity::None,
                    backends: with_port(5353),
                },
                ServiceSpec {
                    name: "default/web:http".into(),
                    key: key("10.96.45.12", 80, Protocol::Tcp),
                    affinity: Affinity::None,
                    backends: with_port(8080),
                },
                ServiceSpec {
                    name: "monitoring/grafana:service".into(),
                    key: key("10.96.80.3", 3000, Protocol::Tcp),
                    affinity: Affinity::None,
                    backends: vec![up("10.244.2.40", 3000)],
                },
                ServiceSpec {
                    name: "default/session-api".into(),
                    key: key("10.96.120.7", 443, Protocol::Tcp),
                    affinity: Affinity::ClientIp { timeout: 600 },
                    backends: vec![up("10.244.1.22", 8443), up("10.244.2.31", 8443)],
                },
            ],
            skipped: vec![
                "Service default/legacy-db: type ExternalName (a DNS alias of db.legacy.example.com): \
                 no cluster IP to serve"
                    .into(),
                "Service default/postgres: headless (clusterIP None): no cluster IP to serve".into(),
                "EndpointSlice default/legacy-db-fqdn: addressType FQDN is not supported (IPv4 and IPv6 \
                 only)"
                    .into(),
                "ConfigMap (v1) default/web-config: not a Service (v1) or EndpointSlice \
                 (discovery.k8s.io/v1)"
                    .into(),
            ],
            notes: vec![
                "Service monitoring/grafana: type NodePort, only the cluster IP is served, not the node ports"
                    .into(),
            ],
        };
        assert_eq!(got.services, want.services);
        assert_eq!(got.skipped, want.skipped);
        assert_eq!(got.notes, want.notes);
        assert_eq!(got, want);

        // The result is what a service_sync carries.
        let sync = tapway_api::ServiceSync { services: got.services.clone() };
        let back: tapway_api::ServiceSync =
            serde_json::from_value(serde_json::to_value(&sync).unwrap()).unwrap();
        assert_eq!(back, sync);
    }

    #[test]
    fn fixture_order_does_not_matter() {
        let v: Value = serde_json::from_str(FIXTURE).unwrap();
        let want = import(&v).unwrap();
        let mut items = v["items"].as_array().unwrap().clone();
        items.reverse();
        let got = import(&Value::Array(items)).unwrap();
        assert_eq!(got.services, want.services);
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(sorted(got.skipped), sorted(want.skipped));
        assert_eq!(got.notes, want.notes);
    }

    #[test]
    fn top_level_shapes() {
        let svc = service("default", "a", json!({"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}));
        let one = run(svc.clone());
        assert_eq!(one.services.len(), 1);
        assert_eq!(one.services[0].name, "default/a");
        assert_eq!(one.services[0].key, key("10.96.0.5", 80, Protocol::Tcp));
        assert_eq!(run(json!([svc.clone()])), one);
        assert_eq!(run(list(vec![svc])), one);
        assert_eq!(run(json!({"kind": "List", "items": []})), KubeImport::default());
        assert_eq!(run(json!({"kind": "List", "items": null})), KubeImport::default());
        assert_eq!(run(json!([])), KubeImport::default());

        assert_eq!(import(&json!(null)), Err(KubeError::NotObjectOrArray("null")));
        assert_eq!(import(&json!("x")), Err(KubeError::NotObjectOrArray("string")));
        assert_eq!(import(&json!(3)), Err(KubeError::NotObjectOrArray("number")));
        assert_eq!(import(&json!({})), Err(KubeError::NoItems));
        assert_eq!(import(&json!({"kind": "List"})), Err(KubeError::NoItems));
        assert_eq!(import(&json!({"kind": "ServiceList", "apiVersion": "v1"})), Err(KubeError::NoItems));
        assert_eq!(import(&json!({"items": {}})), Err(KubeError::ItemsNotArray("object")));
        assert!(import(&json!({})).unwrap_err().to_string().contains("items"));

        let odd = run(json!([1, "x", {"metadata": {"name": "n"}}, {"kind": "Pod", "metadata": {}}]));
        assert_eq!(
            odd.skipped,
            [
                "item 0: a JSON number, not an object",
                "item 1: a JSON string, not an object",
                "item 2 (n): no kind",
                "Pod ?: not a Service (v1) or EndpointSlice (discovery.k8s.io/v1)",
            ]
        );
    }

    #[test]
    fn knative_service_is_not_a_core_service() {
        let v = json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                       "metadata": {"namespace": "default", "name": "hello"}, "spec": {}});
        let got = run(v);
        assert!(got.services.is_empty());
        assert_eq!(
            got.skipped,
            ["Service (serving.knative.dev/v1) default/hello: not a Service (v1) or EndpointSlice \
              (discovery.k8s.io/v1)"]
        );
    }

    #[test]
    fn service_without_slices_has_no_backends() {
        let got = run(service(
            "ns",
            "lonely",
            json!({"clusterIP": "10.96.3.3", "ports": [{"name": "x", "port": 9}]}),
        ));
        assert_eq!(got.services.len(), 1);
        assert_eq!(got.services[0].name, "ns/lonely:x");
        assert!(got.services[0].backends.is_empty());
        assert!(got.skipped.is_empty() && got.notes.is_empty());
    }

    #[test]
    fn dual_stack_families_are_kept_apart() {
        let got = run(list(vec![
            service(
                "default",
                "ds",
                json!({"type": "LoadBalancer", "clusterIP": "10.96.7.7",
                       "clusterIPs": ["10.96.7.7", "fd00:10:96::7"],
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
            ),
            slice(
                "default",
                "ds-v4",
                "ds",
                "IPv4",
                json!([{"name": "http", "port": 8080}]),
                json!([ep("10.244.1.1")]),
            ),
            slice(
                "default",
                "ds-v6",
                "ds",
                "IPv6",
                json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
                json!([ep("fd00:10:244::1"), ep("10.244.9.9")]),
            ),
        ]));
        assert_eq!(got.services.len(), 2);
        assert_eq!(got.services[0].key, key("10.96.7.7", 80, Protocol::Tcp));
        assert_eq!(got.services[0].backends, vec![up("10.244.1.1", 8080)]);
        assert_eq!(got.services[1].key, key("fd00:10:96::7", 80, Protocol::Tcp));
        assert_eq!(got.services[1].backends, vec![up("fd00:10:244::1", 8080)]);
        assert_eq!(got.services[0].name, "default/ds:http");
        assert_eq!(got.services[1].name, "default/ds:http");
        assert_eq!(
            got.skipped,
            ["EndpointSlice default/ds-v6: address \"10.244.9.9\" is not an IPv6 address, ignored"]
        );
        assert_eq!(
            got.notes,
            ["Service default/ds: type LoadBalancer, only the cluster IP is served, not the node ports nor \
              the load-balancer addresses"]
        );
    }

    #[test]
    fn cluster_ip_used_when_cluster_ips_absent() {
        let got = run(service("a", "b", json!({"clusterIP": "10.96.1.2", "ports": [{"port": 1}]})));
        assert_eq!(got.services[0].key.vip, ip("10.96.1.2"));
        // Leading zeros, as the apiserver once accepted.
        let got = run(service("a", "b", json!({"clusterIPs": ["010.096.001.002"], "ports": [{"port": 1}]})));
        assert_eq!(got.services[0].key.vip, ip("10.96.1.2"));
    }

    #[test]
    fn unusable_services_are_skipped() {
        let got = run(list(vec![
            service("d", "headless", json!({"clusterIP": "None", "ports": [{"port": 1}]})),
            service("d", "headless2", json!({"clusterIPs": ["None"], "ports": [{"port": 1}]})),
            service("d", "pending", json!({"clusterIP": "", "ports": [{"port": 1}]})),
            service("d", "noip", json!({"ports": [{"port": 1}]})),
            service("d", "badip", json!({"clusterIP": "10.96.0.300", "ports": [{"port": 1}]})),
            service("d", "noports", json!({"clusterIP": "10.96.0.4"})),
            service("d", "weird", json!({"type": "Magic", "clusterIP": "10.96.0.5", "ports": [{"port": 1}]})),
            service("d", "ext", json!({"type": "ExternalName", "externalName": "x.example"})),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "d", "name": "nospec"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "d"}}),
        ]));
        assert!(got.services.is_empty());
        assert_eq!(
            got.skipped,
            [
                "Service d/headless: headless (clusterIP None): no cluster IP to serve",
                "Service d/headless2: headless (clusterIP None): no cluster IP to serve",
                "Service d/pending: no clusterIP (not allocated yet?)",
                "Service d/noip: no clusterIP (not allocated yet?)",
                "Service d/badip: clusterIP \"10.96.0.300\" is not an IP address",
                "Service d/noports: no ports",
                "Service d/weird: unknown type \"Magic\"",
                "Service d/ext: type ExternalName (a DNS alias of x.example): no cluster IP to serve",
                "Service d/nospec: no spec",
                "Service d/?: no metadata.name",
            ]
        );
    }

    #[test]
    fn sctp_and_bad_ports_are_skipped_one_by_one() {
        let got = run(list(vec![
            service(
                "d",
                "mixed",
                json!({"clusterIP": "10.96.0.9", "ports": [
                    {"name": "sig", "port": 3868, "protocol": "SCTP"},
                    {"name": "odd", "port": 5, "protocol": "ICMP"},
                    {"name": "zero", "port": 0},
                    {"name": "big", "port": 70000},
                    {"name": "ok", "port": 8080, "protocol": "UDP"}
                ]}),
            ),
            service(
                "d",
                "onlysctp",
                json!({"clusterIP": "10.96.0.10", "ports": [{"port": 9, "protocol": "SCTP"}]}),
            ),
        ]));
        assert_eq!(got.services.len(), 1);
        assert_eq!(got.services[0].name, "d/mixed:ok");
        assert_eq!(got.services[0].key, key("10.96.0.9", 8080, Protocol::Udp));
        assert_eq!(
            got.skipped,
            [
                "Service d/mixed: port sig (3868): protocol SCTP is not supported",
                "Service d/mixed: port odd (5): unknown protocol \"ICMP\"",
                "Service d/mixed: port zero (0): port is missing or not in 1-65535",
                "Service d/mixed: port big (70000): port is missing or not in 1-65535",
                "Service d/onlysctp: port 9: protocol SCTP is not supported",
            ]
        );
    }

    #[test]
    fn affinity() {
        let spec = |extra: Value| {
            let mut s = json!({"clusterIP": "10.96.0.1", "ports": [{"port": 1}]});
            if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            service("d", "s", s)
        };
        let aff = |v: Value| run(v).services[0].affinity;
        assert_eq!(aff(spec(json!({}))), Affinity::None);
        assert_eq!(aff(spec(json!({"sessionAffinity": "None"}))), Affinity::None);
        assert_eq!(
            aff(spec(json!({"sessionAffinity": "ClientIP"}))),
            Affinity::ClientIp { timeout: DEFAULT_AFFINITY_TIMEOUT }
        );
        assert_eq!(
            aff(spec(json!({"sessionAffinity": "ClientIP",
                             "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}))),
            Affinity::ClientIp { timeout: 30 }
        );
        let bad = run(spec(json!({"sessionAffinity": "ClientIP",
                                  "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}})));
        assert_eq!(bad.services[0].affinity, Affinity::ClientIp { timeout: DEFAULT_AFFINITY_TIMEOUT });
        assert_eq!(
            bad.notes,
            ["Service d/s: sessionAffinityConfig.clientIP.timeoutSeconds 0 is not in 1-86400, using 10800"]
        );
    }

    #[test]
    fn conditions_defaults() {
        let got = run(list(vec![
            service("d", "s", json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]})),
            slice(
                "d",
                "s-1",
                "s",
                "IPv4",
                json!([{"port": 8080}]),
                json!([
                    {"addresses": ["10.244.0.1"]},
                    {"addresses": ["10.244.0.2"], "conditions": {"ready": false}},
                    {"addresses": ["10.244.0.3"], "conditions": {"terminating": true, "serving": true, "ready": false}},
                    {"addresses": ["10.244.0.4", "10.244.0.5"], "conditions": {"serving": false}},
                    {"addresses": ["10.244.0.6"], "conditions": {}}
                ]),
            ),
        ]));
        assert_eq!(
            got.services[0].backends,
            vec![
                up("10.244.0.1", 8080),
                backend("10.244.0.2", 8080, false, false, false),
                backend("10.244.0.3", 8080, false, true, true),
                backend("10.244.0.4", 8080, true, false, false),
                backend("10.244.0.5", 8080, true, false, false),
                up("10.244.0.6", 8080),
            ]
        );
    }

    #[test]
    fn slice_ports_match_by_name_and_protocol() {
        let got = run(list(vec![
            service(
                "d",
                "s",
                json!({"clusterIP": "10.96.0.1", "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "metrics", "port": 9153}
                ]}),
            ),
            slice(
                "d",
                "s-a",
                "s",
                "IPv4",
                json!([{"name": "dns", "port": 5353, "protocol": "UDP"},
                       {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
                       {"name": "dns", "port": 9999, "protocol": "TCP"}]),
                json!([ep("10.244.0.1")]),
            ),
            // No metrics port here: contributes nothing to metrics.
            slice(
                "d",
                "s-b",
                "s",
                "IPv4",
                json!([{"name": "dns", "port": 5353, "protocol": "UDP"}]),
                json!([ep("10.244.0.2")]),
            ),
            slice(
                "d",
                "s-c",
                "s",
                "IPv4",
                json!([{"name": "metrics", "port": 9153}]),
                json!([ep("10.244.0.3")]),
            ),
            // Same name in another namespace: not ours.
            slice(
                "other",
                "s-x",
                "s",
                "IPv4",
                json!([{"name": "dns", "port": 1, "protocol": "UDP"}]),
                json!([ep("10.244.0.9")]),
            ),
        ]));
        let by_name: HashMap<&str, &ServiceSpec> =
            got.services.iter().map(|s| (s.name.as_str(), s)).collect();
        assert_eq!(by_name["d/s:dns"].key, key("10.96.0.1", 53, Protocol::Udp));
        assert_eq!(by_name["d/s:dns"].backends, vec![up("10.244.0.1", 5353), up("10.244.0.2", 5353)]);
        assert_eq!(by_name["d/s:dns-tcp"].backends, vec![up("10.244.0.1", 5353)]);
        assert_eq!(by_name["d/s:metrics"].backends, vec![up("10.244.0.3", 9153)]);
        assert_eq!(got.skipped, ["EndpointSlice other/s-x: no Service other/s in the input"]);
    }

    #[test]
    fn unnamed_port_matches_empty_or_absent_name() {
        let got = run(list(vec![
            service("d", "s", json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80, "targetPort": 8080}]})),
            slice(
                "d",
                "s-a",
                "s",
                "IPv4",
                json!([{"name": "", "port": 8080, "protocol": "TCP"}]),
                json!([ep("10.244.0.1")]),
            ),
            slice("d", "s-b", "s", "IPv4", json!([{"port": 8080}]), json!([ep("10.244.0.2")])),
            slice(
                "d",
                "s-c",
                "s",
                "IPv4",
                json!([{"name": "http", "port": 8080}]),
                json!([ep("10.244.0.3")]),
            ),
        ]));
        assert_eq!(got.services[0].backends, vec![up("10.244.0.1", 8080), up("10.244.0.2", 8080)]);
    }

    #[test]
    fn duplicates_across_slices() {
        let items = vec![
            service("d", "s", json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]})),
            slice(
                "d",
                "s-a",
                "s",
                "IPv4",
                json!([{"port": 8080}]),
                json!([ep("10.244.0.1"), ep("10.244.0.2")]),
            ),
            slice(
                "d",
                "s-b",
                "s",
                "IPv4",
                json!([{"port": 8080}]),
                json!([ep("10.244.0.1"),
                       {"addresses": ["10.244.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}}]),
            ),
        ];
        let got = run(list(items.clone()));
        assert_eq!(got.services[0].backends, vec![up("10.244.0.1", 8080), up("10.244.0.2", 8080)]);
        assert_eq!(
            got.notes,
            ["d/s on 10.96.0.1: backend 10.244.0.2:8080 has different conditions in different \
              EndpointSlices; using ready=true serving=true terminating=false"]
        );
        let mut rev = items;
        rev.reverse();
        assert_eq!(run(list(rev)), got);
    }

    #[test]
    fn bad_slices_are_skipped() {
        let got = run(list(vec![
            service("d", "s", json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]})),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                   "metadata": {"namespace": "d", "name": "nolabel"}, "endpoints": [ep("10.244.0.1")]}),
            slice("d", "s-fqdn", "s", "FQDN", json!([{"port": 80}]), json!([ep("a.example")])),
            slice("d", "s-what", "s", "IPv5", json!([{"port": 80}]), json!([])),
            slice("d", "s-bad", "s", "IPv4", json!([{"port": 8080}]), json!([ep("nope"), ep("10.244.0.7")])),
            slice("d", "s-null", "s", "IPv4", Value::Null, Value::Null),
        ]));
        assert_eq!(got.services[0].backends, vec![up("10.244.0.7", 8080)]);
        assert_eq!(
            got.skipped,
            [
                "EndpointSlice d/nolabel: no kubernetes.io/service-name label",
                "EndpointSlice d/s-fqdn: addressType FQDN is not supported (IPv4 and IPv6 only)",
                "EndpointSlice d/s-what: unknown addressType \"IPv5\"",
                "EndpointSlice d/s-bad: address \"nope\" is not an IPv4 address, ignored",
            ]
        );
    }

    #[test]
    fn notes_for_what_is_not_served() {
        let got = run(service(
            "d",
            "s",
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.1", "externalIPs": ["192.0.2.1"],
                   "internalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
        ));
        assert_eq!(got.services.len(), 1);
        assert_eq!(
            got.notes,
            [
                "Service d/s: externalIPs are not served",
                "Service d/s: internalTrafficPolicy Local is not applied, every endpoint is a backend",
            ]
        );
    }

    #[test]
    fn same_key_twice_is_served_once() {
        let got = run(list(vec![
            service("a", "one", json!({"clusterIP": "10.96.0.1", "ports": [{"name": "p", "port": 80}]})),
            service("b", "two", json!({"clusterIP": "10.96.0.1", "ports": [{"name": "q", "port": 80}]})),
            service("a", "one", json!({"clusterIP": "10.96.0.2", "ports": [{"port": 80}]})),
        ]));
        assert_eq!(got.services.len(), 1);
        assert_eq!(got.services[0].name, "a/one:p");
        assert_eq!(
            got.skipped,
            [
                "Service a/one: listed twice, the first one is used",
                "Service b/two port q (80/TCP): 10.96.0.1:80/tcp is already served for a/one:p",
            ]
        );
    }

    #[test]
    fn namespace_defaults_to_default() {
        let got = run(json!([
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
             "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
             "metadata": {"name": "s-1", "labels": {"kubernetes.io/service-name": "s"}},
             "ports": [{"port": 8080}], "endpoints": [ep("10.244.0.1")]},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
             "metadata": {"name": "s-2"}},
        ]));
        assert_eq!(got.services[0].name, "default/s");
        assert_eq!(got.services[0].backends, vec![up("10.244.0.1", 8080)]);
        assert_eq!(got.skipped, ["EndpointSlice default/s-2: no kubernetes.io/service-name label"]);
    }

    #[test]
    fn objects_that_are_not_their_type_are_skipped_whole() {
        let got = run(list(vec![
            service("d", "s", json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]})),
            service("d", "typed", json!({"clusterIP": "10.96.0.2", "ports": [{"port": "80"}, 7]})),
            service("d", "kind", json!({"type": 3, "clusterIP": "10.96.0.3", "ports": [{"port": 80}]})),
            slice("d", "s-typed", "s", "IPv4", json!([{"port": 8080}]), json!([{"addresses": [1]}])),
            slice(
                "d",
                "s-cond",
                "s",
                "IPv4",
                json!([{"port": 8080}]),
                json!([{"addresses": ["10.244.0.6"], "conditions": {"ready": "yes"}}]),
            ),
            slice("d", "s-ok", "s", "IPv4", json!([{"port": 8080}]), json!([ep("10.244.0.7")])),
        ]));
        assert_eq!(got.services.len(), 1);
        assert_eq!(got.services[0].backends, vec![up("10.244.0.7", 8080)]);
        let prefixes = [
            "Service d/typed: not a valid v1 Service: ",
            "Service d/kind: not a valid v1 Service: ",
            "EndpointSlice d/s-typed: not a valid discovery.k8s.io/v1 EndpointSlice: ",
            "EndpointSlice d/s-cond: not a valid discovery.k8s.io/v1 EndpointSlice: ",
        ];
        assert_eq!(got.skipped.len(), prefixes.len(), "{:?}", got.skipped);
        for (s, p) in got.skipped.iter().zip(prefixes) {
            assert!(s.starts_with(p), "{s:?} does not start with {p:?}");
        }
    }

    #[test]
    fn a_missing_service_port_number_is_skipped() {
        let got =
            run(service("d", "s", json!({"clusterIP": "10.96.0.1", "ports": [{"name": "a"}, {"port": 81}]})));
        assert_eq!(got.services.len(), 1, "{:?}", got.skipped);
        assert_eq!(got.services[0].key.port, 81);
        assert_eq!(got.skipped, ["Service d/s: port a (0): port is missing or not in 1-65535"]);
    }

    // ---- never panics ----

    use proptest::prelude::*;

    const WORDS: &[&str] = &[
        "Service",
        "EndpointSlice",
        "List",
        "ConfigMap",
        "v1",
        "discovery.k8s.io/v1",
        "ClusterIP",
        "NodePort",
        "LoadBalancer",
        "ExternalName",
        "None",
        "",
        "TCP",
        "UDP",
        "SCTP",
        "tcp",
        "IPv4",
        "IPv6",
        "FQDN",
        "ClientIP",
        "Local",
        "http",
        "dns",
        "default",
        "web",
        "10.96.0.10",
        "10.244.1.5",
        "fd00:10:96::a",
        "fd00:10:244::5",
        "010.096.000.010",
        "::ffff:10.0.0.1",
    ];

    const KEYS: &[&str] = &[
        "kind",
        "apiVersion",
        "items",
        "metadata",
        "name",
        "namespace",
        "labels",
        "kubernetes.io/service-name",
        "spec",
        "type",
        "clusterIP",
        "clusterIPs",
        "ports",
        "port",
        "protocol",
        "sessionAffinity",
        "sessionAffinityConfig",
        "clientIP",
        "timeoutSeconds",
        "addressType",
        "endpoints",
        "addresses",
        "conditions",
        "ready",
        "serving",
        "terminating",
        "externalIPs",
        "externalName",
        "internalTrafficPolicy",
    ];

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (0u64..70_000).prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            prop::sample::select(WORDS).prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        let key = prop_oneof![prop::sample::select(KEYS).prop_map(str::to_string), ".{0,6}"];
        leaf.prop_recursive(6, 96, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// JSON pointers of every node of `v`.
    fn pointers(v: &Value, here: String, out: &mut Vec<String>) {
        out.push(here.clone());
        match v {
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    pointers(c, format!("{here}/{i}"), out);
                }
            }
            Value::Object(o) => {
                for (k, c) in o {
                    pointers(c, format!("{here}/{}", k.replace('~', "~0").replace('/', "~1")), out);
                }
            }
            _ => {}
        }
    }

    /// Replaces (or removes) one node of `v`.
    fn mutate(v: &mut Value, at: prop::sample::Index, with: Value, remove: bool) {
        let mut ptrs = Vec::new();
        pointers(v, String::new(), &mut ptrs);
        let p = at.get(&ptrs).clone();
        if remove {
            if let Some(cut) = p.rfind('/') {
                let (parent, last) = (&p[..cut], &p[cut + 1..]);
                let last = last.replace("~1", "/").replace("~0", "~");
                match v.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        o.remove(&last);
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(i) = last.parse::<usize>() {
                            if i < a.len() {
                                a.remove(i);
                            }
                        }
                    }
                    _ => {}
                }
                return;
            }
        }
        if let Some(node) = v.pointer_mut(&p) {
            *node = with;
        }
    }

    /// What must hold of any successful import.
    fn check_invariants(r: &KubeImport) -> Result<(), TestCaseError> {
        for w in r.services.windows(2) {
            prop_assert!(w[0].key < w[1].key, "services not sorted or duplicated");
        }
        for s in &r.services {
            prop_assert!(s.key.port != 0);
            prop_assert!(!s.name.is_empty());
            for w in s.backends.windows(2) {
                prop_assert!(
                    (w[0].ip, w[0].port) < (w[1].ip, w[1].port),
                    "backends not sorted or duplicated"
                );
            }
            for b in &s.backends {
                prop_assert_eq!(b.ip.is_ipv6(), s.key.vip.is_ipv6());
                prop_assert_eq!(b.weight, 1);
                prop_assert!(b.port != 0);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_json(v in arb_json()) {
            if let Ok(r) = import(&v) {
                check_invariants(&r)?;
            }
            let _ = import(&json!({"kind": "List", "items": [v.clone()]}));
            if let Ok(r) = import(&json!([v])) {
                check_invariants(&r)?;
            }
        }

        #[test]
        fn never_panics_on_mutated_fixture(
            edits in prop::collection::vec(
                (any::<prop::sample::Index>(), arb_json(), any::<bool>()), 1..4)
        ) {
            let mut v: Value = serde_json::from_str(FIXTURE).unwrap();
            for (at, with, remove) in edits {
                mutate(&mut v, at, with, remove);
            }
            if let Ok(r) = import(&v) {
                check_invariants(&r)?;
            }
        }
    }
}
