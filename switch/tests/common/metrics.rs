//! Helpers of the metrics tests (`metrics.rs`): a real Prometheus server (Debian's
//! `prometheus` package, installed by scripts/deps.sh) run inside a node namespace, scraping
//! that node's tapwayd, and plain HTTP GETs from inside a namespace.

use std::io::{Read, Write};
use std::process::Child;

use super::*;

/// Where tapwayd serves its metrics inside the node namespace (its own loopback, so the port
/// is free by construction).
pub const METRICS_ADDR: &str = "127.0.0.1:9170";

/// Where the test's Prometheus listens inside the node namespace.
const PROMETHEUS_ADDR: &str = "127.0.0.1:9171";

/// A plain HTTP/1.0 GET of `path` from `addr`, made from inside `ns`; returns (status, body),
/// or `None` when nothing answers (yet).
pub fn http_get(ns: &Netns, addr: &str, path: &str) -> Option<(u16, String)> {
    let (addr, path) = (addr.to_string(), path.to_string());
    ns.enter(move || {
        let mut s = TcpStream::connect(&addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split(' ').nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((status, body))
    })
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server in a node namespace with its own config and storage in a temp dir,
/// scraping tapwayd at [`METRICS_ADDR`] every second. Killed and its dir removed on drop.
pub struct Prometheus<'a> {
    child: Child,
    dir: PathBuf,
    ns: &'a Netns,
}

impl<'a> Prometheus<'a> {
    /// Starts one in `ns` and waits until its API answers.
    pub fn start(ns: &'a Netns) -> Prometheus<'a> {
        let bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("the metrics test needs Prometheus: run scripts/deps.sh (apt-get install prometheus)");
        let dir = std::env::temp_dir().join(unique("prom"));
        std::fs::create_dir_all(dir.join("data")).expect("create the Prometheus dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: tapwayd\n    static_configs:\n      - targets: ['{METRICS_ADDR}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write the Prometheus config");
        let log = File::create(dir.join("prometheus.log")).expect("create the Prometheus log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, bin])
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={PROMETHEUS_ADDR}"))
            .args(["--storage.tsdb.retention.time=1h", "--log.level=warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { child, dir, ns };
        let start = Instant::now();
        while http_get(ns, PROMETHEUS_ADDR, "/-/ready").map(|r| r.0) != Some(200) {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.log());
            }
            assert!(start.elapsed() < Duration::from_secs(60), "prometheus never got ready:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GETs an API path and decodes the JSON answer.
    fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(self.ns, PROMETHEUS_ADDR, path).expect("prometheus answers");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Runs an instant PromQL query; returns each series' labels and value.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let v = self.api(&format!("/api/v1/query?query={}", encode(promql)));
        assert_eq!(v["status"], "success", "{promql}: {v}");
        v["data"]["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// The scrape targets' health (`up`, `down`, `unknown`) and last error.
    pub fn targets(&self) -> Vec<(String, String)> {
        let v = self.api("/api/v1/targets");
        v["data"]["activeTargets"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|t| {
                        (
                            t["health"].as_str().unwrap_or("").to_string(),
                            t["lastError"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls `promql` until `f` accepts its result; panics (with the last result and the
    /// log) after a generous deadline.
    pub fn wait(
        &self,
        promql: &str,
        f: impl Fn(&[(serde_json::Value, f64)]) -> bool,
    ) -> Vec<(serde_json::Value, f64)> {
        let start = Instant::now();
        loop {
            let r = self.query(promql);
            if f(&r) {
                return r;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{promql}: never got there: {r:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}---- end of log ----", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
