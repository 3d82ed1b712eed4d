//! The network configuration on stdin: parsing, validation and the runtime's inputs
//! (`runtimeConfig`, `args`).

use serde::Deserialize;
use serde_json::{Map, Value};
use tapway_api::{validate, Attachment};

use crate::env::{CniArgs, Command};
use crate::error::CniError;
use crate::types::{CniResult, Dns};
use crate::version::{Version, SUPPORTED};

/// Where the plugin keeps its state (pending detaches and their lock) unless `stateDir` says
/// otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tapway/cni";

/// The longest `daemonTimeoutSeconds` accepted: runtimes time a whole CNI call out well before.
pub const MAX_DAEMON_TIMEOUT_SECS: u64 = 300;

/// The keys the plugin reads. Unknown keys are ignored (and still passed on to the IPAM
/// plugin, which reads the same stdin).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetConf {
    /// Spec version of this configuration (inserted by the runtime).
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Network name (inserted by the runtime); recorded as the port's owner network.
    #[serde(default)]
    pub name: String,
    /// Plugin type, `tapway`.
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// tapwayd's control socket.
    #[serde(default)]
    pub socket: Option<String>,
    /// How long one call to tapwayd may take, in seconds (default 30). A call that times out
    /// has an unknown outcome: DEL then keeps the addresses and asks to be retried.
    #[serde(rename = "daemonTimeoutSeconds", default)]
    pub daemon_timeout_secs: Option<u64>,
    /// MTU of the pod interface; tapwayd's default when absent.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// IPAM plugin configuration; only `type` is read here.
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    /// DNS settings for the result; they replace what IPAM returned.
    #[serde(default)]
    pub dns: Option<Dns>,
    /// MAC for the pod interface (lowest precedence).
    #[serde(default)]
    pub mac: Option<String>,
    /// Also log to this file (appended).
    #[serde(rename = "logFile", default)]
    pub log_file: Option<String>,
    /// `error`, `warn` (default), `info` or `debug`.
    #[serde(rename = "logLevel", default)]
    pub log_level: Option<String>,
    /// Directory of the plugin's own state; [`DEFAULT_STATE_DIR`] when absent.
    #[serde(rename = "stateDir", default)]
    pub state_dir: Option<String>,
    /// The runtime's capability arguments (read case-insensitively, see [`RuntimeConfig`]).
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<Value>,
    /// The result of the previous plugin in the chain.
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    /// Per-container arguments in the netconf (`args.cni.mac` is read).
    #[serde(default)]
    pub args: Option<Value>,
    /// GC: attachments to keep.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The `ipam` object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamConf {
    /// Name of the IPAM plugin binary in CNI_PATH.
    #[serde(rename = "type", default)]
    pub plugin_type: String,
}

/// A port mapping as the `portMappings` capability carries it. Only checked and logged:
/// the mappings are for a `portmap` plugin later in the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PortMapping {
    /// Host port.
    #[serde(rename = "hostport", default)]
    pub host_port: u16,
    /// Container port.
    #[serde(rename = "containerport", default)]
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    #[serde(default)]
    pub protocol: String,
    /// Host address to bind.
    #[serde(rename = "hostip", default)]
    pub host_ip: String,
}

/// DNS as the `dns` capability carries it (`servers`, `searches`, `options`; containerd
/// writes them capitalised).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RuntimeDns {
    /// Name servers.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// Options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// The capability arguments the plugin understands. Keys are matched case-insensitively at
/// every level, because Go runtimes marshal some structs with capitalised field names
/// (containerd: `{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `mac`: MAC for the pod interface (highest precedence).
    pub mac: Option<String>,
    /// `ips`: static addresses (CIDR) requested from the IPAM plugin.
    pub ips: Vec<String>,
    /// `portMappings`, for a following `portmap` plugin.
    pub port_mappings: Vec<PortMapping>,
    /// `dns`: used in the result when neither the netconf nor IPAM gave DNS settings.
    pub dns: Option<RuntimeDns>,
    /// `bandwidth`: rate limits tapwayd applies to the pod's port (the reference `bandwidth`
    /// plugin needs a host veth, which a tapway pod does not have).
    pub bandwidth: Option<tapway_api::Bandwidth>,
}

