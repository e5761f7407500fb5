//! basic-auth against the real binary: Kong 3.9's statuses, bodies, `WWW-Authenticate`
//! and consumer headers; credentials nested under consumers and at top level.

use std::process::Command;

use base64::Engine;
use serde_json::Value;
use sha1::Digest;

use crate::harness::*;

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn config(up: u16) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
- username: alice
  custom_id: alice-42
  basicauth_credentials:
  - username: alice-login
    password: "s3cret:with colon"
- username: bob
- username: anon
basicauth_credentials:
- consumer: bob
  username: bob
  password: hunter2
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: plain
    paths: [/plain]
    plugins:
    - name: basic-auth
  - name: hidden
    paths: [/hidden]
    plugins:
    - name: basic-auth
      config: {{hide_credentials: true, realm: gw}}
  - name: maybe
    paths: [/maybe]
    plugins:
    - name: basic-auth
      config: {{anonymous: anon}}
"#
    )
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
async fn call(
    c: &reqwest::Client,
    gw: &Gw,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = c.get(gw.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("send");
    let s = r.status().as_u16();
    let h = r.headers().clone();
    let t = r.text().await.unwrap_or_default();
    (s, h, serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

fn www(h: &reqwest::header::HeaderMap) -> &str {
    h.get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn basic_auth_answers_as_kong_does() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up));
    let c = client();

    // No credentials at all: 401 with the realm (default `service`).
    let (s, h, b) = call(&c, &gw, "/plain", &[]).await;
    assert_eq!(s, 401);
    assert_eq!(b["message"], "Unauthorized");
    assert!(b["request_id"].is_string());
    assert_eq!(www(&h), "Basic realm=\"service\"");

    // Wrong password, unknown user, unparsable header, other scheme: the same answer.
    let bad = basic("alice-login", "nope");
    let unknown = basic("mallory", "x");
    for auth in [
        bad.as_str(),
        unknown.as_str(),
        "Basic !!!",
        "Bearer abc",
        "Basic bm9jb2xvbg==",
    ] {
        let (s, h, b) = call(&c, &gw, "/plain", &[("authorization", auth)]).await;
        assert_eq!(
            (s, b["message"].as_str()),
            (401, Some("Unauthorized")),
            "{auth}"
        );
        assert_eq!(www(&h), "Basic realm=\"service\"", "{auth}");
    }

    // A valid credential: consumer headers upstream, the header itself kept.
    let good = basic("alice-login", "s3cret:with colon");
    let (s, _, b) = call(
        &c,
        &gw,
        "/plain",
        &[("authorization", &good), ("x-consumer-id", "forged")],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let hd = &b["headers"];
    assert_eq!(hd["x-consumer-username"], "alice");
    assert_eq!(hd["x-consumer-custom-id"], "alice-42");
    assert_eq!(hd["x-credential-identifier"], "alice-login");
    assert!(hd["x-consumer-id"].as_str().is_some_and(|v| v != "forged"));
    assert!(hd.get("x-anonymous-consumer").is_none());
    assert_eq!(hd["authorization"], good.as_str());

    // Lower-case scheme, top-level credential, Proxy-Authorization.
    let bob = basic("bob", "hunter2").replacen("Basic", "basic", 1);
    let (s, _, b) = call(&c, &gw, "/plain", &[("proxy-authorization", &bob)]).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "bob");
    assert!(b["headers"].get("x-consumer-custom-id").is_none());
    // An unknown user in Proxy-Authorization falls back to Authorization.
    let (s, _, b) = call(
        &c,
        &gw,
        "/plain",
        &[("proxy-authorization", &unknown), ("authorization", &good)],
    )
    .await;
    assert_eq!(
        (s, &b["headers"]["x-consumer-username"]),
        (200, &"alice".into())
    );

    // hide_credentials: the header never reaches the upstream; the custom realm.
    let (s, h, _) = call(&c, &gw, "/hidden", &[("authorization", &bad)]).await;
    assert_eq!((s, www(&h)), (401, "Basic realm=\"gw\""));
    let (s, _, b) = call(&c, &gw, "/hidden", &[("authorization", &good)]).await;
    assert_eq!(s, 200);
    assert!(b["headers"].get("authorization").is_none(), "{b}");
    let (s, _, b) = call(&c, &gw, "/hidden", &[("proxy-authorization", &bob)]).await;
    assert_eq!(s, 200);
    assert!(b["headers"].get("proxy-authorization").is_none(), "{b}");

    // anonymous: a failure becomes the anonymous consumer; a success stays itself.
    let (s, _, b) = call(&c, &gw, "/maybe", &[("authorization", &bad)]).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "anon");
    assert_eq!(b["headers"]["x-anonymous-consumer"], "true");
    assert!(b["headers"].get("x-credential-identifier").is_none());
    let (s, _, b) = call(&c, &gw, "/maybe", &[("authorization", &good)]).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "alice");
    assert!(b["headers"].get("x-anonymous-consumer").is_none());

    // Kong's error templates follow Accept.
    let (s, h, b) = call(&c, &gw, "/plain", &[("accept", "text/plain")]).await;
    assert_eq!(s, 401);
    assert!(
        b.as_str().is_some_and(|t| t.starts_with("Unauthorized\n")),
        "{b}"
    );
    assert_eq!(www(&h), "Basic realm=\"service\"");
}

