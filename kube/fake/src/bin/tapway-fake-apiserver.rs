//! Runs the fake API server until killed: `tapway-fake-apiserver LISTEN KUBECONFIG [OBJECTS.json]`
//! serves the objects of the JSON array (or List) on LISTEN (e.g. 127.0.0.1:0) and writes a
//! kubeconfig naming it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(kubeconfig)) = (args.first(), args.get(1)) else {
        eprintln!("usage: tapway-fake-apiserver LISTEN KUBECONFIG [OBJECTS.json]");
        return ExitCode::from(2);
    };
    let fake = tapway_fake_apiserver::FakeApiServer::new();
    if let Some(file) = args.get(2) {
        let objs = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()));
        let objs = match objs {
            Ok(serde_json::Value::Array(a)) => a,
            Ok(mut v) => v
                .get_mut("items")
                .map(serde_json::Value::take)
                .and_then(|i| i.as_array().cloned())
                .unwrap_or_default(),
            Err(e) => {
                eprintln!("tapway-fake-apiserver: {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = fake.apply_all(objs) {
            eprintln!("tapway-fake-apiserver: {file}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let served = std::net::TcpListener::bind(listen.as_str())
        .and_then(|l| fake.serve(l))
        .map_err(|e| e.to_string())
        .and_then(|a| {
            fake.write_kubeconfig(std::path::Path::new(kubeconfig)).map(|()| a).map_err(|e| e.to_string())
        });
    match served {
        Ok(addr) => println!("serving on http://{addr}"),
        Err(e) => {
            eprintln!("tapway-fake-apiserver: {e}");
            return ExitCode::FAILURE;
        }
    }
    loop {
        std::thread::park();
    }
}
