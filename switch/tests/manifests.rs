//! The manifests in `deploy/` against the Kubernetes API and against the code: every document
//! parses into its k8s-openapi type with no field the type does not know (k8s-openapi ignores
//! unknown fields, so each document is serialized back and compared with the YAML), the
//! ClusterRole grants exactly what the watcher reads, the DaemonSet mounts every host path
//! tapwayd, the plugin and install-cni use (and no other), and every flag it passes exists.
//! No root, no cluster: `cargo test -p tapway-switch --test manifests`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tapway_switch::config::{Args, DaemonConfig};

/// What the API watcher lists and watches, as (API group, resource, verbs). The one place
/// the expected RBAC is written: point it at the watcher's exported list when that lands.
const WATCHER_RBAC: &[(&str, &str, &[&str])] = &[
    ("", "services", &["list", "watch"]),
    ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    ("", "nodes", &["get", "list", "watch"]),
];

/// tapwayd flags the DaemonSet passes that this tree's tapwayd does not have yet (another
/// part of issue 11 adds them). Once a flag exists the test fails until it is taken off this
/// list, so the list only shrinks. Empty: `--metrics-address` has landed.
const PENDING_FLAGS: &[&str] = &[];

/// The capabilities tapwayd's container adds (all others dropped); docs/kubernetes.md says why
/// each, and scripts/image-test.sh runs the image with exactly the manifest's list.
const TAPWAYD_CAPS: &[&str] = &["NET_ADMIN", "SYS_ADMIN", "NET_RAW", "IPC_LOCK"];

/// One host path a container of the DaemonSet must see.
#[derive(Debug)]
struct HostPath {
    /// The path on the node.
    host: String,
    /// The container that uses it.
    container: &'static str,
    /// Where that container sees it.
    mount: String,
    /// Whether mounts made on the node later must show up inside (HostToContainer).
    propagate: bool,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A default of plugin/install-cni.sh (`name=value` at the top of the script).
fn install_cni_default(name: &str) -> String {
    let script = read(&root().join("plugin/install-cni.sh"));
    let prefix = format!("{name}=");
    let line = script
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name}= in install-cni.sh"));
    line[prefix.len()..].trim_matches('"').to_string()
}

