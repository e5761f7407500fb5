//! TLS by rustls on the proxy listener, with HTTP/2 negotiated by ALPN.

use crate::harness::*;

#[tokio::test]
async fn tls_listener_speaks_http2() {
    let up = free_port();
    let _u = upstream(up);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let gw = gateway_with(
        &format!(
            "_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: all\n    paths: [/]\n    protocols: [https]\n"
        ),
        GwOpts {
            extra: vec![],
            tls: Some((cert.cert.pem(), cert.signing_key.serialize_pem())),
        },
    );
    let tls_port = gw.tls_port.expect("tls port");
    let c = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let r = c
        .get(format!("https://localhost:{tls_port}/hello"))
        .send()
        .await
        .expect("https request");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    // The https-only route refuses plain HTTP with Kong's 426.
    let r = client()
        .get(gw.url("/hello"))
        .send()
        .await
        .expect("http request");
    assert_eq!(r.status().as_u16(), 426);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["message"], "Please use HTTPS protocol");
}

#[tokio::test]
async fn https_routes_match_the_tls_server_name() {
    let up = free_port();
    let _u = upstream(up);
    let cert = rcgen::generate_simple_self_signed(vec![
        "a.example.com".to_string(),
        "x.b.example.com".to_string(),
    ])
    .expect("cert");
    let gw = gateway_with(
        &format!(
            "_format_version: \"3.0\"
services:
- name: a
  url: http://127.0.0.1:{up}/a
  routes:
  - name: a
    paths: [/]
    protocols: [https]
    snis: [a.example.com]
- name: b
  url: http://127.0.0.1:{up}/b
  routes:
  - name: b
    paths: [/]
    protocols: [https]
    snis: [\"*.b.example.com\"]
"
        ),
        GwOpts {
            extra: vec![],
            tls: Some((cert.cert.pem(), cert.signing_key.serialize_pem())),
        },
    );
    let tls_port = gw.tls_port.expect("tls port");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().expect("addr");
    let get = |name: &'static str| async move {
        let c = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .resolve(name, addr)
            .build()
            .expect("client");
        let r = c
            .get(format!("https://{name}:{tls_port}/x"))
            .send()
            .await
            .expect("https request");
        let s = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        (s, v["path"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(get("a.example.com").await, (200, "/a/x".to_string()));
    assert_eq!(get("x.b.example.com").await, (200, "/b/x".to_string()));
    // A server name no route lists: Kong's 404.
    assert_eq!(get("c.example.com").await.0, 404);
}
