//! The tapwayd control protocol.
//!
//! tapwayd listens on a Unix stream socket (default [`DEFAULT_SOCKET`]). A client writes one
//! JSON [`Request`] per line and reads one JSON [`Response`] per line. Every request carries
//! `"v": 1` ([`PROTOCOL_VERSION`]); the daemon refuses other versions with
//! [`ErrorCode::UnsupportedVersion`].
//!
//! This crate is shared by the daemon, `tapwayctl`, the CNI plugin and the bench. It has no
//! datapath code and few dependencies, so the CNI plugin that links it stays small and starts
//! fast.
//!
//! ```text
//! → {"v":1,"op":"status"}
//! ← {"v":1,"ok":true,"result":{"version":"0.1.0", ...}}
//! → {"v":1,"op":"detach","ifname":"eth0"}
//! ← {"v":1,"ok":false,"error":{"code":"invalid_argument","message":"detach needs netns or container_id"}}
//! ```

mod client;
mod ipam;
mod proto;
mod service;
pub mod validate;

pub use client::{Client, ClientError};
pub use ipam::*;
pub use proto::*;
pub use service::*;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where tapwayd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tapway/tapway.sock";

/// The largest request line the daemon accepts, in bytes. A longer line is refused with
/// [`ErrorCode::TooLarge`] and the connection is closed. Large enough for a `service_sync` of
/// 10,000 services with 10 endpoints each (about 12 MB); only root can connect.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;