/// The ConfigMap's tapwayd.toml resolved the way tapwayd resolves it (no flags).
fn resolved_config(toml: &str) -> DaemonConfig {
    let dir = std::env::temp_dir().join(format!("tapway-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("tapwayd.toml");
    std::fs::write(&file, toml).expect("temp file");
    let resolved = DaemonConfig::resolve(Args { config: Some(file), ..Args::default() });
    let _ = std::fs::remove_dir_all(&dir);
    resolved.unwrap_or_else(|e| panic!("the ConfigMap's tapwayd.toml: {e}"))
}

/// Every host path the daemon, the plugin and install-cni touch, derived from the code's
/// defaults where the code has them. The one list the mounts are checked against.
fn host_paths(cfg: &DaemonConfig) -> Vec<HostPath> {
    let same = |host: &str, container: &'static str, propagate: bool| HostPath {
        host: host.to_string(),
        container,
        mount: host.to_string(),
        propagate,
    };
    let socket_dir = cfg.socket.parent().expect("socket in a directory").to_str().expect("UTF-8 path");
    vec![
        // Pod netns as containerd, CRI-O and podman make them, after tapwayd started.
        same("/run/netns", "tapwayd", true),
        same("/var/run/netns", "tapwayd", true),
        // The control socket (config.rs default), where the plugin on the node connects.
        same(socket_dir, "tapwayd", false),
        same(cfg.state_dir.to_str().expect("UTF-8 path"), "tapwayd", false),
        same(tapway_switch::port::tap::TUN_PATH, "tapwayd", false),
        // libxdp's bpffs, for the uplink's XDP program.
        same("/sys/fs/bpf", "tapwayd", true),
        // install-cni.sh's defaults: the plugin goes into the bin dir, the conflist into the
        // config dir; seen under /host in the containers that write them.
        HostPath {
            host: install_cni_default("bin_dir"),
            container: "install-cni",
            mount: format!("/host{}", install_cni_default("bin_dir")),
            propagate: false,
        },
        HostPath {
            host: install_cni_default("conf_dir"),
            container: "cni-conf",
            mount: format!("/host{}", install_cni_default("conf_dir")),
            propagate: false,
        },
        // cni-conf asks tapwayd for the range over the socket.
        same(socket_dir, "cni-conf", false),
    ]
}

/// The YAML documents of a file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Paths in `original` that `typed` (the document after a round trip through its API type)
/// lost or changed: fields the type does not know, or values it reads differently.
fn lost_fields(original: &Value, typed: &Value, at: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => lost_fields(v, w, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost_fields(v, w, &format!("{at}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(format!("{at}: {a} read as {b}")),
        _ => {}
    }
}

/// Parses a document into `T` and refuses any field `T` does not know.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value, what: &str) -> T {
    let t: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&t).expect("serializes");
    let mut lost = Vec::new();
    lost_fields(doc, &back, "", &mut lost);
    assert!(lost.is_empty(), "{what}: fields the API does not have (misspelt or misplaced): {lost:?}");
    t
}

/// Every object of the manifests, by kind.
#[derive(Default)]
struct Manifests {
    accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    config_maps: Vec<ConfigMap>,
    daemon_sets: Vec<DaemonSet>,
}

impl Manifests {
    fn add(&mut self, doc: &Value, what: &str) {
        match doc["kind"].as_str() {
            Some("ServiceAccount") => self.accounts.push(typed(doc, what)),
            Some("ClusterRole") => self.roles.push(typed(doc, what)),
            Some("ClusterRoleBinding") => self.bindings.push(typed(doc, what)),
            Some("ConfigMap") => self.config_maps.push(typed(doc, what)),
            Some("DaemonSet") => self.daemon_sets.push(typed(doc, what)),
            other => panic!("{what}: unexpected kind {other:?}"),
        }
    }
}

/// The kustomization in `dir`: its resources' documents, with its JSON 6902 patches applied
/// (only `replace`, the one op deploy/ uses).
fn kustomize(dir: &Path) -> Vec<(Value, String)> {
    let k = documents(&dir.join("kustomization.yaml")).remove(0);
    assert_eq!(k["kind"], "Kustomization", "{}", dir.display());
    let allowed = ["apiVersion", "kind", "resources", "patches"];
    for key in k.as_object().expect("kustomization is a map").keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{}: kustomization key {key} is not checked here",
            dir.display()
        );
    }
    let mut docs = Vec::new();
    for r in k["resources"].as_array().expect("resources") {
        let path = dir.join(r.as_str().expect("resource path"));
        if path.is_dir() {
            docs.extend(kustomize(&path));
        } else {
            let name = path.strip_prefix(root()).unwrap_or(&path).display().to_string();
            docs.extend(documents(&path).into_iter().enumerate().map(|(i, d)| (d, format!("{name} #{i}"))));
        }
    }
    for p in k["patches"].as_array().into_iter().flatten() {
        let kind = p["target"]["kind"].as_str().expect("patch target kind");
        let name = p["target"]["name"].as_str().expect("patch target name");
        let ops: Vec<Value> =
            serde_saphyr::from_str(p["patch"].as_str().expect("inline patch")).expect("patch YAML");
        let target = docs
            .iter_mut()
            .find(|(d, _)| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("patch target {kind}/{name} not found"));
        for op in ops {
            assert_eq!(op["op"], "replace", "only replace patches are checked");
            let slot = target.0.pointer_mut(op["path"].as_str().expect("path")).expect("patched path exists");
            *slot = op["value"].clone();
        }
        target.1 = format!("{} patched by {}", target.1, dir.display());
    }
    docs
}

fn load(dir: &str) -> Manifests {
    let mut m = Manifests::default();
    for (doc, what) in kustomize(&root().join(dir)) {
        m.add(&doc, &what);
    }
    m
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("DaemonSet has a pod spec")
}