/// `_transform: false` (Kong's db_export): passwords are the stored hashes.
#[tokio::test]
async fn basic_auth_takes_stored_hashes_without_transform() {
    let up = free_port();
    let _u = upstream(up);
    let id = "8f3c2a9e-1d4b-4c7a-9e21-5b6f0a3d7c11";
    let hash: String = sha1::Sha1::digest(format!("pw{id}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let gw = gateway(&format!(
        r#"_format_version: "3.0"
_transform: false
consumers:
- username: carol
  id: {id}
  basicauth_credentials:
  - username: carol
    password: {hash}
services:
- name: api
  url: http://127.0.0.1:{up}
  plugins:
  - name: basic-auth
  routes:
  - name: r
    paths: [/]
"#
    ));
    let c = client();
    let (s, _, b) = call(&c, &gw, "/", &[("authorization", &basic("carol", "pw"))]).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-id"], id);
    // The hash itself is not a password.
    let (s, _, _) = call(&c, &gw, "/", &[("authorization", &basic("carol", &hash))]).await;
    assert_eq!(s, 401);
}

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, config).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run check");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (
        out.status.success(),
        text.replace(&path.display().to_string(), "kong.yml"),
    )
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[test]
fn check_loads_basic_auth_and_reports_bad_credentials() {
    let (ok, out) = check(&config(1));
    assert!(ok, "{out}");
    assert!(out.contains("3 consumers"), "{out}");

    let bad = r#"_format_version: "3.0"
consumers:
- username: a
  basicauth_credentials:
  - username: dup
    password: x
  - username: nopass
- username: b
basicauth_credentials:
- consumer: b
  username: dup
  password: y
  colour: red
- consumer: nobody
  username: z
  password: z
plugins:
- name: basic-auth
  config:
    realm_name: x
"#;
    let (ok, out) = check(bad);
    assert!(!ok);
    assert!(
        out.contains("kong.yml:7: consumers[0].basicauth_credentials[1].password: required"),
        "{out}"
    );
    assert!(
        out.contains("kong.yml:13: basicauth_credentials[0].colour: unknown field `colour`"),
        "{out}"
    );
    assert!(
        out.contains("basicauth_credentials[1].consumer: a top-level credential needs"),
        "{out}"
    );
    assert!(out.contains("plugins[0].config.realm_name"), "{out}");
}

#[test]
fn check_refuses_basic_auth_on_a_consumer_and_duplicate_usernames() {
    let (ok, out) = check(
        r#"_format_version: "3.0"
consumers:
- username: a
  basicauth_credentials:
  - {username: same, password: x}
  - {username: same, password: y}
"#,
    );
    assert!(!ok);
    assert!(
        out.contains("duplicate basic-auth username `same`"),
        "{out}"
    );
    let (ok, out) = check(
        r#"_format_version: "3.0"
consumers:
- username: a
  plugins:
  - name: basic-auth
"#,
    );
    assert!(!ok);
    assert!(out.contains("cannot be configured on a consumer"), "{out}");
}
