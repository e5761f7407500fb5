//! proxy-cache (memory strategy) against the real binary and an upstream written here
//! that counts the requests it answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::*;

/// An HTTP/1.1 upstream on `port` answering by path:
/// `/json` (200 application/json), `/text` (200 text/plain), `/html` (text/html),
/// `/status/<code>` (that status, JSON), `/nostore` (JSON with `Cache-Control:
/// no-store`), `/maxage` (JSON with `max-age=60`), `/private` (JSON, `private`). Every
/// answer carries the request count in `x-count` and in its body, two Set-Cookie headers
/// and an `x-up` header.
fn counting_upstream(port: u16) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind upstream");
    let c = count.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut w = match s.try_clone() {
                    Ok(w) => w,
                    Err(_) => return,
                };
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut it = line.split_whitespace();
                    let method = it.next().unwrap_or("").to_string();
                    let target = it.next().unwrap_or("/").to_string();
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" || h == "\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    let path = target.split('?').next().unwrap_or("/").to_string();
                    let (status, ctype, extra) = match path.as_str() {
                        "/text" => (200, "text/plain", ""),
                        "/html" => (200, "text/html", ""),
                        "/nostore" => (200, "application/json", "Cache-Control: no-store\r\n"),
                        "/maxage" => (200, "application/json", "Cache-Control: max-age=60\r\n"),
                        "/private" => (
                            200,
                            "application/json",
                            "Cache-Control: private, max-age=60\r\n",
                        ),
                        p if p.starts_with("/status/") => (
                            p.trim_start_matches("/status/").parse().unwrap_or(500),
                            "application/json",
                            "",
                        ),
                        _ => (200, "application/json", ""),
                    };
                    let out = format!("{{\"n\":{n},\"target\":\"{target}\"}}");
                    let out = if method == "HEAD" { String::new() } else { out };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nx-count: {n}\r\nx-up: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n{extra}\r\n{out}",
                        out.len()
                    );
                    if w.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    assert!(wait_port(port, Duration::from_secs(5)));
    count
}

const ROUTE_ID: &str = "6c7a1b0e-3f1d-4a53-9d0e-8f3c2b1a0d11";

fn config(up: u16) -> String {
    format!(
        r#"_format_version: "3.0"
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: cache
    id: {ROUTE_ID}
    paths: [/cache]
    plugins:
    - name: proxy-cache
      config: {{strategy: memory}}
  - name: ttl
    paths: [/ttl]
    plugins:
    - name: proxy-cache
      config: {{strategy: memory, cache_ttl: 1}}
  - name: refresh
    paths: [/refresh]
    plugins:
    - name: proxy-cache
      config: {{strategy: memory, cache_ttl: 1, storage_ttl: 30}}
  - name: cc
    paths: [/cc]
    plugins:
    - name: proxy-cache
      config: {{strategy: memory, cache_control: true}}
  - name: quiet
    paths: [/quiet]
    plugins:
    - name: proxy-cache
      config:
        strategy: memory
        content_type: [text/html]
        response_headers: {{age: false, X-Cache-Status: false, X-Cache-Key: false}}
"#
    )
}

async fn send(c: &reqwest::Client, method: &str, url: &str, headers: &[(&str, &str)]) -> Got {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = c.request(m, url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.expect("request");
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap_or_default(),
    }
}

