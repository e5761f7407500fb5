//! Header-name spelling on the wire. hyper writes header names in lowercase unless the
//! response carries a case map, which only its own parser can build. Clients that
//! compare Kong's rate-limit headers byte for byte (`X-RateLimit-Remaining-Minute`,
//! `RateLimit-Reset`, `Retry-After`) get Kong's spelling: each worker parses one
//! synthetic response with those names at start-up and reuses its case map.

use std::cell::RefCell;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Names Kong spells with capitals (rate-limiting's headers).
fn kong_names() -> Vec<String> {
    let mut names = vec![
        "RateLimit-Limit".to_string(),
        "RateLimit-Remaining".to_string(),
        "RateLimit-Reset".to_string(),
        "Retry-After".to_string(),
    ];
    for w in ["Second", "Minute", "Hour", "Day", "Month", "Year"] {
        names.push(format!("X-RateLimit-Limit-{w}"));
        names.push(format!("X-RateLimit-Remaining-{w}"));
    }
    names
}

thread_local! {
    static TEMPLATE: RefCell<Option<http::Extensions>> = const { RefCell::new(None) };
}

/// Builds this thread's case map (call once per worker, inside its runtime and LocalSet).
pub async fn init() {
    let ext = build().await;
    if ext.is_none() {
        tracing::warn!("header case map unavailable: rate-limit headers go out in lowercase");
    }
    TEMPLATE.with(|t| *t.borrow_mut() = ext);
}

async fn build() -> Option<http::Extensions> {
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    let (mut tx, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(client))
        .await
        .ok()?;
    let driver = tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n");
    for n in kong_names() {
        // Two of each: a name may repeat.
        for _ in 0..2 {
            head.push_str(&n);
            head.push_str(": x\r\n");
        }
    }
    head.push_str("\r\n");
    let fake = tokio::task::spawn_local(async move {
        let mut buf = [0u8; 1024];
        let _ = server.read(&mut buf).await;
        let _ = server.write_all(head.as_bytes()).await;
        let _ = server.flush().await;
        server
    });
    let resp = tx.send_request(http::Request::new(Empty::new())).await.ok();
    let _server = fake.await;
    driver.abort();
    Some(resp?.into_parts().0.extensions)
}

/// Adds the case map to a response that carries one of the names it spells.
pub fn apply(headers: &HeaderMap, ext: &mut http::Extensions) {
    const RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
    if !(headers.contains_key(RATELIMIT_LIMIT) || headers.contains_key(http::header::RETRY_AFTER)) {
        return;
    }
    TEMPLATE.with(|t| {
        if let Some(tpl) = t.borrow().as_ref() {
            ext.extend(tpl.clone());
        }
    });
}
