//! Frames as a TAP hands them over (vnet header + Ethernet), described by a structure
//! `arbitrary` decodes from fuzz input: valid Ethernet/VLAN/ARP/IPv4/IPv6/TCP/UDP/ICMP/NDP
//! skeletons whose fields are fuzzed, checksums right (or partial, as a GSO sender leaves them)
//! unless a [`Mangle`] breaks them afterwards, addresses mostly picked from the node's own
//! ([`book`]) so frames hit pods, VIPs, backends and tracked flows rather than random space.

use arbitrary::Arbitrary;
use tapway_switch::wire::checksum::{fold, pseudo, sum};
use tapway_switch::wire::ip::{PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use tapway_switch::wire::vnet::{
    F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4,
};
use tapway_switch::wire::{VnetHdr, VNET_HDR_LEN};

/// The node's addresses the selectors pick from (the `pipeline` target's node, see
/// [`crate::node`]).
pub mod book {
    /// MACs: gateway (host port), host VIP MAC, pods 1-3, remote pods 1-3 (behind the uplink),
    /// broadcast, IPv6 all-nodes and a solicited-node group, IPv4 multicast, zero.
    pub const MACS: [[u8; 6]; 13] = [
        GATEWAY_MAC,
        [2, 0x5a, 0, 0, 0, 1],
        pod_mac(1),
        pod_mac(2),
        pod_mac(3),
        remote_mac(1),
        remote_mac(2),
        remote_mac(3),
        [0xff; 6],
        [0x33, 0x33, 0, 0, 0, 1],
        [0x33, 0x33, 0xff, 0, 0, 2],
        [1, 0, 0x5e, 0, 0, 1],
        [0; 6],
    ];
    /// The host port's MAC, the pods' gateway.
    pub const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    /// Pod `i`'s MAC.
    pub const fn pod_mac(i: u8) -> [u8; 6] {
        [2, 0, 0, 0, 1, i]
    }
    /// Remote pod `i`'s MAC.
    pub const fn remote_mac(i: u8) -> [u8; 6] {
        [2, 0, 0, 0, 2, i]
    }
    /// IPv4: gateway, pods 1-3 (10.0.0.2-4), remote pods (10.0.1.5-8), VIPs, a host-network
    /// backend, unspecified, broadcast, multicast.
    pub const V4: [[u8; 4]; 18] = [
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        [10, 0, 0, 3],
        [10, 0, 0, 4],
        [10, 0, 1, 5],
        [10, 0, 1, 6],
        [10, 0, 1, 7],
        [10, 0, 1, 8],
        [10, 96, 0, 10],
        [10, 96, 0, 53],
        [10, 96, 0, 99],
        [10, 96, 0, 1],
        [10, 96, 0, 11],
        [192, 168, 1, 10],
        [0, 0, 0, 0],
        [255, 255, 255, 255],
        [224, 0, 0, 1],
        [8, 8, 8, 8],
    ];
    /// IPv6 the same way (fd00::/64 pods, fd00:0:0:1::/64 remote), plus link-local addresses
    /// of pods 1-2 and the gateway, all-nodes, all-routers, a solicited-node group.
    pub const V6: [[u16; 8]; 17] = [
        [0xfd00, 0, 0, 0, 0, 0, 0, 1],
        [0xfd00, 0, 0, 0, 0, 0, 0, 2],
        [0xfd00, 0, 0, 0, 0, 0, 0, 3],
        [0xfd00, 0, 0, 0, 0, 0, 0, 4],
        [0xfd00, 0, 0, 1, 0, 0, 0, 5],
        [0xfd00, 0, 0, 1, 0, 0, 0, 6],
        [0xfd00, 0, 0, 1, 0, 0, 0, 7],
        [0xfd00, 0, 0x96, 0, 0, 0, 0, 0x10],
        [0xfd00, 0, 0x96, 0, 0, 0, 0, 0x53],
        [0xfd00, 0, 0x96, 0, 0, 0, 0, 0x99],
        [0xfe80, 0, 0, 0, 0, 0, 0x100, 1],
        [0xfe80, 0, 0, 0, 0, 0, 0x100, 2],
        [0xfe80, 0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0xff02, 0, 0, 0, 0, 0, 0, 1],
        [0xff02, 0, 0, 0, 0, 0, 0, 2],
        [0xff02, 0, 0, 0, 0, 1, 0xff00, 2],
    ];
    /// L4 ports: service ports, backend ports, the tracked clients' ports.
    pub const PORTS: [u16; 11] = [80, 8080, 53, 443, 8443, 6443, 81, 40000, 5353, 50000, 41000];
}

/// A MAC: one of the node's ([`book::MACS`]) or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum MacSel {
    /// An index into [`book::MACS`].
    Book(u8),
    /// Any bytes.
    Any([u8; 6]),
}

