//! The API access the watcher uses, for the DaemonSet's ClusterRole to grant exactly that.

/// One resource the watcher reads, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// API group; `""` for the core group.
    pub group: &'static str,
    /// Resource (plural, lower case).
    pub resource: &'static str,
    /// Verbs used on it.
    pub verbs: &'static [&'static str],
}

/// Every request the watcher makes: kube-runtime's watcher lists, then watches, every
/// Service and EndpointSlice in all namespaces, and its own Node (a list and watch with a
/// `metadata.name` field selector, so no `get`). Nothing is ever written.
pub const WATCHER_ACCESS: &[Access] = &[
    Access { group: "", resource: "services", verbs: &["list", "watch"] },
    Access { group: "discovery.k8s.io", resource: "endpointslices", verbs: &["list", "watch"] },
    Access { group: "", resource: "nodes", verbs: &["list", "watch"] },
];
