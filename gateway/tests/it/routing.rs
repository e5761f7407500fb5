//! Route precedence, strip_path / preserve_host and the 404 answer.

use crate::harness::*;

fn config(up: u16) -> String {
    // Each route has its own service whose path names the route, so the upstream's
    // echoed path tells which route matched.
    let mut s = String::from("_format_version: \"3.0\"\nservices:\n");
    let routes: &[(&str, &str)] = &[
        ("short", "paths: [/api]"),
        ("long", "paths: [/api/v1]"),
        (
            "regex-low",
            "paths: [\"~/items/\\\\d+$\"]\n    regex_priority: 1",
        ),
        (
            "regex-high",
            "paths: [\"~/items/(?<id>\\\\d+)\"]\n    regex_priority: 5",
        ),
        ("regex-vs-prefix", "paths: [\"~/shop/v\\\\d+/cart\"]"),
        ("prefix-long", "paths: [/shop/v1/cart/items]"),
        ("method", "paths: [/m]\n    methods: [POST]"),
        ("nomethod", "paths: [/m]"),
        ("host-exact", "hosts: [api.example.com]\n    paths: [/h]"),
        ("host-wild", "hosts: [\"*.example.com\"]\n    paths: [/h]"),
        (
            "header",
            "paths: [/hd]\n    headers:\n      x-version: [v2]",
        ),
        ("noheader", "paths: [/hd]"),
        (
            "keep",
            "paths: [/keep]\n    strip_path: false\n    preserve_host: true",
        ),
    ];
    for (name, spec) in routes {
        s.push_str(&format!(
            "- name: svc-{name}\n  url: http://127.0.0.1:{up}/{name}\n  routes:\n  - name: {name}\n    {spec}\n"
        ));
    }
    s
}

async fn matched(
    c: &reqwest::Client,
    gw: &Gw,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut rb = c.request(method.parse().expect("method"), gw.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("send");
    let status = r.status().as_u16();
    let v: serde_json::Value =
        serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default();
    (status, v["path"].as_str().unwrap_or("").to_string())
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn precedence_follows_kong() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up));
    let c = client();
    // Longest plain prefix wins.
    assert_eq!(
        matched(&c, &gw, "GET", "/api/v1/users", &[]).await,
        (200, "/long/users".into())
    );
    assert_eq!(
        matched(&c, &gw, "GET", "/api/users", &[]).await,
        (200, "/short/users".into())
    );
    // Among regexes, regex_priority decides.
    assert_eq!(
        matched(&c, &gw, "GET", "/items/42", &[]).await.1,
        "/regex-high"
    );
    // A regex path outranks a plain prefix of equal match weight (Kong's priority bits).
    assert_eq!(
        matched(&c, &gw, "GET", "/shop/v1/cart/items/9", &[])
            .await
            .1,
        "/regex-vs-prefix/items/9"
    );
    // More matched fields win: methods + paths beats paths.
    assert_eq!(matched(&c, &gw, "POST", "/m/x", &[]).await.1, "/method/x");
    assert_eq!(matched(&c, &gw, "GET", "/m/x", &[]).await.1, "/nomethod/x");
    // Plain hosts beat wildcard hosts; the wildcard matches other subdomains.
    assert_eq!(
        matched(&c, &gw, "GET", "/h", &[("host", "api.example.com")])
            .await
            .1,
        "/host-exact"
    );
    assert_eq!(
        matched(&c, &gw, "GET", "/h", &[("host", "web.example.com:8000")])
            .await
            .1,
        "/host-wild"
    );
    assert_eq!(
        matched(&c, &gw, "GET", "/h", &[("host", "example.org")])
            .await
            .0,
        404
    );
    // A header condition adds weight.
    assert_eq!(
        matched(&c, &gw, "GET", "/hd", &[("x-version", "v2")])
            .await
            .1,
        "/header"
    );
    assert_eq!(
        matched(&c, &gw, "GET", "/hd", &[("x-version", "v1")])
            .await
            .1,
        "/noheader"
    );
    // Normalization: dot segments and double slashes are resolved before matching.
    assert_eq!(
        matched(&c, &gw, "GET", "/x/../api//v1/a", &[]).await.1,
        "/long/a"
    );
}

