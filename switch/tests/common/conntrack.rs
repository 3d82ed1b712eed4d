//! Helpers of the conntrack tests (hostile_conntrack.rs): a raw TCP segment builder, and a
//! receiving packet socket that sees every frame reaching a pod, flooded ones included. The
//! echo servers are in servers.rs.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{inet_checksum, Netns};

/// An Ethernet + IPv4 + TCP segment with valid checksums, carrying `payload`.
#[allow(clippy::too_many_arguments)]
pub fn tcp_segment(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let (src_mac, dst_mac) = macs;
    let tcp_len = 20 + payload.len();
    let mut f = Vec::with_capacity(34 + tcp_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(20 + tcp_len).expect("small segment");
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.0.octets());
    ip[16..20].copy_from_slice(&dst.0.octets());
    let c = inet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = Vec::with_capacity(tcp_len);
    tcp.extend_from_slice(&src.1.to_be_bytes());
    tcp.extend_from_slice(&dst.1.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12 + tcp.len());
    pseudo.extend_from_slice(&src.0.octets());
    pseudo.extend_from_slice(&dst.0.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&u16::try_from(tcp_len).expect("small segment").to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let c = inet_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&tcp);
    f
}

/// A receiving `AF_PACKET` socket on one interface of a namespace: every frame the switch
/// delivers to that pod, whatever its destination MAC (a flooded frame included).
pub struct PacketTap {
    fd: OwnedFd,
}

impl PacketTap {
    /// Opens one on the interface `ifindex` of `ns`.
    pub fn open(ns: &Netns, ifindex: u32) -> PacketTap {
        ns.enter(move || {
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2) call; the result is checked before use.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(all)) };
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = all;
            sll.sll_ifindex = i32::try_from(ifindex).expect("ifindex fits in i32");
            let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `sll` is a valid sockaddr_ll of `len` bytes that outlives the call.
            let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(sll).cast(), len) };
            assert_eq!(rc, 0, "bind AF_PACKET socket: {}", std::io::Error::last_os_error());
            PacketTap { fd }
        })
    }

    /// Reads every frame queued now; returns how many contain `marker`.
    pub fn count(&self, marker: &[u8]) -> usize {
        let mut buf = vec![0u8; 65536];
        let mut n = 0;
        loop {
            // SAFETY: the pointer and length describe `buf`, which outlives the call.
            let got = unsafe {
                libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
            };
            let Ok(len) = usize::try_from(got) else { return n };
            if buf[..len].windows(marker.len()).any(|w| w == marker) {
                n += 1;
            }
        }
    }
}
