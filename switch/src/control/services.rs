//! Service operations of the control API: upsert, delete, sync, list, conntrack dump/flush,
//! and the once-a-second housekeeping (conntrack expiry, affinity expiry, retiring removed
//! backends once their last flow is gone).
//!
//! The control plane keeps the compiled services in a map and publishes a fresh
//! [`ServiceTable`] snapshot after each change; unchanged services keep their compiled Maglev
//! table (an `Arc`), so a sync only pays for what changed and forwarding never waits.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tapway_api::{
    ApiError, BackendStats, ConntrackFilter, ConntrackList, ErrorCode, FlowInfo, FlushResult, Protocol,
    ServiceInfo, ServiceKey, ServiceSpec, SyncResult,
};

use super::{api_err, Control};
use crate::table::conntrack::Flow;
use crate::table::maglev;
use crate::table::services::{backends_of, PackedKey, Service, ServiceTable};
use crate::table::PortKind;
use crate::wire::ip::PROTO_TCP;

/// Most service ports tapwayd takes.
pub const MAX_SERVICES: usize = 100_000;

/// Longest affinity timeout Kubernetes allows (one day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// A sync of at least this many service ports gives freed heap back to the kernel after.
const TRIM_AFTER: usize = 1000;

/// Flows listed when the request sets no limit.
pub const DEFAULT_LIST_LIMIT: usize = 1000;

/// The control plane's service state.
#[derive(Default)]
pub struct ServiceState {
    services: BTreeMap<ServiceKey, Arc<Service>>,
    /// Backends no longer in any service whose flows still live.
    retired: HashSet<PackedKey>,
    /// Removed backends, and addresses of detached pods, whose flows are ended once more at
    /// the next sweep: a worker still on the previous snapshot may have placed a new flow on
    /// them meanwhile.
    again: HashSet<GoneKey>,
    again_ips: HashSet<IpAddr>,
}

fn invalid(msg: String) -> ApiError {
    api_err(ErrorCode::InvalidArgument, msg)
}

/// Checks one spec; the error names the service.
pub fn validate_spec(s: &ServiceSpec) -> Result<(), ApiError> {
    let k = &s.key;
    if s.name.len() > 512 {
        return Err(invalid(format!("{k}: name longer than 512 bytes")));
    }
    let usable_vip = match k.vip {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
    };
    if !usable_vip {
        return Err(invalid(format!("{k}: {} cannot be a service VIP", k.vip)));
    }
    if k.port == 0 {
        return Err(invalid(format!("{k}: port 0")));
    }
    if s.backends.len() > maglev::MAX_BACKENDS {
        return Err(invalid(format!("{k}: more than {} backends", maglev::MAX_BACKENDS)));
    }
    if let tapway_api::Affinity::ClientIp { timeout } = s.affinity {
        if timeout == 0 || timeout > MAX_AFFINITY_TIMEOUT {
            return Err(invalid(format!("{k}: affinity timeout must be 1..={MAX_AFFINITY_TIMEOUT} s")));
        }
    }
    let mut seen = HashSet::new();
    for b in &s.backends {
        if b.ip.is_ipv4() != k.vip.is_ipv4() {
            return Err(invalid(format!("{k}: backend {} is not of the VIP's address family", b.ip)));
        }
        if b.port == 0 || b.ip.is_unspecified() || b.ip.is_multicast() {
            return Err(invalid(format!("{k}: bad backend {}:{}", b.ip, b.port)));
        }
        if !seen.insert((b.ip, b.port)) {
            return Err(invalid(format!("{k}: backend {}:{} listed twice", b.ip, b.port)));
        }
    }
    Ok(())
}

/// Flows' (VIP, VIP port, protocol, backend, backend port) for the backends `prev` lists and
/// `next` no longer does, service by service (a removed service removes all of its backends).
type GoneKey = (IpAddr, u16, u8, IpAddr, u16);

/// Whether `g`'s service lists `g`'s backend (again).
fn listed(services: &BTreeMap<ServiceKey, Arc<Service>>, g: &GoneKey) -> bool {
    let key = ServiceKey { vip: g.0, port: g.1, protocol: proto_of(g.2) };
    services.get(&key).is_some_and(|s| s.spec.backends.iter().any(|b| (b.ip, b.port) == (g.3, g.4)))
}

