//! CNI spec versions: the ones the plugin speaks, comparison and negotiation with an IPAM plugin.

use std::fmt;

/// Spec versions the plugin accepts in a netconf and can print results in.
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A spec version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u16, pub u16, pub u16);

impl Version {
    /// 0.4.0: first version with CHECK.
    pub const V0_4_0: Version = Version(0, 4, 0);
    /// 1.0.0: results without per-IP `version`.
    pub const V1_0_0: Version = Version(1, 0, 0);
    /// 1.1.0: STATUS, GC, and interface and route attributes in results.
    pub const V1_1_0: Version = Version(1, 1, 0);
    /// The newest version the plugin speaks.
    pub const LATEST: Version = Version::V1_1_0;

    /// Parses `x.y.z`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.split('.');
        let mut num = || -> Option<u16> {
            let part = it.next()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let v = Version(num()?, num()?, num()?);
        if it.next().is_some() {
            return None;
        }
        Some(v)
    }

    /// Whether the plugin speaks this version.
    pub fn is_supported(self) -> bool {
        SUPPORTED.iter().any(|s| Version::parse(s) == Some(self))
    }

    /// Whether each IP of a result carries `"version": "4"|"6"` (0.3.0 to 0.4.0; gone in 1.0.0).
    pub fn has_ip_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// Whether a result's interfaces have `mtu`, `socketPath` and `pciID`, and its routes
    /// `mtu`, `advmss`, `priority`, `table` and `scope` (all new in 1.1.0).
    pub fn has_result_attributes(self) -> bool {
        self >= Version::V1_1_0
    }

    /// Whether a result with no DNS settings leaves `dns` out rather than writing `{}`: from
    /// 1.1.0, whose reference library (libcni ≥ 1.2) omits it; the older ones write `{}`.
    pub fn omits_empty_dns(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The version to call a delegated plugin with: the highest version that the delegate lists,
/// that the plugin itself speaks, and that is not newer than `requested` (the netconf's).
pub fn negotiate<S: AsRef<str>>(requested: Version, theirs: &[S]) -> Option<Version> {
    theirs
        .iter()
        .filter_map(|s| Version::parse(s.as_ref()))
        .filter(|v| v.is_supported() && *v <= requested)
        .max()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        assert_eq!(Version::parse("1.1.0"), Some(Version(1, 1, 0)));
        assert_eq!(Version::parse("0.3.1"), Some(Version(0, 3, 1)));
        for bad in ["", "1", "1.0", "1.0.0.0", "a.b.c", "1.-1.0", "1..0", " 1.0.0", "+1.0.0"] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert!(Version(0, 4, 0) < Version(1, 0, 0));
        assert!(Version(0, 3, 1) < Version(0, 4, 0));
        assert_eq!(Version(1, 0, 0).to_string(), "1.0.0");
        for s in SUPPORTED {
            assert!(Version::parse(s).unwrap().is_supported());
        }
        assert!(!Version(0, 2, 0).is_supported());
        assert!(!Version(1, 2, 0).is_supported());
        assert!(Version(0, 4, 0).has_ip_version() && !Version(1, 0, 0).has_ip_version());
        assert!(Version(1, 1, 0).has_result_attributes() && !Version(1, 0, 0).has_result_attributes());
        assert!(Version(1, 1, 0).omits_empty_dns() && !Version(1, 0, 0).omits_empty_dns());
    }

    #[test]
    fn negotiation() {
        // Debian's host-local 1.1.1.
        let host_local = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];
        assert_eq!(negotiate(Version::V1_1_0, &host_local), Some(Version::V1_0_0));
        assert_eq!(negotiate(Version::V1_0_0, &host_local), Some(Version::V1_0_0));
        assert_eq!(negotiate(Version(0, 3, 1), &host_local), Some(Version(0, 3, 1)));
        assert_eq!(negotiate(Version(0, 4, 0), &["1.0.0", "1.1.0"]), None);
        assert_eq!(negotiate(Version::V1_1_0, &["1.1.0", "garbage"]), Some(Version::V1_1_0));
        assert_eq!(negotiate(Version::V1_1_0, &["0.1.0", "0.2.0"]), None);
        let empty: [&str; 0] = [];
        assert_eq!(negotiate(Version::V1_1_0, &empty), None);
    }
}
