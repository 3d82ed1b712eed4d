//! tapway-bench: a packet generator and sink (AF_PACKET rings), an RFC 2544 rate search, and
//! scenario runs that build tapway and a reference bridge CNI side by side in fresh network
//! namespaces and report both, as a table, JSON, Markdown and SVG.
//!
//! It measures tapwayd from the outside, through the same CNI plugin binary and control socket
//! a node uses. It links the switch crate only for the `floor` topology ([`floor`]), whose
//! TAPs are set up by tapwayd's own code so that the floor differs from tapway by the
//! switching alone.

pub mod clock;
pub mod cpus;
pub mod floor;
pub mod frame;
pub mod iface;
pub mod kpktgen;
pub mod latency;
pub mod machine;
pub mod netns;
pub mod pktgen;
pub mod progress;
pub mod report;
pub mod rfc2544;
pub mod ring;
pub mod rtt;
pub mod scenario;
pub mod seq;
pub mod sink;
pub mod svg;
pub mod tcp;
pub mod teardown;
pub mod topo;
pub mod trial;
