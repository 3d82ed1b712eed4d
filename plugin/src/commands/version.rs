//! VERSION: the versions the plugin speaks. Needs nothing but CNI_COMMAND; stdin may be
//! empty or not even JSON.

use serde_json::{json, Value};

use crate::netconf::peek_version;
use crate::version::{Version, SUPPORTED};

/// The VERSION answer: `cniVersion` echoes the request when the plugin speaks it.
pub fn cmd_version(stdin: &[u8]) -> Value {
    let version = peek_version(stdin)
        .and_then(|v| Version::parse(&v))
        .filter(|v| v.is_supported())
        .unwrap_or(Version::LATEST);
    json!({"cniVersion": version.to_string(), "supportedVersions": SUPPORTED})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_answer() {
        let all = json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
        assert_eq!(
            cmd_version(br#"{"cniVersion":"1.0.0"}"#),
            json!({"cniVersion":"1.0.0","supportedVersions":all})
        );
        assert_eq!(cmd_version(b""), json!({"cniVersion":"1.1.0","supportedVersions":all}));
        assert_eq!(cmd_version(br#"{"cniVersion":"0.2.0"}"#)["cniVersion"], "1.1.0");
        assert_eq!(cmd_version(b"garbage")["supportedVersions"], all);
    }
}