impl MacSel {
    fn get(self) -> [u8; 6] {
        match self {
            MacSel::Book(i) => book::MACS[usize::from(i) % book::MACS.len()],
            MacSel::Any(m) => m,
        }
    }
}

/// An IPv4 address: one of the node's or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Ip4Sel {
    /// An index into [`book::V4`].
    Book(u8),
    /// Any address.
    Any([u8; 4]),
}

impl Ip4Sel {
    fn get(self) -> [u8; 4] {
        match self {
            Ip4Sel::Book(i) => book::V4[usize::from(i) % book::V4.len()],
            Ip4Sel::Any(a) => a,
        }
    }
}

/// An IPv6 address: one of the node's or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Ip6Sel {
    /// An index into [`book::V6`].
    Book(u8),
    /// Any address.
    Any([u8; 16]),
}

impl Ip6Sel {
    fn get(self) -> [u8; 16] {
        match self {
            Ip6Sel::Book(i) => {
                let w = book::V6[usize::from(i) % book::V6.len()];
                let mut a = [0u8; 16];
                for (k, x) in w.iter().enumerate() {
                    a[2 * k..2 * k + 2].copy_from_slice(&x.to_be_bytes());
                }
                a
            }
            Ip6Sel::Any(a) => a,
        }
    }
}

/// An L4 port: one the node's services or flows use, or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum PortSel {
    /// An index into [`book::PORTS`].
    Book(u8),
    /// Any port.
    Any(u16),
}

impl PortSel {
    fn get(self) -> u16 {
        match self {
            PortSel::Book(i) => book::PORTS[usize::from(i) % book::PORTS.len()],
            PortSel::Any(p) => p,
        }
    }
}

/// A payload length: mostly what fits an MTU, sometimes a GSO super-frame's.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum PayloadLen {
    /// Up to 255 bytes.
    Small(u8),
    /// Up to a 9000-byte jumbo frame.
    Mtu(u16),
    /// Up to 64 KiB.
    Super(u16),
}

/// A payload: `pattern` repeated to `len` bytes, so a 64 KiB super-frame costs a few input
/// bytes.
#[derive(Arbitrary, Debug, Clone)]
pub struct Payload {
    /// Repeated; zeros when empty.
    pub pattern: Vec<u8>,
    /// Bytes.
    pub len: PayloadLen,
}

impl Payload {
    fn write(&self, out: &mut Vec<u8>, room: usize) {
        let len = match self.len {
            PayloadLen::Small(n) => usize::from(n),
            PayloadLen::Mtu(n) => usize::from(n) % 9001,
            PayloadLen::Super(n) => usize::from(n),
        }
        .min(room);
        let start = out.len();
        if self.pattern.is_empty() {
            out.resize(start + len, 0);
            return;
        }
        // Doubling copies rather than a byte loop: large payloads stay cheap to build.
        out.extend_from_slice(&self.pattern[..self.pattern.len().min(len)]);
        while out.len() - start < len {
            let have = out.len() - start;
            out.extend_from_within(start..start + have.min(len - have));
        }
    }
}

/// The GSO type a partial-checksum frame claims.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Gso {
    /// None.
    None,
    /// The type that fits the frame (TCPv4, TCPv6 or UDP L4).
    Fit,
    /// TCPv4.
    Tcp4,
    /// TCPv6.
    Tcp6,
    /// Legacy UFO.
    Udp,
    /// USO.
    UdpL4,
    /// Any byte.
    Raw(u8),
}

/// The vnet header in front of the frame.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Vnet {
    /// All zero: a plain frame.
    Plain,
    /// `DATA_VALID`: the checksum was verified.
    DataValid,
    /// `NEEDS_CSUM` at the frame's L4 checksum, the checksum field holding the pseudo-header
    /// seed, as a GSO sender leaves it.
    Partial {
        /// GSO type.
        gso: Gso,
        /// ECN bit or-ed in.
        ecn: bool,
        /// Payload bytes per segment.
        gso_size: u16,
        /// `hdr_len`: the real header length when `None`.
        hdr_len: Option<u16>,
    },
    /// Any header.
    Raw([u8; 10]),
}

