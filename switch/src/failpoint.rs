//! Test-only crash points: `TAPWAY_FAILPOINT=<name>` in tapwayd's environment makes the daemon
//! SIGKILL itself when it reaches `<name>`, so the integration tests can check what a kill -9
//! at that exact moment leaves behind and that a retried request recovers from it. Unset (the
//! only supported setting outside tests), [`hit`] is one comparison against `None`.
//!
//! Points: `attach:before_tap` (checked, nothing made yet), `attach:after_tap` (the persistent
//! TAP exists, unconfigured), `attach:after_config`
//! (configured, not yet recorded), `attach:after_save` (recorded in the state file, not yet
//! published: an attach is written before it is published), `attach:after_publish`
//! (published, no answer sent yet).

use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const ENV: &str = "TAPWAY_FAILPOINT";

/// Kills the process with SIGKILL when `name` is the configured crash point.
pub fn hit(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var(ENV).ok().filter(|p| !p.is_empty()));
    if point.as_deref() == Some(name) {
        tracing::warn!(point = name, "{ENV}: killing tapwayd with SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
