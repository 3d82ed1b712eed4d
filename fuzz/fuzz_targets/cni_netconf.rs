//! The plugin's network configuration (stdin): any bytes must parse or give a CNI error, never
//! panic, for every command; a configuration that parses must parse again, to the same
//! values, from its own JSON, and so must its `prevResult`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapway_cni::env::{CniArgs, Command};
use tapway_cni::netconf::{peek_version, Loaded};
use tapway_cni::types::{CniResult, Dns};

const COMMANDS: [Command; 6] =
    [Command::Add, Command::Del, Command::Check, Command::Status, Command::Gc, Command::Version];

fuzz_target!(|data: &[u8]| {
    let _ = peek_version(data);
    for command in COMMANDS {
        let Ok(l) = Loaded::parse(data, command) else { continue };
        let _ = l.socket();
        let _ = l.state_dir();
        let _ = l.ipam_type();
        let _ = l.mac(&CniArgs::default());
        let _ = l.result_dns(&Dns::default());
        let _ = l.delegate_stdin(l.version);
        // tapwayd's own IPAM section, as the plugin and tapway-ipam read it.
        let _ = tapway_cni::tapway_ipam::config(&l);
        let _ = tapway_cni::tapway_ipam::requested(&l, &CniArgs::default());
        let prev = l.prev_result();
        // Round trip, unless serde_json itself does not give the same JSON back (a float
        // that does not round-trip without its `float_roundtrip` feature).
        let raw = serde_json::Value::Object(l.raw.clone());
        let json = serde_json::to_vec(&raw).expect("a JSON object serializes");
        if serde_json::from_slice::<serde_json::Value>(&json).ok().as_ref() != Some(&raw) {
            continue;
        }
        let again = Loaded::parse(&json, command).expect("a parsed netconf parses from its own JSON");
        assert_eq!(format!("{:?}", again.conf), format!("{:?}", l.conf), "netconf round trip");
        assert_eq!(again.runtime, l.runtime, "runtimeConfig round trip");
        if let Ok(Some(r)) = prev {
            let v = r.to_value(l.version);
            assert_eq!(CniResult::from_value(&v).ok().as_ref(), Some(&r), "prevResult round trip");
        }
    }
});
