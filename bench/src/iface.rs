//! Addresses of the sending interface and the MAC of the next hop, read in the calling thread's
//! network namespace (netlink via getifaddrs, and /proc/thread-self/net, which follows the
//! thread's namespace rather than the process's).

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Why an address could not be found.
#[derive(Debug, Error)]
pub enum IfaceError {
    /// getifaddrs failed.
    #[error("getifaddrs: {0}")]
    Getifaddrs(nix::Error),
    /// The interface has no MAC address.
    #[error("interface `{0}` has no MAC address")]
    NoMac(String),
    /// The interface has no IPv4 address.
    #[error("interface `{0}` has no IPv4 address (give --src-ip)")]
    NoIpv4(String),
    /// ARP did not resolve.
    #[error("no ARP answer for next hop {0} on `{1}` (give --dst-mac)")]
    NoNeighbour(Ipv4Addr, String),
    /// A /proc file could not be read.
    #[error("reading {0}: {1}")]
    Proc(&'static str, std::io::Error),
}

/// MAC and first IPv4 address of `ifname`.
pub fn addresses(ifname: &str) -> Result<([u8; 6], Option<Ipv4Addr>), IfaceError> {
    let mut mac = None;
    let mut ip = None;
    for a in nix::ifaddrs::getifaddrs().map_err(IfaceError::Getifaddrs)? {
        if a.interface_name != ifname {
            continue;
        }
        let Some(addr) = a.address else { continue };
        if let Some(ll) = addr.as_link_addr() {
            if let Some(m) = ll.addr() {
                mac = Some(m);
            }
        } else if let Some(sin) = addr.as_sockaddr_in() {
            ip.get_or_insert(sin.ip());
        }
    }
    Ok((mac.ok_or_else(|| IfaceError::NoMac(ifname.into()))?, ip))
}

/// `struct ethtool_drvinfo` (linux/ethtool.h), for ETHTOOL_GDRVINFO.
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x3;

/// The driver of `ifname` (`veth`, `tun`, `ixgbe`…) in the calling thread's netns, as
/// `ethtool -i` prints it.
pub fn driver(ifname: &str) -> Option<String> {
    use std::os::fd::AsRawFd;
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    // SAFETY: both are plain old data; all-zero is a valid value.
    let (mut info, mut req): (DrvInfo, libc::ifreq) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    info.cmd = ETHTOOL_GDRVINFO;
    let name = ifname.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: SIOCETHTOOL reads the NUL-terminated name and the command in `info`, which lives
    // across the call, and writes at most size_of::<DrvInfo>() bytes into it.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) };
    if r < 0 {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// Formats a MAC address.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The next hop towards `dst` through `ifname`: `dst` itself when on-link, else the gateway of
/// the most specific route (from /proc/thread-self/net/route).
fn next_hop(ifname: &str, dst: Ipv4Addr) -> Result<Ipv4Addr, IfaceError> {
    let text = std::fs::read_to_string("/proc/thread-self/net/route")
        .map_err(|e| IfaceError::Proc("/proc/thread-self/net/route", e))?;
    let d = u32::from(dst);
    let mut best: Option<(u32, Ipv4Addr)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dev), Some(net), Some(gw), Some(mask)) = (f.first(), f.get(1), f.get(2), f.get(7)) else {
            continue;
        };
        if *dev != ifname {
            continue;
        }
        // The file prints each address as the host-order (little-endian) hex of its
        // network-order bytes.
        let parse =
            |h: &str| u32::from_str_radix(h, 16).ok().map(|v| u32::from(Ipv4Addr::from(v.to_le_bytes())));
        let (Some(net), Some(gw), Some(mask)) = (parse(net), parse(gw), parse(mask)) else { continue };
        if d & mask == net & mask && best.is_none_or(|(m, _)| mask.count_ones() > m) {
            let hop = if gw == 0 { dst } else { Ipv4Addr::from(gw) };
            best = Some((mask.count_ones(), hop));
        }
    }
    Ok(best.map_or(dst, |(_, h)| h))
}

fn arp_lookup(ifname: &str, ip: Ipv4Addr) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    let want = ip.to_string();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP, HW type, Flags, HW address, Mask, Device; flags 0x2 = complete.
        if f.len() >= 6 && f[0] == want && f[5] == ifname && f[2] != "0x0" {
            return parse_mac(f[3]).filter(|m| *m != [0; 6]);
        }
    }
    None
}

/// MAC of the next hop towards `dst`, resolving it with ARP (a UDP datagram to the discard
/// port triggers the resolution) when the neighbour table does not have it yet.
pub fn resolve_dst_mac(ifname: &str, dst: Ipv4Addr, timeout: Duration) -> Result<[u8; 6], IfaceError> {
    let hop = next_hop(ifname, dst)?;
    let deadline = Instant::now() + timeout;
    let sock = UdpSocket::bind("0.0.0.0:0").ok();
    loop {
        if let Some(m) = arp_lookup(ifname, hop) {
            return Ok(m);
        }
        if Instant::now() >= deadline {
            return Err(IfaceError::NoNeighbour(hop, ifname.into()));
        }
        if let Some(s) = &sock {
            let _ = s.send_to(b"tapway-bench arp", (dst, 9));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_format() {
        assert_eq!(parse_mac("02:00:0a:ff:00:01"), Some([2, 0, 10, 255, 0, 1]));
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:00:01"), None);
        assert_eq!(fmt_mac(&[2, 0, 10, 255, 0, 1]), "02:00:0a:ff:00:01");
    }
}