fn removed_backends(
    prev: &BTreeMap<ServiceKey, Arc<Service>>,
    next: &BTreeMap<ServiceKey, Arc<Service>>,
) -> HashSet<GoneKey> {
    let mut gone = HashSet::new();
    for (k, old) in prev {
        let new = next.get(k);
        if new.is_some_and(|n| Arc::ptr_eq(n, old)) {
            continue;
        }
        for b in &old.spec.backends {
            let kept = new.is_some_and(|n| n.spec.backends.iter().any(|x| x.ip == b.ip && x.port == b.port));
            if !kept {
                gone.insert((k.vip, k.port, old.proto, b.ip, b.port));
            }
        }
    }
    gone
}

/// The specs of `st` with `change` applied (a spec to upsert, or a key to remove), for the
/// services file. It is written before the change is applied, so a failed write changes
/// nothing.
fn specs_with<'a>(
    st: &'a ServiceState,
    set: Option<&'a ServiceSpec>,
    remove: Option<&ServiceKey>,
) -> Vec<&'a ServiceSpec> {
    let mut specs: BTreeMap<ServiceKey, &ServiceSpec> =
        st.services.iter().filter(|(k, _)| Some(*k) != remove).map(|(k, s)| (*k, &s.spec)).collect();
    if let Some(s) = set {
        specs.insert(s.key, s);
    }
    specs.into_values().collect()
}

fn proto_of(n: u8) -> Protocol {
    if n == PROTO_TCP {
        Protocol::Tcp
    } else {
        Protocol::Udp
    }
}

fn matches(filter: &ConntrackFilter, f: &Flow) -> bool {
    filter.vip.is_none_or(|v| v == f.vip.0) && filter.backend.is_none_or(|b| b == f.backend.0)
}

fn flow_info(f: &Flow, expires_in: u32) -> FlowInfo {
    let ep = |(ip, port): (IpAddr, u16)| std::net::SocketAddr::new(ip, port).to_string();
    FlowInfo {
        protocol: proto_of(f.proto),
        client: ep(f.client),
        vip: ep(f.vip),
        backend: ep(f.backend),
        snat: f.snat.map(ep),
        state: f.state.name().to_string(),
        replied: f.replied,
        confirmed: f.confirmed(),
        expires_in,
    }
}

impl Control {
    fn svc_state(&self) -> std::sync::MutexGuard<'_, ServiceState> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a snapshot of `st` to the workers.
    fn publish_services(&self, st: &ServiceState) {
        let ports = self.switch.ports();
        let gateway_mac = ports.iter().find(|p| p.kind == PortKind::Host).map(|p| p.mac).unwrap_or_default();
        let mut table = ServiceTable::new(st.services.clone(), &st.retired, gateway_mac);
        for g in self.pod_cidrs.iter().filter_map(crate::config::gateway_of) {
            if table.gateway_for(g.addr()).is_none() {
                table.gateways.push(g.addr());
            }
        }
        table.onlink = self.pod_cidrs.iter().map(|c| c.trunc()).collect();
        if !self.service_cidrs.is_empty() {
            // A MAC of its own, so the kernel never sees its own address as a neighbour's.
            let mut m = gateway_mac;
            m[1] ^= 0x5a;
            table.host_vip_mac = Some(m);
        }
        self.switch.services.store(Arc::new(table));
    }

    /// Applies a new desired set to `st`: `replace` removes the services not in `desired`;
    /// `removes` are removed too.
    fn apply(
        &self,
        st: &mut ServiceState,
        desired: Vec<ServiceSpec>,
        replace: bool,
        removes: &[ServiceKey],
    ) -> SyncResult {
        let start = Instant::now();
        let mut r = SyncResult::default();
        let mut next = if replace { BTreeMap::new() } else { st.services.clone() };
        for spec in desired {
            let prev = st.services.get(&spec.key);
            match prev {
                Some(p) if p.spec == spec => {
                    r.unchanged += 1;
                    next.insert(spec.key, p.clone());
                }
                _ => {
                    if prev.is_some() {
                        r.updated += 1;
                    } else {
                        r.added += 1;
                    }
                    let key = spec.key;
                    next.insert(key, Arc::new(Service::compile(spec, prev.map(|p| p.as_ref()))));
                }
            }
        }
        for k in removes {
            next.remove(k);
        }
        if replace || !removes.is_empty() {
            r.removed = st.services.keys().filter(|k| !next.contains_key(k)).count();
        }
        let gone = removed_backends(&st.services, &next);
        st.again.retain(|g| !listed(&next, g));
        st.again.extend(gone.iter().copied());
        // Backends that left keep getting their replies reverse-NATed until their flows end.
        let before = backends_of(&st.services);
        st.services = next;
        let now_set = backends_of(&st.services);
        st.retired.extend(before.difference(&now_set));
        st.retired.retain(|b| !now_set.contains(b));
        self.publish_services(st);
        // As kube-proxy clears UDP conntrack of removed endpoints: their UDP flows go, so the
        // client's next datagram finds a current backend; their TCP flows end with a RST.
        // (Terminating backends still listed keep their flows: graceful removal.)
        self.end_gone(&gone, &HashSet::new());
        r.elapsed_us = start.elapsed().as_micros() as u64;
        r
    }