fn containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.init_containers.iter().flatten().chain(pod.containers.iter())
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    containers(pod).find(|c| c.name == name).unwrap_or_else(|| panic!("no container {name}"))
}

/// The value after `flag` in a container's command and args.
fn flag_value<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    let argv: Vec<&String> = c.command.iter().flatten().chain(c.args.iter().flatten()).collect();
    argv.windows(2).find(|w| w[0] == flag).map(|w| w[1].as_str())
}

fn help(program: &mut Command) -> String {
    let out = program.arg("--help").output().expect("runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `--flag` of a container's command line exists in `help` (or is pending).
fn flags_exist(c: &Container, help: &str, pending: &[&str]) {
    for arg in c.command.iter().flatten().chain(c.args.iter().flatten()) {
        if !arg.starts_with("--") {
            continue;
        }
        let known = help.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-')).any(|w| w == arg);
        if pending.contains(&arg.as_str()) {
            assert!(!known, "{arg} exists now: take it off PENDING_FLAGS in {}", file!());
            eprintln!("note: container {}: {arg} is expected from another part of issue 11", c.name);
        } else {
            assert!(known, "container {}: {arg} is not a flag of its program", c.name);
        }
    }
}

#[test]
fn every_manifest_parses_into_the_api_types_without_unknown_fields() {
    for dir in ["deploy", "deploy/privileged"] {
        let m = load(dir);
        assert_eq!(
            (m.accounts.len(), m.roles.len(), m.bindings.len(), m.config_maps.len(), m.daemon_sets.len()),
            (1, 1, 1, 1, 1),
            "{dir}: one object of each kind"
        );
    }
    // The check finds what k8s-openapi alone would silently drop.
    let mut doc = documents(&root().join("deploy/rbac.yaml")).remove(0);
    doc["metadata"]["namespaec"] = "kube-system".into();
    let caught = std::panic::catch_unwind(|| typed::<ServiceAccount>(&doc, "misspelt"));
    assert!(caught.is_err(), "a misspelt field must be refused");
}

#[test]
fn the_cluster_role_grants_exactly_what_the_watcher_reads() {
    let m = load("deploy");
    let granted: BTreeSet<(String, String, String)> = m.roles[0]
        .rules
        .iter()
        .flatten()
        .flat_map(|r| {
            assert!(r.resource_names.is_none() && r.non_resource_urls.is_none(), "{r:?}");
            let groups = r.api_groups.clone().unwrap_or_default();
            let resources = r.resources.clone().unwrap_or_default();
            let mut out = Vec::new();
            for g in &groups {
                for res in &resources {
                    for v in &r.verbs {
                        assert_ne!(v, "*", "no wildcard verbs");
                        out.push((g.clone(), res.clone(), v.clone()));
                    }
                }
            }
            out
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = WATCHER_RBAC
        .iter()
        .flat_map(|(g, r, verbs)| verbs.iter().map(|v| (g.to_string(), r.to_string(), v.to_string())))
        .collect();
    assert_eq!(granted, expected);

    // The binding gives that role to the DaemonSet's service account, in its namespace.
    let (sa, b, ds) = (&m.accounts[0], &m.bindings[0], &m.daemon_sets[0]);
    assert_eq!(b.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&b.role_ref.name), m.roles[0].metadata.name.as_ref());
    let subjects = b.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!((subjects[0].kind.as_str(), subjects[0].name.as_str()), ("ServiceAccount", "tapway"));
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
    assert_eq!(pod_spec(ds).service_account_name.as_ref(), sa.metadata.name.as_ref());
    // system-node-critical is only admitted in kube-system.
    for ns in [&sa.metadata.namespace, &ds.metadata.namespace, &m.config_maps[0].metadata.namespace] {
        assert_eq!(ns.as_deref(), Some("kube-system"));
    }
}

#[test]
fn the_mounts_cover_every_path_the_daemon_and_plugin_touch() {
    for dir in ["deploy", "deploy/privileged"] {
        let m = load(dir);
        let toml = m.config_maps[0].data.as_ref().and_then(|d| d.get("tapwayd.toml")).expect("tapwayd.toml");
        let cfg = resolved_config(toml);
        assert_eq!(cfg.socket.to_str(), Some(tapway_api::DEFAULT_SOCKET), "the plugin's default socket");
        assert_eq!(install_cni_default("socket"), tapway_api::DEFAULT_SOCKET, "the conflist's socket");
        let pod = pod_spec(&m.daemon_sets[0]);
        let wanted = host_paths(&cfg);
        for hp in &wanted {
            let c = container(pod, hp.container);
            let mounted = c.volume_mounts.iter().flatten().find(|vm| {
                pod.volumes.iter().flatten().any(|v| {
                    v.name == vm.name
                        && v.host_path.as_ref().is_some_and(|h| h.path.trim_end_matches('/') == hp.host)
                })
            });
            let vm = mounted.unwrap_or_else(|| panic!("{dir}: {} does not mount {}", hp.container, hp.host));
            assert_eq!(vm.mount_path, hp.mount, "{dir}: {} in {}", hp.host, hp.container);
            let propagation = vm.mount_propagation.as_deref();
            if hp.propagate {
                assert_eq!(
                    propagation,
                    Some("HostToContainer"),
                    "{dir}: {} needs the node's later mounts",
                    hp.host
                );
            } else {
                assert_eq!(propagation, None, "{dir}: {}", hp.host);
            }
        }
        // And no host path beyond the list.
        for v in pod.volumes.iter().flatten() {
            if let Some(h) = &v.host_path {
                assert!(wanted.iter().any(|hp| hp.host == h.path), "{dir}: host path {} is not used", h.path);
            }
        }
        // install-cni writes where the mounts are.
        let bin = flag_value(container(pod, "install-cni"), "--bin-dir");
        assert_eq!(bin.map(String::from), Some(format!("/host{}", install_cni_default("bin_dir"))));
        let conf = flag_value(container(pod, "cni-conf"), "--conf-dir");
        assert_eq!(conf.map(String::from), Some(format!("/host{}", install_cni_default("conf_dir"))));
        // The ConfigMap is where tapwayd reads it.
        let tapwayd = container(pod, "tapwayd");
        let config = flag_value(tapwayd, "--config").expect("--config");
        let dir_of = Path::new(config).parent().and_then(Path::to_str).expect("config dir");
        assert!(tapwayd
            .volume_mounts
            .iter()
            .flatten()
            .any(|vm| vm.mount_path == dir_of && vm.read_only == Some(true)));
        // No pod-cidr: it comes from the Node. The Service range must be set (docs/kubernetes.md).
        assert!(cfg.pod_cidrs.is_empty(), "{dir}: pod-cidr in the ConfigMap would be the same on every node");
        assert!(!cfg.service_cidrs.is_empty(), "{dir}: service-cidr is needed to replace kube-proxy");
    }
}

#[test]
fn the_daemonset_runs_on_every_node_with_the_documented_privileges() {
    let m = load("deploy");
    let ds = &m.daemon_sets[0];
    let pod = pod_spec(ds);
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("Default"), "the cluster DNS needs tapwayd first");
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-node-critical"));
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()),
        "tolerate every taint: {tolerations:?}"
    );
    let image = format!("localhost/tapway:{}", env!("CARGO_PKG_VERSION"));
    for c in containers(pod) {
        assert_eq!(c.image.as_deref(), Some(image.as_str()), "{}: scripts/image.sh's tag", c.name);
        let sc = c.security_context.as_ref().unwrap_or_else(|| panic!("{}: securityContext", c.name));
        assert_eq!(sc.privileged, None, "{}", c.name);
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]), "{}", c.name);
        let added: Vec<&str> = caps.add.iter().flatten().map(String::as_str).collect();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}: writes go to its mounts", c.name);
        if c.name == "tapwayd" {
            assert_eq!(added, TAPWAYD_CAPS);
        } else {
            assert!(added.is_empty(), "{}: {added:?}", c.name);
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        }
    }
    // The binaries the commands name are where scripts/image.sh puts them.
    let image_sh = read(&root().join("scripts/image.sh"));
    for c in containers(pod) {
        for arg in c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .filter(|a| a.starts_with("/opt/tapway/"))
        {
            let in_image = arg.trim_start_matches('/');
            assert!(image_sh.contains(in_image), "{}: {arg} is not in the image", c.name);
        }
    }
    // The privileged overlay changes nothing but tapwayd's securityContext.
    let p = load("deploy/privileged");
    let tapwayd = container(pod_spec(&p.daemon_sets[0]), "tapwayd");
    assert_eq!(tapwayd.security_context.as_ref().and_then(|s| s.privileged), Some(true));
    let strip = |ds: &DaemonSet| {
        let mut v = serde_json::to_value(ds).expect("serializes");
        v["spec"]["template"]["spec"]["containers"][0]["securityContext"] = Value::Null;
        v
    };
    assert_eq!(strip(&p.daemon_sets[0]), strip(ds));
}