#[tokio::test]
async fn strip_path_and_preserve_host() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up));
    let c = client();
    let r = c
        .get(gw.url("/keep/a?q=1&r=2"))
        .header("host", "client.example")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["path"], "/keep/keep/a");
    assert_eq!(v["query"], "q=1&r=2");
    assert_eq!(v["headers"]["host"], "client.example");
    let r = c
        .get(gw.url("/api/x"))
        .header("host", "client.example")
        .send()
        .await
        .expect("send");
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["path"], "/short/x");
    assert_eq!(v["headers"]["host"], format!("127.0.0.1:{up}"));
    assert_eq!(v["headers"]["x-forwarded-host"], "client.example");
    assert_eq!(v["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn unmatched_gets_kongs_404_and_request_ids_flow() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up));
    let c = client();
    let r = c.get(gw.url("/nothing/here")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let rid = r.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    let body = r.text().await.expect("body");
    assert_eq!(
        body,
        format!(
            "{{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"{rid}\"\n}}"
        )
    );

    // A client-sent id is kept, passed upstream and returned.
    let r = c
        .get(gw.url("/api/x"))
        .header("x-request-id", "client-id-123")
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["x-request-id"], "client-id-123");
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["headers"]["x-request-id"], "client-id-123");
    // Consumer headers from the client never reach the upstream.
    let r = c
        .get(gw.url("/api/x"))
        .header("x-consumer-id", "forged")
        .header("x-anonymous-consumer", "false")
        .send()
        .await
        .expect("send");
    let v: serde_json::Value = r.json().await.expect("json");
    assert!(v["headers"].get("x-consumer-id").is_none(), "{v}");
    assert!(v["headers"].get("x-anonymous-consumer").is_none());
}

#[tokio::test]
async fn format_2x_regex_paths_are_migrated_as_kong_3_does() {
    // Kong 3.x loads a `_format_version: "2.1"` file by giving its regex paths the `~`
    // they need in 3.0; plain paths stay prefixes.
    let up = free_port();
    let _u = upstream(up);
    let cfg = format!(
        "_format_version: \"2.1\"
services:
- name: items
  url: http://127.0.0.1:{up}/items
  routes:
  - name: by-id
    paths: [\"/items/\\\\d+$\"]
- name: plain
  url: http://127.0.0.1:{up}/plain
  routes:
  - name: plain
    paths: [/v1.0/docs]
"
    );
    let gw = gateway(&cfg);
    let c = client();
    let (s, p) = matched(&c, &gw, "GET", "/items/42", &[]).await;
    assert_eq!((s, p.as_str()), (200, "/items"));
    // A regex anchored at the end: a suffix does not match.
    let (s, _) = matched(&c, &gw, "GET", "/items/42/x", &[]).await;
    assert_eq!(s, 404);
    let (s, p) = matched(&c, &gw, "GET", "/v1.0/docs/a", &[]).await;
    assert_eq!((s, p.as_str()), (200, "/plain/a"));
}

#[tokio::test]
async fn dot_segments_after_a_prefix_are_dropped_as_kong_does() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up));
    let c = client();
    // `/api` matches `/api../x` by prefix; the `../` after it must not climb out of the
    // service's path upstream (Kong's sanitize_uri_postfix), encoded or not.
    for path in ["/api../x", "/api%2E%2E/x", "/api%2e./x"] {
        let (s, p) = matched(&c, &gw, "GET", path, &[]).await;
        assert_eq!((s, p.as_str()), (200, "/short/x"), "{path}");
    }
}

#[tokio::test]
async fn a_repeated_yaml_key_keeps_the_last_value_as_kong_does() {
    let up = free_port();
    let _u = upstream(up);
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:{up}/svc\n  routes:\n  - name: r\n    paths: [/v1]\n    paths: [/v2]\n"
    );
    let gw = gateway(&cfg);
    let c = client();
    assert_eq!(matched(&c, &gw, "GET", "/v2/x", &[]).await.0, 200);
    assert_eq!(matched(&c, &gw, "GET", "/v1/x", &[]).await.0, 404);
}
