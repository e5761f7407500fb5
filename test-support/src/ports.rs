//! Free loopback ports and waiting for things to come up.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Every port this test process has handed out (tests run in parallel, and a port
/// released by one could otherwise be handed to another).
static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// Records `ports` as given if none of them was given before.
fn claim(ports: &[u16]) -> bool {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    if ports.iter().any(|p| given.contains(p)) {
        return false;
    }
    given.extend_from_slice(ports);
    true
}

/// A free loopback port, never the same twice in this test process.
pub fn free_port() -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        if claim(&[p]) {
            return p;
        }
    }
}

/// A free port whose Redis cluster bus port (port + 10000) is free too; both are claimed
/// like `free_port`'s, so two clusters started by parallel tests never share a node (a
/// shared node mixes their keys) and no other test is handed a bus port.
pub fn free_cluster_port() -> u16 {
    let mut seed = free_port();
    loop {
        let p = 20_000 + seed % 10_000;
        seed = seed.wrapping_add(7);
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
            && claim(&[p, p + 10_000])
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn cluster_ports_and_their_bus_ports_are_never_handed_out_twice() {
        let mut seen = HashSet::new();
        for _ in 0..40 {
            let p = free_cluster_port();
            assert!(seen.insert(p) && seen.insert(p + 10_000), "{p} twice");
            for _ in 0..3 {
                let q = free_port();
                assert!(seen.insert(q), "{q} twice");
            }
        }
    }
}
