//! `tapway`, the CNI plugin of the tapway network.
//!
//! Container runtimes exec it per pod (CNI spec 1.1.0: ADD, DEL, CHECK, STATUS, GC, VERSION;
//! results in 0.3.0 … 1.1.0 layouts). It is a thin client of tapwayd's control socket: IPAM is
//! delegated to the plugin in `ipam.type`, or done by tapwayd itself with the attach
//! (`"type": "tapway-ipam"`, [`tapway_ipam`]); the port itself is made by tapwayd. No datapath code
//! is linked in, so it starts and finishes fast.
//!
//! The layout follows containernetworking/plugins: [`env`] (CNI_* variables, CNI_ARGS),
//! [`netconf`] (stdin), [`types`] (results per version), [`ipam`] (delegation), [`commands`]
//! (one module per command), [`error`] (one error enum mapped to CNI codes).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod commands;
pub mod daemon;
pub mod env;
pub mod error;
pub mod ipam;
pub mod log;
pub mod netconf;
pub mod state;
pub mod tapway_ipam;
pub mod types;
pub mod version;

use std::io::{Read, Write};

use crate::env::{CniEnv, Command};
use crate::error::CniError;
use crate::netconf::{peek_version, Loaded, LogLevel};
use crate::version::{Version, SUPPORTED};

/// The most stdin the plugin reads (netconfs with a long prevResult are a few KiB).
const MAX_STDIN: u64 = 16 << 20;

/// The text printed on stderr when a person runs the binary without CNI_COMMAND.
pub fn about() -> String {
    format!(
        "CNI tapway plugin version {}\nCNI protocol versions supported: {}",
        env!("CARGO_PKG_VERSION"),
        SUPPORTED.join(", ")
    )
}

/// One invocation: reads the environment through `get` and the netconf from `stdin`, writes
/// the result or the error object to `out`, and returns the exit status.
pub fn run(
    get: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdin_is_tty: bool,
    out: &mut dyn Write,
) -> i32 {
    run_plugin(about, dispatch, get, stdin, stdin_is_tty, out)
}

/// How one command of a plugin binary is done: environment, stdin, where the result goes.
pub type Dispatch = fn(&CniEnv, &[u8], &mut dyn Write) -> Result<(), CniError>;

/// One invocation of a plugin binary (`tapway`, `tapway-ipam`): `about` for a person at a
/// terminal, `dispatch` for the command, and any error as the spec's error object on `out`.
pub fn run_plugin(
    about: fn() -> String,
    dispatch: Dispatch,
    get: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdin_is_tty: bool,
    out: &mut dyn Write,
) -> i32 {
    if get("CNI_COMMAND").is_none() && stdin_is_tty {
        eprintln!("{}", about());
        return 0;
    }
    let mut input = Vec::new();
    let read = stdin.take(MAX_STDIN).read_to_end(&mut input);
    let result = read
        .map_err(|e| CniError::Io(format!("reading stdin: {e}")))
        .and_then(|_| CniEnv::load(&get))
        .and_then(|env| dispatch(&env, &input, out));
    match result {
        Ok(()) => 0,
        Err(e) => {
            log_error!("{e}");
            let version = peek_version(&input)
                .filter(|v| Version::parse(v).is_some_and(Version::is_supported))
                .unwrap_or_else(|| Version::LATEST.to_string());
            let mut bytes = serde_json::to_vec_pretty(&e.to_json(&version)).unwrap_or_default();
            bytes.push(b'\n');
            let _ = out.write_all(&bytes).and_then(|()| out.flush());
            1
        }
    }
}

/// What every plugin binary does first: answers VERSION (then `None`), or parses the netconf
/// and sets up logging for the command.
pub(crate) fn prepare(env: &CniEnv, input: &[u8], out: &mut dyn Write) -> Result<Option<Loaded>, CniError> {
    if env.command == Command::Version {
        let mut bytes =
            serde_json::to_vec(&commands::cmd_version(input)).map_err(|e| CniError::Io(e.to_string()))?;
        bytes.push(b'\n');
        out.write_all(&bytes).map_err(|e| CniError::Io(format!("writing the answer: {e}")))?;
        return Ok(None);
    }
    log::init(LogLevel::Warn, None, env.command.to_string());
    let loaded = Loaded::parse(input, env.command)?;
    init_logging(env, &loaded);
    Ok(Some(loaded))
}

