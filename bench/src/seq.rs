//! Per-flow sequence accounting at the sink: received, lost, reordered, duplicated.
//!
//! Each flow's 32-bit sequence is extended to 64 bits against the highest one seen, so a long
//! run that wraps is still counted right. A sliding window of the last [`WINDOW`] sequence
//! numbers tells a late (reordered) frame from a duplicate. Loss is what the sequence space
//! says is missing: `highest + 1 - distinct received`. Frames lost after the last one received
//! are invisible here; a caller that knows how many were sent uses [`FlowTracker::loss_against`].

/// How far back (in sequence numbers) a late frame is still recognised individually.
pub const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;

/// Sequence accounting of one flow.
#[derive(Debug, Clone)]
pub struct FlowTracker {
    /// Highest extended sequence seen, `None` before the first frame.
    highest: Option<u64>,
    /// Bit `s % WINDOW` set when sequence `s` (within the window below `highest`) was seen.
    seen: [u64; WORDS],
    /// Distinct frames received.
    pub received: u64,
    /// Frames that arrived after a higher sequence number.
    pub reordered: u64,
    /// Frames whose sequence number had already been received.
    pub duplicates: u64,
    /// Frames older than the window: counted as received and reordered, but a duplicate among
    /// them cannot be told apart.
    pub too_old: u64,
}

impl Default for FlowTracker {
    fn default() -> Self {
        FlowTracker { highest: None, seen: [0; WORDS], received: 0, reordered: 0, duplicates: 0, too_old: 0 }
    }
}

impl FlowTracker {
    fn bit(s: u64) -> (usize, u64) {
        // Lossless: s % WINDOW < WINDOW, which fits usize.
        let i = (s % WINDOW) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    /// Extends a 32-bit sequence to 64 bits, nearest to the highest seen.
    fn extend(&self, seq: u32) -> u64 {
        let Some(h) = self.highest else { return u64::from(seq) };
        // Lossless truncations: the low 32 bits and a signed distance of them.
        let delta = i64::from(seq.wrapping_sub(h as u32) as i32);
        h.checked_add_signed(delta).unwrap_or(u64::from(seq))
    }

    /// Accounts one received frame.
    pub fn record(&mut self, seq: u32) {
        let s = self.extend(seq);
        match self.highest {
            None => {
                self.highest = Some(s);
                self.mark(s);
                self.received += 1;
            }
            Some(h) if s > h => {
                // Clear the bits of the sequence numbers skipped over (they leave the window
                // or are not yet seen).
                let gap = s - h;
                if gap >= WINDOW {
                    self.seen = [0; WORDS];
                } else {
                    for x in h + 1..s {
                        let (w, m) = Self::bit(x);
                        self.seen[w] &= !m;
                    }
                }
                self.highest = Some(s);
                self.mark(s);
                self.received += 1;
            }
            Some(h) => {
                if h - s >= WINDOW {
                    self.too_old += 1;
                    self.reordered += 1;
                    self.received += 1;
                    return;
                }
                let (w, m) = Self::bit(s);
                if self.seen[w] & m != 0 {
                    self.duplicates += 1;
                } else {
                    self.seen[w] |= m;
                    self.reordered += 1;
                    self.received += 1;
                }
            }
        }
    }

    fn mark(&mut self, s: u64) {
        let (w, m) = Self::bit(s);
        self.seen[w] |= m;
    }

    /// Frames the sequence space says are missing (from sequence 0 to the highest seen).
    pub fn lost(&self) -> u64 {
        match self.highest {
            None => 0,
            Some(h) => (h + 1).saturating_sub(self.received),
        }
    }

    /// Frames missing given that the sender sent `sent` of this flow (catches tail loss).
    pub fn loss_against(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.received)
    }

    /// Highest extended sequence seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// Trackers of every flow, indexed by flow number.
#[derive(Debug, Default, Clone)]
pub struct Flows {
    flows: Vec<Option<FlowTracker>>,
}

impl Flows {
    /// Accounts one frame of `flow`.
    pub fn record(&mut self, flow: u16, seq: u32) {
        let i = usize::from(flow);
        if self.flows.len() <= i {
            self.flows.resize(i + 1, None);
        }
        self.flows[i].get_or_insert_with(FlowTracker::default).record(seq);
    }