    /// Ends the service flows of a pod whose port is being detached, those it is the backend
    /// of and those it is the client of, as for a backend removed from its service: UDP
    /// flushed, TCP answered with a RST either way. Its addresses may still be listed as
    /// backends until the control plane catches up; new flows to them then need ARP, and are
    /// never flooded.
    pub fn forget_backend_ips(&self, ips: &[IpAddr]) {
        let ips: HashSet<IpAddr> = ips.iter().copied().collect();
        self.end_gone(&HashSet::new(), &ips);
        self.svc_state().again_ips.extend(ips);
    }

    /// Ends the flows of the backends in `gone` and of the pod addresses in `ips`.
    fn end_gone(&self, gone: &HashSet<GoneKey>, ips: &HashSet<IpAddr>) {
        if gone.is_empty() && ips.is_empty() {
            return;
        }
        let ct = &self.switch.conntrack;
        let clients = if ips.is_empty() { 0 } else { ct.flush(|f| ips.contains(&f.client.0)) };
        let e = ct.end_flows(self.switch.now(), |f| {
            ips.contains(&f.backend.0)
                || gone.contains(&(f.vip.0, f.vip.1, f.proto, f.backend.0, f.backend.1))
        });
        tracing::debug!(clients, flushed = e.flushed, ended = e.ended, "flows of removed backends ended");
    }

    /// `service_set`: creates or replaces one service port.
    pub fn service_set(&self, spec: ServiceSpec) -> Result<SyncResult, ApiError> {
        validate_spec(&spec)?;
        let mut st = self.svc_state();
        if !st.services.contains_key(&spec.key) && st.services.len() >= MAX_SERVICES {
            return Err(api_err(
                ErrorCode::ResourceExhausted,
                format!("at most {MAX_SERVICES} service ports"),
            ));
        }
        self.save_services(specs_with(&st, Some(&spec), None))?;
        Ok(self.apply(&mut st, vec![spec], false, &[]))
    }

    /// `service_delete`: removes one service port (absent: nothing to do).
    pub fn service_delete(&self, key: &ServiceKey) -> Result<SyncResult, ApiError> {
        let mut st = self.svc_state();
        let desired: Vec<ServiceSpec> =
            st.services.iter().filter(|(k, _)| *k != key).map(|(_, s)| s.spec.clone()).collect();
        if desired.len() < st.services.len() {
            self.save_services(specs_with(&st, None, Some(key)))?;
        }
        let r = self.apply(&mut st, desired, true, &[]);
        Ok(SyncResult { unchanged: 0, ..r })
    }

    /// `service_sync`: makes the table equal to `services`.
    pub fn service_sync(&self, services: Vec<ServiceSpec>) -> Result<SyncResult, ApiError> {
        if services.len() > MAX_SERVICES {
            return Err(api_err(
                ErrorCode::ResourceExhausted,
                format!("at most {MAX_SERVICES} service ports"),
            ));
        }
        let mut keys = HashSet::new();
        for s in &services {
            validate_spec(s)?;
            if !keys.insert(s.key) {
                return Err(invalid(format!("{} is listed twice", s.key)));
            }
        }
        let large = services.len() >= TRIM_AFTER;
        let mut st = self.svc_state();
        let changed = services.len() != st.services.len()
            || services.iter().any(|s| st.services.get(&s.key).is_none_or(|p| p.spec != *s));
        if changed {
            let mut specs: Vec<&ServiceSpec> = services.iter().collect();
            specs.sort_by_key(|s| s.key);
            self.save_services(specs)?;
        }
        let r = self.apply(&mut st, services, true, &[]);
        drop(st);
        if large {
            // The request (megabytes of JSON) and its parse are freed by now.
            super::release_heap();
        }
        Ok(r)
    }