fn dispatch(env: &CniEnv, input: &[u8], out: &mut dyn Write) -> Result<(), CniError> {
    let Some(loaded) = prepare(env, input, out)? else { return Ok(()) };
    match env.command {
        Command::Add => commands::cmd_add(env, &loaded, out),
        Command::Del => commands::cmd_del(env, &loaded),
        Command::Check => commands::cmd_check(env, &loaded),
        Command::Status => commands::cmd_status(env, &loaded),
        Command::Gc => commands::cmd_gc(env, &loaded),
        Command::Version => Ok(()),
    }
}

fn init_logging(env: &CniEnv, loaded: &Loaded) {
    let requested = loaded.conf.log_level.as_deref();
    let level = requested.and_then(LogLevel::parse).unwrap_or(LogLevel::Warn);
    let context = match env.command {
        Command::Add | Command::Del | Command::Check => {
            format!("{} {}/{}", env.command, env.container_id, env.ifname)
        }
        _ => format!("{} {}", env.command, loaded.conf.name),
    };
    log::init(level, loaded.conf.log_file.as_deref(), context);
    if let Some(bad) = requested.filter(|l| LogLevel::parse(l).is_none()) {
        log_warn!("unknown logLevel {bad:?}; using warn");
    }
    log_debug!("invoked with CNI_NETNS={:?} CNI_ARGS={:?} CNI_PATH={:?}", env.netns, env.args, env.path);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::Value;

    use super::*;

    fn invoke(vars: &[(&str, &str)], stdin: &str) -> (i32, Value) {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut out = Vec::new();
        let code = run(|k| map.get(k).cloned(), &mut stdin.as_bytes(), false, &mut out);
        let v = if out.is_empty() { Value::Null } else { serde_json::from_slice(&out).unwrap() };
        (code, v)
    }

    #[test]
    fn version_command() {
        let (code, v) = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(code, 0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn error_objects_on_stdout() {
        let (code, v) = invoke(&[], "{}");
        assert_eq!((code, v["code"].as_u64()), (1, Some(4)));
        assert_eq!(v["cniVersion"], "1.1.0");

        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/none"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ];
        let (code, v) = invoke(&full, "{bad json");
        assert_eq!((code, v["code"].as_u64()), (1, Some(6)));

        let (_, v) = invoke(&full, r#"{"cniVersion":"0.2.0","name":"n","type":"tapway"}"#);
        assert_eq!(v["code"], 1);
        assert_eq!(v["cniVersion"], "1.1.0", "an unsupported version is not echoed");

        let (_, v) = invoke(&full, r#"{"cniVersion":"0.4.0","name":"n","type":"tapway","mtu":1}"#);
        assert_eq!((v["code"].as_u64(), v["cniVersion"].as_str()), (Some(7), Some("0.4.0")));

        let (_, v) = invoke(&full, r#"{"cniVersion":"1.0.0","name":"n","type":"tapway"}"#);
        assert_eq!(v["code"], 105, "missing netns is caught before anything is allocated");
        assert!(v["msg"].as_str().unwrap().contains("/run/netns/none"));

        let mut check = full;
        check[0] = ("CNI_COMMAND", "CHECK");
        let (_, v) = invoke(&check, r#"{"cniVersion":"0.3.1","name":"n","type":"tapway"}"#);
        assert_eq!(v["code"], 1, "0.3.1 has no CHECK");
        let (_, v) = invoke(&check, r#"{"cniVersion":"1.0.0","name":"n","type":"tapway"}"#);
        assert_eq!(v["code"], 7, "CHECK without prevResult");

        let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/nonexistent")];
        let (_, v) = invoke(&status, r#"{"cniVersion":"1.0.0","name":"n","type":"tapway"}"#);
        assert_eq!(v["code"], 1, "1.0.0 has no STATUS");
        let (code, v) = invoke(
            &status,
            r#"{"cniVersion":"1.1.0","name":"n","type":"tapway","socket":"/nonexistent/tapway.sock"}"#,
        );
        assert_eq!((code, v["code"].as_u64()), (1, Some(50)));

        let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/nonexistent")];
        let (_, v) = invoke(&gc, r#"{"cniVersion":"1.1.0","name":"n","type":"tapway"}"#);
        assert_eq!(v["code"], 7, "GC without valid-attachments");
    }

    #[test]
    fn del_is_best_effort_without_daemon() {
        let dir = std::env::temp_dir().join(format!("tapway-lib-test-{}", std::process::id()));
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "tapway",
            "socket": "/nonexistent/tapway.sock", "stateDir": dir.join("state"),
        });
        let vars = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ];
        for _ in 0..2 {
            let (code, v) = invoke(&vars, &conf.to_string());
            assert_eq!((code, v), (0, Value::Null));
        }
        let pending = state::StateDir::new(dir.join("state")).pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].container_id, "c1");
        let _ = std::fs::remove_dir_all(dir);
    }
}
