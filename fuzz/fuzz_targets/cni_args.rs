//! `CNI_ARGS` and the CNI environment: any string must parse or give a CNI error, never panic;
//! what parses, written back as `K=V;...`, must parse to the same value. The input's NUL bytes
//! split it into the environment variables (`CNI_ARGS` first).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapway_cni::env::{CniArgs, CniEnv};

/// `args` written back as `CNI_ARGS`.
fn render(a: &CniArgs) -> String {
    let mut pairs = Vec::new();
    if !a.ips.is_empty() {
        pairs.push(format!("IP={}", a.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")));
    }
    let opt = [
        ("MAC", &a.mac),
        ("K8S_POD_NAMESPACE", &a.pod_namespace),
        ("K8S_POD_NAME", &a.pod_name),
        ("K8S_POD_INFRA_CONTAINER_ID", &a.pod_infra_container_id),
        ("K8S_POD_UID", &a.pod_uid),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            pairs.push(format!("{k}={v}"));
        }
    }
    if a.ignore_unknown {
        pairs.push("IgnoreUnknown=1".into());
    }
    pairs.extend(a.unknown.iter().map(|(k, v)| format!("{k}={v}")));
    pairs.join(";")
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let mut vars = s.split('\0');
    let args = vars.next().unwrap_or_default();
    if let Ok(a) = CniArgs::parse(args) {
        let text = render(&a);
        let back = CniArgs::parse(&text).unwrap_or_else(|e| panic!("{text:?} does not parse again: {e}"));
        assert_eq!(back, a, "CNI_ARGS round trip through {text:?}");
    }
    let names = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"];
    let values: Vec<&str> = vars.take(names.len()).collect();
    let get = |k: &str| {
        if k == "CNI_ARGS" {
            return Some(args.to_string());
        }
        names.iter().position(|n| *n == k).and_then(|i| values.get(i)).map(|v| v.to_string())
    };
    if let Ok(env) = CniEnv::load(get) {
        let _ = CniArgs::parse(&env.args);
    }
});