/// The `bandwidth` capability as runtimes send it (keys lower-cased by [`lower_keys`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RuntimeBandwidth {
    ingressrate: u64,
    ingressburst: u64,
    egressrate: u64,
    egressburst: u64,
}

/// Recursively lower-cases the keys of objects, so serde sees one spelling.
fn lower_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.to_ascii_lowercase(), lower_keys(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(lower_keys).collect()),
        other => other.clone(),
    }
}

impl RuntimeConfig {
    /// Reads `runtimeConfig`. Unknown capabilities are ignored.
    pub fn from_value(v: &Value) -> Result<RuntimeConfig, CniError> {
        let Value::Object(map) = lower_keys(v) else {
            return Err(CniError::Decode("runtimeConfig is not an object".into()));
        };
        let dec = |what: &str, e: serde_json::Error| CniError::Decode(format!("runtimeConfig.{what}: {e}"));
        let mut out = RuntimeConfig::default();
        for (key, val) in map {
            if val.is_null() {
                continue;
            }
            match key.as_str() {
                "mac" => out.mac = Some(String::deserialize(&val).map_err(|e| dec("mac", e))?),
                "ips" => out.ips = Vec::<String>::deserialize(&val).map_err(|e| dec("ips", e))?,
                "portmappings" => {
                    out.port_mappings =
                        Vec::<PortMapping>::deserialize(&val).map_err(|e| dec("portMappings", e))?
                }
                "dns" => out.dns = Some(RuntimeDns::deserialize(&val).map_err(|e| dec("dns", e))?),
                "bandwidth" => {
                    let b = RuntimeBandwidth::deserialize(&val).map_err(|e| dec("bandwidth", e))?;
                    out.bandwidth = Some(tapway_api::Bandwidth {
                        ingress_rate: b.ingressrate,
                        ingress_burst: b.ingressburst,
                        egress_rate: b.egressrate,
                        egress_burst: b.egressburst,
                    })
                    .filter(|b| b.ingress_rate > 0 || b.egress_rate > 0);
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and things that were worked around (default).
    Warn,
    /// One line per step.
    Info,
    /// Everything, including tapwayd and IPAM exchanges.
    Debug,
}

impl LogLevel {
    /// Parses a level name (case-insensitive); `None` if unknown.
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" | "trace" => LogLevel::Debug,
            _ => return None,
        })
    }
}

/// A parsed and validated netconf, with the raw JSON kept for delegation.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The typed keys.
    pub conf: NetConf,
    /// The whole object as received.
    pub raw: Map<String, Value>,
    /// The parsed `cniVersion`.
    pub version: Version,
    /// `runtimeConfig`, parsed.
    pub runtime: RuntimeConfig,
}

/// Only the version, for commands that need nothing else (VERSION) and for error objects.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        cni_version: String,
    }
    serde_json::from_slice::<V>(stdin).ok().map(|v| v.cni_version)
}

