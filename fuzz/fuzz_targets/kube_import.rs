//! What `tapwayctl sync` reads (`kubectl get services,endpointslices -A -o json`): any JSON must
//! import or fail with a clear error, never panic; what is imported must be what the daemon
//! accepts, sorted and without duplicate backends as documented, the same on a second run,
//! and each service port must survive the JSON round trip of the control socket.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapway_api::ServiceSpec;
use tapway_kube::import;
use tapway_switch::control::services::validate_spec;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(imported) = import(&value) else { return };
    assert_eq!(import(&value).as_ref(), Ok(&imported), "import is deterministic");
    for w in imported.services.windows(2) {
        assert!(w[0].key < w[1].key, "service ports sorted by key, no duplicates");
    }
    for s in &imported.services {
        if let Err(e) = validate_spec(s) {
            panic!("imported service {} is refused by the daemon: {}", s.key, e.message);
        }
        for w in s.backends.windows(2) {
            assert!((w[0].ip, w[0].port) < (w[1].ip, w[1].port), "backends sorted, no duplicates");
        }
        let json = serde_json::to_vec(s).expect("a ServiceSpec serializes");
        let back: ServiceSpec = serde_json::from_slice(&json).expect("a serialized ServiceSpec parses");
        assert_eq!(&back, s, "ServiceSpec JSON round trip");
    }
});