/// An option of an NDP message (RFC 4861 §4.6).
#[derive(Arbitrary, Debug, Clone)]
pub enum NdOpt {
    /// Source link-layer address (type 1).
    SourceLl(MacSel),
    /// Target link-layer address (type 2).
    TargetLl(MacSel),
    /// Prefix information (type 3).
    Prefix {
        /// Prefix length.
        len: u8,
        /// L and A flags.
        flags: u8,
        /// Prefix.
        prefix: Ip6Sel,
    },
    /// Any type, any body; `units` is the length field (8-byte units) as sent.
    Raw {
        /// Option type.
        ty: u8,
        /// Length field.
        units: u8,
        /// Body (padded or cut to the length field).
        body: Vec<u8>,
    },
}

/// An ICMPv6 NDP message (RFC 4861).
#[derive(Arbitrary, Debug, Clone)]
pub enum Ndp {
    /// Router solicitation (133).
    Rs,
    /// Router advertisement (134).
    Ra {
        /// Cur hop limit.
        hop: u8,
        /// M/O flags.
        flags: u8,
        /// Router lifetime.
        lifetime: u16,
    },
    /// Neighbour solicitation (135).
    Ns {
        /// Target address.
        target: Ip6Sel,
    },
    /// Neighbour advertisement (136).
    Na {
        /// R/S/O flags (top bits).
        flags: u8,
        /// Target address.
        target: Ip6Sel,
    },
    /// Redirect (137).
    Redirect {
        /// Target address.
        target: Ip6Sel,
        /// Destination address.
        dest: Ip6Sel,
    },
}

/// The transport part.
#[derive(Arbitrary, Debug, Clone)]
pub enum L4 {
    /// TCP.
    Tcp {
        /// Source port.
        sport: PortSel,
        /// Destination port.
        dport: PortSel,
        /// Sequence number.
        seq: u32,
        /// Flags (FIN, SYN, RST, PSH, ACK, ...).
        flags: u8,
        /// Options (up to 40 bytes, zero-padded to a word).
        options: Vec<u8>,
        /// Payload.
        payload: Payload,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: PortSel,
        /// Destination port.
        dport: PortSel,
        /// Payload.
        payload: Payload,
    },
    /// ICMP (ICMPv6 over IPv6).
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
        /// Bytes 4-7.
        rest: [u8; 4],
        /// Payload.
        payload: Payload,
    },
    /// NDP (over IPv4 it is sent as ICMPv6 bytes with protocol 58, which IPv4 does not know).
    Ndp {
        /// The message.
        msg: Ndp,
        /// Code (0 in a valid message).
        code: u8,
        /// Options.
        options: Vec<NdOpt>,
    },
    /// Any protocol number, any bytes.
    Raw {
        /// Protocol number.
        proto: u8,
        /// Bytes.
        payload: Payload,
    },
}

/// An IPv6 extension header.
#[derive(Arbitrary, Debug, Clone)]
pub enum Ext6 {
    /// Hop-by-hop options (0).
    HopByHop(Vec<u8>),
    /// Routing (43).
    Routing(Vec<u8>),
    /// Fragment (44).
    Fragment {
        /// Offset in 8-byte units.
        offset: u16,
        /// More fragments.
        more: bool,
    },
    /// Destination options (60).
    DestOpts(Vec<u8>),
}

/// The network part.
#[derive(Arbitrary, Debug, Clone)]
pub enum L3 {
    /// ARP for IPv4 over Ethernet.
    Arp {
        /// Operation (1 request, 2 reply).
        op: u16,
        /// Sender hardware address.
        sender_mac: MacSel,
        /// Sender protocol address.
        sender_ip: Ip4Sel,
        /// Target hardware address.
        target_mac: MacSel,
        /// Target protocol address.
        target_ip: Ip4Sel,
    },
    /// IPv4.
    V4 {
        /// Source.
        src: Ip4Sel,
        /// Destination.
        dst: Ip4Sel,
        /// TTL.
        ttl: u8,
        /// DF/MF flags (top 3 bits) and fragment offset.
        frag: u16,
        /// Options (up to 40 bytes, zero-padded to a word).
        options: Vec<u8>,
        /// Transport.
        l4: L4,
    },
    /// IPv6.
    V6 {
        /// Source.
        src: Ip6Sel,
        /// Destination.
        dst: Ip6Sel,
        /// Hop limit.
        hop: u8,
        /// Extension headers (up to 4).
        ext: Vec<Ext6>,
        /// Transport.
        l4: L4,
    },
    /// Any other EtherType.
    Other {
        /// EtherType.
        ethertype: u16,
        /// Bytes.
        payload: Vec<u8>,
    },
}

