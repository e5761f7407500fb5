//! Findings of the security review, each shown failing: identity headers (consumer and
//! jwt claim headers) come only from the gateway, URI templates cannot climb out of their
//! directory, blocked clients cannot flood the log.

use crate::harness::*;

fn config(up: u16) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
services:
- name: svc
  url: http://127.0.0.1:{up}
  routes:
  - name: login
    paths: [/auth/login]
    strip_path: false
    plugins:
    - name: request-transformer
      config:
        add: {{headers: ["x-name:$(headers.x_consumer_username)"]}}
        rename: {{headers: ["x-user-tier:x-tier-copy"]}}
  - name: protected
    paths: [/api]
    plugins:
    - name: jwt
      config:
        claims_to_headers: {{sub: X-User-ID, tier: X-User-Tier}}
  - name: keyed
    paths: [/keyed]
    plugins:
    - name: key-auth
    - name: request-transformer
      config:
        add: {{headers: ["x-name:$(headers.x_consumer_username)"]}}
"#
    )
}

#[tokio::test]
async fn client_copies_of_identity_headers_never_reach_upstreams_or_templates() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up));
    let c = client();
    // A route without auth: forged identity headers are dropped, templates see nothing.
    let r = c
        .get(gw.url("/auth/login"))
        .header("X-User-ID", "admin")
        .header("X-User-Tier", "enterprise")
        .header("X-Consumer-Username", "root")
        .header("X-Consumer-ID", "00000000-0000-0000-0000-000000000000")
        .header("X-Credential-Identifier", "forged")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    let h = &v["headers"];
    for forged in [
        "x-user-id",
        "x-user-tier",
        "x-tier-copy",
        "x-consumer-username",
        "x-consumer-id",
        "x-credential-identifier",
    ] {
        assert!(
            h.get(forged).is_none(),
            "{forged} reached the upstream: {h}"
        );
    }
    assert_ne!(
        h["x-name"], "root",
        "template read the client's header: {h}"
    );

    // With key-auth: the template sees the authenticated consumer, not the client's copy.
    let r = c
        .get(gw.url("/keyed"))
        .header("apikey", "alice-key")
        .header("X-Consumer-Username", "root")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["headers"]["x-name"], "alice", "{}", v["headers"]);
    assert_eq!(v["headers"]["x-consumer-username"], "alice");
}

#[tokio::test]
async fn uri_templates_cannot_climb_out_of_their_directory() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&format!(
        r#"_format_version: "3.0"
services:
- name: svc
  url: http://127.0.0.1:{up}
  routes:
  - name: users
    paths: [/users]
    plugins:
    - name: request-transformer
      config:
        replace: {{uri: "/users/$(query_params.id)"}}
"#
    ));
    let c = client();
    let (s, v) = get_json(&c, &gw.url("/users?id=42")).await;
    assert_eq!(s, 200);
    assert_eq!(v["path"], "/users/42");
    // A value cannot add segments: `/` stays encoded inside the one segment.
    let (s, v) = get_json(&c, &gw.url("/users?id=a%2Fb")).await;
    assert_eq!(s, 200);
    assert_eq!(v["path"], "/users/a%2Fb", "{v}");
    // Nor climb: `..` (plain or encoded) is refused, never forwarded.
    for id in ["..", "../admin", "%2E%2E", "..%2Fadmin", "%2E%2E%2Fadmin"] {
        let (s, v) = get_json(&c, &gw.url(&format!("/users?id={id}"))).await;
        assert!(
            s == 400
                || v["path"].as_str().is_some_and(
                    |p| p.starts_with("/users/") && !p.split('/').any(|seg| seg == "..")
                ),
            "id={id}: {s} {v}"
        );
        assert_eq!(s, 400, "id={id}: {v}");
        assert_ne!(v["path"], "/", "id={id}");
    }
}

#[tokio::test]
async fn blocked_clients_cannot_flood_the_log() {
    let up = free_port();
    let _u = upstream(up);
    let mut gw = gateway(&format!(
        "_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: all\n    paths: [/]\n    plugins:\n    - name: ip-restriction\n      config: {{deny: [127.0.0.1]}}\n"
    ));
    let c = client();
    for _ in 0..200 {
        let r = c.get(gw.url("/x")).send().await.expect("request");
        assert_eq!(r.status().as_u16(), 403);
    }
    gw.proc.signal("KILL");
    let _ = gw.proc.child.wait();
    let mut log = String::new();
    if let Some(mut e) = gw.proc.child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut log);
    }
    let lines = log
        .lines()
        .filter(|l| l.contains("ip-restriction") || l.contains("not allowed"))
        .count();
    assert!(
        lines <= 3,
        "{lines} log lines for 200 blocked requests:\n{log}"
    );
}

/// An upstream answering every request with `body` under `encoding`.
fn encoded_upstream(encoding: &'static str, body: Vec<u8>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: {encoding}\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let mut w = &s;
                        let _ = w.write_all(head.as_bytes());
                        let _ = w.write_all(&body);
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn compressed_json_is_redacted_or_refused_never_passed_through() {
    use std::io::{Read, Write};
    let json = br#"{"ok":1,"secret":"card-4111"}"#.to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let gzip_up = encoded_upstream("gzip", gz);
    let br_up = encoded_upstream("br", json.clone());
    let cfg = format!(
        r#"_format_version: "3.0"
services:
- name: gz
  url: http://127.0.0.1:{gzip_up}
  routes:
  - name: gz
    paths: [/gz]
- name: br
  url: http://127.0.0.1:{br_up}
  routes:
  - name: br
    paths: [/br]
plugins:
- name: response-transformer
  config:
    remove: {{json: [secret]}}
"#
    );
    let gw = gateway(&cfg);
    let c = ::reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client");
    // gzip: decoded, redacted, encoded again.
    let r = c
        .get(gw.url("/gz"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("gz");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let raw = r.bytes().await.expect("body");
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut plain)
        .expect("gunzip");
    assert!(!plain.contains("card-4111"), "{plain}");
    assert!(plain.contains("\"ok\":1"), "{plain}");
    // An encoding the gateway cannot decode: refused, not passed through unredacted.
    let r = c.get(gw.url("/br")).send().await.expect("br");
    assert_eq!(r.status().as_u16(), 502);
    let text = r.text().await.unwrap_or_default();
    assert!(!text.contains("card-4111"), "{text}");
}
