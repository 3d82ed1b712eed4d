//! The plugin's one error type and its mapping to CNI error codes.
//!
//! Every failure of every command ends as a [`CniError`]; `main` prints it as the spec's error
//! object (`{cniVersion, code, msg, details}`) on stdout and exits non-zero. Codes below 100 are
//! the spec's well-known ones; 100 and up are tapway's own, listed in `docs/cni.md`.

use serde::Serialize;
use tapway_api::{ApiError, ClientError, ErrorCode};

/// CNI error codes used by the plugin.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid or missing environment variable.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (stdin, state files).
    pub const IO: u32 = 5;
    /// Failed to decode content (stdin JSON, prevResult).
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: tapwayd is not reachable right now.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD requests.
    pub const UNAVAILABLE: u32 = 50;
    /// tapwayd refused or failed the request.
    pub const DAEMON: u32 = 100;
    /// The interface name already exists in the netns.
    pub const IFACE_EXISTS: u32 = 101;
    /// The IPAM plugin could not be found or run, or its output was unusable.
    pub const IPAM: u32 = 102;
    /// CHECK: tapwayd has no port for this container and interface.
    pub const NOT_ATTACHED: u32 = 103;
    /// CHECK: the interface differs from prevResult.
    pub const MISMATCH: u32 = 104;
    /// CNI_NETNS does not exist or is not a network namespace.
    pub const NETNS: u32 = 105;
    /// The requested IP or MAC belongs to another pod, a gateway, the host port or the uplink.
    pub const ADDRESS_CONFLICT: u32 = 106;
    /// `tapway-ipam`: no free address is left in a range the allocation needs.
    pub const ADDRESS_EXHAUSTED: u32 = 107;
}

/// `details` of [`CniError::AddressConflict`]: where such an address comes from.
pub const ADDRESS_CONFLICT_DETAILS: &str = "tapwayd error code: address_conflict; the IP or MAC \
     came from CNI_ARGS IP=/MAC=, runtimeConfig ips/mac, args.cni.mac, the netconf's mac or a \
     static IPAM; give this pod addresses no other pod, gateway or port of the node has";

/// Everything that can go wrong in one invocation.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The configuration's cniVersion is not one the plugin (or its IPAM plugin) speaks.
    #[error("{0}")]
    IncompatibleVersion(String),
    /// A field the plugin does not support for this command or version.
    #[error("{0}")]
    UnsupportedField(String),
    /// A required environment variable is missing or malformed.
    #[error("{0}")]
    InvalidEnv(String),
    /// Reading stdin or the plugin's state files failed.
    #[error("{0}")]
    Io(String),
    /// stdin or prevResult is not valid JSON of the expected shape.
    #[error("{0}")]
    Decode(String),
    /// The network configuration is well-formed JSON but not usable.
    #[error("{0}")]
    InvalidConfig(String),
    /// tapwayd is not reachable; the runtime should retry.
    #[error("{0}")]
    TryAgainLater(String),
    /// STATUS: tapwayd is not reachable, so no ADD can succeed.
    #[error("{0}")]
    Unavailable(String),
    /// tapwayd answered with an error.
    #[error("tapwayd: {0}")]
    Daemon(ApiError),
    /// tapwayd's answer could not be understood.
    #[error("{0}")]
    DaemonProtocol(String),
    /// The interface already exists in the container's netns.
    #[error("{0}")]
    IfaceExists(String),
    /// tapwayd refused an IP or MAC that another port owns.
    #[error("address conflict: {0}")]
    AddressConflict(String),
    /// `tapway-ipam`: a range the allocation needs is full.
    #[error("no free address: {0}")]
    AddressExhausted(String),
    /// `tapway-ipam` CHECK: tapwayd holds no allocation for the container.
    #[error("{0}")]
    UnknownContainer(String),
    /// The IPAM plugin could not be found, run, or understood.
    #[error("IPAM plugin {plugin}: {msg}")]
    Ipam {
        /// `ipam.type`.
        plugin: String,
        /// What went wrong.
        msg: String,
    },
    /// The IPAM plugin answered with a CNI error; its code is passed through.
    #[error("IPAM plugin {plugin}: {msg}")]
    IpamFailed {
        /// `ipam.type`.
        plugin: String,
        /// The IPAM plugin's code.
        code: u32,
        /// The IPAM plugin's message.
        msg: String,
        /// The IPAM plugin's details.
        details: String,
    },
    /// CHECK: tapwayd has no such port.
    #[error("{0}")]
    NotAttached(String),
    /// CHECK: live state differs from prevResult.
    #[error("{0}")]
    Mismatch(String),
    /// CNI_NETNS is missing or not a network namespace.
    #[error("{0}")]
    Netns(String),
}

