//! The CNI environment: `CNI_COMMAND` and friends, and the `CNI_ARGS` key/value list.

use std::fmt;
use std::net::IpAddr;

use tapway_api::validate;

use crate::error::CniError;

/// The operation the runtime asks for (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container.
    Del,
    /// Verify an attachment.
    Check,
    /// Readiness (spec 1.1.0).
    Status,
    /// Remove stale attachments (spec 1.1.0).
    Gc,
    /// Report supported versions.
    Version,
}

impl Command {
    /// Parses the value of `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    fn needs(self, var: &str) -> bool {
        use Command::*;
        match var {
            "CNI_CONTAINERID" | "CNI_IFNAME" => matches!(self, Add | Del | Check),
            "CNI_NETNS" => matches!(self, Add | Check),
            "CNI_PATH" => matches!(self, Add | Del | Check | Status | Gc),
            _ => false,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        })
    }
}

/// The CNI environment of one invocation. Variables the command does not need may be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (empty on a DEL that has none).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, unparsed.
    pub args: String,
    /// `CNI_PATH`.
    pub path: String,
}

const VARS: [&str; 5] = ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"];

impl CniEnv {
    /// Reads and validates the environment through `get` (so tests need not touch the real
    /// one). An empty variable counts as missing, as in the reference implementation.
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        let command = get("CNI_COMMAND").unwrap_or_default();
        if command.is_empty() {
            return Err(CniError::InvalidEnv("required env variables [CNI_COMMAND] missing".into()));
        }
        let command = Command::parse(&command)
            .ok_or_else(|| CniError::InvalidEnv(format!("unknown CNI_COMMAND: {command}")))?;
        let [container_id, netns, ifname, args, path] = VARS.map(|v| get(v).unwrap_or_default());
        let missing: Vec<&str> = VARS
            .iter()
            .zip([&container_id, &netns, &ifname, &args, &path])
            .filter(|(name, val)| val.is_empty() && command.needs(name))
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() {
            return Err(CniError::InvalidEnv(format!(
                "required env variables [{}] missing",
                missing.join(",")
            )));
        }
        if command.needs("CNI_CONTAINERID") {
            validate::container_id(&container_id)
                .map_err(|e| CniError::InvalidEnv(format!("CNI_CONTAINERID: {e}")))?;
        }
        if command.needs("CNI_IFNAME") {
            validate::ifname(&ifname).map_err(|e| CniError::InvalidEnv(format!("CNI_IFNAME: {e}")))?;
        }
        Ok(CniEnv { command, container_id, netns, ifname, args, path })
    }
}

