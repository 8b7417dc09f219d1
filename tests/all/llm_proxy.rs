//! A TCP proxy in front of phi-zoo's server that injects transport faults: the first
//! connections are dropped before a reply or answered 503 (a server under load), later ones are
//! passed through; or every reply is replaced by a malformed one. The data stages' clients are
//! tested through it against the real server, never a mock of the API.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What the proxy does to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Read the request, then close without a reply.
    Drop,
    /// Answer `503 Service Unavailable`.
    Unavailable,
    /// Answer `200` with a body that is not JSON.
    Garbage,
    /// Pass the connection through to the server.
    Pass,
}

/// A running proxy.
pub struct FaultProxy {
    addr: SocketAddr,
    /// Connections accepted, by fault: drop, 503, garbage, pass.
    pub counts: Arc<[AtomicUsize; 4]>,
}

impl FaultProxy {
    /// Proxies to `upstream`; connection `n` (0-based) gets `plan(n)`.
    pub fn start(upstream: SocketAddr, plan: impl Fn(usize) -> Fault + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
        let seen = counts.clone();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                let fault = plan(n);
                let slot = match fault {
                    Fault::Drop => 0,
                    Fault::Unavailable => 1,
                    Fault::Garbage => 2,
                    Fault::Pass => 3,
                };
                seen[slot].fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || handle(client, upstream, fault));
            }
        });
        Self { addr, counts }
    }

    /// The base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections that got `fault`.
    pub fn count(&self, fault: Fault) -> usize {
        let slot = [Fault::Drop, Fault::Unavailable, Fault::Garbage, Fault::Pass]
            .iter()
            .position(|f| *f == fault)
            .unwrap();
        self.counts[slot].load(Ordering::SeqCst)
    }
}

fn handle(mut client: TcpStream, upstream: SocketAddr, fault: Fault) {
    let answer = |client: &mut TcpStream, status: &str, body: &str| {
        read_request(client);
        let _ = write!(
            client,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
    };
    match fault {
        Fault::Drop => {
            read_request(&mut client);
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::Unavailable => answer(&mut client, "503 Service Unavailable", "{}"),
        Fault::Garbage => answer(&mut client, "200 OK", "<html>not json"),
        Fault::Pass => {
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = std::thread::spawn(move || pipe(&mut c2, &mut s2));
            let (mut c, mut s) = (client, server);
            pipe(&mut s, &mut c);
            let _ = up.join();
        }
    }
}

/// Reads one request's head and body (by Content-Length).
fn read_request(client: &mut TcpStream) {
    client.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let Ok(n) = client.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return;
            }
        }
    }
}

fn pipe(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
