//! hmac-auth against the real binary: signatures made in the test with the consumer's
//! secret, Kong 3.9's messages for each failure, clock skew, body digest.

use std::time::{Duration, SystemTime};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Digest;

use crate::harness::*;

const SECRET: &str = "alice-hmac-secret";
const NOT_VALID: &str = "HMAC signature cannot be verified";
const NOT_SAME: &str = "HMAC signature does not match";
const NO_DATE: &str = "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication";

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

fn mac(alg: &str, secret: &str, data: &str) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(k: &[u8], d: &[u8]) -> Vec<u8> {
        let mut m = <M as KeyInit>::new_from_slice(k).expect("key");
        m.update(d);
        m.finalize().into_bytes().to_vec()
    }
    let (k, d) = (secret.as_bytes(), data.as_bytes());
    match alg {
        "hmac-sha1" => run::<Hmac<sha1::Sha1>>(k, d),
        "hmac-sha256" => run::<Hmac<sha2::Sha256>>(k, d),
        "hmac-sha384" => run::<Hmac<sha2::Sha384>>(k, d),
        _ => run::<Hmac<sha2::Sha512>>(k, d),
    }
}

fn date(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    };
    httpdate::fmt_http_date(t)
}

/// `hmac username=.., algorithm=.., headers=.., signature=..` over `signing`.
fn header(user: &str, alg: &str, headers: &str, secret: &str, signing: &str) -> String {
    format!(
        "hmac username=\"{user}\", algorithm=\"{alg}\", headers=\"{headers}\", signature=\"{}\"",
        b64(&mac(alg, secret, signing))
    )
}

fn config(up: u16) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
- username: alice
  custom_id: alice-42
  hmacauth_credentials:
  - username: alice-hmac
    secret: {SECRET}
- username: bob
- username: anon
hmacauth_credentials:
- consumer: bob
  username: bob-hmac
  secret: bob-secret
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: plain
    paths: [/plain]
    plugins:
    - name: hmac-auth
  - name: strict
    paths: [/strict]
    plugins:
    - name: hmac-auth
      config:
        algorithms: [hmac-sha256]
        enforce_headers: [date, request-line]
        clock_skew: 60
        validate_request_body: true
        hide_credentials: true
        realm: gw
  - name: maybe
    paths: [/maybe]
    plugins:
    - name: hmac-auth
      config: {{anonymous: anon}}
"#
    )
}