impl Loaded {
    /// Parses stdin: JSON errors are code 6, an unsupported `cniVersion` code 1, and values
    /// that cannot work code 7.
    pub fn parse(stdin: &[u8], command: Command) -> Result<Loaded, CniError> {
        let value: Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::Decode(format!("network configuration is not valid JSON: {e}")))?;
        let Value::Object(raw) = value else {
            return Err(CniError::Decode("network configuration is not a JSON object".into()));
        };
        let conf = NetConf::deserialize(&Value::Object(raw.clone()))
            .map_err(|e| CniError::Decode(format!("network configuration: {e}")))?;
        let version = Version::parse(&conf.cni_version).filter(|v| v.is_supported()).ok_or_else(|| {
            CniError::IncompatibleVersion(format!(
                "incompatible CNI versions: config is {:?}, plugin supports {SUPPORTED:?}",
                conf.cni_version
            ))
        })?;
        let runtime = match conf.runtime_config.as_ref().map(RuntimeConfig::from_value) {
            Some(Ok(rc)) => rc,
            // DEL does not use the capabilities; a malformed one must not block it.
            Some(Err(_)) if command == Command::Del => RuntimeConfig::default(),
            Some(Err(e)) => return Err(e),
            None => RuntimeConfig::default(),
        };
        let loaded = Loaded { conf, raw, version, runtime };
        loaded.validate(command)?;
        Ok(loaded)
    }

    fn validate(&self, command: Command) -> Result<(), CniError> {
        let bad = |m: String| Err(CniError::InvalidConfig(m));
        let c = &self.conf;
        if matches!(command, Command::Add | Command::Check | Command::Gc) && c.name.is_empty() {
            return bad("network configuration has no \"name\"".into());
        }
        // DEL must not fail forever over a value it does not use: only what it needs to run
        // the IPAM plugin safely is checked below.
        let strict = !matches!(command, Command::Del);
        if let (true, Some(mtu)) = (strict, c.mtu) {
            validate::mtu(mtu).map_err(|e| CniError::InvalidConfig(format!("mtu: {e}")))?;
        }
        if let (true, Some(mac)) = (strict, &c.mac) {
            validate::mac(mac).map_err(|e| CniError::InvalidConfig(format!("mac: {e}")))?;
        }
        if let (true, Some(mac)) = (strict, self.args_mac()) {
            validate::mac(&mac).map_err(|e| CniError::InvalidConfig(format!("args.cni.mac: {e}")))?;
        }
        if let (true, Some(mac)) = (strict, &self.runtime.mac) {
            validate::mac(mac).map_err(|e| CniError::InvalidConfig(format!("runtimeConfig.mac: {e}")))?;
        }
        for ip in self.runtime.ips.iter().filter(|_| strict) {
            if validate::host_ip(ip).is_err() {
                return bad(format!("runtimeConfig.ips: {ip:?} is not an address"));
            }
        }
        if let Some(sock) = &c.socket {
            if !sock.starts_with('/') {
                return bad(format!("socket {sock:?} is not an absolute path"));
            }
        }
        if let (true, Some(t)) = (strict, c.daemon_timeout_secs) {
            if !(1..=MAX_DAEMON_TIMEOUT_SECS).contains(&t) {
                return bad(format!("daemonTimeoutSeconds {t} is not in 1..={MAX_DAEMON_TIMEOUT_SECS}"));
            }
        }
        if let Some(dir) = &c.state_dir {
            if !dir.starts_with('/') {
                return bad(format!("stateDir {dir:?} is not an absolute path"));
            }
        }
        if let Some(ipam) = &c.ipam {
            let t = &ipam.plugin_type;
            if t.is_empty() {
                return bad("ipam has no \"type\"".into());
            }
            if t.contains('/') || t == "." || t == ".." || t.contains('\0') {
                return bad(format!("ipam type {t:?} is not a plugin name"));
            }
        }
        if matches!(command, Command::Gc) && c.valid_attachments.is_none() {
            return bad("GC needs \"cni.dev/valid-attachments\"".into());
        }
        Ok(())
    }

    /// `args.cni.mac`, if set.
    fn args_mac(&self) -> Option<String> {
        self.conf.args.as_ref()?.get("cni")?.get("mac")?.as_str().map(str::to_string)
    }

    /// The socket path.
    pub fn socket(&self) -> &str {
        self.conf.socket.as_deref().unwrap_or(tapway_api::DEFAULT_SOCKET)
    }

    /// The per-call timeout of calls to tapwayd, when the netconf sets a valid one (DEL does
    /// not refuse a bad one: it uses the default).
    pub fn daemon_timeout(&self) -> Option<std::time::Duration> {
        let t = self.conf.daemon_timeout_secs.filter(|t| (1..=MAX_DAEMON_TIMEOUT_SECS).contains(t))?;
        Some(std::time::Duration::from_secs(t))
    }

    /// The state directory.
    pub fn state_dir(&self) -> &str {
        self.conf.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR)
    }

    /// The IPAM plugin name, if the netconf has one.
    pub fn ipam_type(&self) -> Option<&str> {
        self.conf.ipam.as_ref().map(|i| i.plugin_type.as_str())
    }

    /// The MAC for the pod interface, by precedence: `runtimeConfig.mac`, CNI_ARGS `MAC`,
    /// `args.cni.mac`, the netconf's `mac`. `None` lets tapwayd generate one.
    pub fn mac(&self, args: &CniArgs) -> Option<String> {
        self.runtime
            .mac
            .clone()
            .or_else(|| args.mac.clone())
            .or_else(|| self.args_mac())
            .or_else(|| self.conf.mac.clone())
    }

    /// DNS for the result: the netconf's `dns` when set, else IPAM's, else the runtime's.
    pub fn result_dns(&self, from_ipam: &Dns) -> Dns {
        if let Some(d) = self.conf.dns.as_ref().filter(|d| !d.is_empty()) {
            return d.clone();
        }
        if !from_ipam.is_empty() {
            return from_ipam.clone();
        }
        match &self.runtime.dns {
            Some(rd) => Dns {
                nameservers: rd.servers.clone(),
                domain: String::new(),
                search: rd.searches.clone(),
                options: rd.options.clone(),
            },
            None => Dns::default(),
        }
    }

    /// prevResult, parsed; `None` when absent.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match &self.conf.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::from_value(v).map(Some),
        }
    }

    /// The stdin for a delegated plugin called with `version`: the netconf as received, with
    /// `cniVersion` replaced, prevResult rewritten in that version's layout, and the `ips`
    /// capability also under its lower-case key.
    pub fn delegate_stdin(&self, version: Version) -> Result<Vec<u8>, CniError> {
        let mut raw = self.raw.clone();
        raw.insert("cniVersion".into(), Value::String(version.to_string()));
        if version != self.version {
            if let Some(prev) = self.prev_result()? {
                raw.insert("prevResult".into(), prev.to_value(version));
            }
        }
        if let Some(Value::Object(rc)) = raw.get_mut("runtimeConfig") {
            if !rc.contains_key("ips") {
                let alias = rc.iter().find(|(k, _)| k.eq_ignore_ascii_case("ips")).map(|(_, v)| v.clone());
                if let Some(v) = alias {
                    rc.insert("ips".into(), v);
                }
            }
        }
        serde_json::to_vec(&Value::Object(raw)).map_err(|e| CniError::Decode(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value, cmd: Command) -> Result<Loaded, CniError> {
        Loaded::parse(&serde_json::to_vec(&v).unwrap(), cmd)
    }

    fn base() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "tapnet",
            "type": "tapway",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/24"}]]}
        })
    }

    #[test]
    fn minimal_and_defaults() {
        let l = parse(base(), Command::Add).unwrap();
        assert_eq!(l.version, Version(1, 1, 0));
        assert_eq!(l.conf.name, "tapnet");
        assert_eq!(l.socket(), "/run/tapway/tapway.sock");
        assert_eq!(l.state_dir(), DEFAULT_STATE_DIR);
        assert_eq!(l.ipam_type(), Some("host-local"));
        assert_eq!(l.mac(&CniArgs::default()), None);
        assert!(l.prev_result().unwrap().is_none());
    }

    #[test]
    fn all_keys_and_unknown_ones() {
        let mut v = base();
        let m = v.as_object_mut().unwrap();
        m.insert("socket".into(), json!("/run/t/t.sock"));
        m.insert("mtu".into(), json!(9000));
        m.insert("mac".into(), json!("02:00:00:00:00:01"));
        m.insert("logFile".into(), json!("/var/log/tapway-cni.log"));
        m.insert("logLevel".into(), json!("debug"));
        m.insert("dns".into(), json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}));
        m.insert("someFutureKey".into(), json!({"nested": [1, 2, 3]}));
        let l = parse(v, Command::Add).unwrap();
        assert_eq!(l.socket(), "/run/t/t.sock");
        assert_eq!(l.conf.mtu, Some(9000));
        assert_eq!(l.conf.log_level.as_deref(), Some("debug"));
        assert_eq!(l.mac(&CniArgs::default()).as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(l.result_dns(&Dns::default()).search, vec!["svc.cluster.local".to_string()]);
    }

    #[test]
    fn decode_version_and_config_errors() {
        assert_eq!(Loaded::parse(b"{not json", Command::Add).unwrap_err().code(), 6);
        assert_eq!(Loaded::parse(b"[1,2]", Command::Add).unwrap_err().code(), 6);
        assert_eq!(Loaded::parse(b"", Command::Add).unwrap_err().code(), 6);
        let mut v = base();
        v["mtu"] = json!("big");
        assert_eq!(parse(v, Command::Add).unwrap_err().code(), 6);
        for ver in ["0.2.0", "1.2.0", "", "x"] {
            let mut v = base();
            v["cniVersion"] = json!(ver);
            assert_eq!(parse(v, Command::Add).unwrap_err().code(), 1, "{ver}");
        }
        let mut no_version = base();
        no_version.as_object_mut().unwrap().remove("cniVersion");
        assert_eq!(parse(no_version, Command::Add).unwrap_err().code(), 1);
        for (key, val) in [
            ("mtu", json!(100)),
            ("mac", json!("01:00:5e:00:00:01")),
            ("socket", json!("relative.sock")),
            ("stateDir", json!("rel")),
            ("daemonTimeoutSeconds", json!(0)),
            ("daemonTimeoutSeconds", json!(301)),
            ("ipam", json!({"type": "../evil"})),
            ("ipam", json!({"type": ""})),
            ("ipam", json!({})),
            ("runtimeConfig", json!({"mac": "zz"})),
            ("runtimeConfig", json!({"ips": ["not-an-ip"]})),
            ("args", json!({"cni": {"mac": "nope"}})),
        ] {
            let mut v = base();
            v[key] = val.clone();
            assert_eq!(parse(v, Command::Add).unwrap_err().code(), 7, "{key}={val}");
        }
        let mut unnamed = base();
        unnamed.as_object_mut().unwrap().remove("name");
        assert_eq!(parse(unnamed.clone(), Command::Add).unwrap_err().code(), 7);
        assert!(parse(unnamed, Command::Del).is_ok(), "DEL does without a name");
        let mut odd = base();
        odd["mtu"] = json!(1);
        odd["runtimeConfig"] = json!({"mac": "zz", "portMappings": "not a list"});
        assert!(parse(odd, Command::Del).is_ok(), "DEL ignores values it does not use");
        assert_eq!(parse(base(), Command::Gc).unwrap_err().code(), 7, "GC needs valid-attachments");
        let mut timeout = base();
        timeout["daemonTimeoutSeconds"] = json!(2);
        let l = parse(timeout, Command::Del).unwrap();
        assert_eq!(l.daemon_timeout(), Some(std::time::Duration::from_secs(2)));
        assert_eq!(parse(base(), Command::Add).unwrap().daemon_timeout(), None);
        let mut bad = base();
        bad["daemonTimeoutSeconds"] = json!(0);
        assert_eq!(parse(bad, Command::Del).unwrap().daemon_timeout(), None, "DEL uses the default");
    }

    #[test]
    fn runtime_config_bandwidth() {
        let v = json!({"bandwidth": {"ingressRate": 1000000, "ingressBurst": 2000000, "EgressRate": 5000, "egressBurst": 9}});
        let b = RuntimeConfig::from_value(&v).unwrap().bandwidth.unwrap();
        assert_eq!(
            (b.ingress_rate, b.ingress_burst, b.egress_rate, b.egress_burst),
            (1_000_000, 2_000_000, 5000, 9)
        );
        let none = RuntimeConfig::from_value(&json!({"bandwidth": {}})).unwrap();
        assert_eq!(none.bandwidth, None, "no rates: no limits");
        assert!(RuntimeConfig::from_value(&json!({"bandwidth": {"ingressRate": "fast"}})).is_err());
    }

    #[test]
    fn runtime_config_both_spellings() {
        let lower = json!({
            "mac": "02:00:00:00:00:09",
            "ips": ["10.22.0.9/24"],
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}],
            "dns": {"servers": ["10.96.0.10"], "searches": ["a.local"], "options": ["ndots:5"]},
            "bandwidth": {"ingressRate": 1}
        });
        let upper = json!({
            "MAC": "02:00:00:00:00:09",
            "IPs": ["10.22.0.9/24"],
            "PortMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": "127.0.0.1"}],
            "DNS": {"Servers": ["10.96.0.10"], "Searches": ["a.local"], "Options": ["ndots:5"]},
            "Bandwidth": {"IngressRate": 1}
        });
        let a = RuntimeConfig::from_value(&lower).unwrap();
        let b = RuntimeConfig::from_value(&upper).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.port_mappings,
            vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: "127.0.0.1".into()
            }]
        );
        assert_eq!(a.ips, vec!["10.22.0.9/24".to_string()]);
        assert_eq!(a.dns.as_ref().unwrap().options, vec!["ndots:5".to_string()]);
        assert!(RuntimeConfig::from_value(&json!([])).is_err());
        assert!(RuntimeConfig::from_value(&json!({"portMappings": [{"hostPort": "x"}]})).is_err());
        assert_eq!(RuntimeConfig::from_value(&json!({"mac": null})).unwrap(), RuntimeConfig::default());
    }

    #[test]
    fn mac_precedence() {
        let mut v = base();
        v["mac"] = json!("02:00:00:00:00:01");
        v["args"] = json!({"cni": {"mac": "02:00:00:00:00:02"}});
        let l = parse(v.clone(), Command::Add).unwrap();
        assert_eq!(l.mac(&CniArgs::default()).as_deref(), Some("02:00:00:00:00:02"));
        let args = CniArgs::parse("MAC=02:00:00:00:00:03").unwrap();
        assert_eq!(l.mac(&args).as_deref(), Some("02:00:00:00:00:03"));
        v["runtimeConfig"] = json!({"Mac": "02:00:00:00:00:04"});
        let l = parse(v, Command::Add).unwrap();
        assert_eq!(l.mac(&args).as_deref(), Some("02:00:00:00:00:04"));
    }

    #[test]
    fn dns_precedence() {
        let mut v = base();
        v["runtimeConfig"] = json!({"dns": {"servers": ["10.0.0.53"]}});
        let l = parse(v.clone(), Command::Add).unwrap();
        assert_eq!(l.result_dns(&Dns::default()).nameservers, vec!["10.0.0.53".to_string()]);
        let ipam = Dns { nameservers: vec!["10.0.0.54".into()], ..Default::default() };
        assert_eq!(l.result_dns(&ipam), ipam);
        v["dns"] = json!({"nameservers": ["10.0.0.55"]});
        let l = parse(v, Command::Add).unwrap();
        assert_eq!(l.result_dns(&ipam).nameservers, vec!["10.0.0.55".to_string()]);
    }

    #[test]
    fn delegate_stdin_downgrades() {
        let mut v = base();
        v["runtimeConfig"] = json!({"IPs": ["10.22.0.9/24"]});
        v["prevResult"] = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mtu": 1500, "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.22.0.9/24", "interface": 0}]
        });
        v["extra"] = json!(true);
        let l = parse(v, Command::Check).unwrap();
        let out: Value = serde_json::from_slice(&l.delegate_stdin(Version(0, 4, 0)).unwrap()).unwrap();
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["extra"], true);
        assert_eq!(out["ipam"]["type"], "host-local");
        assert_eq!(out["runtimeConfig"]["ips"], json!(["10.22.0.9/24"]));
        assert_eq!(out["prevResult"]["cniVersion"], "0.4.0");
        assert_eq!(out["prevResult"]["ips"][0]["version"], "4");
        assert!(out["prevResult"]["interfaces"][0].get("mtu").is_none());
        let same: Value = serde_json::from_slice(&l.delegate_stdin(Version(1, 1, 0)).unwrap()).unwrap();
        assert_eq!(same["prevResult"]["interfaces"][0]["mtu"], 1500);
    }

    #[test]
    fn gc_attachments() {
        let mut v = base();
        v["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
        let l = parse(v, Command::Gc).unwrap();
        let valid = l.conf.valid_attachments.unwrap();
        assert_eq!(valid, vec![Attachment { container_id: "c1".into(), ifname: "eth0".into() }]);
    }

    #[test]
    fn peek() {
        assert_eq!(peek_version(br#"{"cniVersion":"0.4.0","x":1}"#).as_deref(), Some("0.4.0"));
        assert_eq!(peek_version(b""), None);
        assert_eq!(LogLevel::parse("INFO"), Some(LogLevel::Info));
        assert_eq!(LogLevel::parse("loud"), None);
    }
}
