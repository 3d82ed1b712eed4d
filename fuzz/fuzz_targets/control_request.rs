//! Any control-socket line must decode to a request or a clear error, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapway_switch::control::server::parse_request;

fuzz_target!(|data: &[u8]| {
    let _ = parse_request(data);
});