struct Req<'a> {
    method: reqwest::Method,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
    body: Option<&'a str>,
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
async fn send(c: &reqwest::Client, gw: &Gw, r: Req<'_>) -> (u16, String, Value) {
    let mut rb = c.request(r.method, gw.url(r.path));
    for (k, v) in &r.headers {
        rb = rb.header(*k, v.as_str());
    }
    if let Some(b) = r.body {
        rb = rb.body(b.to_string());
    }
    let resp = rb.send().await.expect("send");
    let s = resp.status().as_u16();
    let www = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let t = resp.text().await.unwrap_or_default();
    (s, www, serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

fn get<'a>(path: &'a str, headers: Vec<(&'a str, String)>) -> Req<'a> {
    Req {
        method: reqwest::Method::GET,
        path,
        headers,
        body: None,
    }
}

#[tokio::test]
async fn hmac_auth_answers_as_kong_does() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up));
    let c = client();
    let d = date(0);

    // Nothing: Unauthorized, scheme only (no realm configured).
    let (s, www, b) = send(&c, &gw, get("/plain", vec![])).await;
    assert_eq!(
        (s, www.as_str(), b["message"].as_str()),
        (401, "hmac", Some("Unauthorized"))
    );

    // Every algorithm, signing date, @request-target and request-line.
    let signing =
        format!("date: {d}\n@request-target: get /plain/x?q=1\nGET /plain/x?q=1 HTTP/1.1");
    for alg in ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"] {
        let auth = header(
            "alice-hmac",
            alg,
            "date @request-target request-line",
            SECRET,
            &signing,
        );
        let (s, _, b) = send(
            &c,
            &gw,
            get(
                "/plain/x?q=1",
                vec![("date", d.clone()), ("authorization", auth.clone())],
            ),
        )
        .await;
        assert_eq!(s, 200, "{alg}: {b}");
        let h = &b["headers"];
        assert_eq!(h["x-consumer-username"], "alice");
        assert_eq!(h["x-consumer-custom-id"], "alice-42");
        assert_eq!(h["x-credential-identifier"], "alice-hmac");
        assert!(h.get("x-anonymous-consumer").is_none());
        assert_eq!(
            h["authorization"],
            auth.as_str(),
            "kept without hide_credentials"
        );
    }

    // A header the request lacks is signed as `name:`; the name keeps the client's case.
    let signing = format!("Date: {d}\nx-missing:");
    let auth = header(
        "bob-hmac",
        "hmac-sha256",
        "Date x-missing",
        "bob-secret",
        &signing,
    );
    let (s, _, b) = send(
        &c,
        &gw,
        get(
            "/plain",
            vec![("date", d.clone()), ("proxy-authorization", auth)],
        ),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-consumer-username"], "bob");

    // Failures, in Kong's order of checks.
    let ok_sig = header(
        "alice-hmac",
        "hmac-sha256",
        "date",
        SECRET,
        &format!("date: {d}"),
    );
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        // No usable date: missing, too old, unparsable.
        (vec![("authorization", ok_sig.clone())], NO_DATE),
        (
            vec![("authorization", ok_sig.clone()), ("date", date(-400))],
            NO_DATE,
        ),
        (
            vec![("authorization", ok_sig.clone()), ("date", "yesterday".into())],
            NO_DATE,
        ),
        // Not an hmac header, unknown user.
        (
            vec![("authorization", "Basic abc".into()), ("date", d.clone())],
            NOT_VALID,
        ),
        (
            vec![
                ("authorization", header("mallory", "hmac-sha256", "date", SECRET, &format!("date: {d}"))),
                ("date", d.clone()),
            ],
            NOT_VALID,
        ),
        // An algorithm Kong does not know.
        (
            vec![
                ("authorization", ok_sig.replace("hmac-sha256", "hmac-md5")),
                ("date", d.clone()),
            ],
            NOT_VALID,
        ),
        // Wrong secret, a signed header changed, a signature that is not base64.
        (
            vec![
                ("authorization", header("alice-hmac", "hmac-sha256", "date", "wrong", &format!("date: {d}"))),
                ("date", d.clone()),
            ],
            NOT_SAME,
        ),
        (
            vec![("authorization", ok_sig.clone()), ("date", date(-5))],
            NOT_SAME,
        ),
        (
            vec![
                ("authorization", "hmac username=\"alice-hmac\", algorithm=\"hmac-sha256\", headers=\"date\", signature=\"!!\"".into()),
                ("date", d.clone()),
            ],
            NOT_SAME,
        ),
    ];
    for (i, (headers, msg)) in cases.into_iter().enumerate() {
        let (s, www, b) = send(&c, &gw, get("/plain", headers)).await;
        assert_eq!(
            (s, www.as_str(), b["message"].as_str()),
            (401, "hmac", Some(msg)),
            "case {i}"
        );
    }
    // X-Date is tried first; a stale Date does not matter then.
    let signing = format!("x-date: {d}");
    let auth = header("alice-hmac", "hmac-sha256", "x-date", SECRET, &signing);
    let (s, _, _) = send(
        &c,
        &gw,
        get(
            "/plain",
            vec![
                ("x-date", d.clone()),
                ("date", date(-4000)),
                ("authorization", auth),
            ],
        ),
    )
    .await;
    assert_eq!(s, 200);

    // anonymous: any failure becomes the anonymous consumer.
    let (s, _, b) = send(
        &c,
        &gw,
        get("/maybe", vec![("authorization", ok_sig.clone())]),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "anon");
    assert_eq!(b["headers"]["x-anonymous-consumer"], "true");
}

