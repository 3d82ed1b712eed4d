//! tapway's Kubernetes side: the typed conversion of Services and EndpointSlices into service
//! ports ([`convert`], used by `tapwayctl sync` and by the watcher), and the watcher tapwayd
//! runs against the API server ([`watch`]), and the import of Namespaces, Pods and
//! NetworkPolicies into the tapway-policy model ([`policy`]). Nothing here links the datapath.

pub mod access;
pub mod convert;
pub mod policy;
pub mod store;
pub mod watch;

pub use access::{Access, WATCHER_ACCESS};
pub use convert::{import, KubeError, KubeImport};
pub use policy::{import_policy, PolicyImport};
