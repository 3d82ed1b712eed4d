//! The datapath: worker threads that move frames between ports.
//!
//! A frame's life (see docs/architecture.md):
//!
//! 1. **rx** ([`worker`]): the worker that owns the ingress port reads a burst of up to
//!    `batch` frames into pool buffers.
//! 2. **parse** ([`pipeline`] → [`crate::wire::parse`]): the frame's one parse, into the
//!    [`crate::wire::FrameMeta`] every later stage reads: vnet header (checked against the
//!    frame: `gso_invalid`), MACs, ARP, IPv4/IPv6 addresses, TCP/UDP ports and flags, fragment
//!    info, offsets and any NDP message. Malformed frames are dropped (`malformed`).
//! 3. **anti-spoof** ([`antispoof`]): a pod may only send with its own MAC and addresses; then
//!    its egress rate limit, if any ([`police`]).
//! 4. **learn** ([`pipeline`] → [`crate::table::fdb`]): source MAC → ingress port.
//! 5. **service** ([`service`]): frames to a Service VIP are DNATed to a backend chosen by
//!    Maglev and pinned in conntrack; replies get their source turned back into the VIP. The
//!    rewrite works at the meta's offsets and keeps the meta true.
//! 6. **forward** ([`forward`]): FDB lookup → one port, or flood for group and unknown
//!    destinations, within the ingress pod port's storm-control budget ([`police`]).
//! 7. **tx** ([`worker`]): written directly when this worker owns the egress port, otherwise
//!    handed over through the owner's bounded lock-free ring.

pub mod antispoof;
pub mod forward;
pub mod pipeline;
pub mod police;
pub mod service;
pub mod worker;

pub use forward::Disposition;
pub use pipeline::Pipeline;

/// How an idle worker waits for frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Never sleep: lowest latency, one core at 100% per worker.
    Busy,
    /// Spin briefly after the last frame, then sleep in epoll until a port is readable.
    Adaptive,
}

impl PollMode {
    /// `busy` or `adaptive`.
    pub fn name(self) -> &'static str {
        match self {
            PollMode::Busy => "busy",
            PollMode::Adaptive => "adaptive",
        }
    }
}