#[tokio::test]
async fn hmac_enforced_headers_clock_skew_and_body_digest() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up));
    let c = client();
    let d = date(0);
    let body = r#"{"order": 42}"#;
    let digest = format!("SHA-256={}", b64(&sha2::Sha256::digest(body.as_bytes())));
    let post = |headers: Vec<(&'static str, String)>, body: Option<&'static str>| Req {
        method: reqwest::Method::POST,
        path: "/strict",
        headers,
        body,
    };
    let sign = |headers: &str, signing: &str| {
        header("alice-hmac", "hmac-sha256", headers, SECRET, signing)
    };
    let line = "POST /strict HTTP/1.1";

    // Signed date, request line and digest, with the right digest: through, body intact,
    // the credential hidden from the upstream.
    let auth = sign(
        "date request-line digest",
        &format!("date: {d}\n{line}\ndigest: {digest}"),
    );
    let (s, _, b) = send(
        &c,
        &gw,
        post(
            vec![
                ("date", d.clone()),
                ("digest", digest.clone()),
                ("authorization", auth.clone()),
            ],
            Some(body),
        ),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["body"], body);
    assert!(b["headers"].get("authorization").is_none(), "{b}");
    assert_eq!(b["headers"]["x-consumer-username"], "alice");

    // A body that does not match its (signed) digest.
    let (s, www, b) = send(
        &c,
        &gw,
        post(
            vec![
                ("date", d.clone()),
                ("digest", digest.clone()),
                ("authorization", auth.clone()),
            ],
            Some(r#"{"order": 43}"#),
        ),
    )
    .await;
    assert_eq!(
        (s, www.as_str(), b["message"].as_str()),
        (401, "hmac realm=\"gw\"", Some(NOT_SAME))
    );

    // No digest: only an empty body passes.
    let auth = sign("date request-line", &format!("date: {d}\n{line}"));
    let (s, _, b) = send(
        &c,
        &gw,
        post(
            vec![("date", d.clone()), ("authorization", auth.clone())],
            Some(body),
        ),
    )
    .await;
    assert_eq!((s, b["message"].as_str()), (401, Some(NOT_SAME)));
    let (s, _, _) = send(
        &c,
        &gw,
        post(
            vec![("date", d.clone()), ("authorization", auth.clone())],
            None,
        ),
    )
    .await;
    assert_eq!(s, 200);

    // enforce_headers: request-line must be signed.
    let auth = sign("date", &format!("date: {d}"));
    let (s, _, b) = send(
        &c,
        &gw,
        post(vec![("date", d.clone()), ("authorization", auth)], None),
    )
    .await;
    assert_eq!((s, b["message"].as_str()), (401, Some(NOT_VALID)));

    // Only hmac-sha256 is allowed on this route.
    let auth = header(
        "alice-hmac",
        "hmac-sha512",
        "date request-line",
        SECRET,
        &format!("date: {d}\n{line}"),
    );
    let (s, _, b) = send(
        &c,
        &gw,
        post(vec![("date", d.clone()), ("authorization", auth)], None),
    )
    .await;
    assert_eq!((s, b["message"].as_str()), (401, Some(NOT_VALID)));

    // clock_skew 60: 90 s away (either way) is refused, 30 s is accepted.
    for (off, want) in [(-90, 401), (90, 401), (-30, 200), (30, 200)] {
        let dd = date(off);
        let auth = sign("date request-line", &format!("date: {dd}\n{line}"));
        let (s, _, b) = send(
            &c,
            &gw,
            post(vec![("date", dd.clone()), ("authorization", auth)], None),
        )
        .await;
        assert_eq!(s, want, "offset {off}: {b}");
        if want == 401 {
            assert_eq!(b["message"], NO_DATE);
        }
    }
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[test]
fn check_loads_hmac_auth_and_rejects_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    let run = |text: &str| {
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let (ok, out) = run(&config(1));
    assert!(ok, "{out}");
    let (ok, out) = run(r#"_format_version: "3.0"
consumers:
- username: a
  hmacauth_credentials:
  - secret: no-username
plugins:
- name: hmac-auth
  config:
    algorithms: [hmac-sha256, hmac-md5]
"#);
    assert!(!ok);
    assert!(
        out.contains("consumers[0].hmacauth_credentials[0].username: required"),
        "{out}"
    );
    assert!(
        out.contains("plugins[0].config.algorithms[1]: expected one of"),
        "{out}"
    );
    assert!(
        !out.contains("no-username"),
        "secrets never appear in errors: {out}"
    );
}
