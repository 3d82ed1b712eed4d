//! The forwarding decision: where a frame goes after it passed the earlier stages.

use crate::datapath::police::Storm;
use crate::pool::Frame;
use crate::stats::DropReason;
use crate::table::{Fdb, PortTable};
use crate::wire::{is_group, Mac};

/// What happens to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Dropped, counted under this reason.
    Drop(DropReason),
    /// Sent to one port.
    Unicast(u16),
    /// Sent to every port but the ingress one (broadcast, multicast, unknown unicast).
    Flood,
}

/// Decides where a frame for `dst` that arrived on `ingress` goes. A MAC pinned to a pod's
/// port in `ports` goes there whatever the FDB says.
#[inline]
pub fn decide(dst: &Mac, ingress: u16, ports: Option<&PortTable>, fdb: &Fdb, now: u32) -> Disposition {
    if is_group(dst) {
        return Disposition::Flood;
    }
    match ports.and_then(|t| t.pinned(dst)).or_else(|| fdb.lookup(dst, now)) {
        Some(p) if p == ingress => Disposition::Drop(DropReason::SamePort),
        Some(p) => Disposition::Unicast(p),
        None => Disposition::Flood,
    }
}

/// Storm control: the frames of a burst from one port that would be flooded pass its budget
/// ([`Storm`]) in order, or become `Drop(StormControl)`. A GSO super-frame to an unknown MAC
/// (a TCP stream to a MAC that aged out) is legitimate and still flooded, counted whole in the
/// byte budget. The ingress port's rx worker is the only one that runs this for a port.
#[inline]
pub fn storm_control(storm: &Storm, frames: &[Frame], out: &mut [Disposition], now_ns: u64) {
    for (disp, frame) in out.iter_mut().zip(frames) {
        if *disp == Disposition::Flood && !storm.allow(frame.ethernet().len(), now_ns) {
            *disp = Disposition::Drop(DropReason::StormControl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let fdb = Fdb::new(16, 300);
        let a = [2, 0, 0, 0, 0, 0xa];
        fdb.learn(&a, 4, 1);
        assert_eq!(decide(&[0xff; 6], 1, None, &fdb, 1), Disposition::Flood);
        assert_eq!(decide(&[0x33, 0x33, 0, 0, 0, 1], 1, None, &fdb, 1), Disposition::Flood);
        assert_eq!(decide(&a, 1, None, &fdb, 1), Disposition::Unicast(4));
        assert_eq!(decide(&a, 4, None, &fdb, 1), Disposition::Drop(DropReason::SamePort));
        assert_eq!(decide(&[2, 0, 0, 0, 0, 0xb], 1, None, &fdb, 1), Disposition::Flood);
    }
}
