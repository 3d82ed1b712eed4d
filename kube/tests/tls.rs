//! The watcher against the fake API server over TLS (a kubeconfig with the CA's data and a
//! bearer token), and refused with a wrong token. No root needed: it listens on 127.0.0.1.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tapway_fake_apiserver::FakeApiServer;
use tapway_kube::store::Update;
use tapway_kube::watch::{ServiceSink, Watch, WatchOptions};

#[derive(Default)]
struct Sink(Mutex<Vec<Update>>);

impl ServiceSink for Sink {
    fn apply(&self, update: Update) -> Result<(), String> {
        self.0.lock().map_err(|e| e.to_string())?.push(update);
        Ok(())
    }
}

fn objects(fake: &FakeApiServer) {
    fake.apply_all(vec![
        json!({"kind": "Service", "metadata": {"namespace": "d", "name": "web"},
               "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}),
        json!({"kind": "EndpointSlice", "metadata": {"namespace": "d", "name": "web-1",
                                                     "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "ports": [{"port": 8080}],
               "endpoints": [{"addresses": ["10.244.0.5"]}]}),
        json!({"kind": "Node", "metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.0.0/24"]}}),
    ])
    .unwrap();
}

fn start(fake: &FakeApiServer, tag: &str) -> Arc<Watch> {
    let kc = std::env::temp_dir().join(format!("tapway-kube-tls-{tag}-{}.kubeconfig", std::process::id()));
    fake.write_kubeconfig(&kc).unwrap();
    let w = Watch::start(WatchOptions {
        kubeconfig: Some(kc.clone()),
        node_name: Some("n1".into()),
        window: Duration::from_millis(10),
    })
    .unwrap();
    let _ = std::fs::remove_file(kc);
    w
}

fn wait(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn watch_over_tls_with_a_bearer_token() {
    let fake = FakeApiServer::new();
    objects(&fake);
    fake.serve_tls(TcpListener::bind("127.0.0.1:0").unwrap(), "s3cret").unwrap();
    let w = start(&fake, "ok");
    let sink = Arc::new(Sink::default());
    w.set_sink(sink.clone());
    wait("the first update", || !sink.0.lock().unwrap().is_empty());
    let first = sink.0.lock().unwrap()[0].clone();
    assert!(first.full);
    assert_eq!(first.upserts.len(), 1);
    assert_eq!(first.upserts[0].name, "d/web");
    assert_eq!(first.upserts[0].backends[0].ip.to_string(), "10.244.0.5");
    assert_eq!(w.pod_cidrs(), Some(vec!["10.244.0.0/24".parse().unwrap()]));
    let st = w.status();
    assert!(st.connected && st.server.starts_with("https://127.0.0.1:"), "{st:?}");
    assert_eq!(st.objects["Service"], 1);
    w.stop();
    fake.stop();
}

#[test]
fn a_wrong_token_is_an_error_not_a_crash() {
    let fake = FakeApiServer::new();
    objects(&fake);
    fake.serve_tls(TcpListener::bind("127.0.0.1:0").unwrap(), "right").unwrap();
    let other = FakeApiServer::new();
    other.serve_tls(TcpListener::bind("127.0.0.1:0").unwrap(), "wrong").unwrap();
    // A kubeconfig with the first server's CA and address but the second one's token.
    let kc = std::env::temp_dir().join(format!("tapway-kube-tls-bad-{}.kubeconfig", std::process::id()));
    fake.write_kubeconfig(&kc).unwrap();
    let text = std::fs::read_to_string(&kc).unwrap().replace("token: right", "token: wrong");
    std::fs::write(&kc, text).unwrap();
    let w =
        Watch::start(WatchOptions { kubeconfig: Some(kc.clone()), node_name: None, window: Duration::ZERO })
            .unwrap();
    let _ = std::fs::remove_file(kc);
    wait("the 401 is recorded", || {
        w.status().last_error.is_some_and(|e| e.contains("401") || e.contains("Unauthorized"))
    });
    assert!(!w.status().connected);
    w.stop();
    fake.stop();
    other.stop();
}