    /// Applies one update of the Kubernetes watch. A spec that fails validation is left out
    /// (and logged): one odd object must not hold up the others. The services file is written
    /// by the next sweep, not on every update of a burst.
    pub fn watch_apply(&self, u: tapway_kube::store::Update) -> SyncResult {
        let ok = |s: &ServiceSpec| match validate_spec(s) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(service = %s.name, error = %e.message, "service from the Kubernetes API not served");
                false
            }
        };
        let mut st = self.svc_state();
        let r = if u.full {
            let mut specs: Vec<ServiceSpec> = u.upserts.into_iter().filter(ok).collect();
            if specs.len() > MAX_SERVICES {
                tracing::warn!(
                    ports = specs.len(),
                    "more than {MAX_SERVICES} service ports; the rest are not served"
                );
                specs.truncate(MAX_SERVICES);
            }
            self.apply(&mut st, specs, true, &[])
        } else {
            let mut removes = u.removes;
            let mut ups = Vec::with_capacity(u.upserts.len());
            for s in u.upserts {
                if ok(&s) {
                    ups.push(s);
                } else {
                    removes.push(s.key);
                }
            }
            self.apply(&mut st, ups, false, &removes)
        };
        let full = u.full;
        self.watch_syncs.fetch_add(1, Relaxed);
        self.services_unsaved.store(true, Relaxed);
        drop(st);
        if full {
            // A full update follows a list: the list's pages, the objects and the update were
            // freed on the watch thread, whose malloc arena keeps them otherwise.
            super::release_heap();
        }
        r
    }

    /// `service_list`.
    pub fn service_list(&self) -> Vec<ServiceInfo> {
        let st = self.svc_state();
        st.services
            .values()
            .map(|s| {
                let size = s.maglev.len().max(1) as f64;
                let mut slots = vec![0usize; s.usable.len()];
                for &x in &s.maglev {
                    if let Some(c) = slots.get_mut(usize::from(x)) {
                        *c += 1;
                    }
                }
                let backend_stats = s
                    .spec
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let share = s
                            .usable
                            .iter()
                            .position(|u| u.ip == b.ip && u.port == b.port)
                            .map(|u| slots[u] as f64 / size)
                            .unwrap_or(0.0);
                        BackendStats { new_flows: s.backend_flows[i].load(Relaxed), table_share: share }
                    })
                    .collect();
                ServiceInfo {
                    spec: s.spec.clone(),
                    maglev_size: s.maglev.len(),
                    backend_stats,
                    new_flows: s.counters.new_flows.load(Relaxed),
                    rejected: s.counters.rejected.load(Relaxed),
                }
            })
            .collect()
    }

    /// Re-programs services from the state file (no save).
    pub fn restore_services(&self, specs: Vec<ServiceSpec>) -> usize {
        let ok: Vec<ServiceSpec> = specs
            .into_iter()
            .filter(|s| match validate_spec(s) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(service = %s.key, error = %e.message, "service not restored");
                    false
                }
            })
            .collect();
        let mut st = self.svc_state();
        self.apply(&mut st, ok, true, &[]).added
    }

    /// `conntrack_list`.
    pub fn conntrack_list(&self, filter: &ConntrackFilter, limit: usize) -> ConntrackList {
        let limit = if limit == 0 { DEFAULT_LIST_LIMIT } else { limit };
        let mut all = self.switch.conntrack.dump(self.switch.now(), |f| matches(filter, f));
        all.sort_by_key(|(f, _)| (f.vip, f.client));
        let total = all.len();
        ConntrackList { flows: all.iter().take(limit).map(|(f, left)| flow_info(f, *left)).collect(), total }
    }

    /// `conntrack_flush`.
    pub fn conntrack_flush(&self, filter: &ConntrackFilter) -> FlushResult {
        FlushResult { flushed: self.switch.conntrack.flush(|f| matches(filter, f)) }
    }

    /// Once a second: expire flows and pins, retire backends whose last flow ended.
    pub fn sweep_services(&self) {
        if self.services_unsaved.swap(false, Relaxed) {
            let st = self.svc_state();
            // The API server holds the truth: a failed write is tried again next second.
            if let Err(e) = self.save_services(specs_with(&st, None, None)) {
                tracing::warn!(error = %e.message, "services from the Kubernetes API not saved; retrying");
                self.services_unsaved.store(true, Relaxed);
            }
        }
        let now = self.switch.now();
        let sweep = self.switch.conntrack.sweep(now);
        self.switch.affinity.sweep(now);
        let mut st = self.svc_state();
        let gone = std::mem::take(&mut st.again);
        let mut ips = std::mem::take(&mut st.again_ips);
        // An address given to a new pod since is not ended again.
        let ports = self.switch.ports();
        ips.retain(|ip| !ports.iter().any(|p| p.meta.ips.iter().any(|n| n.addr() == *ip)));
        self.end_gone(&gone, &ips);
        let before = st.retired.len();
        st.retired.retain(|b| sweep.live_backends.contains(b));
        if st.retired.len() != before {
            self.publish_services(&st);
        }
        if sweep.expired > 0 {
            tracing::debug!(expired = sweep.expired, "conntrack entries expired");
        }
    }

    /// Service and conntrack figures for `stats`.
    pub fn service_counters(&self) -> BTreeMap<String, u64> {
        let sw = &self.switch;
        let c = &sw.conntrack.counters;
        let st = self.svc_state();
        [
            ("services", st.services.len() as u64),
            ("ct_entries", sw.conntrack.len() as u64),
            ("ct_max", sw.conntrack.max() as u64),
            ("ct_created", c.created.load(Relaxed)),
            ("ct_expired", c.expired.load(Relaxed)),
            ("ct_evicted", c.evicted.load(Relaxed)),
            ("ct_per_client", u64::from(sw.conntrack.per_client())),
            ("ct_quota", c.quota.load(Relaxed)),
            ("ct_full", c.full.load(Relaxed)),
            ("ct_backend_flushed", c.backend_flushed.load(Relaxed)),
            ("ct_backend_ended", c.backend_ended.load(Relaxed)),
            ("ct_resets", c.resets.load(Relaxed)),
            ("affinity_full", sw.affinity.full.load(Relaxed)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use tapway_api::{Affinity, BackendSpec};

    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "x".into(),
            key: ServiceKey { vip: "10.96.0.1".parse().unwrap(), port: 443, protocol: Protocol::Tcp },
            affinity: Affinity::None,
            backends: vec![BackendSpec::ready("10.244.0.2".parse().unwrap(), 6443)],
        }
    }

    #[test]
    fn removed_backends_are_found_service_by_service() {
        let compile = |s: ServiceSpec| (s.key, Arc::new(Service::compile(s, None)));
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut two = spec();
        two.backends.push(BackendSpec::ready(ip("10.244.0.3"), 6443));
        let mut other = spec();
        other.key.port = 80;
        let prev: BTreeMap<_, _> = [compile(two.clone()), compile(other.clone())].into_iter().collect();
        // 10.244.0.3 leaves :443; :80 is deleted; a backend turning terminating is not removed.
        let mut next_443 = spec();
        next_443.backends[0].terminating = true;
        let next: BTreeMap<_, _> = [compile(next_443)].into_iter().collect();
        let gone = removed_backends(&prev, &next);
        let vip = ip("10.96.0.1");
        let want: HashSet<GoneKey> =
            [(vip, 443, PROTO_TCP, ip("10.244.0.3"), 6443), (vip, 80, PROTO_TCP, ip("10.244.0.2"), 6443)]
                .into();
        assert_eq!(gone, want);
        assert!(listed(&prev, &(vip, 443, PROTO_TCP, ip("10.244.0.3"), 6443)));
        assert!(!listed(&next, &(vip, 443, PROTO_TCP, ip("10.244.0.3"), 6443)));
        // Unchanged services cost nothing.
        assert!(removed_backends(&prev, &prev).is_empty());
    }

    #[test]
    fn validation() {
        assert!(validate_spec(&spec()).is_ok());
        let mut s = spec();
        s.key.vip = "0.0.0.0".parse().unwrap();
        assert!(validate_spec(&s).is_err());
        let mut s = spec();
        s.key.port = 0;
        assert!(validate_spec(&s).is_err());
        let mut s = spec();
        s.backends.push(s.backends[0].clone());
        assert!(validate_spec(&s).unwrap_err().message.contains("twice"));
        let mut s = spec();
        s.backends[0].ip = "fd00::2".parse().unwrap();
        assert!(validate_spec(&s).unwrap_err().message.contains("family"));
        let mut s = spec();
        s.affinity = Affinity::ClientIp { timeout: 0 };
        assert!(validate_spec(&s).is_err());
    }
}