impl CniError {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion(_) => code::INCOMPATIBLE_VERSION,
            CniError::UnsupportedField(_) => code::UNSUPPORTED_FIELD,
            CniError::InvalidEnv(_) => code::INVALID_ENV,
            CniError::Io(_) => code::IO,
            CniError::Decode(_) => code::DECODE,
            CniError::InvalidConfig(_) => code::INVALID_CONFIG,
            CniError::TryAgainLater(_) => code::TRY_AGAIN_LATER,
            CniError::Unavailable(_) => code::UNAVAILABLE,
            CniError::Daemon(_) | CniError::DaemonProtocol(_) => code::DAEMON,
            CniError::IfaceExists(_) => code::IFACE_EXISTS,
            CniError::AddressConflict(_) => code::ADDRESS_CONFLICT,
            CniError::AddressExhausted(_) => code::ADDRESS_EXHAUSTED,
            CniError::UnknownContainer(_) => code::UNKNOWN_CONTAINER,
            CniError::Ipam { .. } => code::IPAM,
            // A plugin must not hand back codes it does not own: pass the well-known ones and
            // the IPAM plugin's own (>= 100, e.g. the Go plugins' 999) through unchanged, but
            // never a 0, which would read as success.
            CniError::IpamFailed { code, .. } => {
                if *code == 0 {
                    code::IPAM
                } else {
                    *code
                }
            }
            CniError::NotAttached(_) => code::NOT_ATTACHED,
            CniError::Mismatch(_) => code::MISMATCH,
            CniError::Netns(_) => code::NETNS,
        }
    }

    /// The `details` string of the error object.
    pub fn details(&self) -> String {
        match self {
            CniError::Daemon(e) => format!("tapwayd error code: {}", e.code),
            CniError::IpamFailed { details, .. } => details.clone(),
            CniError::AddressConflict(_) => ADDRESS_CONFLICT_DETAILS.to_string(),
            _ => String::new(),
        }
    }

    /// Maps a failed tapwayd call: unreachable becomes `unreachable(msg)` (try-again or
    /// unavailable, depending on the command), and so does `failed_precondition` (tapwayd is
    /// up but cannot serve yet, e.g. while it waits for the Node's pod range: retrying later
    /// helps); any other error answer becomes [`CniError::Daemon`].
    pub fn from_client(e: ClientError, unreachable: fn(String) -> CniError) -> CniError {
        match e {
            ClientError::Api(api) => match api.code {
                ErrorCode::Exists => CniError::IfaceExists(api.message),
                ErrorCode::AddressConflict => CniError::AddressConflict(api.message),
                ErrorCode::AddressExhausted => CniError::AddressExhausted(api.message),
                ErrorCode::FailedPrecondition => unreachable(api.message),
                _ => CniError::Daemon(api),
            },
            ClientError::Decode(_) => CniError::DaemonProtocol(e.to_string()),
            ClientError::Connect { .. } | ClientError::Io(_) | ClientError::NoAnswer => {
                unreachable(e.to_string())
            }
        }
    }

    /// The error object as the spec wants it on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let obj =
            ErrorObject { cni_version, code: self.code(), msg: self.to_string(), details: self.details() };
        serde_json::to_value(obj).unwrap_or_else(|_| serde_json::json!({"code": self.code()}))
    }
}

