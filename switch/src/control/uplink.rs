//! The uplink port: the node's dedicated NIC bound with AF_XDP ([`crate::port::xdp`]) and
//! plugged into the switch like any other port. It is trusted (no anti-spoofing: its frames come
//! from pods of other nodes, each anti-spoofed on its own node), takes part in MAC learning and
//! flooding, and is how frames for pods on other nodes leave the node.

use std::sync::Arc;

use tapway_api::UplinkStatus;

use super::Control;
use crate::netlink::{Link, LinkChanges, Netlink, NlError};
use crate::pool::FramePool;
use crate::port::xdp::{XdpConfig, XdpError, XdpPort};
use crate::table::{PortEntry, PortKind, PortMeta};

/// Why the uplink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// No such interface in the daemon's netns.
    #[error("uplink interface {0} not found")]
    NotFound(String),
    /// Netlink failed.
    #[error(transparent)]
    Netlink(#[from] NlError),
    /// The pods' MTU does not fit the uplink's.
    #[error("pod MTU {pod} is larger than the MTU {uplink} of uplink {ifname}: segments would not fit")]
    Mtu {
        /// Interface.
        ifname: String,
        /// Pod MTU.
        pod: u32,
        /// Uplink MTU.
        uplink: u32,
    },
    /// AF_XDP setup failed.
    #[error(transparent)]
    Xdp(#[from] XdpError),
    /// Every port number is taken.
    #[error("no free port number for the uplink")]
    NoPortNumber,
    /// An uplink is already set up.
    #[error("an uplink is already set up")]
    Exists,
    /// The switch was not started with the uplink's frame pool.
    #[error("the switch was not started with the uplink's frame pool")]
    Pool,
}

/// An uplink bound before the switch starts: the switch's frame pool lives in its UMEM, so the
/// switch is started with [`OpenUplink::pool`] and the port published afterwards
/// ([`Control::attach_uplink`]).
pub struct OpenUplink {
    port: Arc<XdpPort>,
    pool: Arc<FramePool>,
    link: Link,
    ifname: String,
}

impl OpenUplink {
    /// Checks the interface and the MTUs, brings the link up and binds AF_XDP on it, with a
    /// frame pool of `pool_frames` buffers (plus the fill rings' share) in its UMEM and its
    /// queues spread over `workers` workers.
    pub fn open(
        cfg: &XdpConfig,
        pod_mtu: u32,
        pool_frames: usize,
        workers: usize,
    ) -> Result<OpenUplink, UplinkError> {
        let mut nl = Netlink::new()?;
        let link = nl.link_by_name(&cfg.ifname)?.ok_or_else(|| UplinkError::NotFound(cfg.ifname.clone()))?;
        if pod_mtu > link.mtu {
            return Err(UplinkError::Mtu { ifname: cfg.ifname.clone(), pod: pod_mtu, uplink: link.mtu });
        }
        if !link.up {
            nl.set_link(link.index, &LinkChanges { up: Some(true), ..Default::default() })?;
        }
        let (port, pool) = XdpPort::open(cfg, link.mtu, pool_frames, workers)?;
        Ok(OpenUplink { port: Arc::new(port), pool, link, ifname: cfg.ifname.clone() })
    }

    /// The frame pool to start the switch with.
    pub fn pool(&self) -> Arc<FramePool> {
        self.pool.clone()
    }
}

impl Control {
    /// Publishes the uplink as a port. Call after the pods were restored, so their recorded
    /// port numbers are kept, on a switch started with the uplink's pool.
    pub fn attach_uplink(&self, up: OpenUplink) -> Result<(), UplinkError> {
        let mut slot = self.uplink.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(UplinkError::Exists);
        }
        if !Arc::ptr_eq(&self.switch.pool, &up.pool) {
            return Err(UplinkError::Pool);
        }
        let OpenUplink { port, link, ifname, .. } = up;
        let worker = port.owner();
        let max = self.switch.config.max_ports;
        let id = self.switch.update(|t| {
            let Some(id) = t.free_id(max) else { return (t.clone(), None) };
            let entry = Arc::new(PortEntry {
                id,
                kind: PortKind::Uplink,
                io: port.clone(),
                mac: link.mac.unwrap_or_default(),
                guard: None,
                worker,
                counters: self.switch.port_counters(),
                police: Default::default(),
                meta: PortMeta {
                    name: ifname.clone(),
                    netns: String::new(),
                    ifname: ifname.clone(),
                    ifindex: link.index,
                    mtu: link.mtu,
                    ips: Vec::new(),
                    owner: Default::default(),
                    ipam: None,
                },
            });
            (t.with(entry), Some(id))
        });
        let id = id.ok_or(UplinkError::NoPortNumber)?;
        tracing::info!(uplink = ifname, port = id, worker, mode = port.mode().name(), "uplink up");
        *slot = Some((id, port));
        Ok(())
    }

    /// Unpublishes the uplink and closes its sockets, which detaches the XDP program.
    /// Call after the workers stopped (or while they run: they drop their snapshot soon).
    pub fn shutdown_uplink(&self) {
        let taken = self.uplink.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((id, port)) = taken {
            self.switch.update(|t| (t.without(id), ()));
            let a = port.accounting();
            tracing::info!(
                pool_rx_lent = a.rx_lent,
                pool_tx_lent = a.tx_lent,
                pool_held = a.held,
                chunks_free = a.chunks_free,
                chunks_in_flight = a.chunks_in_flight,
                chunks_total = a.chunks_total,
                balanced = a.balanced(),
                "uplink UMEM at shutdown"
            );
            drop(port);
        }
    }

    /// The uplink's counters, for `stats`.
    pub(super) fn uplink_stats(&self) -> Vec<(String, u64)> {
        let slot = self.uplink.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some((_, p)) => p.stats(),
            None => Vec::new(),
        }
    }

    /// The uplink, for `status`.
    pub(super) fn uplink_status(&self) -> Option<UplinkStatus> {
        let slot = self.uplink.lock().unwrap_or_else(|p| p.into_inner());
        let (id, p) = slot.as_ref()?;
        let i = p.info();
        Some(UplinkStatus {
            ifname: i.ifname,
            mode: i.mode.name().to_string(),
            queues: i.queues,
            queue_workers: i.queue_workers,
            mtu: i.mtu,
            umem_frames: i.umem_frames,
            port: *id,
        })
    }
}
