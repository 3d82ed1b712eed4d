//! tapwayd: a userspace L2 switch for Kubernetes pods.
//!
//! Module map (docs/architecture.md has the full picture):
//!
//! | module | what it is |
//! |---|---|
//! | [`wire`] | the header model: one parse of a frame into its meta (vnet header, L2/L3/L4), checked views per protocol, the one checksum module, the frames the switch builds |
//! | [`port`] | where frames enter and leave: TAP (pods, host), in-memory (tests) |
//! | [`pool`] | the pre-allocated frame buffers |
//! | [`table`] | the FDB (MAC learning) and the port table |
//! | [`datapath`] | workers and the stages a batch goes through |
//! | [`switch`] | shared state, worker lifecycle, table publication |
//! | [`control`] | the Unix-socket API: attach/detach pods, stats, dumps |
//! | [`ipam`] | address allocation from the pod ranges (host-local's rules) |
//! | [`netlink`], [`netns`] | configuring interfaces inside pod namespaces |
//! | [`config`] | tapwayd flags and config file |
//! | [`stats`] | per-port and switch counters, kept per worker and summed when read |
//! | [`metrics`] | Prometheus `/metrics`, `/healthz`, `/readyz` (`--metrics-address`) |

pub mod config;
pub mod control;
pub mod datapath;
pub mod failpoint;
pub mod ipam;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod pool;
pub mod port;
pub mod stats;
pub mod switch;
pub mod table;
pub mod wire;
