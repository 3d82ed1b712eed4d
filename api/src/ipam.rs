//! In-daemon address management (`"ipam": {"type": "tapway-ipam"}`): what the CNI plugin and
//! the `tapway-ipam` IPAM plugin ask tapwayd, and what it answers.
//!
//! tapwayd allocates from the node's pod ranges, or from the ranges the ipam section lists
//! (host-local's `ranges` format, each inside a pod range). An address belongs to exactly one
//! owner, keyed by network, container ID and interface name as host-local keys it: a pod port
//! (the allocation is recorded with the port, in the same state file) or, for the standalone
//! `tapway-ipam` plugin, an allocation record of its own.

use serde::{Deserialize, Serialize};

use crate::{IpConfig, RouteConfig};

/// One range of a range set, as host-local's `ranges` lists it. Defaults as host-local's:
/// `rangeStart` the subnet's first address after the network address, `rangeEnd` its last
/// (IPv4: the one before the broadcast address), `gateway` the first address.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct IpamRange {
    /// The subnet addresses get their prefix from (CIDR).
    pub subnet: String,
    /// First address handed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    /// Last address handed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    /// The gateway of the subnet (never handed out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// What to allocate: one address from each range set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct IpamRequest {
    /// Range sets; one address is allocated from each, from the first of its ranges that has
    /// a free one. Empty: one set per pod range of the node (both families when both are
    /// configured), with tapwayd's gateways.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Vec<IpamRange>>,
    /// Addresses asked for (`CNI_ARGS IP=`, `runtimeConfig.ips`), with or without a prefix:
    /// each must fall in one range set and be free, and that set then gives no other address.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requested: Vec<String>,
    /// Routes to return (and, for a pod port, to install), as the ipam section lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

/// What was allocated: the addresses (with the prefix of their subnet) and their gateways, and
/// the routes of the request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct IpamAllocation {
    /// One address per range set, in the order of the sets.
    pub ips: Vec<IpConfig>,
    /// The request's routes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

/// Who holds an allocation of the standalone IPAM plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(default)]
pub struct IpamKey {
    /// The CNI network name.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// Arguments of [`crate::Op::IpamAllocate`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct IpamAllocateRequest {
    /// The owner. An owner that already holds an allocation gets it again (a retried ADD).
    #[serde(flatten)]
    pub key: IpamKey,
    /// What to allocate.
    #[serde(flatten)]
    pub request: IpamRequest,
}

/// An allocation record of the standalone IPAM plugin, as the state file and `ipam_list` hold
/// it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct IpamRecord {
    /// The owner.
    #[serde(flatten)]
    pub key: IpamKey,
    /// What it holds.
    #[serde(flatten)]
    pub allocation: IpamAllocation,
    /// When it was made, seconds since the Unix epoch.
    pub since: u64,
}

/// Result of [`crate::Op::IpamRelease`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamReleaseResult {
    /// False when the owner held nothing.
    pub released: bool,
}

/// Result of [`crate::Op::IpamGc`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamGcResult {
    /// The allocations released.
    pub released: Vec<IpamRecord>,
}

/// One address in use, as `ipam_list` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct IpamUse {
    /// The address.
    pub address: String,
    /// Who has it: `port N (ifname in netns)`, `allocation network/container/ifname`, or
    /// `gateway`.
    pub owner: String,
    /// The container, when a CNI attachment holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Whether tapwayd allocated it (false: an address given by another IPAM plugin, or by
    /// hand, that falls in the range).
    pub allocated: bool,
}

/// A pod range as `ipam_list` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct IpamRangeReport {
    /// The range (CIDR).
    pub range: String,
    /// Its gateway.
    pub gateway: String,
    /// Addresses that can be handed out in all (network, broadcast and gateway excluded).
    pub size: u64,
    /// Addresses in use (what `used` lists, the gateway excluded).
    pub used: u64,
    /// `size - used`.
    pub free: u64,
    /// The addresses in use, in address order.
    pub addresses: Vec<IpamUse>,
}

/// Result of [`crate::Op::IpamList`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct IpamReport {
    /// The node's pod ranges.
    pub ranges: Vec<IpamRangeReport>,
    /// The standalone IPAM plugin's allocations.
    pub allocations: Vec<IpamRecord>,
}
