//! request-transformer, response-transformer, request-termination, request-size-limiting
//! and ip-restriction against the real binary and `echo-upstream`.

use serde_json::{Value, json};

use crate::harness::*;

fn config(up: u16) -> String {
    format!(
        r#"_format_version: "3.0"
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: headers
    paths: [/headers]
    plugins:
    - name: request-transformer
      config:
        remove: {{headers: [x-remove]}}
        rename: {{headers: ["x-old:x-new"]}}
        replace: {{headers: ["x-new:replaced", "x-absent:never", "x-keep:kept2"]}}
        add: {{headers: ["x-new:not-added", "x-added:added", "x-remove:readded"]}}
        append: {{headers: ["x-new:appended", "x-appended:one"]}}
  - name: query
    paths: [/query]
    plugins:
    - name: request-transformer
      config:
        remove: {{querystring: [drop]}}
        rename: {{querystring: ["old:new", "ghost:bare"]}}
        replace: {{querystring: ["r:R", "absent:no"]}}
        add: {{querystring: ["r:no", "added:yes"]}}
        append: {{querystring: ["list:b", "r:A"]}}
  - name: body
    paths: [/body]
    plugins:
    - name: request-transformer
      config:
        remove: {{body: [gone]}}
        rename: {{body: ["old:new"]}}
        replace: {{body: ["r:R", "absent:no", "f:no"]}}
        add: {{body: ["f:added", "new:no"]}}
        append: {{body: ["r:A"]}}
  - name: v1
    paths: ["~/v1/users/(?<id>\\d+)$"]
    plugins:
    - name: request-transformer
      config:
        http_method: PUT
        replace: {{uri: "/users/$(uri_captures.id)"}}
        add:
          headers: ["x-user-id:$(uri_captures.id)", "x-from:$(headers.x_client or 'none')", "x-api-version:1"]
          querystring: ["src:$(query_params.s)"]
  - name: body-remove
    paths: [/body-remove]
    plugins:
    - name: request-transformer
      config: {{remove: {{body: [secret]}}}}
  - name: to-get
    paths: [/to-get]
    plugins:
    - name: request-transformer
      config: {{http_method: GET}}
  - name: v2
    paths: ["~/v2/users/(?<id>\\d+)$"]
    plugins:
    - name: request-transformer
      config:
        replace: {{uri: "/users/$(uri_captures[1])"}}
        add: {{headers: ["x-api-version:2"]}}
  - name: resp
    paths: [/resp]
    plugins:
    - name: response-transformer
      config:
        remove: {{headers: [via], json: [client, headers]}}
        rename: {{headers: ["x-upstream:x-backend"], json: ["upstream:served_by"]}}
        replace: {{headers: ["x-absent:no"], json: ["method:REPLACED", "missing:x"]}}
        add:
          headers: ["x-added:1", "x-backend:no"]
          json: ["path:no", "extra:5", "flag:true"]
          json_types: [string, number, boolean]
        append: {{headers: ["x-backend:two", "x-multi:a", "x-multi:b"], json: ["query:more"]}}
  - name: resp-raw
    paths: [/raw]
    strip_path: false
    plugins:
    - name: response-transformer
      config:
        add: {{json: ["added:yes"], headers: ["x-seen:1"]}}
  - name: resp-text
    paths: [/text]
    strip_path: false
    plugins:
    - name: response-transformer
      config:
        remove: {{json: [client]}}
  - name: term-default
    paths: [/term/default]
    plugins:
    - name: request-termination
  - name: term-message
    paths: [/term/message]
    plugins:
    - name: request-termination
      config: {{status_code: 403, message: "Go away"}}
  - name: term-body
    paths: [/term/body]
    plugins:
    - name: request-termination
      config: {{status_code: 200, body: "<h1>maintenance</h1>", content_type: "text/html"}}
  - name: term-empty
    paths: [/term/empty]
    plugins:
    - name: request-termination
      config: {{status_code: 418}}
  - name: term-trigger
    paths: [/term/trigger]
    plugins:
    - name: request-termination
      config: {{status_code: 404, trigger: x-terminate}}
  - name: term-echo
    paths: [/term/echo]
    plugins:
    - name: request-termination
      config: {{status_code: 200, echo: true}}
  - name: chain
    paths: [/chain]
    plugins:
    - name: request-termination
      config: {{status_code: 403, message: stopped, trigger: x-terminate}}
    - name: request-transformer
      config: {{add: {{headers: ["x-terminate:1"]}}}}
    - name: response-transformer
      config: {{add: {{json: ["by:gateway"], headers: ["x-rt:1"]}}}}
  - name: size-bytes
    paths: [/size]
    plugins:
    - name: request-size-limiting
      config: {{allowed_payload_size: 10, size_unit: bytes}}
  - name: size-kb
    paths: [/sizekb]
    plugins:
    - name: request-size-limiting
      config: {{allowed_payload_size: 1, size_unit: kilobytes}}
  - name: size-cl
    paths: [/sizecl]
    plugins:
    - name: request-size-limiting
      config: {{allowed_payload_size: 1, require_content_length: true}}
  - name: ip-deny
    paths: [/ip/deny]
    plugins:
    - name: ip-restriction
      config: {{deny: [127.0.0.0/8]}}
  - name: ip-allow-other
    paths: [/ip/allow-other]
    plugins:
    - name: ip-restriction
      config: {{allow: [10.0.0.0/8, "2001:db8::/32"], status: 401, message: "Nope"}}
  - name: ip-allow-local
    paths: [/ip/allow-local]
    plugins:
    - name: ip-restriction
      config: {{allow: [127.0.0.1], deny: [10.0.0.0/8]}}
  - name: ip-real
    paths: [/ip/real]
    plugins:
    - name: ip-restriction
      config: {{deny: [203.0.113.0/24]}}
"#
    )
}

