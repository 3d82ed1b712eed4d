//! Tables the datapath reads.
//!
//! Written by the workers themselves: the FDB ([`fdb`]), connection tracking ([`conntrack`]),
//! session affinity ([`affinity`]) and ARP-learned neighbours ([`neigh`]). Written by the
//! control plane and published to the workers as immutable snapshots: the port table
//! ([`ports`]) and the service table ([`services`], with its [`maglev`] lookup tables).

pub mod affinity;
pub mod conntrack;
pub mod fdb;
pub mod maglev;
pub mod neigh;
pub mod ports;
pub mod services;

pub use fdb::{Fdb, Learned};
pub use ports::{PortEntry, PortKind, PortMeta, PortTable, SpoofGuard};