/// `CNI_ARGS`, parsed: `K=V;K2=V2`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `IP=`: addresses requested for the container (comma-separated, with or without a
    /// prefix length; the IPAM plugin reads them itself, the plugin only checks them).
    pub ips: Vec<IpAddr>,
    /// `MAC=`: MAC for the container interface.
    pub mac: Option<String>,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub pod_name: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub pod_infra_container_id: Option<String>,
    /// `K8S_POD_UID`.
    pub pod_uid: Option<String>,
    /// `IgnoreUnknown`: the runtime tolerates plugins ignoring keys they do not know. The
    /// plugin ignores unknown keys either way.
    pub ignore_unknown: bool,
    /// Keys the plugin does not know, in order.
    pub unknown: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses `CNI_ARGS`. Empty pairs (`a=1;;b=2`, a trailing `;`) are skipped; a pair without
    /// `=` or with an empty key, a bad `IP` or a bad `MAC` is an error.
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut out = CniArgs::default();
        for pair in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| CniError::InvalidEnv(format!("CNI_ARGS: invalid pair {pair:?}")))?;
            let some = || (!value.is_empty()).then(|| value.to_string());
            match key {
                "IP" => {
                    for ip in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        // host-local takes `IP=10.0.0.5` or `IP=10.0.0.5/24` (its `ip.IP` type).
                        let addr = validate::host_ip(ip)
                            .map_err(|e| CniError::InvalidEnv(format!("CNI_ARGS IP: {e}")))?;
                        out.ips.push(addr);
                    }
                }
                "MAC" => {
                    if !value.is_empty() {
                        validate::mac(value)
                            .map_err(|e| CniError::InvalidEnv(format!("CNI_ARGS MAC: {e}")))?;
                        out.mac = Some(value.to_string());
                    }
                }
                "K8S_POD_NAMESPACE" => out.pod_namespace = some(),
                "K8S_POD_NAME" => out.pod_name = some(),
                "K8S_POD_INFRA_CONTAINER_ID" => out.pod_infra_container_id = some(),
                "K8S_POD_UID" => out.pod_uid = some(),
                "IgnoreUnknown" => {
                    out.ignore_unknown = matches!(value.to_ascii_lowercase().as_str(), "1" | "true")
                }
                _ => out.unknown.push((key.to_string(), value.to_string())),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const FULL: [(&str, &str); 5] = [
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
        ("CNI_ARGS", "K8S_POD_NAME=p"),
    ];

    fn with(cmd: &str, skip: &[&str]) -> Result<CniEnv, CniError> {
        let mut pairs: Vec<(&str, &str)> = FULL.iter().copied().filter(|(k, _)| !skip.contains(k)).collect();
        pairs.push(("CNI_COMMAND", cmd));
        CniEnv::load(env(&pairs))
    }

    #[test]
    fn complete_env() {
        let e = with("ADD", &[]).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id, "abc123");
        assert_eq!(e.netns, "/run/netns/x");
        assert_eq!(e.args, "K8S_POD_NAME=p");
    }

    #[test]
    fn missing_vars_per_command() {
        let err = with("ADD", &["CNI_NETNS", "CNI_PATH"]).unwrap_err();
        assert_eq!(err.code(), 4);
        assert_eq!(err.to_string(), "required env variables [CNI_NETNS,CNI_PATH] missing");
        // DEL may come without a netns (containerd's second DEL).
        assert_eq!(with("DEL", &["CNI_NETNS"]).unwrap().netns, "");
        assert!(with("DEL", &["CNI_CONTAINERID"]).is_err());
        assert!(with("CHECK", &["CNI_NETNS"]).is_err());
        // STATUS and GC need only CNI_PATH; VERSION nothing.
        assert!(with("STATUS", &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]).is_ok());
        assert!(with("STATUS", &["CNI_PATH"]).is_err());
        assert!(with("GC", &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]).is_ok());
        assert!(with("VERSION", &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]).is_ok());
        // Empty counts as missing.
        let e = CniEnv::load(env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", ""), ("CNI_NETNS", "/x")]))
            .unwrap_err();
        assert!(e.to_string().contains("CNI_CONTAINERID"), "{e}");
    }

    #[test]
    fn bad_command_and_values() {
        assert_eq!(CniEnv::load(env(&[])).unwrap_err().code(), 4);
        let e = with("EXPLODE", &[]).unwrap_err();
        assert_eq!((e.code(), e.to_string().as_str()), (4, "unknown CNI_COMMAND: EXPLODE"));
        assert!(with("add", &[]).is_err());
        let mut pairs = FULL.to_vec();
        pairs.push(("CNI_COMMAND", "ADD"));
        pairs[0] = ("CNI_CONTAINERID", "-bad/id");
        assert_eq!(CniEnv::load(env(&pairs)).unwrap_err().code(), 4);
        pairs[0] = ("CNI_CONTAINERID", "ok");
        pairs[2] = ("CNI_IFNAME", "much-too-long-ifname");
        assert_eq!(CniEnv::load(env(&pairs)).unwrap_err().code(), 4);
    }

    #[test]
    fn cni_args_kubernetes_and_podman() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234-5678",
        )
        .unwrap();
        assert!(a.ignore_unknown);
        assert_eq!(a.pod_namespace.as_deref(), Some("default"));
        assert_eq!(a.pod_name.as_deref(), Some("web-0"));
        assert_eq!(a.pod_infra_container_id.as_deref(), Some("abc"));
        assert_eq!(a.pod_uid.as_deref(), Some("1234-5678"));

        let p = CniArgs::parse("IgnoreUnknown=1;IP=10.88.0.5;MAC=02:00:00:00:00:05").unwrap();
        assert_eq!(p.ips, vec!["10.88.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(p.mac.as_deref(), Some("02:00:00:00:00:05"));
        let two = CniArgs::parse("IP=10.0.0.2/24,fd00::2;").unwrap();
        assert_eq!(
            two.ips,
            vec!["10.0.0.2".parse::<IpAddr>().unwrap(), "fd00::2".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn cni_args_edge_cases() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        let a = CniArgs::parse("A=1;;B=x=y;C=").unwrap();
        assert_eq!(
            a.unknown,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into()), ("C".into(), "".into())]
        );
        assert!(!a.ignore_unknown);
        assert_eq!(CniArgs::parse("K8S_POD_NAME=").unwrap().pod_name, None);
        for bad in ["novalue", "=x", "IP=10.0.0.300", "IP=10.0.0.5/40", "MAC=01:00:5e:00:00:01", "MAC=zz"] {
            assert_eq!(CniArgs::parse(bad).unwrap_err().code(), 4, "{bad}");
        }
    }
}