struct Setup {
    _up: Proc,
    gw: Gw,
    c: reqwest::Client,
}

fn setup() -> Setup {
    let up = free_port();
    let u = upstream(up);
    let gw = gateway(&config(up));
    Setup {
        _up: u,
        gw,
        c: client(),
    }
}

async fn send(
    c: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rb = c.request(method.parse().expect("method"), url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.body(b.to_string());
    }
    let r = rb.send().await.expect("send");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.text().await.unwrap_or_default())
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

#[tokio::test]
async fn request_headers_in_kong_order() {
    let s = setup();
    let (st, _, body) = send(
        &s.c,
        "GET",
        &s.gw.url("/headers"),
        &[("x-remove", "1"), ("x-old", "o"), ("x-keep", "k")],
        None,
    )
    .await;
    assert_eq!(st, 200);
    let h = &json_of(&body)["headers"];
    // remove, then add (absent again): re-added.
    assert_eq!(h["x-remove"], "readded");
    // rename, replace (present now), add skipped (present), append.
    assert!(h.get("x-old").is_none(), "{h}");
    assert_eq!(h["x-new"], "replaced, appended");
    // replace only acts on present headers.
    assert!(h.get("x-absent").is_none(), "{h}");
    assert_eq!(h["x-keep"], "kept2");
    assert_eq!(h["x-added"], "added");
    assert_eq!(h["x-appended"], "one");

    // Without the client headers: rename/replace do nothing, add and append still do.
    let (_, _, body) = send(&s.c, "GET", &s.gw.url("/headers"), &[], None).await;
    let h = &json_of(&body)["headers"];
    assert_eq!(h["x-new"], "not-added, appended");
    assert_eq!(h["x-remove"], "readded");
    assert!(h.get("x-keep").is_none(), "{h}");
}

