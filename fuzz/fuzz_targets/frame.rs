//! Any bytes a TAP can hand over (vnet header + frame) must parse or fail, never panic,
//! neighbour discovery included, and the offsets the one parse finds stay inside the frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapway_switch::wire::{parse_frame, VnetHdr, VNET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = VnetHdr::parse(data) {
        let _ = h.is_gso();
    }
    let _ = parse_frame(data.get(VNET_HDR_LEN..).unwrap_or(&[]));
    let _ = parse_frame(data);
    if let Ok(m) = tapway_switch::wire::parse(data) {
        if let Some(l) = m.l4.filter(|l| !l.later_fragment) {
            assert!(l.csum_off() + 2 <= data.len() - VNET_HDR_LEN, "checksum field inside the frame");
        }
    }
    let _ = tapway_switch::wire::ndp::parse_ndp(data);
    let _ = tapway_switch::wire::ndp::parse_ndp(data.get(VNET_HDR_LEN..).unwrap_or(&[]));
});
