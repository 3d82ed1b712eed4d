//! A small synchronous rtnetlink client over `netlink-packet-route`: links, addresses and
//! routes of the netns the calling thread is in.
//!
//! The control plane configures one pod at a time on a thread that has entered the pod's netns
//! (see [`crate::netns`]); a blocking socket there is simpler and faster than an async runtime.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::wire::Mac;

/// A failed netlink operation.
#[derive(Debug, thiserror::Error)]
#[error("netlink {op}: {source}")]
pub struct NlError {
    /// What was being done.
    pub op: &'static str,
    /// The kernel's error (or a socket/decoding error).
    pub source: std::io::Error,
}

impl NlError {
    /// The errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// What a link looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MAC, if it has one.
    pub mac: Option<Mac>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Carrier (`IFLA_CARRIER`): for a TUN/TAP, on while some process has it open.
    pub carrier: Option<bool>,
    /// TUN/TAP flags, when the link is one (`IFLA_INFO_KIND` "tun").
    pub tun: Option<TunInfo>,
}

/// The flags of a TUN/TAP device (`IFLA_INFO_DATA` of kind "tun").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunInfo {
    /// A TAP (Ethernet frames), not a TUN.
    pub tap: bool,
    /// Frames carry the packet-information prefix (no `IFF_NO_PI`).
    pub pi: bool,
    /// Frames carry a virtio-net header (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// Survives its last fd (`TUNSETPERSIST`).
    pub persist: bool,
    /// Multi-queue (`IFF_MULTI_QUEUE`).
    pub multi_queue: bool,
}

impl TunInfo {
    /// `IFLA_TUN_*` attributes (linux/if_link.h).
    const TYPE: u16 = 3;
    const PI: u16 = 4;
    const VNET_HDR: u16 = 5;
    const PERSIST: u16 = 6;
    const MULTI_QUEUE: u16 = 7;
    /// `IFF_TAP`, the value of `IFLA_TUN_TYPE` for a TAP.
    const IFF_TAP: u8 = 2;

    fn from_nlas(nlas: &[netlink_packet_route::link::InfoTun]) -> TunInfo {
        use netlink_packet_utils::nla::Nla;
        let mut info = TunInfo::default();
        for nla in nlas {
            // Each of these is one byte; anything else is left alone.
            let mut v = [0u8; 1];
            if nla.value_len() != 1 {
                continue;
            }
            nla.emit_value(&mut v);
            let on = v[0] != 0;
            match nla.kind() {
                Self::TYPE => info.tap = v[0] == Self::IFF_TAP,
                Self::PI => info.pi = on,
                Self::VNET_HDR => info.vnet_hdr = on,
                Self::PERSIST => info.persist = on,
                Self::MULTI_QUEUE => info.multi_queue = on,
                _ => {}
            }
        }
        info
    }
}

/// Changes to apply to a link in one request.
#[derive(Debug, Default, Clone)]
pub struct LinkChanges {
    /// New name.
    pub name: Option<String>,
    /// New MAC.
    pub mac: Option<Mac>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// Transmit queue length.
    pub txqlen: Option<u32>,
    /// Set administratively up (true) or down (false).
    pub up: Option<bool>,
    /// Move into the netns of this fd.
    pub netns_fd: Option<std::os::fd::RawFd>,
}

/// A route as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
}

/// A netlink socket bound in the calling thread's netns.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