#[test]
fn the_daemonset_flags_env_and_probes_match_the_programs() {
    let m = load("deploy");
    let pod = pod_spec(&m.daemon_sets[0]);
    let tapwayd = container(pod, "tapwayd");
    assert_eq!(tapwayd.command.as_deref(), Some(&["/usr/bin/tapwayd".to_string()][..]));
    flags_exist(tapwayd, &help(&mut Command::new(env!("CARGO_BIN_EXE_tapwayd"))), PENDING_FLAGS);
    let script = root().join("plugin/install-cni.sh");
    let install_help = help(Command::new("sh").arg(&script));
    for name in ["install-cni", "cni-conf"] {
        let c = container(pod, name);
        assert_eq!(c.command.as_ref().map(|v| v[0].as_str()), Some("/opt/tapway/install-cni.sh"));
        flags_exist(c, &install_help, &[]);
    }
    // cni-conf runs `tapwayctl --socket S --json status`.
    let ctl_help = help(&mut Command::new(env!("CARGO_BIN_EXE_tapwayctl")));
    assert!(["--socket", "--json", "status"].iter().all(|w| ctl_help.contains(w)), "{ctl_help}");

    // $NODE_NAME from the downward API (the watcher's default for --node-name).
    let env = tapwayd.env.as_deref().unwrap_or_default();
    let node = env.iter().find(|e| e.name == "NODE_NAME").expect("NODE_NAME");
    let field = node.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str());
    assert_eq!(field, Some("spec.nodeName"));

    // The probes ask tapwayd itself, where --metrics-address listens.
    let metrics: std::net::SocketAddr =
        flag_value(tapwayd, "--metrics-address").expect("--metrics-address").parse().expect("ADDR:PORT");
    let port = i32::from(metrics.port());
    let named = tapwayd.ports.iter().flatten().find(|p| p.container_port == port).expect("declared port");
    assert_eq!(named.host_port, Some(port), "hostNetwork: hostPort = containerPort");
    for (probe, path) in [(&tapwayd.readiness_probe, "/readyz"), (&tapwayd.liveness_probe, "/healthz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap_or_else(|| panic!("{path} probe"));
        assert_eq!(get.path.as_deref(), Some(path));
        // The kubelet asks the pod's IP (the node's) unless `host` says otherwise.
        if !metrics.ip().is_unspecified() {
            assert_eq!(get.host.as_deref(), Some(metrics.ip().to_string().as_str()), "{path}");
        }
        let to_port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n) => {
                tapwayd
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(n))
                    .expect("named port")
                    .container_port
            }
        };
        assert_eq!(to_port, port, "{path}");
    }
    // Every container asks for what it needs.
    for c in containers(pod).filter(|c| !pod.init_containers.iter().flatten().any(|i| i.name == c.name)) {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        assert!(requests.is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")), "{}", c.name);
    }
}