fn sha256_hex(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn miss_then_hit_with_the_same_answer_and_kongs_key() {
    let up = free_port();
    let count = counting_upstream(up);
    let gw = gateway(&config(up));
    let c = client();
    let url = gw.url("/cache/json?b=2&a=1");

    let first = send(&c, "GET", &url, &[]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.h("x-cache-status"), "Miss");
    // Kong's key: route id, method, request line cut at `?`, sorted arguments.
    let key = sha256_hex(&format!("{ROUTE_ID}|GET|GET /cache/json|a=1:b=2|"));
    assert_eq!(first.h("x-cache-key"), key);
    assert!(first.headers.get("age").is_none());
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let hit = send(&c, "GET", &url, &[]).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.h("x-cache-status"), "Hit");
    assert_eq!(hit.h("x-cache-key"), key);
    assert_eq!(hit.body, first.body, "the cached body");
    assert!(
        hit.h("age").parse::<u64>().is_ok(),
        "age: {:?}",
        hit.h("age")
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "a hit does not reach the upstream"
    );
    // The upstream's headers come back as they were, every value of a repeated one.
    for name in ["content-type", "x-count", "x-up"] {
        assert_eq!(hit.h(name), first.h(name), "{name}");
    }
    let cookies: Vec<&str> = hit
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(cookies, vec!["a=1", "b=2"]);
    // A hit looks proxied, as in Kong.
    assert!(hit.h("x-kong-proxy-latency").parse::<u64>().is_ok());
    assert!(hit.h("x-kong-upstream-latency").parse::<u64>().is_ok());
    assert!(hit.headers.get("x-kong-response-latency").is_none());
    assert!(
        hit.h("via").starts_with("1.1 gateway/"),
        "{:?}",
        hit.h("via")
    );
    assert_ne!(hit.h("x-kong-request-id"), first.h("x-kong-request-id"));

    // Argument order does not matter; other arguments are another key.
    let same = send(&c, "GET", &gw.url("/cache/json?a=1&b=2"), &[]).await;
    assert_eq!(same.h("x-cache-status"), "Hit");
    let other = send(&c, "GET", &gw.url("/cache/json?a=2"), &[]).await;
    assert_eq!(other.h("x-cache-status"), "Miss");
    // Without a query string the key holds the whole request line (Kong's quirk).
    let bare = send(&c, "GET", &gw.url("/cache/json"), &[]).await;
    assert_eq!(
        bare.h("x-cache-key"),
        sha256_hex(&format!("{ROUTE_ID}|GET|GET /cache/json HTTP/1.1||"))
    );
    // HEAD is cached separately.
    let head = send(&c, "HEAD", &url, &[]).await;
    assert_eq!(head.h("x-cache-status"), "Miss");
    let head = send(&c, "HEAD", &url, &[]).await;
    assert_eq!(head.h("x-cache-status"), "Hit");
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn bypass_for_uncacheable_method_status_and_type() {
    let up = free_port();
    let count = counting_upstream(up);
    let gw = gateway(&config(up));
    let c = client();

    for _ in 0..2 {
        let post = send(&c, "POST", &gw.url("/cache/json"), &[]).await;
        assert_eq!(post.status, 200);
        assert_eq!(post.h("x-cache-status"), "Bypass");
        assert!(post.headers.get("x-cache-key").is_none());
    }
    for _ in 0..2 {
        let html = send(&c, "GET", &gw.url("/cache/html"), &[]).await;
        assert_eq!(html.h("x-cache-status"), "Bypass");
        assert!(html.h("x-cache-key").len() == 64);
        let err = send(&c, "GET", &gw.url("/cache/status/500"), &[]).await;
        assert_eq!(err.status, 500);
        assert_eq!(err.h("x-cache-status"), "Bypass");
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        6,
        "nothing was served from the cache"
    );
    // 404 is cacheable by default; text/plain too.
    assert_eq!(
        send(&c, "GET", &gw.url("/cache/status/404"), &[])
            .await
            .h("x-cache-status"),
        "Miss"
    );
    let nf = send(&c, "GET", &gw.url("/cache/status/404"), &[]).await;
    assert_eq!((nf.status, nf.h("x-cache-status")), (404, "Hit"));
    assert_eq!(
        send(&c, "GET", &gw.url("/cache/text"), &[])
            .await
            .h("x-cache-status"),
        "Miss"
    );
    assert_eq!(
        send(&c, "GET", &gw.url("/cache/text"), &[])
            .await
            .h("x-cache-status"),
        "Hit"
    );
    // The diagnostic headers can be turned off; Kong-Debug brings them back.
    let q = send(&c, "GET", &gw.url("/quiet/html"), &[]).await;
    assert!(q.headers.get("x-cache-status").is_none() && q.headers.get("x-cache-key").is_none());
    let q = send(&c, "GET", &gw.url("/quiet/html"), &[]).await;
    assert!(q.headers.get("x-cache-status").is_none() && q.headers.get("age").is_none());
    assert_eq!(q.h("x-count"), "9", "served from the cache: {}", q.body);
    let d = send(&c, "GET", &gw.url("/quiet/html"), &[("kong-debug", "1")]).await;
    assert_eq!(d.h("x-cache-status"), "Hit");
    assert!(d.headers.get("age").is_some());
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn ttl_expiry_and_refresh() {
    let up = free_port();
    let count = counting_upstream(up);
    let gw = gateway(&config(up));
    let c = client();

    assert_eq!(
        send(&c, "GET", &gw.url("/ttl/json"), &[])
            .await
            .h("x-cache-status"),
        "Miss"
    );
    assert_eq!(
        send(&c, "GET", &gw.url("/ttl/json"), &[])
            .await
            .h("x-cache-status"),
        "Hit"
    );
    assert_eq!(
        send(&c, "GET", &gw.url("/refresh/json"), &[])
            .await
            .h("x-cache-status"),
        "Miss"
    );
    assert_eq!(
        send(&c, "GET", &gw.url("/refresh/json"), &[])
            .await
            .h("x-cache-status"),
        "Hit"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Stored for cache_ttl: gone.
    let t = send(&c, "GET", &gw.url("/ttl/json"), &[]).await;
    assert_eq!(t.h("x-cache-status"), "Miss");
    // Stored for storage_ttl but older than cache_ttl: fetched again.
    let r = send(&c, "GET", &gw.url("/refresh/json"), &[]).await;
    assert_eq!(r.h("x-cache-status"), "Refresh");
    let r2 = send(&c, "GET", &gw.url("/refresh/json"), &[]).await;
    assert_eq!(r2.h("x-cache-status"), "Hit");
    assert_eq!(r2.body, r.body);
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn cache_control_is_respected_when_enabled() {
    let up = free_port();
    let count = counting_upstream(up);
    let gw = gateway(&config(up));
    let c = client();

    // The response's max-age makes it cacheable.
    assert_eq!(
        send(&c, "GET", &gw.url("/cc/maxage"), &[])
            .await
            .h("x-cache-status"),
        "Miss"
    );
    assert_eq!(
        send(&c, "GET", &gw.url("/cc/maxage"), &[])
            .await
            .h("x-cache-status"),
        "Hit"
    );
    // The request's no-store / no-cache: not from the cache.
    let ns = send(
        &c,
        "GET",
        &gw.url("/cc/maxage"),
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(ns.h("x-cache-status"), "Bypass");
    let nc = send(
        &c,
        "GET",
        &gw.url("/cc/maxage"),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(nc.h("x-cache-status"), "Bypass");
    // Responses with no-store, private, or without a lifetime are not stored.
    for path in ["/cc/nostore", "/cc/private", "/cc/json"] {
        for _ in 0..2 {
            let r = send(&c, "GET", &gw.url(path), &[]).await;
            assert_eq!(r.h("x-cache-status"), "Bypass", "{path}");
        }
    }
    assert_eq!(count.load(Ordering::SeqCst), 9);
    // only-if-cached with nothing cached: 504.
    let oic = send(
        &c,
        "GET",
        &gw.url("/cc/text?x=1"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(oic.status, 504);
    // The same path without cache_control would be cached despite no-store.
    assert_eq!(
        send(&c, "GET", &gw.url("/cache/nostore"), &[])
            .await
            .h("x-cache-status"),
        "Miss"
    );
    assert_eq!(
        send(&c, "GET", &gw.url("/cache/nostore"), &[])
            .await
            .h("x-cache-status"),
        "Hit"
    );
}
