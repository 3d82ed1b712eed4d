//! In-daemon IPAM: addresses from the node's pod ranges for pod ports (an attach that asks
//! for it, [`tapway_api::AttachRequest::ipam`]) and for the standalone `tapway-ipam` plugin
//! (the `ipam_*` operations).
//!
//! Who holds an address is never stored twice: a pod port's addresses are the port's (its
//! record in `state.json`, with the allocation's gateways and routes), and the standalone
//! plugin's allocations are records of their own in the same file, written in the same atomic
//! rename. So ports and addresses cannot disagree after a crash: an attach killed before its
//! record was written allocated nothing, and a DEL that removed the port released its
//! addresses with it. What is in use is worked out from those records at each allocation
//! ([`Control::addresses_in_use`]), under the attach mutex, so an attach with explicit
//! addresses and an allocation cannot race.
//!
//! The allocation rules are host-local's ([`crate::ipam`]); the addresses of a range must lie
//! inside one of the node's pod ranges (tapwayd routes and answers for those only), though
//! its subnet may be wider (the cluster's prefix when nodes share one L2, docs/uplink.md).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tapway_api::{
    validate, ApiError, ErrorCode, GcRequest, IpConfig, IpamAllocateRequest, IpamAllocation, IpamGcResult,
    IpamKey, IpamRangeReport, IpamRecord, IpamReleaseResult, IpamReport, IpamRequest, IpamUse,
};

use super::{api_err, Control};
use crate::ipam::{self, IpamError, Range, RangeSet};
use crate::table::{PortKind, PortTable};

/// The standalone plugin's allocations and each range set's last allocated address; saved in
/// `state.json` with the ports.
#[derive(Debug, Default, Clone)]
pub struct IpamBook {
    /// Allocations without a port, by owner.
    pub records: BTreeMap<IpamKey, IpamRecord>,
    /// Where each range set's round robin stands ([`crate::ipam::RangeSet::key`]).
    pub last: BTreeMap<String, IpAddr>,
}

impl From<IpamError> for ApiError {
    fn from(e: IpamError) -> Self {
        let code = match e {
            IpamError::InUse(_) | IpamError::Gateway(_) => ErrorCode::AddressConflict,
            IpamError::Exhausted(_) => ErrorCode::AddressExhausted,
            IpamError::BadRange { .. } | IpamError::NotInRange(_) | IpamError::SameSet(..) => {
                ErrorCode::InvalidArgument
            }
        };
        api_err(code, e.to_string())
    }
}

fn invalid(e: validate::Invalid) -> ApiError {
    api_err(ErrorCode::InvalidArgument, e.0)
}

fn check_key(key: &IpamKey) -> Result<(), ApiError> {
    if key.network.is_empty() {
        return Err(api_err(ErrorCode::InvalidArgument, "ipam needs the network name"));
    }
    validate::container_id(&key.container_id).map_err(invalid)?;
    validate::ifname(&key.ifname).map_err(invalid)
}

/// A requested address, with or without a prefix (host-local takes both).
pub(super) fn requested(s: &str) -> Result<IpAddr, ApiError> {
    validate::host_ip(s)
        .map_err(|e| api_err(ErrorCode::InvalidArgument, format!("requested address: {}", e.0)))
}

impl Control {
    /// The pod ranges as range sets: one per range, with tapwayd's gateway.
    fn pod_range_sets(&self) -> Result<Vec<RangeSet>, ApiError> {
        self.pod_cidrs
            .iter()
            .map(|c| {
                let gw = crate::config::gateway_of(c).map(|g| g.addr());
                Ok(RangeSet::new(vec![Range::of_subnet(c.trunc(), gw)?])?)
            })
            .collect()
    }

    /// The range sets of `req`: its own, each range inside a pod range, or the pod ranges.
    pub fn range_sets(&self, req: &IpamRequest) -> Result<Vec<RangeSet>, ApiError> {
        if req.ranges.is_empty() {
            if self.pod_cidrs.is_empty() {
                return Err(api_err(
                    ErrorCode::FailedPrecondition,
                    "tapwayd has no pod range to allocate from (--pod-cidr, or the Node's podCIDRs) \
                     and the ipam section lists no ranges",
                ));
            }
            return self.pod_range_sets();
        }
        let mut sets: Vec<RangeSet> = Vec::new();
        for set in &req.ranges {
            let ranges = set.iter().map(Range::parse).collect::<Result<Vec<_>, _>>()?;
            for r in &ranges {
                // The addresses must be the node's; the subnet (their prefix) may be wider: a
                // cluster CIDR shared over the uplinks (docs/uplink.md).
                let inside = self.pod_cidrs.iter().any(|c| c.contains(&r.start) && c.contains(&r.end));
                if !self.pod_cidrs.is_empty() && !inside {
                    return Err(api_err(
                        ErrorCode::InvalidArgument,
                        format!(
                            "ipam range {}-{} is not inside the node's pod ranges {:?}",
                            r.start,
                            r.end,
                            self.pod_cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>()
                        ),
                    ));
                }
                let clash =
                    sets.iter().flat_map(|s| s.ranges()).find(|o| o.contains(r.start) || r.contains(o.start));
                if let Some(o) = clash {
                    return Err(api_err(
                        ErrorCode::InvalidArgument,
                        format!("ipam range {} overlaps range {} of another set", r.subnet, o.subnet),
                    ));
                }
            }
            sets.push(RangeSet::new(ranges)?);
        }
        Ok(sets)
    }

