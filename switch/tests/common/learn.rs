//! Helpers of the neighbour-discovery and MAC-pinning tests (`hostile_learn.rs`): dual-stack
//! nodes and pods, NDP frames a pod's kernel would never send, and readers of a namespace's
//! IPv6 state (`ip -6 addr`, `ip -6 route`, `ip -6 neigh`, `/proc/net/snmp6`).

use std::net::Ipv6Addr;
use std::time::Instant;

use tapway_api::{IpConfig, Op, PortInfo};
use tapway_switch::wire::ndp::NdpRepr;

use super::*;

/// A node with an IPv4 and an IPv6 pod range: `10.231.SUBNET.0/24` and `fd00:231:SUBNET::/64`.
pub struct DualNode {
    /// The node.
    pub node: Node,
    /// `fd00:231:SUBNET::`, the IPv6 range's prefix.
    pub prefix6: String,
    /// The IPv6 gateway (on the host port).
    pub gw6: Ipv6Addr,
    /// The host port's MAC.
    pub host_mac: [u8; 6],
}

/// A dual-stack pod.
pub struct DualPod {
    /// The pod (its IPv4 address in `pod.ip`).
    pub pod: Pod,
    /// Its IPv6 address.
    pub ip6: Ipv6Addr,
}

impl DualPod {
    /// The pod's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.pod.mac()
    }

    /// Its namespace.
    pub fn ns(&self) -> &Netns {
        &self.pod.ns
    }

    /// Its port number.
    pub fn id(&self) -> u16 {
        self.pod.port.id
    }
}

impl DualNode {
    /// Starts tapwayd with both ranges.
    pub fn start(tag: &str, subnet: u8) -> DualNode {
        let prefix6 = format!("fd00:231:{subnet}::");
        let node = Node::start_with(tag, subnet, &["--pod-cidr", &format!("{prefix6}/64")]);
        let host = node.ports().into_iter().find(|p| p.kind == "host").expect("host port");
        let gw6 = host
            .ips
            .iter()
            .find(|i| i.contains(':'))
            .and_then(|i| i.split('/').next())
            .and_then(|i| i.parse().ok())
            .expect("an IPv6 gateway on the host port");
        let host_mac = tapway_api::validate::mac(&host.mac).expect("the host port's MAC");
        DualNode { node, prefix6, gw6, host_mac }
    }

    /// Attaches a pod with the next IPv4 address and `PREFIX6::host`.
    pub fn pod(&self, tag: &str, host: u16) -> DualPod {
        let ns = Netns::new(tag);
        let ip = self.node.next_ip();
        let mut req = self.node.attach_request(&ns, ip);
        let ip6: Ipv6Addr = format!("{}{host:x}", self.prefix6).parse().expect("an IPv6 address");
        req.ips.push(IpConfig { address: format!("{ip6}/64"), gateway: Some(self.gw6.to_string()) });
        let port: PortInfo = self.node.call(Op::Attach(req));
        DualPod { pod: Pod { port, ip, ns }, ip6 }
    }

    /// The host port's ifindex in the node namespace.
    pub fn host_ifindex(&self) -> u32 {
        self.node.ns.enter(|| nix::net::if_::if_nametoindex("tapway0").expect("tapway0 exists"))
    }

    /// A drop counter of port `id`.
    pub fn drops_of(&self, id: u16, reason: &str) -> u64 {
        drops(&self.node.port_stats(id), reason)
    }

    /// Entries in the neighbour table.
    pub fn neigh_entries(&self) -> u64 {
        self.node.stats().switch.get("neigh_entries").copied().expect("stats show neigh_entries")
    }
}

