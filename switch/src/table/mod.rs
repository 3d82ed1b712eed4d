//! Tables the datapath reads: the FDB (learned by the workers themselves) and the port table
//! (written by the control plane, published to workers as immutable snapshots).

pub mod fdb;
pub mod ports;

pub use fdb::{Fdb, Learned};
pub use ports::{PortEntry, PortKind, PortMeta, PortTable, SpoofGuard};
