//! The state files a restarted tapwayd reads (`state.json`, `services.json`): any bytes must
//! load or be refused, never panic; what loads must survive the write/read round trip, and
//! what restore then does with each entry (address and MAC checks, service validation and
//! compilation) must not panic either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapway_api::validate;
use tapway_switch::control::services::validate_spec;
use tapway_switch::control::state::{ServicesFile, State};
use tapway_switch::table::services::Service;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = serde_json::from_slice::<State>(data) {
        let json = serde_json::to_vec(&state).expect("a State serializes");
        let back: State = serde_json::from_slice(&json).expect("a written state file loads");
        assert_eq!(back, state, "state.json round trip");
        for p in &state.ports {
            let _ = validate::mac(&p.mac);
            let _ = validate::ifname(&p.ifname);
            let _ = validate::mtu(p.mtu);
            for ip in &p.ips {
                let _ = validate::cidr(ip);
            }
        }
    }
    if let Ok(file) = serde_json::from_slice::<ServicesFile>(data) {
        let json = serde_json::to_vec(&file).expect("a ServicesFile serializes");
        let back: ServicesFile = serde_json::from_slice(&json).expect("a written services file loads");
        assert_eq!(back, file, "services.json round trip");
        for s in file.services {
            if validate_spec(&s).is_ok() {
                let svc = Service::compile(s, None);
                let _ = svc.pick(0x9e37_79b9_7f4a_7c15);
            }
        }
    }
});