    /// The tracker of `flow`, if any of its frames arrived.
    pub fn get(&self, flow: u16) -> Option<&FlowTracker> {
        self.flows.get(usize::from(flow)).and_then(Option::as_ref)
    }

    /// One more than the highest flow number seen (0 when none).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True before any frame.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Totals over every flow.
    pub fn totals(&self) -> SeqTotals {
        let mut t = SeqTotals::default();
        for f in self.flows.iter().flatten() {
            t.flows += 1;
            t.received += f.received;
            t.lost += f.lost();
            t.reordered += f.reordered;
            t.duplicates += f.duplicates;
        }
        t
    }
}

/// Sums over flows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeqTotals {
    /// Flows seen.
    pub flows: u64,
    /// Distinct frames received.
    pub received: u64,
    /// Gaps in the sequence space.
    pub lost: u64,
    /// Late frames.
    pub reordered: u64,
    /// Repeated frames.
    pub duplicates: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(seqs: &[u32]) -> FlowTracker {
        let mut t = FlowTracker::default();
        for &s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn in_order_no_loss() {
        let t = run(&(0..1000).collect::<Vec<_>>());
        assert_eq!((t.received, t.lost(), t.reordered, t.duplicates), (1000, 0, 0, 0));
        assert_eq!(t.loss_against(1000), 0);
        assert_eq!(t.loss_against(1003), 3, "tail loss is seen against the sent count");
    }

    #[test]
    fn gaps_are_loss() {
        let t = run(&[0, 1, 2, 5, 6, 9]);
        assert_eq!(t.received, 6);
        assert_eq!(t.lost(), 4); // 3, 4, 7, 8
        assert_eq!(t.reordered, 0);
    }

    #[test]
    fn late_frames_fill_gaps_and_count_as_reordered() {
        let t = run(&[0, 2, 1, 3, 5, 4]);
        assert_eq!((t.received, t.lost(), t.reordered, t.duplicates), (6, 0, 2, 0));
    }

    #[test]
    fn duplicates_are_neither_received_nor_reordered() {
        let t = run(&[0, 1, 1, 2, 0, 2]);
        assert_eq!((t.received, t.lost(), t.reordered, t.duplicates), (3, 0, 0, 3));
    }

    #[test]
    fn first_frame_lost() {
        let t = run(&[1, 2, 3]);
        assert_eq!(t.lost(), 1);
    }

    #[test]
    fn big_jump_clears_window() {
        let t = run(&[0, 10_000, 9_999, 10_000]);
        assert_eq!(t.received, 3);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.reordered, 1);
        assert_eq!(t.lost(), 10_001 - 3);
    }

    #[test]
    fn very_late_frames_are_counted_but_flagged() {
        let t = run(&[0, 5000, 1]);
        assert_eq!(t.too_old, 1);
        assert_eq!(t.received, 3);
        assert_eq!(t.reordered, 1);
    }

    #[test]
    fn sequence_wraps() {
        let mut t = FlowTracker::default();
        for s in (u32::MAX - 5)..=u32::MAX {
            t.record(s);
        }
        for s in 0..5u32 {
            t.record(s);
        }
        assert_eq!(t.received, 11);
        assert_eq!(t.reordered, 0);
        assert_eq!(t.highest(), Some(u64::from(u32::MAX) + 5));
    }

    #[test]
    fn flows_are_separate() {
        let mut f = Flows::default();
        for s in 0..10 {
            f.record(0, s);
            if s != 4 {
                f.record(3, s);
            }
        }
        f.record(3, 4); // late
        let t = f.totals();
        assert_eq!(t, SeqTotals { flows: 2, received: 20, lost: 0, reordered: 1, duplicates: 0 });
        assert!(f.get(1).is_none());
        assert_eq!(f.get(3).unwrap().reordered, 1);
    }
}
