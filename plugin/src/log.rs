//! Logging to stderr and, when the netconf names one, a log file. Never to stdout: stdout
//! belongs to the result.
//!
//! Lines look like `2024-05-01T12:00:00.123Z tapway[4242] WARN ADD abc123/eth0: message`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::netconf::LogLevel;

struct Logger {
    level: LogLevel,
    file: Option<File>,
    context: String,
}

static LOGGER: Mutex<Logger> =
    Mutex::new(Logger { level: LogLevel::Warn, file: None, context: String::new() });

/// Sets the level, the log file and the context shown on every line (command, container,
/// interface). A log file that cannot be opened is reported on stderr and skipped.
pub fn init(level: LogLevel, file: Option<&str>, context: String) {
    let opened = file.and_then(|path| {
        if let Some(dir) = std::path::Path::new(path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match OpenOptions::new().create(true).append(true).mode(0o600).open(path) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("tapway: cannot open log file {path}: {e}");
                None
            }
        }
    });
    let mut l = LOGGER.lock().unwrap_or_else(|p| p.into_inner());
    l.level = level;
    l.file = opened;
    l.context = context;
}

/// Whether `level` is logged.
pub fn enabled(level: LogLevel) -> bool {
    level <= LOGGER.lock().unwrap_or_else(|p| p.into_inner()).level
}

/// Writes one line at `level`.
pub fn write(level: LogLevel, args: fmt::Arguments<'_>) {
    let mut l = LOGGER.lock().unwrap_or_else(|p| p.into_inner());
    if level > l.level {
        return;
    }
    let name = match level {
        LogLevel::Error => "ERROR",
        LogLevel::Warn => "WARN",
        LogLevel::Info => "INFO",
        LogLevel::Debug => "DEBUG",
    };
    let line = format!("{} tapway[{}] {name} {}: {args}\n", timestamp(), std::process::id(), l.context);
    // Logging must never fail the command: write errors are ignored.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(f) = l.file.as_mut() {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Logs at error level.
#[macro_export]
macro_rules! log_error { ($($t:tt)*) => { $crate::log::write($crate::log::LogLevel::Error, format_args!($($t)*)) } }
/// Logs at warn level.
#[macro_export]
macro_rules! log_warn { ($($t:tt)*) => { $crate::log::write($crate::log::LogLevel::Warn, format_args!($($t)*)) } }
/// Logs at info level.
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::log::write($crate::log::LogLevel::Info, format_args!($($t)*)) } }
/// Logs at debug level.
#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log::write($crate::log::LogLevel::Debug, format_args!($($t)*)) } }

/// UTC time as RFC 3339 with milliseconds, without a date crate.
fn timestamp() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format_utc(now.as_secs(), now.subsec_millis())
}

fn format_utc(secs: u64, millis: u32) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_utc(1_714_564_800 + 3661, 999), "2024-05-01T13:01:01.999Z");
    }
}
