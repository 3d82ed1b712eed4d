//! What the fuzz targets share: a structure-aware model of the frames a TAP hands over
//! ([`frames`]), decoded from fuzz input with `arbitrary`, and the node the `pipeline` target
//! runs them through ([`node`]).

pub mod frames;
pub mod node;

#[cfg(test)]
mod tests {
    //! The hand-made seeds (`seeds.py`) are what they claim: real inputs that each parser
    //! accepts, so the fuzzers start deep.
    use std::path::Path;

    fn seed(target: &str, name: &str) -> Vec<u8> {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target).join(format!("seed-{name}"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run python3 fuzz/seeds.py)", p.display()))
    }

    #[test]
    fn seeds_are_accepted() {
        use tapway_switch::control::state::{ServicesFile, State};
        let state: State = serde_json::from_slice(&seed("state_files", "state")).unwrap();
        assert_eq!(state.ports.len(), 1);
        let services: ServicesFile = serde_json::from_slice(&seed("state_files", "services")).unwrap();
        assert_eq!(services.services.len(), 2);
        let kube = serde_json::from_slice(&seed("kube_import", "fixture")).unwrap();
        assert!(!tapway_kube::import(&kube).unwrap().services.is_empty());
        for n in ["docs-cni-1", "docs-cni-1-runtime", "docs-cni-3-runtime"] {
            let conf = seed("cni_netconf", n);
            tapway_cni::netconf::Loaded::parse(&conf, tapway_cni::env::Command::Add).unwrap();
        }
        for n in ["kubelet", "podman"] {
            let s = String::from_utf8(seed("cni_args", n)).unwrap();
            let args = s.split('\0').next().unwrap();
            tapway_cni::env::CniArgs::parse(args).unwrap();
        }
        for n in ["line-0", "line-1", "line-2"] {
            let line = seed("control_request", n);
            tapway_switch::control::server::parse_request(line.trim_ascii_end()).unwrap();
        }
    }
}
