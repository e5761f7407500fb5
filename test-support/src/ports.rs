//! Free loopback ports and waiting for things to come up.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A free loopback port, never the same twice in this test process (tests run in
/// parallel, and a port released by one could otherwise be handed to another).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&p) {
            given.push(p);
            return p;
        }
    }
}

/// A free port whose Redis cluster bus port (port + 10000) is free too.
pub fn free_cluster_port() -> u16 {
    loop {
        let p = 20_000 + free_port() % 10_000;
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
}

/// Whether something accepts TCP connections on `127.0.0.1:port` within `timeout`.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `f` every 200 ms until it is true; panics after `timeout`.
pub fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}
