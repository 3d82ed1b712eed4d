//! Input validation shared by the daemon, the CLI and the CNI plugin, so a bad value gets the
//! same message wherever it is caught.

use std::net::IpAddr;

use ipnet::IpNet;

/// The kernel's IFNAMSIZ, including the terminating NUL.
pub const IFNAMSIZ: usize = 16;

/// Smallest MTU accepted for a pod interface (IPv4 minimum is 68; IPv6 needs 1280, but an
/// IPv4-only pod may go lower).
pub const MTU_MIN: u32 = 576;
/// Largest MTU accepted (a TAP takes up to 65535; jumbo frames need far less).
pub const MTU_MAX: u32 = 65535;

/// A validation failure, with the message shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// Checks an interface name as the kernel does (`dev_valid_name`): 1..15 bytes, not `.`/`..`,
/// no `/`, `:` or whitespace.
pub fn ifname(name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(invalid("interface name is empty"));
    }
    if name.len() >= IFNAMSIZ {
        return Err(invalid(format!("interface name {name:?} is longer than {} bytes", IFNAMSIZ - 1)));
    }
    if name == "." || name == ".." {
        return Err(invalid(format!("interface name {name:?} is reserved")));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!("interface name {name:?} contains {c:?}")));
    }
    Ok(())
}

/// Parses a MAC written `aa:bb:cc:dd:ee:ff` (or with `-`). Refuses multicast and all-zero
/// addresses, which cannot be an interface's own.
pub fn mac(s: &str) -> Result<[u8; 6], Invalid> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(invalid(format!("MAC {s:?} is not six hex bytes")));
    }
    let mut out = [0u8; 6];
    for (byte, part) in out.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(invalid(format!("MAC {s:?} is not six hex bytes")));
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| invalid(format!("MAC {s:?} has a non-hex byte")))?;
    }
    if out[0] & 1 == 1 {
        return Err(invalid(format!("MAC {s:?} is a multicast address")));
    }
    if out == [0; 6] {
        return Err(invalid(format!("MAC {s:?} is all zeros")));
    }
    Ok(out)
}

/// Formats a MAC the way [`mac`] reads it.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// Parses an interface address in CIDR form (`10.0.0.5/24`); the host part must not be the
/// network or (IPv4) broadcast address of a subnet shorter than /31.
pub fn cidr(s: &str) -> Result<IpNet, Invalid> {
    let net: IpNet = s.parse().map_err(|_| invalid(format!("{s:?} is not an address in CIDR form")))?;
    if net.prefix_len() < net.max_prefix_len().saturating_sub(1) {
        if net.addr() == net.network() {
            return Err(invalid(format!("{s} is the network address of its subnet")));
        }
        if matches!(net, IpNet::V4(_)) && net.addr() == net.broadcast() {
            return Err(invalid(format!("{s} is the broadcast address of its subnet")));
        }
    }
    if net.addr().is_unspecified() || net.addr().is_multicast() || net.addr().is_loopback() {
        return Err(invalid(format!("{s} cannot be an interface address")));
    }
    Ok(net)
}

/// Parses a route destination (`0.0.0.0/0`, `10.96.0.0/12`): any prefix, host bits ignored.
pub fn route_dst(s: &str) -> Result<IpNet, Invalid> {
    let net: IpNet = s.parse().map_err(|_| invalid(format!("route destination {s:?} is not a CIDR")))?;
    Ok(net.trunc())
}

/// Parses a plain IP address (gateway, next hop).
pub fn ip(s: &str) -> Result<IpAddr, Invalid> {
    s.parse().map_err(|_| invalid(format!("{s:?} is not an IP address")))
}

/// Parses an address given with or without a prefix length (`10.0.0.5` or `10.0.0.5/24`), as
/// host-local takes requested addresses; the prefix is dropped.
pub fn host_ip(s: &str) -> Result<IpAddr, Invalid> {
    match s.parse::<ipnet::IpNet>() {
        Ok(net) => Ok(net.addr()),
        Err(_) => ip(s),
    }
}

/// Checks an MTU against [`MTU_MIN`]..=[`MTU_MAX`].
pub fn mtu(m: u32) -> Result<(), Invalid> {
    if (MTU_MIN..=MTU_MAX).contains(&m) {
        Ok(())
    } else {
        Err(invalid(format!("MTU {m} is outside {MTU_MIN}..={MTU_MAX}")))
    }
}

/// Checks a CNI container ID: an alphanumeric first character, then alphanumerics, `_`, `.`
/// or `-` (the CNI spec's rule), at most 256 bytes.
pub fn container_id(id: &str) -> Result<(), Invalid> {
    let mut chars = id.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return Err(invalid(format!("container ID {id:?} must start with a letter or digit"))),
    }
    if id.len() > 256 {
        return Err(invalid("container ID is longer than 256 bytes"));
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(invalid(format!("container ID {id:?} contains {c:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames() {
        assert!(ifname("eth0").is_ok());
        assert!(ifname("a23456789012345").is_ok());
        assert!(ifname("a234567890123456").is_err());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\nb"] {
            assert!(ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(mac("02:00:00:aa:bb:0C").unwrap(), [2, 0, 0, 0xaa, 0xbb, 0x0c]);
        assert_eq!(mac("02-00-00-aa-bb-0c").unwrap(), [2, 0, 0, 0xaa, 0xbb, 0x0c]);
        assert_eq!(format_mac(&[2, 0, 0, 0xaa, 0xbb, 0x0c]), "02:00:00:aa:bb:0c");
        for bad in [
            "",
            "02:00:00:aa:bb",
            "02:00:00:aa:bb:0c:00",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "zz:00:00:00:00:01",
            "2:0:0:0:0:1",
        ] {
            assert!(mac(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cidrs() {
        assert!(cidr("10.0.0.5/24").is_ok());
        assert!(cidr("10.0.0.0/31").is_ok());
        assert!(cidr("fd00::5/64").is_ok());
        for bad in [
            "10.0.0.5",
            "10.0.0.0/24",
            "10.0.0.255/24",
            "10.0.0.5/33",
            "0.0.0.0/0",
            "224.0.0.1/24",
            "127.0.0.2/8",
            "x",
        ] {
            assert!(cidr(bad).is_err(), "{bad:?}");
        }
        assert_eq!(route_dst("10.0.0.7/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(route_dst("nope").is_err());
        assert!(ip("10.0.0.1").is_ok() && ip("fe80::1").is_ok() && ip("10.0.0.1/24").is_err());
    }

    #[test]
    fn mtus_and_ids() {
        assert!(mtu(1500).is_ok() && mtu(9000).is_ok() && mtu(575).is_err() && mtu(65536).is_err());
        assert!(container_id("abc-1.2_3").is_ok());
        for bad in ["", "-abc", "a b", "a/b", "a;b"] {
            assert!(container_id(bad).is_err(), "{bad:?}");
        }
    }
}