/// Whether a failed call means tapwayd could not be reached (as opposed to an answer).
pub fn is_unreachable(e: &ClientError) -> bool {
    matches!(e, ClientError::Connect { .. } | ClientError::Io(_) | ClientError::NoAnswer)
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: String,
    details: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_json_shape() {
        let e = CniError::InvalidEnv("required env variables [CNI_NETNS] missing".into());
        let v = e.to_json("1.0.0");
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "code": 4,
                "msg": "required env variables [CNI_NETNS] missing",
                "details": ""
            })
        );
    }

    #[test]
    fn codes() {
        let cases: Vec<(CniError, u32)> = vec![
            (CniError::IncompatibleVersion(String::new()), 1),
            (CniError::UnsupportedField(String::new()), 2),
            (CniError::InvalidEnv(String::new()), 4),
            (CniError::Io(String::new()), 5),
            (CniError::Decode(String::new()), 6),
            (CniError::InvalidConfig(String::new()), 7),
            (CniError::TryAgainLater(String::new()), 11),
            (CniError::Unavailable(String::new()), 50),
            (CniError::Daemon(ApiError::new(ErrorCode::System, "x")), 100),
            (CniError::IfaceExists(String::new()), 101),
            (CniError::Ipam { plugin: "h".into(), msg: String::new() }, 102),
            (CniError::NotAttached(String::new()), 103),
            (CniError::Mismatch(String::new()), 104),
            (CniError::Netns(String::new()), 105),
            (CniError::AddressConflict(String::new()), 106),
            (CniError::AddressExhausted(String::new()), 107),
            (CniError::UnknownContainer(String::new()), 3),
            (
                CniError::IpamFailed { plugin: "h".into(), code: 999, msg: "m".into(), details: "d".into() },
                999,
            ),
            (
                CniError::IpamFailed { plugin: "h".into(), code: 0, msg: "m".into(), details: String::new() },
                102,
            ),
        ];
        for (e, c) in cases {
            assert_eq!(e.code(), c, "{e:?}");
        }
    }

    #[test]
    fn client_errors_map() {
        let unreachable = ClientError::Connect {
            path: "/nope".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(is_unreachable(&unreachable));
        assert_eq!(CniError::from_client(unreachable, CniError::Unavailable).code(), 50);
        let exists = ClientError::Api(ApiError::new(ErrorCode::Exists, "eth0 exists"));
        assert!(!is_unreachable(&exists));
        assert_eq!(CniError::from_client(exists, CniError::TryAgainLater).code(), 101);
        let taken = ClientError::Api(ApiError::new(
            ErrorCode::AddressConflict,
            "MAC 02:00:00:00:00:05 belongs to port 2",
        ));
        let e = CniError::from_client(taken, CniError::TryAgainLater);
        let v = e.to_json("1.0.0");
        assert_eq!(v["code"], 106);
        assert_eq!(v["msg"], "address conflict: MAC 02:00:00:00:00:05 belongs to port 2");
        assert!(v["details"].as_str().unwrap().contains("address_conflict"), "{v}");
        let waiting =
            ClientError::Api(ApiError::new(ErrorCode::FailedPrecondition, "waiting for the pod range"));
        let e = CniError::from_client(waiting, CniError::TryAgainLater);
        assert_eq!(e.code(), 11);
        assert!(e.to_string().contains("waiting for the pod range"), "{e}");
        let sys = ClientError::Api(ApiError::new(ErrorCode::System, "netlink said no"));
        let e = CniError::from_client(sys, CniError::TryAgainLater);
        assert_eq!(e.code(), 100);
        assert_eq!(e.details(), "tapwayd error code: system");
        let v = CniError::IpamFailed {
            plugin: "host-local".into(),
            code: 999,
            msg: "full".into(),
            details: "d".into(),
        }
        .to_json("0.4.0");
        assert_eq!(v["msg"], "IPAM plugin host-local: full");
        assert_eq!(v["details"], "d");
    }
}
