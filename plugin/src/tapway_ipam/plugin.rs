//! The `tapway-ipam` binary: a spec-conformant IPAM plugin (ADD, DEL, CHECK, GC, STATUS,
//! VERSION) whose addresses come from tapwayd, so that any plugin (the reference `bridge`,
//! `macvlan`, a second tapway network) can take addresses from the node's tapway pool without
//! clashing with tapway's pods. Allocations are keyed by network, container ID and interface
//! name, as host-local keys them; a retried ADD gets the same addresses.

use std::io::Write;

use tapway_api::{ClientError, ErrorCode, IpamAllocateRequest, IpamKey};

use super::{config, requested, to_result, Config};
use crate::daemon::Daemon;
use crate::env::{CniArgs, CniEnv, Command};
use crate::error::CniError;
use crate::netconf::Loaded;
use crate::version::{Version, SUPPORTED};
use crate::{log_info, log_warn};

/// The text printed on stderr when a person runs the binary without CNI_COMMAND.
pub fn about() -> String {
    format!(
        "CNI tapway-ipam plugin version {} (addresses from tapwayd)\nCNI protocol versions supported: {}",
        env!("CARGO_PKG_VERSION"),
        SUPPORTED.join(", ")
    )
}

/// One command of the `tapway-ipam` binary.
pub fn dispatch(env: &CniEnv, input: &[u8], out: &mut dyn Write) -> Result<(), CniError> {
    let Some(loaded) = crate::prepare(env, input, out)? else { return Ok(()) };
    let cfg = match config(&loaded) {
        Ok(c) => c,
        // DEL must not fail forever over a section it does not need: the socket is all it uses.
        Err(e) if env.command == Command::Del => {
            log_warn!("{e}; releasing through the default socket");
            Config::default()
        }
        Err(e) => return Err(e),
    };
    let daemon = Daemon::new(cfg.socket.as_deref().unwrap_or_else(|| loaded.socket()));
    let daemon = match loaded.daemon_timeout() {
        Some(t) => daemon.with_timeout(t),
        None => daemon,
    };
    let key = || IpamKey {
        network: loaded.conf.name.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    };
    match env.command {
        Command::Add => add(env, &loaded, cfg, &daemon, key(), out),
        Command::Del => {
            let released =
                daemon.ipam_release(key()).map_err(|e| CniError::from_client(e, CniError::TryAgainLater))?;
            log_info!("{}", if released { "addresses released" } else { "nothing to release" });
            Ok(())
        }
        Command::Check => {
            if loaded.version < Version::V0_4_0 {
                return Err(CniError::IncompatibleVersion(format!(
                    "config version {} does not allow CHECK",
                    loaded.version
                )));
            }
            daemon.ipam_check(key()).map(drop).map_err(|e| match e {
                ClientError::Api(a) if a.code == ErrorCode::NotFound => CniError::UnknownContainer(a.message),
                e => CniError::from_client(e, CniError::TryAgainLater),
            })
        }
        Command::Gc => {
            if loaded.version < Version::V1_1_0 {
                return Err(CniError::IncompatibleVersion(format!(
                    "config version {} does not allow GC",
                    loaded.version
                )));
            }
            let valid = loaded.conf.valid_attachments.clone().unwrap_or_default();
            let r = daemon
                .ipam_gc(&loaded.conf.name, valid)
                .map_err(|e| CniError::from_client(e, CniError::TryAgainLater))?;
            log_info!("gc released {} allocation(s)", r.released.len());
            Ok(())
        }
        Command::Status => crate::commands::daemon_ready(&loaded, &daemon),
        Command::Version => Ok(()),
    }
}

fn add(
    env: &CniEnv,
    loaded: &Loaded,
    cfg: Config,
    daemon: &Daemon,
    key: IpamKey,
    out: &mut dyn Write,
) -> Result<(), CniError> {
    let args = CniArgs::parse(&env.args)?;
    let mut request = cfg.request;
    request.requested = requested(loaded, &args);
    let allocation = daemon
        .ipam_allocate(IpamAllocateRequest { key, request })
        .map_err(|e| CniError::from_client(e, CniError::TryAgainLater))?;
    let mut result = to_result(&allocation)?;
    result.dns = cfg.dns;
    log_info!("allocated {:?}", allocation.ips.iter().map(|i| i.address.as_str()).collect::<Vec<_>>());
    let bytes = result
        .to_json_pretty(loaded.version)
        .map_err(|e| CniError::Io(format!("encoding the result: {e}")))?;
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CniError::Io(format!("writing the result: {e}")))
}
