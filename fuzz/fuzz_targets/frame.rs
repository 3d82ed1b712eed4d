//! Any bytes a TAP can hand over (vnet header + frame) must classify or fail, never panic,
//! neighbour discovery included.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapway_switch::wire::{parse_frame, VnetHdr, VNET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = VnetHdr::parse(data) {
        let _ = h.is_gso();
    }
    let _ = parse_frame(data.get(VNET_HDR_LEN..).unwrap_or(&[]));
    let _ = parse_frame(data);
    let _ = tapway_switch::wire::ndp::parse_ndp(data);
    let _ = tapway_switch::wire::ndp::parse_ndp(data.get(VNET_HDR_LEN..).unwrap_or(&[]));
});