#[tokio::test]
async fn query_string_in_kong_order() {
    let s = setup();
    let (st, _, body) = send(
        &s.c,
        "GET",
        &s.gw.url("/query?drop=1&old=o&r=x&list=a&bare=keep"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, 200);
    // Sorted keys; `ghost` is absent so renaming it clears `bare` (Kong's table semantics).
    assert_eq!(
        json_of(&body)["query"],
        "added=yes&list=a&list=b&new=o&r=R&r=A"
    );
    // Nothing to rename/replace: add and append only.
    let (_, _, body) = send(&s.c, "GET", &s.gw.url("/query"), &[], None).await;
    assert_eq!(json_of(&body)["query"], "added=yes&list=b&r=no&r=A");
}

#[tokio::test]
async fn json_body_in_kong_order() {
    let s = setup();
    let (st, _, body) = send(
        &s.c,
        "POST",
        &s.gw.url("/body"),
        &[("content-type", "application/json")],
        Some(r#"{"gone":1,"old":"o","r":"x","f":false,"keep":{"n":[1,2]}}"#),
    )
    .await;
    assert_eq!(st, 200);
    let echo = json_of(&body);
    let sent = json_of(echo["body"].as_str().unwrap_or(""));
    assert_eq!(
        sent,
        json!({"new":"o","r":["R","A"],"f":"added","keep":{"n":[1,2]}})
    );
    // The upstream got the new body, framed by the gateway (chunked).
    assert_eq!(echo["headers"]["transfer-encoding"], "chunked");
    assert!(echo["headers"].get("content-length").is_none());
}

#[tokio::test]
async fn json_body_empty_gets_added_keys() {
    let s = setup();
    let (_, _, body) = send(
        &s.c,
        "POST",
        &s.gw.url("/body"),
        &[("content-type", "application/json")],
        Some(""),
    )
    .await;
    let sent = json_of(json_of(&body)["body"].as_str().unwrap_or(""));
    assert_eq!(sent, json!({"f":"added","new":"no","r":["A"]}));
}

#[tokio::test]
async fn malformed_or_other_bodies_pass_through() {
    let s = setup();
    for (ct, b) in [
        ("application/json", "{not json"),
        ("application/json", "[1,2,3]"),
        ("text/plain", r#"{"gone":1}"#),
    ] {
        let (st, _, body) = send(
            &s.c,
            "POST",
            &s.gw.url("/body"),
            &[("content-type", ct)],
            Some(b),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(json_of(&body)["body"], b, "{ct}");
    }
}

#[tokio::test]
async fn large_json_body_is_rewritten_whole() {
    let s = setup();
    let big = "x".repeat(200 * 1024);
    let payload = json!({"gone": 1, "r": big.clone(), "data": big}).to_string();
    let (st, _, body) = send(
        &s.c,
        "POST",
        &s.gw.url("/body"),
        &[("content-type", "application/json; charset=utf-8")],
        Some(&payload),
    )
    .await;
    assert_eq!(st, 200);
    let sent = json_of(json_of(&body)["body"].as_str().unwrap_or(""));
    assert!(sent.get("gone").is_none());
    assert_eq!(sent["r"], json!(["R", "A"]));
    assert_eq!(sent["data"].as_str().map(str::len), Some(200 * 1024));
}

#[tokio::test]
async fn form_body_in_kong_order() {
    let s = setup();
    let (_, _, body) = send(
        &s.c,
        "POST",
        &s.gw.url("/body"),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some("gone=1&old=o&r=x&f=&other=a+b"),
    )
    .await;
    assert_eq!(json_of(&body)["body"], "f=no&new=o&other=a%20b&r=R&r=A");
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn uri_captures_serve_v1_and_v2_from_one_upstream() {
    let s = setup();
    let (st, _, body) = send(
        &s.c,
        "GET",
        &s.gw.url("/v1/users/42?s=web"),
        &[("x-client", "mobile")],
        None,
    )
    .await;
    assert_eq!(st, 200);
    let e = json_of(&body);
    assert_eq!(e["path"], "/users/42");
    assert_eq!(e["query"], "s=web&src=web");
    assert_eq!(e["method"], "PUT");
    assert_eq!(e["headers"]["x-user-id"], "42");
    assert_eq!(e["headers"]["x-from"], "mobile");
    assert_eq!(e["headers"]["x-api-version"], "1");

    let (_, _, body) = send(&s.c, "GET", &s.gw.url("/v2/users/7"), &[], None).await;
    let e = json_of(&body);
    assert_eq!(e["path"], "/users/7");
    assert_eq!(e["method"], "GET");
    assert_eq!(e["headers"]["x-api-version"], "2");

    // Template defaults and missing query parameters render as Kong's subset does.
    let (_, _, body) = send(&s.c, "GET", &s.gw.url("/v1/users/9"), &[], None).await;
    let e = json_of(&body);
    assert_eq!(e["headers"]["x-from"], "none");
    assert_eq!(e["query"], "src=");
}

#[tokio::test]
async fn response_headers_and_json_in_kong_order() {
    let s = setup();
    let (st, h, body) = send(&s.c, "GET", &s.gw.url("/resp/x"), &[], None).await;
    assert_eq!(st, 200);
    assert!(h.get("via").is_none());
    assert!(h.get("x-upstream").is_none());
    let backend: Vec<_> = h
        .get_all("x-backend")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    // rename x-upstream -> x-backend; add x-backend:no still applies, because Kong checks
    // presence against the headers as the upstream sent them; then append.
    assert_eq!(backend, vec!["no", "two"]);
    assert!(h.get("x-absent").is_none());
    assert_eq!(h["x-added"], "1");
    let multi: Vec<_> = h
        .get_all("x-multi")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(multi, vec!["a", "b"]);
    assert!(h.get("content-length").is_none());
    let v = json_of(&body);
    assert!(
        v.get("client").is_none() && v.get("headers").is_none(),
        "{v}"
    );
    assert!(v.get("upstream").is_none());
    assert!(v["served_by"].is_string());
    assert_eq!(v["method"], "REPLACED");
    assert!(v.get("missing").is_none());
    assert_eq!(v["path"], "/x");
    assert_eq!(v["extra"], 5);
    assert_eq!(v["flag"], true);
    assert_eq!(v["query"], json!(["", "more"]));
}

#[tokio::test]
async fn response_malformed_json_and_other_types_pass_through() {
    let s = setup();
    let (st, h, body) = send(
        &s.c,
        "POST",
        &s.gw.url("/raw"),
        &[("content-type", "application/json")],
        Some("{broken"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body, "{broken");
    assert_eq!(h["x-seen"], "1");
    let (_, _, body) = send(
        &s.c,
        "POST",
        &s.gw.url("/raw"),
        &[("content-type", "application/json")],
        Some(r#"{"a":1}"#),
    )
    .await;
    assert_eq!(json_of(&body), json!({"a":1,"added":"yes"}));
    // Not application/json: untouched.
    let (_, _, body) = send(&s.c, "GET", &s.gw.url("/text"), &[], None).await;
    assert!(json_of(&body).get("client").is_some());
}

#[tokio::test]
async fn request_termination_answers() {
    let s = setup();
    let (st, h, body) = send(&s.c, "GET", &s.gw.url("/term/default"), &[], None).await;
    assert_eq!(st, 503);
    assert_eq!(json_of(&body), json!({"message":"Service unavailable"}));
    assert_eq!(h["content-type"], "application/json; charset=utf-8");

    let (st, _, body) = send(&s.c, "GET", &s.gw.url("/term/message"), &[], None).await;
    assert_eq!((st, json_of(&body)), (403, json!({"message":"Go away"})));

    let (st, h, body) = send(&s.c, "GET", &s.gw.url("/term/body"), &[], None).await;
    assert_eq!(st, 200);
    assert_eq!(h["content-type"], "text/html");
    assert_eq!(body, "<h1>maintenance</h1>");

    let (st, _, body) = send(&s.c, "GET", &s.gw.url("/term/empty"), &[], None).await;
    assert_eq!((st, body.as_str()), (418, ""));

    // trigger: only requests carrying it (header or query) are terminated.
    let (st, _, _) = send(&s.c, "GET", &s.gw.url("/term/trigger"), &[], None).await;
    assert_eq!(st, 200);
    let (st, _, body) = send(
        &s.c,
        "GET",
        &s.gw.url("/term/trigger"),
        &[("X-Terminate", "1")],
        None,
    )
    .await;
    assert_eq!((st, json_of(&body)), (404, json!({"message":"Not found"})));
    let (st, _, _) = send(
        &s.c,
        "GET",
        &s.gw.url("/term/trigger?x-terminate"),
        &[],
        None,
    )
    .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn request_termination_echo() {
    let s = setup();
    let (st, _, body) = send(
        &s.c,
        "POST",
        &s.gw.url("/term/echo/sub?a=1&a=2"),
        &[("content-type", "application/json"), ("x-test", "yes")],
        Some(r#"{"k":"v"}"#),
    )
    .await;
    assert_eq!(st, 200);
    let v = json_of(&body);
    assert_eq!(v["request"]["method"], "POST");
    assert_eq!(v["request"]["path"], "/term/echo/sub");
    assert_eq!(v["request"]["query"]["a"], json!(["1", "2"]));
    assert_eq!(v["request"]["headers"]["x-test"], "yes");
    assert_eq!(v["request"]["raw_body"], r#"{"k":"v"}"#);
    assert_eq!(v["request"]["body"], json!({"k":"v"}));
    assert_eq!(v["request"]["scheme"], "http");
    assert_eq!(v["matched_route"]["name"], "term-echo");
    assert_eq!(v["matched_service"]["name"], "api");
}

#[tokio::test]
async fn request_size_limits() {
    let s = setup();
    let (st, _, _) = send(&s.c, "POST", &s.gw.url("/size"), &[], Some("0123456789")).await;
    assert_eq!(st, 200);
    let (st, h, body) = send(&s.c, "POST", &s.gw.url("/size"), &[], Some("0123456789X")).await;
    assert_eq!(st, 413);
    assert_eq!(h["content-type"], "application/json; charset=utf-8");
    let v = json_of(&body);
    assert_eq!(v["message"], "Request size limit exceeded");
    assert!(v["request_id"].is_string());

    let (st, _, _) = send(
        &s.c,
        "POST",
        &s.gw.url("/sizekb"),
        &[],
        Some(&"a".repeat(1024)),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, _) = send(
        &s.c,
        "POST",
        &s.gw.url("/sizekb"),
        &[],
        Some(&"a".repeat(1025)),
    )
    .await;
    assert_eq!(st, 413);

    // Expect: 100-continue gets 417.
    let port = s.gw.port;
    let resp = tokio::task::spawn_blocking(move || {
        raw(
            port,
            b"POST /size HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .expect("raw");
    assert!(resp.starts_with("HTTP/1.1 417"), "{resp}");
    assert!(resp.contains("Request size limit exceeded"), "{resp}");

    // Chunked: counted as it streams, same answer.
    let resp = tokio::task::spawn_blocking(move || {
        raw(
            port,
            b"POST /size HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n",
        )
    })
    .await
    .expect("raw");
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("Request size limit exceeded"), "{resp}");
    let resp = tokio::task::spawn_blocking(move || {
        raw(
            port,
            b"POST /size HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\n0123\r\n0\r\n\r\n",
        )
    })
    .await
    .expect("raw");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // require_content_length: a chunked body is refused with 411.
    let resp = tokio::task::spawn_blocking(move || {
        raw(
            port,
            b"POST /sizecl HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\na\r\n0\r\n\r\n",
        )
    })
    .await
    .expect("raw");
    assert!(resp.starts_with("HTTP/1.1 411"), "{resp}");
    assert!(
        resp.contains("A valid Content-Length header is required"),
        "{resp}"
    );
    let (st, _, _) = send(&s.c, "POST", &s.gw.url("/sizecl"), &[], Some("ok")).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn ip_restriction_allow_and_deny() {
    let s = setup();
    let (st, h, body) = send(&s.c, "GET", &s.gw.url("/ip/deny"), &[], None).await;
    assert_eq!(st, 403);
    assert_eq!(h["content-type"], "application/json; charset=utf-8");
    let v = json_of(&body);
    assert_eq!(v["message"], "IP address not allowed: 127.0.0.1");
    assert!(v["request_id"].is_string());

    let (st, _, body) = send(&s.c, "GET", &s.gw.url("/ip/allow-other"), &[], None).await;
    assert_eq!(
        (st, json_of(&body)["message"].clone()),
        (401, json!("Nope"))
    );

    let (st, _, _) = send(&s.c, "GET", &s.gw.url("/ip/allow-local"), &[], None).await;
    assert_eq!(st, 200);

    // Not a trusted peer: the real-ip header is ignored.
    let (st, _, _) = send(
        &s.c,
        "GET",
        &s.gw.url("/ip/real"),
        &[("x-real-ip", "203.0.113.9")],
        None,
    )
    .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn ip_restriction_uses_trusted_real_ip() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway_with(
        &config(up),
        GwOpts {
            extra: vec![
                "--trusted-ips".into(),
                "127.0.0.1/32".into(),
                "--real-ip-header".into(),
                "X-Forwarded-For".into(),
            ],
            tls: None,
        },
    );
    let c = client();
    let (st, _, body) = send(
        &c,
        "GET",
        &gw.url("/ip/real"),
        &[("x-forwarded-for", "198.51.100.1, 203.0.113.7")],
        None,
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(
        json_of(&body)["message"],
        "IP address not allowed: 203.0.113.7"
    );
    let (st, _, body) = send(
        &c,
        "GET",
        &gw.url("/ip/real"),
        &[("x-forwarded-for", "203.0.113.7, 198.51.100.1")],
        None,
    )
    .await;
    assert_eq!(st, 200);
    // The upstream sees the same client address; X-Forwarded-For gets the peer appended.
    let h = &json_of(&body)["headers"];
    assert_eq!(h["x-real-ip"], "198.51.100.1");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 198.51.100.1, 127.0.0.1");
}

#[test]
fn configs_are_checked_with_field_paths() {
    let bad = r#"_format_version: "3.0"
services:
- name: a
  url: http://127.0.0.1:1
  routes:
  - name: r
    paths: [/a]
    plugins:
    - name: request-transformer
      config:
        add: {headers: ["x-no-value"]}
    - name: response-transformer
      config:
        append: {json: ["a:1"], json_type: [number]}
    - name: request-termination
      config: {message: hi, body: there}
    - name: ip-restriction
      config: {allow: [10.0.0.0/40]}
    - name: request-size-limiting
      config: {size_unit: gigabytes}
  - name: r2
    paths: [/b]
    plugins:
    - name: request-transformer
      config:
        replace: {uri: "/x/$(os.getenv('HOME'))"}
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, bad).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("check");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    for needle in [
        "add.headers[0]: key 'x-no-value' has no value",
        "append.json_type",
        "message cannot be used with content_type or body",
        "allow[0]: invalid ip or cidr range",
        "size_unit",
        "warning: ",
        "replace.uri: template expression `$(os.getenv('HOME'))` is Lua the gateway cannot evaluate",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[tokio::test]
async fn plugins_run_in_kong_priority_order() {
    let s = setup();
    // request-transformer (801) adds the trigger header before request-termination (2)
    // looks for it; response-transformer (800) then edits the local answer's headers and
    // JSON body, as Kong's header and body filters do for `kong.response.exit`.
    let (st, h, body) = send(&s.c, "GET", &s.gw.url("/chain"), &[], None).await;
    assert_eq!(st, 403);
    assert_eq!(h["x-rt"], "1");
    assert_eq!(json_of(&body), json!({"message":"stopped","by":"gateway"}));
    assert_eq!(
        h["content-length"].to_str().ok(),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn multipart_body_in_kong_order() {
    let s = setup();
    let part = |n: &str, v: &str| {
        format!("--B0undary\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n")
    };
    let body = format!(
        "{}{}{}--B0undary--\r\n",
        part("old", "o"),
        part("gone", "g"),
        part("r", "x")
    );
    let (st, _, resp) = send(
        &s.c,
        "POST",
        &s.gw.url("/body"),
        &[("content-type", "multipart/form-data; boundary=B0undary")],
        Some(&body),
    )
    .await;
    assert_eq!(st, 200);
    // rename (appends the new name), remove, replace (re-adds at the end), add; no append
    // for multipart in Kong.
    let expected = format!(
        "{}{}{}--B0undary--\r\n",
        part("new", "o"),
        part("r", "R"),
        part("f", "added")
    );
    assert_eq!(json_of(&resp)["body"], expected);
}

#[tokio::test]
async fn oversized_bodies_are_rejected_not_half_rewritten() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway_with(
        &config(up),
        GwOpts {
            extra: vec!["--max-body-size".into(), "1000".into()],
            tls: None,
        },
    );
    let c = client();
    let big = json!({"gone": 1, "data": "x".repeat(2000)}).to_string();
    let (st, _, body) = send(
        &c,
        "POST",
        &gw.url("/body"),
        &[("content-type", "application/json")],
        Some(&big),
    )
    .await;
    assert_eq!(st, 413, "{body}");
    // Chunked (no Content-Length): stopped while buffering, before anything is rewritten.
    let chunk = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let req = format!(
        "POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}"
    );
    let port = gw.port;
    let resp = tokio::task::spawn_blocking(move || raw(port, req.as_bytes()))
        .await
        .expect("raw");
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    // Within the limit it is rewritten.
    let (st, _, body) = send(
        &c,
        "POST",
        &gw.url("/body"),
        &[("content-type", "application/json")],
        Some(r#"{"gone":1,"keep":2}"#),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        json_of(json_of(&body)["body"].as_str().unwrap_or("")),
        json!({"keep":2,"f":"added","new":"no","r":["A"]})
    );
}

#[tokio::test]
async fn method_change_to_get_copies_form_body_into_query() {
    let s = setup();
    let (st, _, body) = send(
        &s.c,
        "POST",
        &s.gw.url("/to-get?a=0"),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some("a=1&b=two+words"),
    )
    .await;
    assert_eq!(st, 200);
    let e = json_of(&body);
    assert_eq!(e["method"], "GET");
    assert_eq!(e["query"], "a=0&a=1&b=two%20words");
    // The body still goes upstream, as in Kong.
    assert_eq!(e["body"], "a=1&b=two+words");
    // Other content types: only the method changes.
    let (_, _, body) = send(
        &s.c,
        "POST",
        &s.gw.url("/to-get?a=0"),
        &[("content-type", "application/json")],
        Some(r#"{"a":1}"#),
    )
    .await;
    let e = json_of(&body);
    assert_eq!(
        (e["method"].clone(), e["query"].clone()),
        (json!("GET"), json!("a=0"))
    );
    assert_eq!(e["body"], r#"{"a":1}"#);
}

#[tokio::test]
async fn oversized_json_response_passes_through_unchanged() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway_with(
        &config(up),
        GwOpts {
            extra: vec!["--max-body-size".into(), (40 * 1024 * 1024).to_string()],
            tls: None,
        },
    );
    let c = client();
    // Over the 16 MiB response buffering limit: sent as received, no key added.
    let big = json!({"pad": "x".repeat(17 * 1024 * 1024)}).to_string();
    let (st, _, body) = send(
        &c,
        "POST",
        &gw.url("/raw"),
        &[("content-type", "application/json")],
        Some(&big),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body.len(), big.len());
    assert!(body == big, "body changed");
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn bodyless_requests_keep_their_framing() {
    let s = setup();
    // Only remove configured and no body: nothing to rewrite, nothing re-framed.
    let (st, _, body) = send(
        &s.c,
        "GET",
        &s.gw.url("/body-remove"),
        &[("content-type", "application/json")],
        None,
    )
    .await;
    assert_eq!(st, 200);
    let e = json_of(&body);
    assert!(e["headers"].get("transfer-encoding").is_none(), "{e}");
    assert_eq!(e["body"], "");
    // With a body the key goes.
    let (_, _, body) = send(
        &s.c,
        "POST",
        &s.gw.url("/body-remove"),
        &[("content-type", "application/json")],
        Some(r#"{"secret":"s","ok":1}"#),
    )
    .await;
    assert_eq!(
        json_of(json_of(&body)["body"].as_str().unwrap_or("")),
        json!({"ok":1})
    );
}

#[tokio::test]
async fn templates_escape_by_quoting_and_unevaluable_lua_answers_500() {
    // Kong's own cases: `$('$(uri_captures.user1)')` is a Lua string, so the text stays
    // literal; `$(ERROR())` loads and fails when rendered, answered 500.
    let up = free_port();
    let _u = upstream(up);
    let cfg = format!(
        r#"_format_version: "3.0"
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: escaped
    paths: ["~/requests/user1/(?<user1>\\w+)/user2/(?<user2>\\S+)"]
    strip_path: false
    plugins:
    - name: request-transformer
      config:
        add: {{querystring: ["q1:$('$(uri_captures.user1)')", "q3:$(uri_captures.user2)"]}}
  - name: failing
    paths: [/failing]
    plugins:
    - name: request-transformer
      config:
        add: {{querystring: ["q1:$(ERROR())"]}}
"#
    );
    let gw = gateway(&cfg);
    let c = client();
    let (s, _, body) = send(
        &c,
        "GET",
        &gw.url("/requests/user1/foo/user2/bar?q2=20"),
        &[],
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let v = json_of(&body);
    let q = v["query"].as_str().unwrap_or_default().to_string();
    let args: std::collections::HashMap<String, String> = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let d = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (d(k), d(v))
        })
        .collect();
    assert_eq!(
        args.get("q1").map(String::as_str),
        Some("$(uri_captures.user1)"),
        "{q}"
    );
    assert_eq!(args.get("q2").map(String::as_str), Some("20"), "{q}");
    assert_eq!(args.get("q3").map(String::as_str), Some("bar"), "{q}");
    let (s, _, body) = send(&c, "GET", &gw.url("/failing"), &[], None).await;
    assert_eq!(s, 500, "{body}");
    assert_eq!(json_of(&body)["message"], "An unexpected error occurred");
}