/// A change after the frame is built (what a hostile sender would do to a valid frame).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Mangle {
    /// Cut the frame (vnet header excluded) to this length.
    Truncate(u16),
    /// Set the byte at this offset (modulo the length) of header + frame.
    Set(u16, u8),
    /// Add bytes at the end.
    Extend(u8, u8),
}

/// One frame as a pod, the host or the uplink could hand it over.
#[derive(Arbitrary, Debug, Clone)]
pub enum FrameSpec {
    /// Any bytes: vnet header + frame exactly as given.
    Raw(Vec<u8>),
    /// A built frame.
    Built {
        /// Vnet header.
        vnet: Vnet,
        /// Destination MAC.
        dst: MacSel,
        /// Source MAC.
        src: MacSel,
        /// An 802.1Q tag (TPID 0x8100) with this TCI.
        vlan: Option<u16>,
        /// The rest.
        l3: L3,
        /// Changes afterwards (up to 4).
        mangle: Vec<Mangle>,
    },
}

/// Where the L4 header and its checksum sit, for the vnet header.
struct L4At {
    off: usize,
    csum: usize,
    proto: u8,
    hdr_len: usize,
}

/// Writes `words` zero-padded to a multiple of 4 bytes, at most `max`.
fn padded(out: &mut Vec<u8>, bytes: &[u8], max: usize) {
    let n = bytes.len().min(max);
    out.extend_from_slice(&bytes[..n]);
    out.resize(out.len() + (4 - n % 4) % 4, 0);
}

