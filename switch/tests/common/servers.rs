//! Test servers in pods and their clients (services.rs, hostile_conntrack.rs): a TCP server
//! that greets each connection with the pod's address then echoes, a UDP server that answers
//! `<pod address>:<datagram>`, the client side of both, and the service that puts pods
//! behind a VIP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tapway_api::{Affinity, BackendSpec, Protocol, ServiceKey, ServiceSpec};

use super::{tcp_connect_in, tcp_listen_in, udp_in, Netns, Pod};

/// A server thread in a pod; stopped on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// TCP server on `port` in `pod`: each connection first gets the pod's address and a newline,
/// then every byte it sends is echoed back.
pub fn tcp_server(pod: &Pod, port: u16) -> Server {
    tcp_server_at(pod, &format!("0.0.0.0:{port}"))
}

/// [`tcp_server`] on a given bind address (e.g. `[::]:8080` for both families).
pub fn tcp_server_at(pod: &Pod, bind: &str) -> Server {
    let listener = tcp_listen_in(&pod.ns, bind);
    listener.set_nonblocking(true).expect("nonblocking listener");
    let me = pod.ip.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let (me, flag) = (me.clone(), flag.clone());
            std::thread::spawn(move || {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                if conn.write_all(format!("{me}\n").as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) if conn.write_all(&buf[..n]).is_err() => return,
                        Ok(_) => {}
                        Err(_) if flag.load(Ordering::SeqCst) => return,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => return,
                    }
                }
            });
        }
    });
    Server { stop, handle: Some(handle) }
}

/// UDP server on `port` in `pod`: answers each datagram with `<pod address>:<datagram>`.
pub fn udp_server(pod: &Pod, port: u16) -> Server {
    let sock = udp_in(&pod.ns, &format!("0.0.0.0:{port}"));
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let me = pod.ip.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !flag.load(Ordering::SeqCst) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let mut reply = format!("{me}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&reply, from);
            }
        }
    });
    Server { stop, handle: Some(handle) }
}

/// Connects from `client` to `addr` and returns the backend's greeting (its address), keeping
/// the connection open for more.
pub fn tcp_hello(client: &Pod, addr: &str) -> (String, BufReader<TcpStream>) {
    tcp_hello_from(&client.ns, addr)
}

/// [`tcp_hello`] from any namespace.
pub fn tcp_hello_from(ns: &Netns, addr: &str) -> (String, BufReader<TcpStream>) {
    let conn = tcp_connect_in(ns, addr);
    let peer = conn.peer_addr().expect("peer address");
    assert_eq!(peer.to_string(), addr, "the client talks to the VIP");
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).unwrap_or_else(|e| panic!("greeting from {addr}: {e}"));
    (line.trim().to_string(), r)
}

/// Sends a line on an open connection and checks it comes back; an error if the connection
/// fails or closes first.
pub fn echo(conn: &mut BufReader<TcpStream>, text: &str) -> std::io::Result<()> {
    conn.get_mut().write_all(format!("{text}\n").as_bytes())?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    assert_eq!(line.trim(), text, "echo through the VIP");
    Ok(())
}

/// Service `vip`:`port` over `backends` on their port `target`, no affinity.
pub fn spec(vip: &str, port: u16, protocol: Protocol, backends: &[&Pod], target: u16) -> ServiceSpec {
    ServiceSpec {
        name: format!("test/{vip}"),
        key: ServiceKey { vip: vip.parse().expect("vip"), port, protocol },
        affinity: Affinity::None,
        backends: backends.iter().map(|p| BackendSpec::ready(p.ip.into(), target)).collect(),
    }
}
