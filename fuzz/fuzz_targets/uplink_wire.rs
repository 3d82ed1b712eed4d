//! What the uplink does to untrusted frames must never panic: software TSO/USO of a frame with
//! any vnet header, checksum completion, and GRO of any two frames.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapway_switch::wire::gro::Merge;
use tapway_switch::wire::segment::{complete_csum, SegmentPlan};
use tapway_switch::wire::VnetHdr;

fuzz_target!(|data: &[u8]| {
    if let Ok(hdr) = VnetHdr::parse(data) {
        let frame = &data[12..];
        let mut out = vec![0u8; 4096];
        if let Ok(plan) = SegmentPlan::new(&hdr, frame, 1500) {
            // Packed for a jumbo uplink: segments larger than the MSS, still within `out`.
            let plan = if data.len().is_multiple_of(2) { plan.pack_to_mtu(3500) } else { plan };
            for i in 0..plan.count().min(64) {
                let _ = plan.write(frame, i, &mut out);
            }
        }
        let mut copy = frame.to_vec();
        let _ = complete_csum(&mut copy, hdr.csum_start, hdr.csum_offset);
    }
    // GRO: the first half starts a merge, the second is appended.
    let (a, b) = data.split_at(data.len() / 2);
    if let Some(mut m) = Merge::start(a) {
        let mut out = vec![0u8; 70000];
        out[..a.len()].copy_from_slice(a);
        let _ = m.append(&mut out, b);
        let _ = m.finish(&mut out, if b.len().is_multiple_of(2) { 1500 } else { 68 });
    }
});