/// The link-local address of `eth0` in `ns` once duplicate address detection is done
/// (not tentative); panics if it fails or never ends.
pub fn link_local(ns: &Netns) -> Ipv6Addr {
    let start = Instant::now();
    loop {
        let out = ns.ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"]);
        assert!(!out.contains("dadfailed"), "duplicate address detection failed: {out}");
        if !out.contains("tentative") {
            if let Some(a) = out.split_whitespace().skip_while(|w| *w != "inet6").nth(1) {
                return a.split('/').next().and_then(|a| a.parse().ok()).expect("a link-local address");
            }
        }
        assert!(start.elapsed() < DEADLINE, "no usable link-local address on eth0: {out}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The link-layer address `ns` holds for `ip` on eth0 (`None`: no entry, or no address).
pub fn neigh_lladdr(ns: &Netns, ip: &Ipv6Addr) -> Option<String> {
    let out = ns.ip(&["-6", "neigh", "show", &ip.to_string(), "dev", "eth0"]);
    out.split_whitespace().skip_while(|w| *w != "lladdr").nth(1).map(str::to_string)
}

/// `ip -6 route show` in `ns`.
pub fn routes6(ns: &Netns) -> String {
    ns.ip(&["-6", "route", "show"])
}

/// The IPv6 addresses of eth0 in `ns`, sorted.
pub fn addrs6(ns: &Netns) -> Vec<String> {
    let out = ns.ip(&["-6", "-o", "addr", "show", "dev", "eth0"]);
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// An IPv6 sysctl of `ns`, e.g. `eth0/accept_ra` for `net.ipv6.conf.eth0.accept_ra`.
pub fn conf6(ns: &Netns, key: &str) -> String {
    let path = format!("/proc/sys/net/ipv6/conf/{key}");
    ns.enter(move || {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_string()
    })
}

/// A counter of `/proc/net/snmp6` in `ns` (e.g. `Icmp6InNeighborSolicits`).
pub fn snmp6(ns: &Netns, name: &str) -> u64 {
    let name = name.to_string();
    ns.enter(move || {
        // /proc/net is the main thread's netns; thread-self is this thread's.
        let text = std::fs::read_to_string("/proc/thread-self/net/snmp6").expect("read snmp6");
        text.lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name.as_str())).then(|| w.next().and_then(|v| v.parse().ok())).flatten()
            })
            .unwrap_or_else(|| panic!("{name} is not in /proc/net/snmp6"))
    })
}

/// The all-nodes group and its MAC.
pub const ALL_NODES: (&str, [u8; 6]) = ("ff02::1", [0x33, 0x33, 0, 0, 0, 1]);

/// An NS or NA frame (through the switch's own builder).
pub fn ndp_frame(repr: NdpRepr, src_mac: [u8; 6], src: Ipv6Addr, dst: &str, dst_mac: [u8; 6]) -> Vec<u8> {
    let mut buf = [0u8; 128];
    let dst: Ipv6Addr = dst.parse().expect("an IPv6 address");
    let n = repr.emit_frame(src_mac, dst_mac, src, dst, &mut buf).expect("an NS or NA");
    buf[..n].to_vec()
}

/// Ethernet + IPv6 (hop limit 255) + ICMPv6 `icmp`, whose checksum (bytes 2..4) is filled.
pub fn icmp6_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> Vec<u8> {
    let len = u16::try_from(icmp.len()).expect("a small message");
    let mut icmp = icmp.to_vec();
    icmp[2..4].fill(0);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let c = inet_checksum(&pseudo);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// A router advertisement from `src` to all nodes: router lifetime 1800 s, `mac` as source
/// link-layer address, and an on-link, autonomous (SLAAC) prefix `prefix`/64.
pub fn router_advert(mac: [u8; 6], src: Ipv6Addr, prefix: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![134, 0, 0, 0, 64, 0];
    icmp.extend_from_slice(&1800u16.to_be_bytes());
    icmp.extend_from_slice(&[0; 8]); // reachable time, retransmit timer
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&mac);
    icmp.extend_from_slice(&[3, 4, 64, 0xc0]); // prefix information: L and A
    icmp.extend_from_slice(&86_400u32.to_be_bytes());
    icmp.extend_from_slice(&14_400u32.to_be_bytes());
    icmp.extend_from_slice(&[0; 4]);
    icmp.extend_from_slice(&prefix.octets());
    icmp6_frame(mac, ALL_NODES.1, src, ALL_NODES.0.parse().expect("ff02::1"), &icmp)
}

/// A redirect from `src` to `dst` saying `target` is the better first hop for `dest`.
pub fn redirect(
    mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    dest: Ipv6Addr,
) -> Vec<u8> {
    let mut icmp = vec![137, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&dest.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    icmp6_frame(mac, dst_mac, src, dst, &icmp)
}

/// The solicited-node multicast group of `ip` and its MAC (RFC 4291 §2.7.1).
pub fn solicited_node(ip: &Ipv6Addr) -> (String, [u8; 6]) {
    let o = ip.octets();
    (format!("ff02::1:ff{:02x}:{:02x}{:02x}", o[13], o[14], o[15]), [0x33, 0x33, 0xff, o[13], o[14], o[15]])
}