fn io_err(op: &'static str, source: std::io::Error) -> NlError {
    NlError { op, source }
}

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's current netns.
    pub fn new() -> Result<Netlink, NlError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| io_err("socket", e))?;
        sock.bind_auto().map_err(|e| io_err("bind", e))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| io_err("connect", e))?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Sends one request and collects the messages of the answer until the ACK or the end of
    /// a dump.
    fn request(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|e| io_err(op, e))?;

        let mut out = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let n = self.sock.recv(&mut &mut rx[..], 0).map_err(|e| io_err(op, e))?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n]).map_err(|e| {
                    io_err(op, std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
                })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(io_err(
                        op,
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "zero-length message"),
                    ));
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                    NetlinkPayload::Error(e) => return Err(io_err(op, e.to_io())),
                    NetlinkPayload::Done(_) => return Ok(out),
                    _ => {}
                }
            }
        }
    }

    /// The link called `name`, if any.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request("get link", RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from(l)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Applies `changes` to link `index`.
    pub fn set_link(&mut self, index: u32, changes: &LinkChanges) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(up) = changes.up {
            msg.header.change_mask = LinkFlags::Up;
            if up {
                msg.header.flags = LinkFlags::Up;
            }
        }
        if let Some(name) = &changes.name {
            msg.attributes.push(LinkAttribute::IfName(name.clone()));
        }
        if let Some(mac) = changes.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = changes.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(q) = changes.txqlen {
            msg.attributes.push(LinkAttribute::TxQueueLen(q));
        }
        if let Some(fd) = changes.netns_fd {
            msg.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        self.request("set link", RouteNetlinkMessage::SetLink(msg), 0).map(|_| ())
    }

    /// Makes the kernel derive link `index`'s IPv6 link-local address from its MAC (EUI-64,
    /// `IN6_ADDR_GEN_MODE_EUI64`) whatever the netns' default (`stable_secret`, random), so the
    /// switch knows it in advance. A link without IPv6 has nothing to set: not an error.
    pub fn set_addr_gen_eui64(&mut self, index: u32) -> Result<(), NlError> {
        const IN6_ADDR_GEN_MODE_EUI64: u8 = 0;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![
            AfSpecInet6::AddrGenMode(IN6_ADDR_GEN_MODE_EUI64),
        ])]));
        match self.request("set addr_gen_mode", RouteNetlinkMessage::SetLink(msg), 0) {
            Err(e) if matches!(e.errno(), Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP)) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Deletes link `index`. A link that is already gone is not an error.
    pub fn del_link(&mut self, index: u32) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request("delete link", RouteNetlinkMessage::DelLink(msg), 0) {
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Adds an address to link `index`. IPv6 addresses skip duplicate address detection (the
    /// IPAM owns uniqueness), so they are usable at once. An existing address is not an error.
    pub fn add_addr(&mut self, index: u32, net: IpNet) -> Result<(), NlError> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(&net.addr());
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        match net {
            IpNet::V4(_) => {
                msg.attributes.push(AddressAttribute::Local(net.addr()));
                msg.attributes.push(AddressAttribute::Address(net.addr()));
            }
            IpNet::V6(_) => {
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes.push(AddressAttribute::Address(net.addr()));
                msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        match self.request("add address", RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Addresses on link `index`.
    pub fn addrs(&mut self, index: u32) -> Result<Vec<IpNet>, NlError> {
        let msgs = self.request(
            "list addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let ip = a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    });
                    let ip = ip.or_else(|| {
                        a.attributes.iter().find_map(|at| match at {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                    IpNet::new(ip, a.header.prefix_len).ok()
                }
                _ => None,
            })
            .collect())
    }

    /// Adds a route in the main table. An existing identical route is not an error.
    pub fn add_route(&mut self, dst: IpNet, gw: Option<IpAddr>, oif: u32) -> Result<(), NlError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(&dst.addr());
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = if gw.is_some() { RouteScope::Universe } else { RouteScope::Link };
        msg.header.kind = RouteType::Unicast;
        if dst.prefix_len() > 0 {
            msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst.network())));
        }
        if let Some(gw) = gw {
            msg.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        match self.request("add route", RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Routes of the main table, both families.
    pub fn routes(&mut self) -> Result<Vec<Route>, NlError> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = fam;
            for m in self.request("list routes", RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)? {
                let RouteNetlinkMessage::NewRoute(r) = m else { continue };
                if r.header.table != RouteHeader::RT_TABLE_MAIN {
                    continue;
                }
                let mut dst = None;
                let mut gw = None;
                let mut oif = None;
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(d) => dst = route_ip(d),
                        RouteAttribute::Gateway(g) => gw = route_ip(g),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                let unspecified: IpAddr = match fam {
                    AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                    _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                };
                if let Ok(dst) = IpNet::new(dst.unwrap_or(unspecified), r.header.destination_prefix_length) {
                    out.push(Route { dst, gw, oif });
                }
            }
        }
        Ok(out)
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn link_from(l: LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: l.header.flags.contains(LinkFlags::Up),
        carrier: None,
        tun: None,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Address(a) => link.mac = a.as_slice().try_into().ok(),
            LinkAttribute::Carrier(c) => link.carrier = Some(c != 0),
            LinkAttribute::LinkInfo(infos) => {
                let is_tun = infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Tun)));
                if is_tun {
                    let nlas = infos.iter().find_map(|i| match i {
                        LinkInfo::Data(InfoData::Tun(n)) => Some(n.as_slice()),
                        _ => None,
                    });
                    link.tun = Some(nlas.map(TunInfo::from_nlas).unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::InfoTun;
    use netlink_packet_utils::nla::DefaultNla;

    #[test]
    fn tun_info_from_attributes() {
        let nla = |kind: u16, v: Vec<u8>| InfoTun::Other(DefaultNla::new(kind, v));
        // What the kernel reports for `ip tuntap add mode tap vnet_hdr` (owner is a u32).
        let nlas = [
            nla(1, vec![0; 4]),
            nla(3, vec![2]),
            nla(4, vec![0]),
            nla(5, vec![1]),
            nla(6, vec![1]),
            nla(7, vec![0]),
        ];
        let info = TunInfo::from_nlas(&nlas);
        assert_eq!(info, TunInfo { tap: true, pi: false, vnet_hdr: true, persist: true, multi_queue: false });
        let tun = TunInfo::from_nlas(&[nla(3, vec![1]), nla(4, vec![1])]);
        assert_eq!(tun, TunInfo { tap: false, pi: true, ..Default::default() });
        // A malformed (too long) flag is ignored, not read.
        assert_eq!(TunInfo::from_nlas(&[nla(6, vec![1, 1])]), TunInfo::default());
    }
}