    /// Every address someone has: the ports' (pods, lost pods, the host port's gateways), the
    /// standalone allocations, and the pod ranges' gateways.
    pub fn addresses_in_use(&self, table: &PortTable, book: &IpamBook) -> HashSet<IpAddr> {
        let ports = table.iter().flat_map(|p| p.meta.ips.iter().map(|n| n.addr()));
        let records = book
            .records
            .values()
            .flat_map(|r| r.allocation.ips.iter())
            .filter_map(|ip| ip.address.parse::<IpNet>().ok().map(|n| n.addr()));
        let gateways = self.gateways().into_iter().map(|g| g.addr());
        ports.chain(records).chain(gateways).collect()
    }

    /// Allocates what `req` asks for against what is in use now (the caller holds the attach
    /// mutex). Moves the round robin on; records nothing.
    pub(super) fn allocate(&self, req: &IpamRequest, table: &PortTable) -> Result<IpamAllocation, ApiError> {
        let sets = self.range_sets(req)?;
        let wanted = req.requested.iter().map(|s| requested(s)).collect::<Result<Vec<_>, _>>()?;
        let mut book = self.ipam.lock().unwrap_or_else(|p| p.into_inner());
        let in_use = self.addresses_in_use(table, &book);
        let got = ipam::allocate(&sets, &in_use, &mut book.last, &wanted)?;
        Ok(IpamAllocation {
            ips: got
                .iter()
                .map(|a| IpConfig { address: a.address.to_string(), gateway: Some(a.gateway.to_string()) })
                .collect(),
            routes: req.routes.clone(),
        })
    }

    /// Which standalone allocation holds one of `ips`, if any (an attach with explicit
    /// addresses must not take them).
    pub(super) fn allocated_to(&self, ips: &[IpNet]) -> Option<String> {
        let book = self.ipam.lock().unwrap_or_else(|p| p.into_inner());
        book.records.values().find_map(|r| {
            let hit = r.allocation.ips.iter().find(|a| {
                a.address.parse::<IpNet>().is_ok_and(|n| ips.iter().any(|ip| ip.addr() == n.addr()))
            })?;
            let k = &r.key;
            Some(format!(
                "address {} is allocated to {}/{}/{} (tapway-ipam)",
                hit.address, k.network, k.container_id, k.ifname
            ))
        })
    }

    /// `ipam_allocate`: the owner's allocation, made now or (a retried ADD) the one it has.
    pub fn ipam_allocate(&self, req: IpamAllocateRequest) -> Result<IpamAllocation, ApiError> {
        check_key(&req.key)?;
        let _pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = self.ipam.lock().unwrap_or_else(|p| p.into_inner()).records.get(&req.key) {
            tracing::info!(network = %req.key.network, container = %req.key.container_id, ifname = %req.key.ifname, "ipam allocation repeated; same addresses");
            return Ok(r.allocation.clone());
        }
        let allocation = self.allocate(&req.request, &self.switch.ports())?;
        let record = IpamRecord {
            key: req.key.clone(),
            allocation: allocation.clone(),
            since: super::state::unix_now(),
        };
        self.ipam.lock().unwrap_or_else(|p| p.into_inner()).records.insert(req.key.clone(), record);
        if let Err(e) = self.save_state() {
            self.ipam.lock().unwrap_or_else(|p| p.into_inner()).records.remove(&req.key);
            return Err(api_err(e.code, format!("{}; nothing was allocated", e.message)));
        }
        tracing::info!(network = %req.key.network, container = %req.key.container_id, ifname = %req.key.ifname, ips = ?allocation.ips, "ipam allocated");
        Ok(allocation)
    }

