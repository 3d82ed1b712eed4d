//! The host port (`tapway0`): a TAP in the daemon's own netns holding the gateway address of
//! each pod range, so the node reaches its pods (kubelet probes) and pods reach the node and,
//! through its routing and masquerade, the outside.

use std::sync::Arc;

use tapway_api::{ApiError, ErrorCode};

use super::{api_err, Control};
use crate::netlink::{LinkChanges, Netlink};
use crate::port::tap::TapPort;
use crate::table::{PortEntry, PortKind, PortMeta};

/// Port number of the host port.
pub const HOST_PORT_ID: u16 = 0;

impl Control {
    /// Creates (or re-opens, after a restart) the host port, configures the gateway addresses
    /// and plugs it into the switch as port 0 on worker 0.
    pub fn setup_host_port(&self) -> Result<(), ApiError> {
        // Persistent: a restart re-opens it with the same MAC, so pods' neighbour caches stay
        // valid.
        let tap = Arc::new(TapPort::open(&self.host_port, true, false)?);
        let mut nl = Netlink::new()?;
        let link = nl
            .link_by_name(tap.name())?
            .ok_or_else(|| api_err(ErrorCode::System, format!("host port {} vanished", tap.name())))?;
        let mac = match link.mac {
            Some(m) if m != [0; 6] => m,
            _ => {
                let m = super::pods::random_mac();
                nl.set_link(link.index, &LinkChanges { mac: Some(m), ..Default::default() })?;
                m
            }
        };
        nl.set_link(link.index, &LinkChanges { mtu: Some(self.mtu), up: Some(true), ..Default::default() })?;
        let gateways = self.gateways();
        for gw in &gateways {
            nl.add_addr(link.index, *gw)?;
        }
        let entry = Arc::new(PortEntry {
            id: HOST_PORT_ID,
            kind: PortKind::Host,
            io: tap,
            mac,
            guard: None,
            worker: 0,
            counters: self.switch.port_counters(),
            police: Default::default(),
            meta: PortMeta {
                name: self.host_port.clone(),
                netns: String::new(),
                ifname: self.host_port.clone(),
                ifindex: link.index,
                mtu: self.mtu,
                ips: gateways,
                owner: Default::default(),
                ipam: None,
            },
        });
        self.switch.update(|t| (t.with(entry), ()));
        // The node reaches VIPs through the switch: the service stage answers ARP/NDP for them.
        for c in &self.service_cidrs {
            nl.add_route(*c, None, link.index)?;
        }
        tracing::info!(port = self.host_port, mac = %tapway_api::validate::format_mac(&mac), "host port up");
        Ok(())
    }

    /// Gateway addresses of the pod ranges.
    pub fn gateways(&self) -> Vec<ipnet::IpNet> {
        self.pod_cidrs.iter().filter_map(crate::config::gateway_of).collect()
    }
}
