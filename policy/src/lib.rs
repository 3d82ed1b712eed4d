//! Kubernetes NetworkPolicy (networking.k8s.io/v1) for tapway, without I/O and without the
//! datapath: [`model`] is what tapway needs of NetworkPolicies, Pods and Namespaces, [`eval`]
//! a direct reference evaluation of one flow that also says why (what `tapwayctl policy trace`
//! prints), and [`compile`] the per-pod form whose lookup cost does not depend on the number
//! of policies or peers. The tests check that the two agree.
//!
//! Not enforced yet: the datapath part is the next step (see docs/policy.md).

pub mod compile;
pub mod eval;
pub mod model;

pub use compile::{compile, Compiled, Lookup, RuleId};
pub use eval::{allowed, Side, Verdict};
pub use model::{
    Direction, Labels, NamedPort, Namespace, Operator, Peer, Pod, Policy, PolicyPort, PortMatch, Protocol,
    Requirement, Rule, Selector, NAMESPACE_NAME_LABEL,
};