    /// `ipam_release`: gives the owner's addresses back; `released: false` when it had none.
    pub fn ipam_release(&self, key: &IpamKey) -> Result<IpamReleaseResult, ApiError> {
        check_key(key)?;
        let _pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let Some(old) = self.ipam.lock().unwrap_or_else(|p| p.into_inner()).records.remove(key) else {
            self.resave_if_dirty()?;
            return Ok(IpamReleaseResult { released: false });
        };
        if let Err(e) = self.save_state() {
            self.ipam.lock().unwrap_or_else(|p| p.into_inner()).records.insert(key.clone(), old);
            return Err(api_err(e.code, format!("{}; the addresses stay allocated", e.message)));
        }
        tracing::info!(network = %key.network, container = %key.container_id, ifname = %key.ifname, "ipam released");
        Ok(IpamReleaseResult { released: true })
    }

    /// `ipam_check`: whether the owner holds an allocation.
    pub fn ipam_check(&self, key: &IpamKey) -> Result<IpamAllocation, ApiError> {
        check_key(key)?;
        let book = self.ipam.lock().unwrap_or_else(|p| p.into_inner());
        book.records.get(key).map(|r| r.allocation.clone()).ok_or_else(|| {
            api_err(
                ErrorCode::NotFound,
                format!("no allocation for {}/{}/{}", key.network, key.container_id, key.ifname),
            )
        })
    }

    /// `ipam_gc`: releases every allocation of the network whose attachment is not valid.
    pub fn ipam_gc(&self, req: &GcRequest) -> Result<IpamGcResult, ApiError> {
        if req.network.is_empty() {
            return Err(api_err(ErrorCode::InvalidArgument, "gc needs the network name"));
        }
        let _pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let stale = |k: &IpamKey| {
            k.network == req.network
                && !req.valid.iter().any(|a| a.container_id == k.container_id && a.ifname == k.ifname)
        };
        let released: Vec<IpamRecord> = {
            let mut book = self.ipam.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<IpamKey> = book.records.keys().filter(|k| stale(k)).cloned().collect();
            keys.iter().filter_map(|k| book.records.remove(k)).collect()
        };
        if released.is_empty() {
            return Ok(IpamGcResult { released });
        }
        if let Err(e) = self.save_state() {
            let mut book = self.ipam.lock().unwrap_or_else(|p| p.into_inner());
            book.records.extend(released.into_iter().map(|r| (r.key.clone(), r)));
            return Err(api_err(e.code, format!("{}; nothing was released", e.message)));
        }
        tracing::info!(network = %req.network, released = released.len(), "ipam gc");
        Ok(IpamGcResult { released })
    }

    /// `ipam_list`: each pod range with the addresses in use in it and who has them.
    pub fn ipam_list(&self) -> IpamReport {
        let table = self.switch.ports();
        let book = self.ipam.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut owners: Vec<(IpAddr, IpamUse)> = Vec::new();
        for p in table.iter() {
            let allocated = p.meta.ipam.is_some();
            for ip in &p.meta.ips {
                let owner = match p.kind {
                    PortKind::Host => "gateway (host port)".to_string(),
                    _ => format!("port {} ({} in {})", p.id, p.meta.ifname, p.meta.netns),
                };
                let container_id = p.meta.owner.container_id.clone();
                owners.push((
                    ip.addr(),
                    IpamUse { address: ip.addr().to_string(), owner, container_id, allocated },
                ));
            }
        }
        for r in book.records.values() {
            for ip in r.allocation.ips.iter().filter_map(|i| i.address.parse::<IpNet>().ok()) {
                let k = &r.key;
                owners.push((
                    ip.addr(),
                    IpamUse {
                        address: ip.addr().to_string(),
                        owner: format!("allocation {}/{}/{}", k.network, k.container_id, k.ifname),
                        container_id: Some(k.container_id.clone()),
                        allocated: true,
                    },
                ));
            }
        }
        owners.sort_by_key(|(a, _)| *a);
        let sets = self.pod_range_sets().unwrap_or_default();
        let ranges = sets
            .iter()
            .filter_map(|s| s.ranges().first())
            .map(|r| {
                let addresses: Vec<IpamUse> = owners
                    .iter()
                    .filter(|(a, _)| r.contains(*a) && *a != r.gateway)
                    .map(|(_, u)| u.clone())
                    .collect();
                let size = u64::try_from(r.size()).unwrap_or(u64::MAX);
                let used = addresses.len() as u64;
                IpamRangeReport {
                    range: r.subnet.to_string(),
                    gateway: r.gateway.to_string(),
                    size,
                    used,
                    free: size.saturating_sub(used),
                    addresses,
                }
            })
            .collect();
        IpamReport { ranges, allocations: book.records.into_values().collect() }
    }
}
