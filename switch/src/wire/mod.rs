//! Wire formats: one header model over borrowed bytes, no I/O, in smoltcp's manner. Everything
//! here treats its input as hostile: a checked view (`new_checked`) refuses bytes too short for
//! its header, after which no accessor panics; a malformed frame yields an error value, never a
//! panic. Each protocol's field offsets are constants in its own module (`field`, or `v4`/`v6`
//! for IP), the one place they are written.
//!
//! The model:
//! - [`frame`]: **the one parse** of a frame ([`parse`]): vnet header, Ethernet, ARP,
//!   IPv4/IPv6 and TCP/UDP headers and any NDP message, read once into a [`FrameMeta`] that
//!   every pipeline stage reads (addresses, ports, TCP flags, fragment info, offsets).
//! - [`vnet`]: the `virtio_net_hdr` that TAP devices with `IFF_VNET_HDR` put before each frame,
//!   and its validation against the frame.
//! - [`ethernet`], [`arp`], [`ip`] (IPv4, IPv6 and its extension headers), [`tcp`], [`udp`],
//!   [`icmp`], [`ndp`]: a view and field offsets per protocol, and next to each the frames the
//!   switch writes itself: ARP requests and replies ([`arp`]), NDP solicitations and
//!   advertisements ([`ndp::NdpRepr::emit_frame`]), TCP RSTs ([`tcp::reset_in_place`]), ICMP
//!   and ICMPv6 port unreachables ([`icmp::port_unreachable_in_place`]), IP headers
//!   ([`ip::emit_header`]).
//! - [`checksum`]: the one checksum module: the Internet checksum, the pseudo header of
//!   either family, partial-checksum completion and the RFC 1624 incremental update.
//! - [`gro`]: software GRO, coalescing TCP segments from the uplink into super-frames for pods.
//! - [`segment`]: software TSO/USO and checksum completion for ports without offloads (the
//!   uplink).

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod frame;
pub mod gro;
pub mod icmp;
pub mod ip;
pub mod ndp;
pub mod segment;
pub mod tcp;
pub mod udp;
pub mod vnet;

pub use frame::{parse, parse_frame, FrameMeta, IpL4, L3Src, ParseError};
pub use vnet::{VnetHdr, VNET_HDR_LEN};

/// A MAC address.
pub type Mac = [u8; 6];

/// True for group (broadcast and multicast) addresses.
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}
