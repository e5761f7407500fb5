//! Container health probe for images without a shell or curl.
//!
//! `healthcheck http://127.0.0.1:8100/health [TIMEOUT_SECS]` sends one HTTP/1.0 GET and
//! exits 0 when the answer is 2xx, 1 otherwise (refused, timed out, other status).
//! Docker's `HEALTHCHECK CMD` and ECS's container `healthCheck` run it in exec form.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    match probe() {
        Ok(status) => {
            println!("healthcheck: {status}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: healthcheck http://HOST:PORT/PATH [TIMEOUT_SECS]")?;
    let secs: u64 = match args.next() {
        Some(s) => s.parse().map_err(|_| format!("bad timeout {s:?}"))?,
        None => 3,
    };
    let timeout = Duration::from_secs(secs.max(1));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut conn =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: healthcheck\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("{url}: {e}"))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = conn.read(&mut buf).map_err(|e| format!("{url}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(format!("{url}: status {status}"))
    }
}
