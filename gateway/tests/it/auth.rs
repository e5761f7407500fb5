//! jwt, key-auth, acl and cors against the real binary, with real keys made in the test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

const SECRET: &str = "test-secret-0123456789abcdef0123456789";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn hs(claims: Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

struct Keys {
    rsa_priv: String,
    rsa_pub: String,
    ec_priv: String,
    ec_pub: String,
    ed_priv: String,
    ed_pub: String,
}

fn keys() -> Keys {
    let (rsa_priv, rsa_pub) = rsa_pems();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec");
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed");
    Keys {
        rsa_priv,
        rsa_pub,
        ec_priv: ec.serialize_pem(),
        ec_pub: ec.public_key_pem(),
        ed_priv: ed.serialize_pem(),
        ed_pub: ed.public_key_pem(),
    }
}

/// A fresh RSA-2048 key pair as (PKCS#8 private PEM, SPKI public PEM).
fn rsa_pems() -> (String, String) {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;
    let kp =
        aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa keygen");
    let private: Pkcs8V1Der = kp.as_der().expect("pkcs8");
    let public: PublicKeyX509Der = kp.public_key().as_der().expect("spki");
    (
        pem("PRIVATE KEY", private.as_ref()),
        pem("PUBLIC KEY", public.as_ref()),
    )
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn indent(pem: &str, n: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

fn config(up: u16, k: &Keys) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
- username: alice
  custom_id: alice-42
  jwt_secrets:
  - key: alice-iss
    secret: {SECRET}
  - key: alice-rsa
    algorithm: RS256
    rsa_public_key: |
{rsa}  - key: alice-ec
    algorithm: ES256
    rsa_public_key: |
{ec}  - key: alice-ed
    algorithm: EdDSA
    rsa_public_key: |
{ed}  keyauth_credentials:
  - key: alice-api-key
  acls:
  - group: staff
- username: bob
  keyauth_credentials:
  - key: bob-api-key
  acls:
  - group: blocked
- username: anon
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: login
    paths: [/auth/login]
    strip_path: false
  - name: protected
    paths: [/api]
    plugins:
    - name: jwt
      config:
        claims_to_verify: [exp, nbf]
        maximum_expiration: 86400
        cookie_names: [token]
        claims_to_headers: {{sub: X-User-ID, tier: X-User-Tier}}
  - name: maybe
    paths: [/maybe]
    plugins:
    - name: jwt
      config: {{anonymous: anon}}
  - name: keyed
    paths: [/keyed]
    plugins:
    - name: key-auth
      config: {{hide_credentials: true}}
    - name: acl
      config: {{deny: [blocked]}}
  - name: either
    paths: [/either]
    plugins:
    - name: jwt
      config: {{anonymous: anon}}
    - name: key-auth
      config: {{anonymous: anon}}
    - name: acl
      config: {{allow: [staff]}}
plugins:
- name: cors
  config:
    origins: ["https://app.example.com", "http://localhost:3000"]
    credentials: true
    exposed_headers: [X-Request-ID]
    max_age: 600
"#,
        rsa = indent(&k.rsa_pub, 6),
        ec = indent(&k.ec_pub, 6),
        ed = indent(&k.ed_pub, 6),
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

fn www(h: &reqwest::header::HeaderMap) -> String {
    h.get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn jwt_answers_as_kong_does() {
    let up = free_port();
    let _u = upstream(up);
    let k = keys();
    let gw = gateway(&config(up, &k));
    let c = client();
    let good = json!({"iss": "alice-iss", "sub": "user-1", "tier": "pro", "exp": now() + 600, "nbf": now() - 10});

    // No token.
    let (s, h, b) = call(&c, &gw, "/api/x", &[]).await;
    assert_eq!((s, b.clone()), (401, json!({"message": "Unauthorized"})));
    assert_eq!(www(&h), "Bearer");

    // A valid token: consumer headers upstream, forged copies and claim headers stripped.
    let t = hs(good.clone(), SECRET);
    let (s, _, b) = call(
        &c,
        &gw,
        "/api/x",
        &[
            ("authorization", &format!("Bearer {t}")),
            ("x-consumer-username", "mallory"),
            ("x-user-tier", "enterprise"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let h = &b["headers"];
    assert_eq!(h["x-consumer-username"], "alice");
    assert_eq!(h["x-consumer-custom-id"], "alice-42");
    assert_eq!(h["x-credential-identifier"], "alice-iss");
    assert!(h["x-consumer-id"].as_str().is_some_and(|v| v.len() == 36));
    assert!(h.get("x-anonymous-consumer").is_none());
    assert_eq!(h["x-user-id"], "user-1");
    assert_eq!(h["x-user-tier"], "pro");

    // Same token from the query string and from a cookie.
    assert_eq!(call(&c, &gw, &format!("/api/x?jwt={t}"), &[]).await.0, 200);
    assert_eq!(
        call(&c, &gw, "/api/x", &[("cookie", &format!("a=1; token={t}"))])
            .await
            .0,
        200
    );
    // Two different tokens.
    let t2 = hs(
        json!({"iss": "alice-iss", "exp": now() + 60, "nbf": now()}),
        SECRET,
    );
    let (s, h, b) = call(
        &c,
        &gw,
        &format!("/api/x?jwt={t2}"),
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(
        (s, b),
        (401, json!({"message": "Multiple tokens provided"}))
    );
    assert_eq!(www(&h), "Bearer error=\"invalid_token\"");

    let cases: Vec<(String, Value)> = vec![
        (
            hs(json!({"iss": "nobody", "exp": now() + 60}), SECRET),
            json!({"message": "No credentials found for given 'iss'"}),
        ),
        (
            hs(json!({"sub": "x", "exp": now() + 60}), SECRET),
            json!({"message": "No mandatory 'iss' in claims"}),
        ),
        (
            hs(json!({"iss": "", "exp": now() + 60}), SECRET),
            json!({"message": "Invalid 'iss' in claims"}),
        ),
        (
            hs(good.clone(), "wrong-secret"),
            json!({"message": "Invalid signature"}),
        ),
        (
            "not-a-token".to_string(),
            json!({"message": "Bad token; invalid JSON"}),
        ),
        (
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(good.to_string().as_bytes())
            ),
            json!({"message": "Bad token; invalid alg"}),
        ),
        (
            hs(
                json!({"iss": "alice-iss", "exp": now() - 10, "nbf": now() - 20}),
                SECRET,
            ),
            json!({"exp": "token expired"}),
        ),
        (
            hs(json!({"iss": "alice-iss", "exp": now() + 60}), SECRET),
            json!({"nbf": "must be a number"}),
        ),
        (
            hs(
                json!({"iss": "alice-iss", "exp": now() + 60, "nbf": now() + 3600}),
                SECRET,
            ),
            json!({"nbf": "token not valid yet"}),
        ),
        (
            hs(
                json!({"iss": "alice-iss", "exp": now() + 7 * 86400, "nbf": now()}),
                SECRET,
            ),
            json!({"exp": "exceeds maximum allowed expiration"}),
        ),
        (
            hs(
                json!({"iss": "alice-iss", "exp": "soon", "nbf": now()}),
                SECRET,
            ),
            json!({"exp": "must be a number"}),
        ),
        // Algorithm confusion: HS256 signed with the RSA public key against an RS256 credential.
        (
            hs(json!({"iss": "alice-rsa", "exp": now() + 60}), &k.rsa_pub),
            json!({"message": "Invalid algorithm"}),
        ),
    ];
    for (i, (token, want)) in cases.iter().enumerate() {
        let (s, h, b) = call(
            &c,
            &gw,
            "/api/x",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!((s, &b), (401, want), "case {i}");
        assert_eq!(www(&h), "Bearer error=\"invalid_token\"", "case {i}");
    }

    // Asymmetric credentials.
    for (alg, key, iss) in [
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(k.rsa_priv.as_bytes()).expect("rsa key"),
            "alice-rsa",
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(k.ec_priv.as_bytes()).expect("ec key"),
            "alice-ec",
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(k.ed_priv.as_bytes()).expect("ed key"),
            "alice-ed",
        ),
    ] {
        let t = encode(
            &Header::new(alg),
            &json!({"iss": iss, "exp": now() + 60, "nbf": now()}),
            &key,
        )
        .expect("sign");
        let (s, _, b) = call(
            &c,
            &gw,
            "/api/x",
            &[("authorization", &format!("Bearer {t}"))],
        )
        .await;
        assert_eq!(s, 200, "{alg:?}: {b}");
        assert_eq!(b["headers"]["x-credential-identifier"], iss);
    }

    // Open route next to protected ones.
    assert_eq!(call(&c, &gw, "/auth/login", &[]).await.0, 200);
    // Anonymous fallback.
    let (s, _, b) = call(&c, &gw, "/maybe", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-anonymous-consumer"], "true");
    assert_eq!(b["headers"]["x-consumer-username"], "anon");

    // Failures are counted by reason.
    let (_, _, m) = call(&c, &gw, "/x", &[]).await;
    let _ = m;
    let text = c
        .get(gw.status_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(
            "gateway_auth_failures_total{plugin=\"jwt\",reason=\"expired\",route=\"protected\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn key_auth_acl_and_logical_or() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up, &keys()));
    let c = client();
    let (s, h, b) = call(&c, &gw, "/keyed", &[]).await;
    assert_eq!(s, 401);
    assert_eq!(b["message"], "No API key found in request");
    assert!(b["request_id"].is_string());
    // Kong 3.9: `Key` without a configured realm, on every 401.
    assert_eq!(www(&h), "Key");
    let (s, h, b) = call(&c, &gw, "/keyed", &[("apikey", "nope")]).await;
    assert_eq!((s, b["message"].clone()), (401, json!("Unauthorized")));
    assert_eq!(www(&h), "Key");
    let (s, _, b) = call(&c, &gw, "/keyed?apikey=alice-api-key&x=1", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(b["query"], "x=1", "hide_credentials removes the key");
    assert_eq!(b["headers"]["x-consumer-username"], "alice");
    assert_eq!(b["headers"]["x-consumer-groups"], "staff");
    let (s, _, b) = call(&c, &gw, "/keyed", &[("apikey", "alice-api-key")]).await;
    assert_eq!(s, 200);
    assert!(b["headers"].get("apikey").is_none());
    let (s, _, b) = call(&c, &gw, "/keyed", &[("apikey", "bob-api-key")]).await;
    assert_eq!(
        (s, b["message"].clone()),
        (403, json!("You cannot consume this service"))
    );

    // jwt OR key-auth (both with anonymous), then acl: anonymous is refused by the allow list.
    let t = hs(json!({"iss": "alice-iss", "exp": now() + 60}), SECRET);
    assert_eq!(
        call(
            &c,
            &gw,
            "/either",
            &[("authorization", &format!("Bearer {t}"))]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&c, &gw, "/either", &[("apikey", "alice-api-key")])
            .await
            .0,
        200
    );
    let (s, _, b) = call(&c, &gw, "/either", &[]).await;
    assert_eq!(
        (s, b["message"].clone()),
        (403, json!("You cannot consume this service"))
    );
}

#[tokio::test]
async fn cors_preflight_and_responses() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up, &keys()));
    let c = client();
    let pre = |origin: &str| {
        c.request(reqwest::Method::OPTIONS, gw.url("/api/x"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
    };
    let r = pre("https://app.example.com")
        .send()
        .await
        .expect("preflight");
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization,content-type"
    );
    assert_eq!(
        h["access-control-allow-methods"],
        "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["vary"], "Origin");
    assert_eq!(r.text().await.expect("body"), "");
    // A disallowed origin still gets 200, without CORS grants.
    let r = pre("https://evil.example.net")
        .send()
        .await
        .expect("preflight");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Normal responses, including the jwt plugin's 401, carry the grants for allowed origins.
    let (s, h, _) = call(&c, &gw, "/api/x", &[("origin", "http://localhost:3000")]).await;
    assert_eq!(s, 401);
    assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
    assert_eq!(h["access-control-expose-headers"], "X-Request-ID");
    let (s, h, _) = call(
        &c,
        &gw,
        "/auth/login",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_ne!(h["access-control-allow-origin"], "*");
    let (_, h, _) = call(
        &c,
        &gw,
        "/auth/login",
        &[("origin", "https://evil.example.net")],
    )
    .await;
    assert!(h.get("access-control-allow-origin").is_none());
    assert_eq!(h["vary"], "Origin");
}

/// A JWKS endpoint on loopback whose document the test can change, and stop.
struct JwksServer {
    port: u16,
    doc: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

async fn jwks_server(doc: String) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let doc = Arc::new(Mutex::new(doc));
    let d = doc.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let d = d.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = d.lock().map(|g| g.clone()).unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    JwksServer { port, doc, task }
}

fn ec_jwk(kp: &rcgen::KeyPair, kid: &str) -> Value {
    let raw = kp.public_key_raw();
    json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": b64(&raw[1..33]), "y": b64(&raw[33..65])})
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn jwks_rotation_and_outage() {
    let up = free_port();
    let _u = upstream(up);
    let a = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key a");
    let b = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key b");
    let server = jwks_server(json!({"keys": [ec_jwk(&a, "a")]}).to_string()).await;
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: api\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: api\n    paths: [/api]\n    plugins:\n    - name: jwt\n      config:\n        jwks_uri: http://127.0.0.1:{}/.well-known/jwks.json\n        jwks_min_refresh_interval: 0\n        issuers: [https://auth.example.com]\n        audiences: [edge-api]\n        claims_to_verify: [exp]\n        leeway: 5\n        claims_to_headers: {{sub: X-User-ID}}\n",
        server.port
    );
    let gw = gateway(&cfg);
    let c = client();
    let sign = |kp: &rcgen::KeyPair, kid: &str, claims: Value| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.to_string());
        encode(
            &h,
            &claims,
            &EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).expect("key"),
        )
        .expect("sign")
    };
    let claims = json!({"iss": "https://auth.example.com", "aud": "edge-api", "sub": "u-7", "exp": now() + 60});
    let ta = sign(&a, "a", claims.clone());
    let ok = eventually(Duration::from_secs(5), || {
        let c = c.clone();
        let url = gw.url("/api/x");
        let ta = ta.clone();
        async move {
            c.get(&url)
                .bearer_auth(&ta)
                .send()
                .await
                .map(|r| r.status().as_u16() == 200)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(ok, "token signed by the JWKS key was not accepted");
    let (_, _, body) = call(
        &c,
        &gw,
        "/api/x",
        &[("authorization", &format!("Bearer {ta}"))],
    )
    .await;
    assert_eq!(body["headers"]["x-user-id"], "u-7");
    // Wrong audience / issuer / expired beyond leeway.
    let bad_aud = sign(
        &a,
        "a",
        json!({"iss": "https://auth.example.com", "aud": "other", "exp": now() + 60}),
    );
    assert_eq!(
        call(
            &c,
            &gw,
            "/api/x",
            &[("authorization", &format!("Bearer {bad_aud}"))]
        )
        .await
        .2,
        json!({"message": "Invalid audience"})
    );
    let bad_iss = sign(
        &a,
        "a",
        json!({"iss": "https://evil", "aud": "edge-api", "exp": now() + 60}),
    );
    assert_eq!(
        call(
            &c,
            &gw,
            "/api/x",
            &[("authorization", &format!("Bearer {bad_iss}"))]
        )
        .await
        .2,
        json!({"message": "Invalid issuer"})
    );
    let in_leeway = sign(
        &a,
        "a",
        json!({"iss": "https://auth.example.com", "aud": "edge-api", "exp": now() - 2}),
    );
    assert_eq!(
        call(
            &c,
            &gw,
            "/api/x",
            &[("authorization", &format!("Bearer {in_leeway}"))]
        )
        .await
        .0,
        200
    );

    // Rotation: the endpoint now serves key b only; a token with kid b triggers a refresh.
    if let Ok(mut d) = server.doc.lock() {
        *d = json!({"keys": [ec_jwk(&b, "b")]}).to_string();
    }
    let tb = sign(&b, "b", claims.clone());
    assert_eq!(
        call(
            &c,
            &gw,
            "/api/x",
            &[("authorization", &format!("Bearer {tb}"))]
        )
        .await
        .0,
        200
    );
    // A token signed by b but claiming kid a is refused (kid a is gone, and no static credential matches).
    let forged = sign(&b, "a", claims.clone());
    assert_eq!(
        call(
            &c,
            &gw,
            "/api/x",
            &[("authorization", &format!("Bearer {forged}"))]
        )
        .await
        .0,
        401
    );

    // Outage: the endpoint goes away; tokens keep validating with the last good keys.
    server.task.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        assert_eq!(
            call(
                &c,
                &gw,
                "/api/x",
                &[("authorization", &format!("Bearer {tb}"))]
            )
            .await
            .0,
            200
        );
    }
}

#[tokio::test]
async fn jwks_tokens_must_expire_carry_header_safe_claims_and_count_per_subject() {
    let up = free_port();
    let _u = upstream(up);
    let a = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key a");
    let server = jwks_server(json!({"keys": [ec_jwk(&a, "a")]}).to_string()).await;
    // No claims_to_verify: a key-set token must still carry a valid exp.
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: api\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: api\n    paths: [/api]\n    plugins:\n    - name: jwt\n      config:\n        jwks_uri: http://127.0.0.1:{}/.well-known/jwks.json\n        jwks_min_refresh_interval: 0\n        claims_to_headers: {{sub: X-User-ID}}\n",
        server.port
    );
    let gw = gateway(&cfg);
    let c = client();
    let sign = |claims: Value| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("a".to_string());
        encode(
            &h,
            &claims,
            &EncodingKey::from_ec_pem(a.serialize_pem().as_bytes()).expect("key"),
        )
        .expect("sign")
    };
    let good = sign(json!({"sub": "u-7", "exp": now() + 60}));
    let ok = eventually(Duration::from_secs(5), || {
        let c = c.clone();
        let url = gw.url("/api/x");
        let t = good.clone();
        async move {
            c.get(&url)
                .bearer_auth(&t)
                .send()
                .await
                .map(|r| r.status().as_u16() == 200)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(ok, "a valid key-set token was refused");
    let r = c
        .get(gw.url("/api/x"))
        .bearer_auth(&good)
        .send()
        .await
        .expect("request");
    let v: Value = r.json().await.expect("json");
    // Per subject, not one credential per signing key.
    assert_eq!(v["headers"]["x-credential-identifier"], "a:u-7", "{v}");

    let no_exp = sign(json!({"sub": "u-7"}));
    let expired = sign(json!({"sub": "u-7", "exp": now() - 3600}));
    let crlf = sign(json!({"sub": "u-7\r\nX-Injected: 1", "exp": now() + 60}));
    for (name, t) in [
        ("no exp", &no_exp),
        ("expired", &expired),
        ("CR/LF claim", &crlf),
    ] {
        let r = c
            .get(gw.url("/api/x"))
            .bearer_auth(t)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 401, "{name}");
    }
}

#[test]
fn jwks_over_plain_http_is_refused_except_on_loopback() {
    let cfg = |uri: &str| {
        format!("_format_version: \"3.0\"\nplugins:\n- name: jwt\n  config:\n    jwks_uri: {uri}\n")
    };
    let run = |text: String| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kong.yml");
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run(cfg("http://idp.example.com/.well-known/jwks.json"));
    assert!(!ok);
    assert!(err.contains("jwks_uri") && err.contains("https"), "{err}");
    assert!(run(cfg("https://idp.example.com/.well-known/jwks.json")).0);
    assert!(run(cfg("http://127.0.0.1:9/.well-known/jwks.json")).0);
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn an_anonymous_naming_no_consumer_opens_the_route_as_in_kong() {
    // Kong loads it and passes a failed authentication on without a consumer; the
    // gateway does the same (and `gateway check` warns: see tests/corpus).
    let up = free_port();
    let _u = upstream(up);
    let cfg = format!(
        "_format_version: \"3.0\"
consumers:
- username: alice
  keyauth_credentials: [{{key: k-alice}}]
services:
- name: s
  url: http://127.0.0.1:{up}
  routes:
  - name: r
    paths: [/open]
  plugins:
  - name: key-auth
    config: {{anonymous: no-such-consumer}}
"
    );
    let gw = gateway(&cfg);
    let c = client();
    let (s, _, b) = call(&c, &gw, "/open/x", &[]).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-anonymous-consumer"], "true");
    assert!(b["headers"].get("x-consumer-username").is_none(), "{b}");
    let (s, _, b) = call(&c, &gw, "/open/x", &[("apikey", "k-alice")]).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "alice");
    assert!(b["headers"].get("x-anonymous-consumer").is_none(), "{b}");
}

#[tokio::test]
async fn key_in_body_reads_form_and_json_bodies_and_hides_the_key() {
    let up = free_port();
    let _u = upstream(up);
    let cfg = format!(
        "_format_version: \"3.0\"
consumers:
- username: alice
  keyauth_credentials: [{{key: k-alice}}]
services:
- name: s
  url: http://127.0.0.1:{up}
  routes:
  - name: forms
    paths: [/forms]
    plugins:
    - name: key-auth
      config: {{key_names: [api_key], key_in_body: true, hide_credentials: true}}
"
    );
    let gw = gateway(&cfg);
    let c = client();
    let post = |ct: &'static str, body: &'static str| {
        let c = c.clone();
        let url = gw.url("/forms/submit");
        async move {
            let r = c
                .post(url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .expect("send");
            let s = r.status().as_u16();
            let t = r.text().await.unwrap_or_default();
            (
                s,
                serde_json::from_str::<Value>(&t).unwrap_or(Value::String(t)),
            )
        }
    };
    let (s, b) = post(
        "application/x-www-form-urlencoded",
        "name=bob&api_key=k-alice&x=1",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-consumer-username"], "alice");
    // hide_credentials: the key is gone from the body sent upstream, its length follows.
    assert_eq!(b["body"], "name=bob&x=1");
    assert_eq!(b["headers"]["content-length"], "12");
    let (s, b) = post("application/json", r#"{"api_key":"k-alice","n":1}"#).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["body"], r#"{"n":1}"#);
    let (s, b) = post("application/json", r#"{"api_key":"wrong"}"#).await;
    assert_eq!((s, b["message"].as_str()), (401, Some("Unauthorized")));
    let (s, b) = post("text/plain", "api_key=k-alice").await;
    assert_eq!(
        (s, b["message"].as_str()),
        (401, Some("No API key found in request"))
    );
}

#[tokio::test]
async fn cors_replaces_or_removes_the_upstreams_own_allow_origin() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up, &keys()));
    let c = client();
    let get = |origin: &'static str| {
        c.get(gw.url("/auth/login"))
            .header("origin", origin)
            .header("x-echo-response-header", "Access-Control-Allow-Origin: *")
            .send()
    };
    // An allowed origin: the plugin's value replaces the upstream's `*`.
    let r = get("https://app.example.com").await.expect("send");
    let acao: Vec<_> = r
        .headers()
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(acao.len(), 1);
    assert_eq!(acao[0], "https://app.example.com");
    // Not allowed: no Access-Control-Allow-Origin at all, as Kong clears it.
    let r = get("https://evil.example.net").await.expect("send");
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers()
    );
}

/// ES512 (ECDSA P-521, SHA-512): Kong's jwt accepts it; jsonwebtoken does not implement
/// it, so the gateway verifies it with aws-lc-rs. Key and signatures made by aws-lc-rs.
#[tokio::test]
async fn jwt_es512_tokens_verify() {
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::signature::{ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let kp = EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING).expect("p521 keygen");
    let spki: PublicKeyX509Der = kp.public_key().as_der().expect("spki");
    let token = |alg: &str, iss: &str| {
        let msg = format!(
            "{}.{}",
            b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes()),
            b64(json!({"iss": iss, "exp": now() + 60})
                .to_string()
                .as_bytes())
        );
        let sig = kp
            .sign(&aws_lc_rs::rand::SystemRandom::new(), msg.as_bytes())
            .expect("sign");
        format!("{msg}.{}", b64(sig.as_ref()))
    };
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&format!(
        r#"_format_version: "3.0"
consumers:
- username: fleet
  jwt_secrets:
  - key: fleet-signer
    algorithm: ES512
    rsa_public_key: |
{}services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: api
    paths: [/api]
    plugins:
    - name: jwt
      config: {{claims_to_verify: [exp]}}
"#,
        indent(&pem("PUBLIC KEY", spki.as_ref()), 6)
    ));
    let c = client();
    let bearer = |t: &str| format!("Bearer {t}");
    let good = token("ES512", "fleet-signer");
    let (s, _, b) = call(&c, &gw, "/api/x", &[("authorization", &bearer(&good))]).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-consumer-username"], "fleet");
    // One bit of the signature changed: refused.
    let mut bad = good.clone().into_bytes();
    let last = bad.len() - 3;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).expect("ascii");
    let (s, _, b) = call(&c, &gw, "/api/x", &[("authorization", &bearer(&bad))]).await;
    assert_eq!((s, b["message"].as_str()), (401, Some("Invalid signature")));
    // The same key under another algorithm name: Kong's "Invalid algorithm".
    let other = token("ES384", "fleet-signer");
    let (s, _, b) = call(&c, &gw, "/api/x", &[("authorization", &bearer(&other))]).await;
    assert_eq!((s, b["message"].as_str()), (401, Some("Invalid algorithm")));
}
