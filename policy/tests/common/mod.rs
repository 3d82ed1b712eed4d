//! Shared by the integration tests: eval and the compiled form must give the same verdict
//! (and the same allowing rule) on a flow.

use std::net::IpAddr;

use tapway_policy::{allowed, compile, Compiled, Direction, Lookup, Namespace, Pod, Policy, Protocol, Side};

/// One side of a compiled lookup as eval's [`Side`] would say it: (allows, policy and rule).
fn compiled_side(c: &Compiled, l: Option<Lookup>) -> (bool, Option<(String, usize)>) {
    match l {
        None | Some(Lookup::NotIsolated) => (true, None),
        Some(Lookup::Denied) => (false, None),
        Some(Lookup::Allowed(r)) => {
            let rr = &c.rules[r.0 as usize];
            (true, Some((rr.policy.clone(), rr.rule)))
        }
    }
}

fn eval_side(s: &Side) -> (bool, Option<(String, usize)>) {
    match s {
        Side::Allowed { policy, rule, .. } => (true, Some((policy.clone(), *rule))),
        other => (other.allows(), None),
    }
}

/// The verdict of `eval`, after checking that `compiled` (compiled with every pod local)
/// agrees on both sides and on the rules.
#[allow(clippy::too_many_arguments)]
pub fn agreed(
    policies: &[Policy],
    pods: &[Pod],
    nss: &[Namespace],
    compiled: &Compiled,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    port: u16,
) -> bool {
    let v = allowed(policies, pods, nss, src, dst, proto, port);
    let eg = compiled_side(compiled, compiled.lookup(src, Direction::Egress, dst, proto, port));
    let ing = compiled_side(compiled, compiled.lookup(dst, Direction::Ingress, src, proto, port));
    assert_eq!(eg, eval_side(&v.egress), "egress of {src} -> {dst} {proto}/{port}: {v}");
    assert_eq!(ing, eval_side(&v.ingress), "ingress of {src} -> {dst} {proto}/{port}: {v}");
    v.allowed
}

/// Compiles with every pod local.
pub fn compile_all(policies: &[Policy], pods: &[Pod], nss: &[Namespace]) -> Compiled {
    let mut pods = pods.to_vec();
    pods.iter_mut().for_each(|p| p.local = true);
    compile(policies, &pods, nss)
}
