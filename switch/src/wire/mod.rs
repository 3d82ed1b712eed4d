//! Wire formats: pure parsing over borrowed bytes, no I/O. Everything here treats its input as
//! hostile: a malformed frame yields an error value, never a panic.
//!
//! - [`vnet`]: the `virtio_net_hdr` that TAP devices with `IFF_VNET_HDR` put before each frame.
//! - [`frame`]: the Ethernet/ARP/IP fields the switch needs (classification for anti-spoofing,
//!   learning and forwarding), read with etherparse's checked slices.
//! - [`ndp`]: IPv6 neighbour discovery messages (what anti-spoofing and neighbour learning read).
//! - [`l4`]: where the IPv4 addresses and TCP/UDP ports of a frame sit (what NAT rewrites).
//! - [`checksum`]: the Internet checksum and its RFC 1624 incremental update.
//! - [`gro`]: software GRO, coalescing TCP segments from the uplink into super-frames for pods.
//! - [`segment`]: software TSO/USO and checksum completion for ports without offloads (the
//!   uplink).

pub mod checksum;
pub mod frame;
pub mod gro;
pub mod l4;
pub mod ndp;
pub mod segment;
pub mod vnet;

pub use frame::{parse_frame, FrameMeta, L3Src, ParseError};
pub use vnet::{VnetHdr, VNET_HDR_LEN};

/// A MAC address.
pub type Mac = [u8; 6];

/// True for group (broadcast and multicast) addresses.
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}
