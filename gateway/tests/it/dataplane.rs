//! The data path as clients and upstreams see it on the wire: framing defence, pipelining,
//! deadlines, hop-by-hop headers, upgrades, streamed bodies, `Expect: 100-continue`,
//! HTTP/1.0, keep-alive on both sides and upstream connection reuse.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

fn config(up: u16) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: all\n    paths: [/]\n"
    )
}

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Sends `req` and reads until the gateway closes (true) or 3 s pass (false).
fn exchange_until_close(port: u16, req: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.write_all(req).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).to_string(), closed)
}

/// An upstream written for one test: each connection handed to `serve` on its own
/// thread; counts connections.
struct ScriptedUpstream {
    port: u16,
    connections: Arc<AtomicUsize>,
}

fn scripted_upstream(serve: fn(TcpStream)) -> ScriptedUpstream {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let n = connections.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            n.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve(s));
        }
    });
    ScriptedUpstream { port, connections }
}

/// Reads one request head (lines up to the empty one), lowercased.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            return Some(head.to_ascii_lowercase());
        }
        head.push_str(&line);
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn bad_framing_is_refused_closed_and_never_forwarded() {
    let up = scripted_upstream(|s| {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        while let Some(head) = read_head(&mut r) {
            let mut body = vec![0u8; content_length(&head)];
            let _ = r.read_exact(&mut body);
            let _ = (&s).write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nupstream");
        }
    });
    let gw = gateway(&config(up.port));
    let cases: &[(&str, &[u8])] = &[
        ("CL then TE", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE then CL", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ("equal duplicate CL", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ("invalid CL", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello"),
        ("TE not chunked", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
        ("TE chunked not alone", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("TE on HTTP/1.0", b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("bare LF", b"GET /a HTTP/1.1\nHost: x\n\n"),
        ("bare CR", b"GET /a HTTP/1.1\r\nHost: x\rX: y\r\n\r\n"),
        ("NUL in a value", b"GET /a HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n"),
        ("obsolete folding", b"GET /a HTTP/1.1\r\nHost: x\r\nX: a\r\n  b\r\n\r\n"),
        ("control char in chunk extension", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\x01\r\nhello\r\n0\r\n\r\n"),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("fragment in target", b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("HTTP/1.1 without Host", b"GET /a HTTP/1.1\r\nAccept: */*\r\n\r\n"),
    ];
    for (name, req) in cases {
        // A second, valid request follows in the same write: it must not be served.
        let mut bytes = req.to_vec();
        bytes.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
        let (resp, closed) = exchange_until_close(gw.port, &bytes);
        assert_eq!(status_of(&resp), 400, "{name}: {resp}");
        assert!(!resp.contains("upstream"), "{name} was forwarded: {resp}");
        assert!(closed, "{name}: connection left open");
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{name}: {resp}");
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        0,
        "upstream was reached"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up));
    let (resp, _) = exchange_until_close(
        gw.port,
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let one = resp.find("\"path\":\"/one\"").expect("one answered");
    let two = resp.find("\"path\":\"/two\"").expect("two answered");
    let three = resp.find("\"path\":\"/three\"").expect("three answered");
    assert!(one < two && two < three, "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 3, "{resp}");
}

#[test]
fn slowloris_is_cut_off_at_the_header_deadline() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway_with(
        &config(up),
        GwOpts {
            extra: vec!["--header-timeout".into(), "2".into()],
            tls: None,
        },
    );
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let t0 = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let mut closed_at = None;
    for i in 0..8 {
        // One header line per second, never the end of the head.
        std::thread::sleep(Duration::from_millis(800));
        let line = format!("x-slow-{i}: 1\r\n");
        let wrote = s.write_all(line.as_bytes()).is_ok();
        let mut buf = [0u8; 64];
        let eof = matches!(s.read(&mut buf), Ok(0))
            || matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        if !wrote || eof {
            closed_at = Some(t0.elapsed());
            break;
        }
    }
    let at = closed_at.expect("slowloris connection was never closed");
    assert!(at < Duration::from_secs(4), "closed after {at:?}");
    // A connection that sends nothing at all is closed at the same deadline.
    let mut idle = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let r = idle.read(&mut buf);
    assert!(matches!(r, Ok(0)) || r.is_err(), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

#[test]
fn hop_by_hop_headers_are_removed_both_ways() {
    let up = scripted_upstream(|s| {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        while let Some(head) = read_head(&mut r) {
            // The request head as received, back in the body.
            let resp = format!(
                "HTTP/1.1 200 OK\r\nConnection: x-up-private\r\nX-Up-Private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: x-t\r\nUpgrade: h2c\r\nX-Up-Kept: yes\r\ncontent-length: {}\r\n\r\n{head}",
                head.len()
            );
            let _ = (&s).write_all(resp.as_bytes());
        }
    });
    let gw = gateway(&config(up.port));
    let (resp, _) = exchange_until_close(
        gw.port,
        b"GET /h HTTP/1.1\r\nHost: x\r\nConnection: close, x-client-private\r\nX-Client-Private: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nProxy: http://evil\r\nTE: trailers\r\nTrailer: x-t\r\nUpgrade: h2c\r\nX-Client-Kept: yes\r\n\r\n",
    );
    let (head, body) = resp.split_once("\r\n\r\n").expect("response");
    let head = head.to_ascii_lowercase();
    for gone in [
        "x-client-private",
        "keep-alive",
        "proxy-connection",
        "proxy:",
        "te:",
        "trailer",
        "upgrade",
    ] {
        assert!(!body.contains(gone), "upstream got {gone}: {body}");
    }
    assert!(body.contains("x-client-kept: yes"), "{body}");
    for gone in [
        "x-up-private",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(!head.contains(gone), "client got {gone}: {head}");
    }
    assert!(head.contains("x-up-kept: yes"), "{head}");
}

#[test]
fn websocket_upgrade_passes_bytes_both_ways() {
    let up = scripted_upstream(|s| {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let Some(head) = read_head(&mut r) else {
            return;
        };
        assert!(head.contains("upgrade: websocket"), "{head}");
        let mut w = s;
        let _ = w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n");
        // Echo every byte, upper-cased, until the client closes.
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let up: Vec<u8> = buf[..n].to_ascii_uppercase();
                    if w.write_all(&up).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let gw = gateway(&config(up.port));
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").expect("write");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut status = String::new();
    r.read_line(&mut status).expect("status line");
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    let head = read_head(&mut r).expect("head");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in ["hello", "again"] {
        s.write_all(msg.as_bytes()).expect("send");
        let mut got = vec![0u8; msg.len()];
        r.read_exact(&mut got).expect("echo");
        assert_eq!(got, msg.to_ascii_uppercase().as_bytes());
    }
    // The tunnel is not subject to the keep-alive or header deadlines' framing.
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"late").expect("send");
    let mut got = [0u8; 4];
    r.read_exact(&mut got).expect("echo");
    assert_eq!(&got, b"LATE");
}

#[test]
fn expect_continue_http10_and_connection_close() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up));
    // Expect: 100-continue: the interim response comes before the body is sent.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.write_all(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").expect("write");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("interim response");
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(first.starts_with("HTTP/1.1 100"), "{first}");
    s.write_all(b"hello").expect("body");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest).to_string();
    let all = format!("{first}{rest}");
    assert!(all.contains("HTTP/1.1 200"), "{all}");
    assert!(all.contains("\"body\":\"hello\""), "{all}");

    // HTTP/1.0: answered, then closed.
    let (resp, closed) = exchange_until_close(gw.port, b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.contains("\"path\":\"/old\""), "{resp}");
    assert!(closed, "HTTP/1.0 connection left open");

    // Keep-alive: two requests on one connection, then Connection: close closes it.
    let (resp, closed) = exchange_until_close(
        gw.port,
        b"GET /k1 HTTP/1.1\r\nHost: x\r\n\r\nGET /k2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "{resp}");
    assert!(closed);
}

#[test]
fn upstream_connection_close_is_honoured_and_pooled_connections_are_reused() {
    // The upstream closes after every response that asks it to.
    let closing = scripted_upstream(|s| {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        if read_head(&mut r).is_some() {
            let _ = (&s)
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    let gw = gateway(&config(closing.port));
    for _ in 0..5 {
        let (resp, _) = exchange_until_close(
            gw.port,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status_of(&resp), 200, "{resp}");
    }
    assert_eq!(closing.connections.load(Ordering::SeqCst), 5);

    // A keep-alive upstream: connections stay at the concurrency, not the request count.
    let keep = scripted_upstream(|s| {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        while let Some(head) = read_head(&mut r) {
            let mut body = vec![0u8; content_length(&head)];
            let _ = r.read_exact(&mut body);
            if (&s)
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .is_err()
            {
                break;
            }
        }
    });
    let gw = gateway(&config(keep.port));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = client();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let c = c.clone();
            let url = gw.url("/");
            tasks.push(tokio::spawn(async move {
                for _ in 0..100 {
                    let r = c.get(&url).send().await.expect("request");
                    assert_eq!(r.status().as_u16(), 200);
                    let _ = r.bytes().await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
    let n = keep.connections.load(Ordering::SeqCst);
    // 4 clients, 2 workers: at most a pool of 4 per worker.
    assert!(n <= 8, "{n} upstream connections for 400 requests");
}

#[test]
fn large_bodies_stream_with_bounded_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    // Counts what it receives; answers /down with SIZE bytes, in 64 KiB writes.
    let up = scripted_upstream(|s| {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        while let Some(head) = read_head(&mut r) {
            let mut w = &s;
            if head.starts_with("get /down") {
                let _ = w.write_all(
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n").as_bytes(),
                );
                let chunk = vec![b'd'; 64 * 1024];
                for _ in 0..SIZE / chunk.len() {
                    if w.write_all(&chunk).is_err() {
                        return;
                    }
                }
            } else {
                let mut left = content_length(&head);
                let mut buf = vec![0u8; 64 * 1024];
                while left > 0 {
                    match r.read(&mut buf[..left.min(64 * 1024)]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => left -= n,
                    }
                }
                let msg = format!("{}", content_length(&head));
                let _ = w.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{msg}",
                        msg.len()
                    )
                    .as_bytes(),
                );
            }
        }
    });
    let gw = gateway_with(
        &config(up.port),
        GwOpts {
            extra: vec!["--max-body-size".into(), (2 * SIZE).to_string()],
            tls: None,
        },
    );
    // Upload.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(
        format!(
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("head");
    let chunk = vec![b'u'; 256 * 1024];
    for _ in 0..SIZE / chunk.len() {
        s.write_all(&chunk).expect("upload");
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with(&SIZE.to_string()), "{resp}");
    // Download.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(b"GET /down HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("head");
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(total > SIZE, "{total} bytes");
    // Neither body was held in memory.
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.proc.child.id()))
        .expect("proc status");
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    assert!(hwm_kb < 80 * 1024, "peak RSS {hwm_kb} kB");
}

#[test]
fn server_sent_events_reach_the_client_as_flushed() {
    let up = scripted_upstream(|s| {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        if read_head(&mut r).is_none() {
            return;
        }
        let mut w = &s;
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
        for i in 0..3 {
            let ev = format!("data: event {i}\n\n");
            let _ = w.write_all(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes());
            let _ = w.flush();
            std::thread::sleep(Duration::from_millis(600));
        }
        let _ = w.write_all(b"0\r\n\r\n");
    });
    let gw = gateway(&config(up.port));
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let t0 = Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains("event 0") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // The first event arrived before the upstream sent the second.
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert!(!seen.contains("event 1"), "{seen}");
}