fn put16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes the L4 part at the end of `out`; returns where it sits and its protocol.
fn write_l4(out: &mut Vec<u8>, l4: &L4, v6: bool, room: usize) -> L4At {
    let off = out.len();
    match l4 {
        L4::Tcp { sport, dport, seq, flags, options, payload } => {
            out.extend_from_slice(&sport.get().to_be_bytes());
            out.extend_from_slice(&dport.get().to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&seq.rotate_left(7).to_be_bytes());
            out.extend_from_slice(&[0, *flags, 0xff, 0xff, 0, 0, 0, 0]);
            padded(out, options, 40);
            let hl = out.len() - off;
            out[off + 12] = ((hl / 4) as u8) << 4;
            payload.write(out, room);
            L4At { off, csum: off + 16, proto: PROTO_TCP, hdr_len: hl }
        }
        L4::Udp { sport, dport, payload } => {
            out.extend_from_slice(&sport.get().to_be_bytes());
            out.extend_from_slice(&dport.get().to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            payload.write(out, room);
            let len = (out.len() - off).min(0xffff) as u16;
            put16(out, off + 4, len);
            L4At { off, csum: off + 6, proto: PROTO_UDP, hdr_len: 8 }
        }
        L4::Icmp { ty, code, rest, payload } => {
            out.extend_from_slice(&[*ty, *code, 0, 0]);
            out.extend_from_slice(rest);
            payload.write(out, room);
            L4At { off, csum: off + 2, proto: if v6 { PROTO_ICMPV6 } else { 1 }, hdr_len: 8 }
        }
        L4::Ndp { msg, code, options } => {
            let (ty, body): (u8, Vec<u8>) = match msg {
                Ndp::Rs => (133, vec![0; 4]),
                Ndp::Ra { hop, flags, lifetime } => {
                    let mut b = vec![*hop, *flags];
                    b.extend_from_slice(&lifetime.to_be_bytes());
                    b.extend_from_slice(&[0; 8]);
                    (134, b)
                }
                Ndp::Ns { target } => {
                    let mut b = vec![0; 4];
                    b.extend_from_slice(&target.get());
                    (135, b)
                }
                Ndp::Na { flags, target } => {
                    let mut b = vec![*flags, 0, 0, 0];
                    b.extend_from_slice(&target.get());
                    (136, b)
                }
                Ndp::Redirect { target, dest } => {
                    let mut b = vec![0; 4];
                    b.extend_from_slice(&target.get());
                    b.extend_from_slice(&dest.get());
                    (137, b)
                }
            };
            out.extend_from_slice(&[ty, *code, 0, 0]);
            out.extend_from_slice(&body);
            for o in options.iter().take(4) {
                match o {
                    NdOpt::SourceLl(m) | NdOpt::TargetLl(m) => {
                        out.push(if matches!(o, NdOpt::SourceLl(_)) { 1 } else { 2 });
                        out.push(1);
                        out.extend_from_slice(&m.get());
                    }
                    NdOpt::Prefix { len, flags, prefix } => {
                        out.extend_from_slice(&[3, 4, *len, *flags]);
                        out.extend_from_slice(&[0, 0, 0x0e, 0x10, 0, 0, 0x07, 0x08, 0, 0, 0, 0]);
                        out.extend_from_slice(&prefix.get());
                    }
                    NdOpt::Raw { ty, units, body } => {
                        out.extend_from_slice(&[*ty, *units]);
                        let want = (usize::from(*units) * 8).saturating_sub(2).min(64);
                        out.extend(body.iter().copied().chain(std::iter::repeat(0)).take(want));
                    }
                }
            }
            L4At { off, csum: off + 2, proto: PROTO_ICMPV6, hdr_len: 8 }
        }
        L4::Raw { proto, payload } => {
            payload.write(out, room);
            L4At { off, csum: usize::MAX, proto: *proto, hdr_len: 0 }
        }
    }
}

/// Largest Ethernet frame built (what a TAP hands over at most, minus room for the headers).
const MAX_FRAME: usize = 65_535 + 14;

impl FrameSpec {
    /// Writes vnet header + frame into `out` (cleared first).
    pub fn build(&self, out: &mut Vec<u8>) {
        out.clear();
        let (vnet, dst, src, vlan, l3, mangle) = match self {
            FrameSpec::Raw(b) => {
                out.extend_from_slice(b);
                return;
            }
            FrameSpec::Built { vnet, dst, src, vlan, l3, mangle } => (vnet, dst, src, vlan, l3, mangle),
        };
        out.resize(VNET_HDR_LEN, 0);
        out.extend_from_slice(&dst.get());
        out.extend_from_slice(&src.get());
        if let Some(tci) = vlan {
            out.extend_from_slice(&[0x81, 0]);
            out.extend_from_slice(&tci.to_be_bytes());
        }
        let ethertype_at = out.len();
        out.extend_from_slice(&[0, 0]);
        let ip_at = out.len();
        let room = |out: &Vec<u8>| (MAX_FRAME + VNET_HDR_LEN).saturating_sub(out.len());
        let mut at = None;
        match l3 {
            L3::Arp { op, sender_mac, sender_ip, target_mac, target_ip } => {
                put16(out, ethertype_at, 0x0806);
                out.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
                out.extend_from_slice(&op.to_be_bytes());
                out.extend_from_slice(&sender_mac.get());
                out.extend_from_slice(&sender_ip.get());
                out.extend_from_slice(&target_mac.get());
                out.extend_from_slice(&target_ip.get());
            }
            L3::V4 { src, dst, ttl, frag, options, l4 } => {
                put16(out, ethertype_at, 0x0800);
                out.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34]);
                out.extend_from_slice(&frag.to_be_bytes());
                out.extend_from_slice(&[*ttl, 0, 0, 0]);
                out.extend_from_slice(&src.get());
                out.extend_from_slice(&dst.get());
                padded(out, options, 40);
                let ihl = out.len() - ip_at;
                out[ip_at] = 0x40 | (ihl / 4) as u8;
                let r = room(out);
                let a = write_l4(out, l4, false, r);
                out[ip_at + 9] = a.proto;
                let total = (out.len() - ip_at).min(0xffff) as u16;
                put16(out, ip_at + 2, total);
                let c = !fold(sum(&out[ip_at..ip_at + ihl], 0));
                put16(out, ip_at + 10, c);
                let l4_len = (out.len() - a.off) as u16;
                let pseudo = pseudo(&src.get(), &dst.get(), a.proto, u32::from(l4_len));
                at = Some((a, if a_is_icmp4(l4) { 0 } else { pseudo }));
            }
            L3::V6 { src, dst, hop, ext, l4 } => {
                put16(out, ethertype_at, 0x86dd);
                out.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 0, *hop]);
                out.extend_from_slice(&src.get());
                out.extend_from_slice(&dst.get());
                let mut next_at = ip_at + 6;
                for e in ext.iter().take(4) {
                    let start = out.len();
                    let (code, body): (u8, &[u8]) = match e {
                        Ext6::HopByHop(b) => (0, b),
                        Ext6::Routing(b) => (43, b),
                        Ext6::DestOpts(b) => (60, b),
                        Ext6::Fragment { offset, more } => {
                            out.extend_from_slice(&[0, 0]);
                            out.extend_from_slice(&((offset << 3) | u16::from(*more)).to_be_bytes());
                            out.extend_from_slice(&[0, 0, 0, 1]);
                            out[next_at] = 44;
                            next_at = start;
                            continue;
                        }
                    };
                    out.extend_from_slice(&[0, 0]);
                    let n = body.len().min(62);
                    out.extend_from_slice(&body[..n]);
                    out.resize(start + (n + 2).div_ceil(8) * 8, 0);
                    out[start + 1] = ((out.len() - start) / 8 - 1) as u8;
                    out[next_at] = code;
                    next_at = start;
                }
                let r = room(out);
                let a = write_l4(out, l4, true, r);
                out[next_at] = a.proto;
                let payload = (out.len() - ip_at - 40).min(0xffff) as u16;
                put16(out, ip_at + 4, payload);
                let l4_len = (out.len() - a.off) as u32;
                let pseudo = pseudo(&src.get(), &dst.get(), a.proto, l4_len);
                at = Some((a, pseudo));
            }
            L3::Other { ethertype, payload } => {
                put16(out, ethertype_at, *ethertype);
                out.extend_from_slice(payload);
            }
        }
        // Checksums and the vnet header.
        let mut hdr = VnetHdr::default();
        if let Some((a, pseudo)) = at.filter(|(a, _)| a.csum != usize::MAX && a.csum + 2 <= out.len()) {
            let eth = VNET_HDR_LEN;
            match vnet {
                Vnet::Partial { gso, ecn, gso_size, hdr_len } => {
                    let seed = fold(pseudo);
                    put16(out, a.csum, seed);
                    hdr.flags = F_NEEDS_CSUM;
                    hdr.csum_start = (a.off - eth) as u16;
                    hdr.csum_offset = (a.csum - a.off) as u16;
                    hdr.gso_size = *gso_size;
                    hdr.hdr_len = hdr_len.unwrap_or((a.off + a.hdr_len - eth) as u16);
                    let v6 = pseudo_is_v6(out, eth);
                    hdr.gso_type = match gso {
                        Gso::None => 0,
                        Gso::Fit if a.proto == PROTO_TCP => {
                            if v6 {
                                GSO_TCPV6
                            } else {
                                GSO_TCPV4
                            }
                        }
                        Gso::Fit => GSO_UDP_L4,
                        Gso::Tcp4 => GSO_TCPV4,
                        Gso::Tcp6 => GSO_TCPV6,
                        Gso::Udp => GSO_UDP,
                        Gso::UdpL4 => GSO_UDP_L4,
                        Gso::Raw(b) => *b,
                    } | if *ecn { GSO_ECN } else { 0 };
                }
                _ => {
                    let c = !fold(sum(&out[a.off..], pseudo));
                    put16(out, a.csum, c);
                    if matches!(vnet, Vnet::DataValid) {
                        hdr.flags = F_DATA_VALID;
                    }
                }
            }
        }
        hdr.emit(out);
        if let Vnet::Raw(b) = vnet {
            out[..10].copy_from_slice(b);
        }
        for m in mangle.iter().take(4) {
            match *m {
                Mangle::Truncate(n) => out.truncate(VNET_HDR_LEN + usize::from(n)),
                Mangle::Set(at, v) => {
                    let len = out.len();
                    out[usize::from(at) % len] = v;
                }
                Mangle::Extend(n, v) => out.resize(out.len() + usize::from(n), v),
            }
        }
    }
}

fn a_is_icmp4(l4: &L4) -> bool {
    matches!(l4, L4::Icmp { .. })
}

fn pseudo_is_v6(out: &[u8], eth: usize) -> bool {
    // The EtherType after an optional VLAN tag.
    let et = |at: usize| out.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match et(eth + 12) {
        Some(0x8100) => et(eth + 16) == Some(0x86dd),
        t => t == Some(0x86dd),
    }
}
