//! Helpers of the flooding and offload-header tests (`hostile_flood.rs`): a packet socket that
//! may carry a `virtio_net_hdr` (`PACKET_VNET_HDR`, see packet(7)) and so hand its interface a
//! GSO super-frame, and a UDP socket with `UDP_SEGMENT`.

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{io_timeout, Netns};

/// `PACKET_VNET_HDR` (linux/if_packet.h).
const PACKET_VNET_HDR: libc::c_int = 15;

/// A send-only `AF_PACKET` socket on one interface of a namespace, optionally with
/// `PACKET_VNET_HDR`: then every frame it sends starts with a 10-byte `virtio_net_hdr`. Unlike
/// [`super::RawSocket`], a refused send is returned, not a panic.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens one on `ifindex` in `ns`.
    pub fn open(ns: &Netns, ifindex: u32, vnet_hdr: bool) -> PacketSocket {
        ns.enter(move || {
            // SAFETY: plain socket(2) call; the result is checked before use.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            if vnet_hdr {
                let one: libc::c_int = 1;
                // SAFETY: `one` is a c_int that outlives the call, its size passed along.
                let rc = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_PACKET,
                        PACKET_VNET_HDR,
                        std::ptr::addr_of!(one).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "PACKET_VNET_HDR: {}", std::io::Error::last_os_error());
            }
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = i32::try_from(ifindex).expect("ifindex fits in i32");
            let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `sll` is a valid sockaddr_ll of `len` bytes that outlives the call.
            let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(sll).cast(), len) };
            assert_eq!(rc, 0, "bind AF_PACKET socket: {}", std::io::Error::last_os_error());
            PacketSocket { fd }
        })
    }

    /// Sends `bytes` (vnet header + frame with `PACKET_VNET_HDR`, else a frame); the kernel's
    /// answer.
    pub fn send(&self, bytes: &[u8]) -> std::io::Result<usize> {
        // SAFETY: the pointer and length describe `bytes`, which outlives the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
    }

    /// Sends until the kernel takes it (a full TAP queue refuses with `ENOBUFS` for a while).
    pub fn send_surely(&self, bytes: &[u8]) {
        let start = std::time::Instant::now();
        while let Err(e) = self.send(bytes) {
            assert!(start.elapsed() < super::DEADLINE, "the kernel never took the frame: {e}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// A `struct virtio_net_hdr` (10 bytes, little-endian as on every host these tests run on).
pub fn virtio_hdr(
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_off: u16,
) -> Vec<u8> {
    let mut h = vec![flags, gso_type];
    for v in [hdr_len, gso_size, csum_start, csum_off] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

/// A UDP socket bound to `addr` in `ns` that sends every datagram as a GSO train of
/// `gso_size`-byte segments (`UDP_SEGMENT`, the kernel caps a train at 64 segments).
pub fn udp_gso_in(ns: &Netns, addr: &str, gso_size: u16) -> UdpSocket {
    let addr = addr.to_string();
    ns.enter(move || {
        let s = UdpSocket::bind(&addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
        s.set_write_timeout(io_timeout()).expect("set write timeout");
        let v = libc::c_int::from(gso_size);
        // SAFETY: `v` is a c_int that outlives the call, its size passed along.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                std::ptr::addr_of!(v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
        s
    })
}

/// Datagrams waiting on `sock` (non-blocking drain), with their sizes.
pub fn drain(sock: &UdpSocket) -> Vec<usize> {
    sock.set_nonblocking(true).expect("non-blocking");
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(n);
    }
    sock.set_nonblocking(false).expect("blocking");
    got
}
