//! Rate limiting against real processes: Kong's headers and 429s on the local policy,
//! exact admission across three gateways sharing one Redis, a 3-master Redis Cluster
//! (and the loss of a master), Redis failures (slow, killed, restarted) with and without
//! `fault_tolerant`, AUTH and TLS, tiers by consumer group (key-auth) and by JWT claim.
//! Windows are an hour long and the tests start away from an hour's end, so no window
//! rolls over mid-test.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::*;

/// One service with a route per `(path, rate-limiting config)`.
fn config(upstream: u16, routes: &[(&str, &str)]) -> String {
    let mut s = format!(
        "_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://127.0.0.1:{upstream}\n  routes:\n"
    );
    for (i, (path, cfg)) in routes.iter().enumerate() {
        s.push_str(&format!(
            "  - name: r{i}\n    paths: [\"{path}\"]\n    plugins:\n    - name: rate-limiting\n      config: {cfg}\n"
        ));
    }
    s
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn n(&self, name: &str) -> Option<u64> {
        self.h(name).and_then(|v| v.parse().ok())
    }
}

async fn get(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut rb = c.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

/// The value of one Prometheus series whose labels include every `labels` pair.
async fn metric(gw: &Gw, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = client()
        .get(gw.status_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with(name) && (l.len() == name.len() || !l[name.len()..].starts_with('_'))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn kong_error_body(message: &str, request_id: &str) -> String {
    format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"{request_id}\"\n}}")
}

#[tokio::test]
async fn local_policy_headers_and_429_match_kong() {
    away_from_window_end(3600, 30);
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(
        up,
        &[
            (
                "/kong",
                "{hour: 3, day: 5, limit_by: header, header_name: x-user}",
            ),
            (
                "/custom",
                "{hour: 1, limit_by: ip, error_code: 403, error_message: slow down}",
            ),
            (
                "/hidden",
                "{hour: 1, limit_by: ip, hide_client_headers: true}",
            ),
            (
                "/burst",
                "{hour: 20, limit_by: header, header_name: x-user}",
            ),
        ],
    ));
    let c = client();
    let url = gw.url("/kong");
    for i in 0..3u64 {
        let r = get(&c, &url, &[("x-user", "a")]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(r.n("x-ratelimit-limit-hour"), Some(3));
        assert_eq!(r.n("x-ratelimit-remaining-hour"), Some(2 - i));
        assert_eq!(r.n("x-ratelimit-limit-day"), Some(5));
        assert_eq!(r.n("x-ratelimit-remaining-day"), Some(4 - i));
        assert_eq!(r.n("ratelimit-limit"), Some(3));
        assert_eq!(r.n("ratelimit-remaining"), Some(2 - i));
        let reset = r.n("ratelimit-reset").unwrap_or(0);
        assert!((1..=3600).contains(&reset), "reset {reset}");
        assert!(r.h("retry-after").is_none());
    }
    let r = get(&c, &url, &[("x-user", "a"), ("x-request-id", "rid-4")]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body, kong_error_body("API rate limit exceeded", "rid-4"));
    assert_eq!(r.h("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(r.n("x-ratelimit-remaining-hour"), Some(0));
    // A rejected request is not counted: the day window still shows 2 left.
    assert_eq!(r.n("x-ratelimit-remaining-day"), Some(2));
    assert_eq!(r.n("ratelimit-remaining"), Some(0));
    assert_eq!(r.h("retry-after"), r.h("ratelimit-reset"));
    assert!(r.n("retry-after").is_some_and(|s| (1..=3600).contains(&s)));
    // Kong's header names on the wire.
    let raw_429 = raw(
        gw.port,
        b"GET /kong HTTP/1.1\r\nHost: x\r\nx-user: a\r\nConnection: close\r\n\r\n",
    );
    assert!(raw_429.starts_with("HTTP/1.1 429"), "{raw_429}");
    for h in [
        "Retry-After: ",
        "X-RateLimit-Limit-Hour: 3",
        "RateLimit-Remaining: 0",
    ] {
        assert!(raw_429.contains(h), "{h} in {raw_429}");
    }
    // Kong's spelling on proxied responses too.
    let raw_ok = raw(
        gw.port,
        b"GET /kong HTTP/1.1\r\nHost: x\r\nx-user: spelled\r\nConnection: close\r\n\r\n",
    );
    assert!(raw_ok.starts_with("HTTP/1.1 200"), "{raw_ok}");
    for h in [
        "X-RateLimit-Limit-Hour: 3",
        "X-RateLimit-Remaining-Hour: 2",
        "X-RateLimit-Remaining-Day: 4",
        "RateLimit-Limit: 3",
        "RateLimit-Remaining: 2",
        "RateLimit-Reset: ",
    ] {
        assert!(raw_ok.contains(h), "{h} in {raw_ok}");
    }
    // Another identifier has its own counters.
    let r = get(&c, &url, &[("x-user", "b")]).await;
    assert_eq!(
        (r.status, r.n("x-ratelimit-remaining-hour")),
        (200, Some(2))
    );
    // Without the header, limit_by header falls back to the client IP.
    let r = get(&c, &url, &[]).await;
    assert_eq!(
        (r.status, r.n("x-ratelimit-remaining-hour")),
        (200, Some(2))
    );

    // error_code / error_message.
    assert_eq!(get(&c, &gw.url("/custom"), &[]).await.status, 200);
    let r = get(&c, &gw.url("/custom"), &[("x-request-id", "rid-c")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body, kong_error_body("slow down", "rid-c"));

    // hide_client_headers: no rate-limit headers at all (Kong then sends no Retry-After).
    let r = get(&c, &gw.url("/hidden"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.h("x-ratelimit-limit-hour").is_none() && r.h("ratelimit-limit").is_none());
    let r = get(&c, &gw.url("/hidden"), &[]).await;
    assert_eq!(r.status, 429);
    assert!(r.h("x-ratelimit-remaining-hour").is_none() && r.h("retry-after").is_none());

    // A concurrent burst admits exactly the limit (Kong's local policy overshoots).
    let burst = gw.url("/burst");
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let (c, burst) = (c.clone(), burst.clone());
        tasks.push(tokio::spawn(async move {
            get(&c, &burst, &[("x-user", "burst")]).await.status
        }));
    }
    let mut codes: HashMap<u16, u32> = HashMap::new();
    for t in tasks {
        *codes.entry(t.await.expect("task")).or_default() += 1;
    }
    assert_eq!(codes.get(&200), Some(&20), "{codes:?}");
    assert_eq!(codes.get(&429), Some(&40), "{codes:?}");

    assert!(
        metric(
            &gw,
            "gateway_ratelimit_decisions_total",
            &[("route", "r3"), ("outcome", "allowed"), ("tier", "default")]
        )
        .await
            >= 20.0
    );
    assert!(
        metric(
            &gw,
            "gateway_ratelimit_decisions_total",
            &[("route", "r3"), ("outcome", "rejected")]
        )
        .await
            >= 40.0
    );

    // Counters survive a configuration reload (as Kong's shared dict does).
    let mut cfg = config(
        up,
        &[
            (
                "/kong",
                "{hour: 3, day: 5, limit_by: header, header_name: x-user}",
            ),
            (
                "/custom",
                "{hour: 1, limit_by: ip, error_code: 403, error_message: slow down}",
            ),
            (
                "/hidden",
                "{hour: 1, limit_by: ip, hide_client_headers: true}",
            ),
            (
                "/burst",
                "{hour: 20, limit_by: header, header_name: x-user}",
            ),
        ],
    );
    cfg.push_str("  - name: added\n    paths: [/added]\n");
    gw.write_config(&cfg);
    gw.proc.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&client(), &gw.url("/added"), &[]).await.status == 200
        })
        .await,
        "reload"
    );
    let r = get(&c, &url, &[("x-user", "b")]).await;
    assert_eq!(
        (r.status, r.n("x-ratelimit-remaining-hour")),
        (200, Some(1))
    );
}

#[test]
fn config_errors_name_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    std::fs::write(
        &path,
        config(
            1,
            &[
                ("/a", "{minute: 10, hour: 5}"),
                ("/b", "{minute: 10, limit_by: header}"),
                ("/c", "{minute: 10, policy: redis}"),
                ("/d", "{tiers: {free: {minute: 1}}, default_tier: gold}"),
                ("/e", "{minute: 10, redis_hots: x}"),
            ],
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    for want in [
        "routes[0].plugins[0].config.hour: The limit for hour(5.0) cannot be lower than the limit for minute(10.0)",
        "routes[1].plugins[0].config.header_name: required field missing",
        "routes[2].plugins[0].config.redis.host: required field missing",
        "routes[3].plugins[0].config.default_tier: `gold` is not one of the configured tiers",
        "routes[4].plugins[0].config.redis_hots: unknown field",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
}

fn redis_cfg(limit: &str, redis: &str, extra: &str) -> String {
    format!(
        "{{{limit}, limit_by: header, header_name: x-user, policy: redis, redis: {{{redis}}}{extra}}}"
    )
}

/// Sends `total` requests with `conc` concurrent clients, spread over `gws` round-robin,
/// for the identifier `user`; returns (status counts, remaining-hour values of the 200s).
async fn spread(
    gws: &[&Gw],
    path: &str,
    user: &str,
    total: usize,
    conc: usize,
) -> (HashMap<u16, u32>, Vec<u64>) {
    let mut tasks = Vec::new();
    for w in 0..conc {
        let urls: Vec<String> = gws.iter().map(|g| g.url(path)).collect();
        let user = user.to_string();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut out = Vec::new();
            let mut i = w;
            while i < total {
                let r = get(&c, &urls[i % urls.len()], &[("x-user", &user)]).await;
                out.push((r.status, r.n("x-ratelimit-remaining-hour")));
                i += conc;
            }
            out
        }));
    }
    let mut codes: HashMap<u16, u32> = HashMap::new();
    let mut remaining = Vec::new();
    for t in tasks {
        for (s, rem) in t.await.expect("task") {
            *codes.entry(s).or_default() += 1;
            if s == 200 {
                remaining.extend(rem);
            }
        }
    }
    remaining.sort_unstable();
    (codes, remaining)
}

#[tokio::test]
async fn three_gateways_sharing_redis_admit_exactly_the_limit() {
    away_from_window_end(3600, 30);
    let up = free_port();
    let _u = upstream(up);
    let rp = free_port();
    let _redis = redis_server(rp);
    let cfg = config(
        up,
        &[(
            "/shared",
            &redis_cfg("hour: 200", &format!("host: 127.0.0.1, port: {rp}"), ""),
        )],
    );
    let (g1, g2, g3) = (gateway(&cfg), gateway(&cfg), gateway(&cfg));
    let (codes, remaining) = spread(&[&g1, &g2, &g3], "/shared", "shared-user", 600, 30).await;
    assert_eq!(codes.get(&200), Some(&200), "{codes:?}");
    assert_eq!(codes.get(&429), Some(&400), "{codes:?}");
    // Every admitted request saw a distinct count: one atomic step per decision.
    assert_eq!(remaining, (0..200).collect::<Vec<u64>>());
    // Only admitted requests were counted in Redis.
    let keys = redis_cli(rp, &["--scan", "--pattern", "ratelimit:*"]);
    let key = keys.lines().next().unwrap_or("").to_string();
    assert!(
        key.contains(":shared-user}:") && key.ends_with(":hour"),
        "{keys}"
    );
    assert_eq!(redis_cli(rp, &["get", &key]).trim(), "200");
    let ttl: i64 = redis_cli(rp, &["ttl", &key]).trim().parse().unwrap_or(-1);
    assert!((1..=3601).contains(&ttl), "ttl {ttl}");
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn redis_cluster_admits_exactly_and_spreads_keys() {
    away_from_window_end(3600, 30);
    let up = free_port();
    let _u = upstream(up);
    let cluster = redis_cluster(3);
    let nodes: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("'127.0.0.1:{p}'"))
        .collect();
    let cfg = config(
        up,
        &[(
            "/c",
            &redis_cfg(
                "minute: 10, hour: 10",
                &format!("cluster_nodes: [{}]", nodes.join(", ")),
                "",
            ),
        )],
    );
    let (g1, g2) = (gateway(&cfg), gateway(&cfg));
    for u in 0..12 {
        let user = format!("user-{u}");
        let (codes, remaining) = spread(&[&g1, &g2], "/c", &user, 14, 7).await;
        assert_eq!(codes.get(&200), Some(&10), "{user}: {codes:?}");
        assert_eq!(codes.get(&429), Some(&4), "{user}: {codes:?}");
        assert_eq!(remaining, (0..10).collect::<Vec<u64>>(), "{user}");
    }
    // Each decision's two windows share a slot; users spread over the masters.
    let sizes: Vec<u64> = cluster
        .ports
        .iter()
        .map(|p| redis_cli(*p, &["dbsize"]).trim().parse().unwrap_or(0))
        .collect();
    assert_eq!(sizes.iter().sum::<u64>(), 24, "{sizes:?}");
    assert!(sizes.iter().filter(|s| **s > 0).count() >= 2, "{sizes:?}");
    assert!(
        sizes.iter().all(|s| s % 2 == 0),
        "windows split across slots: {sizes:?}"
    );
}

#[tokio::test]
async fn redis_cluster_node_loss_falls_back_and_recovers() {
    away_from_window_end(3600, 40);
    let up = free_port();
    let _u = upstream(up);
    let mut cluster = redis_cluster(3);
    let nodes: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("'127.0.0.1:{p}'"))
        .collect();
    let r = format!("cluster_nodes: [{}], timeout: 300", nodes.join(", "));
    let gw = gateway(&config(
        up,
        &[
            ("/ft", &redis_cfg("hour: 1000", &r, "")),
            (
                "/strict",
                &redis_cfg("hour: 1000", &r, ", fault_tolerant: false"),
            ),
        ],
    ));
    let c = client();
    let users: Vec<String> = (0..12).map(|u| format!("n-{u}")).collect();
    for u in &users {
        let r = get(&c, &gw.url("/strict"), &[("x-user", u)]).await;
        assert_eq!(
            (r.status, r.n("x-ratelimit-remaining-hour")),
            (200, Some(999)),
            "{u}"
        );
    }
    // One master gone (its slots are unserved): fault tolerant requests are all served.
    drop(cluster.nodes.remove(0));
    let mut strict_codes = Vec::new();
    for u in &users {
        assert_eq!(
            get(&c, &gw.url("/ft"), &[("x-user", u)]).await.status,
            200,
            "{u}"
        );
        strict_codes.push(get(&c, &gw.url("/strict"), &[("x-user", u)]).await.status);
    }
    assert!(strict_codes.contains(&500), "{strict_codes:?}");
    assert!(
        metric(
            &gw,
            "gateway_ratelimit_decisions_total",
            &[("outcome", "fallback_allowed")]
        )
        .await
            >= 1.0
    );
    // The node comes back with its slots (empty: no persistence here) and every user is
    // decided by Redis again, without a gateway restart.
    cluster.nodes.insert(0, cluster.start_node(0));
    assert!(
        cluster.wait_ok(Duration::from_secs(20)),
        "cluster did not recover"
    );
    let strict = gw.url("/strict");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let c = client();
            let mut ok = true;
            for u in &users {
                ok &= get(&c, &strict, &[("x-user", u)]).await.status == 200;
            }
            ok
        })
        .await,
        "no recovery"
    );
}

#[tokio::test]
async fn redis_failures_fall_back_or_fail_and_recover() {
    away_from_window_end(3600, 40);
    let up = free_port();
    let _u = upstream(up);
    let rp = free_port();
    let redis = redis_server(rp);
    let r = format!("host: 127.0.0.1, port: {rp}, timeout: 300");
    let gw = gateway(&config(
        up,
        &[
            ("/ft", &redis_cfg("hour: 5", &r, "")),
            (
                "/strict",
                &redis_cfg("hour: 100", &r, ", fault_tolerant: false"),
            ),
        ],
    ));
    let c = client();
    let (ft, strict) = (gw.url("/ft"), gw.url("/strict"));
    let user = [("x-user", "u")];
    let r = get(&c, &ft, &user).await;
    assert_eq!(
        (r.status, r.n("x-ratelimit-remaining-hour")),
        (200, Some(4))
    );
    assert_eq!(get(&c, &strict, &user).await.status, 200);
    assert_eq!(metric(&gw, "gateway_redis_up", &[]).await, 1.0);

    // Slow Redis: a call past `timeout` falls back (fault_tolerant) instead of waiting.
    let slow = std::thread::spawn(move || redis_cli(rp, &["debug", "sleep", "1.5"]));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t0 = Instant::now();
    let r = get(&c, &ft, &user).await;
    assert_eq!(r.status, 200);
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    let r = get(&c, &strict, &user).await;
    assert_eq!(r.status, 500);
    let _ = slow.join();
    assert!(metric(&gw, "gateway_redis_errors_total", &[("kind", "timeout")]).await >= 1.0);
    // It comes back by itself.
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&client(), &strict, &user).await.status == 200
        })
        .await
    );

    // Redis killed: fault_tolerant falls back to local counters, which limit too (the
    // request decided locally while Redis was slow already used one of the 5).
    drop(redis);
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(get(&c, &ft, &user).await.status);
    }
    assert_eq!(codes, vec![200, 200, 200, 200, 429]);
    // Without fault_tolerant: Kong's 500.
    let r = get(&c, &strict, &[("x-user", "u"), ("x-request-id", "rid-500")]).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.body,
        kong_error_body("An unexpected error occurred", "rid-500")
    );
    assert_eq!(metric(&gw, "gateway_redis_up", &[]).await, 0.0);
    assert!(
        metric(
            &gw,
            "gateway_ratelimit_decisions_total",
            &[("outcome", "fallback_allowed")]
        )
        .await
            >= 5.0
    );
    assert!(metric(&gw, "gateway_redis_errors_total", &[("kind", "connect")]).await >= 1.0);
    assert!(
        metric(
            &gw,
            "gateway_ratelimit_decisions_total",
            &[("outcome", "fallback_rejected")]
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &gw,
            "gateway_ratelimit_decisions_total",
            &[("outcome", "error")]
        )
        .await
            >= 2.0
    );

    // Redis back (empty): decisions return to Redis without a restart of the gateway.
    let _redis = redis_server(rp);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&client(), &strict, &user).await.status == 200
        })
        .await,
        "no recovery"
    );
    let r = get(&c, &ft, &user).await;
    assert_eq!(
        (r.status, r.n("x-ratelimit-remaining-hour")),
        (200, Some(4))
    );
    assert_eq!(metric(&gw, "gateway_redis_up", &[]).await, 1.0);
}

#[tokio::test]
async fn redis_auth_and_tls() {
    away_from_window_end(3600, 30);
    let up = free_port();
    let _u = upstream(up);
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cp, kp) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
    std::fs::write(&cp, cert.cert.pem()).expect("cert");
    std::fs::write(&kp, cert.signing_key.serialize_pem()).expect("key");
    let tls_port = free_port();
    let (cps, kps) = (cp.display().to_string(), kp.display().to_string());
    let tp = tls_port.to_string();
    let _redis = redis_server_with(
        0,
        &[
            "--tls-port",
            &tp,
            "--tls-cert-file",
            &cps,
            "--tls-key-file",
            &kps,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cret",
        ],
    );
    let good = format!(
        "host: 127.0.0.1, port: {tls_port}, ssl: true, ssl_verify: false, password: s3cret"
    );
    let bad =
        format!("host: 127.0.0.1, port: {tls_port}, ssl: true, ssl_verify: false, password: wrong");
    let flat = format!(
        "redis_host: 127.0.0.1, redis_port: {tls_port}, redis_ssl: true, redis_password: s3cret"
    );
    let gw = gateway(&config(
        up,
        &[
            ("/good", &redis_cfg("hour: 2", &good, "")),
            (
                "/bad",
                &redis_cfg("hour: 2", &bad, ", fault_tolerant: false"),
            ),
            (
                "/flat",
                &format!("{{hour: 2, limit_by: ip, policy: redis, {flat}}}"),
            ),
            (
                "/verify",
                &redis_cfg(
                    "hour: 2",
                    &format!("host: 127.0.0.1, port: {tls_port}, ssl: true, password: s3cret"),
                    ", fault_tolerant: false",
                ),
            ),
        ],
    ));
    let c = client();
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(get(&c, &gw.url("/good"), &[("x-user", "t")]).await.status);
        }
        v
    };
    assert_eq!(codes, vec![200, 200, 429]);
    assert_eq!(
        get(&c, &gw.url("/bad"), &[("x-user", "t")]).await.status,
        500
    );
    let r = get(&c, &gw.url("/flat"), &[]).await;
    assert_eq!(
        (r.status, r.n("x-ratelimit-remaining-hour")),
        (200, Some(1))
    );
    // Without `ssl_verify: false` the certificate is verified: this self-signed one is not
    // trusted, so the store is unreachable (and not fault tolerant here).
    assert_eq!(
        get(&c, &gw.url("/verify"), &[("x-user", "v")]).await.status,
        500
    );
}

/// Requests until the first non-200 (at most `max`): how many were admitted.
async fn admitted(
    c: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    max: usize,
) -> (usize, u16) {
    for i in 0..max {
        let r = get(c, url, headers).await;
        if r.status != 200 {
            return (i, r.status);
        }
    }
    (max, 200)
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn tiers_by_consumer_group_with_key_auth() {
    away_from_window_end(3600, 30);
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&format!(
        r#"_format_version: "3.0"
consumer_groups:
- name: free
  plugins:
  - name: rate-limiting
    config: {{hour: 2, limit_by: consumer}}
- name: pro
  plugins:
  - name: rate-limiting
    config: {{hour: 4, limit_by: consumer}}
consumers:
- username: alice
  groups: [{{name: pro}}]
  keyauth_credentials: [{{key: alice-key}}]
- username: bob
  groups: [{{name: free}}]
  keyauth_credentials: [{{key: bob-key}}]
- username: carol
  keyauth_credentials: [{{key: carol-key}}]
services:
- name: svc
  url: http://127.0.0.1:{up}
  routes:
  - name: api
    paths: [/api]
    plugins:
    - name: key-auth
plugins:
- name: rate-limiting
  config: {{hour: 1, limit_by: consumer}}
"#
    ));
    let c = client();
    let url = gw.url("/api");
    for (key, want, limit) in [
        ("alice-key", 4, "4"),
        ("bob-key", 2, "2"),
        ("carol-key", 1, "1"),
    ] {
        let first = get(&c, &url, &[("apikey", key)]).await;
        assert_eq!(first.status, 200, "{key}: {}", first.body);
        assert_eq!(first.h("x-ratelimit-limit-hour"), Some(limit), "{key}");
        let (n, status) = admitted(&c, &url, &[("apikey", key)], 10).await;
        assert_eq!((n + 1, status), (want, 429), "{key}");
    }
    // Unauthenticated requests stop at key-auth (401) before any counting.
    assert_eq!(get(&c, &url, &[]).await.status, 401);
    for (tier, n) in [("pro", 4.0), ("free", 2.0), ("default", 1.0)] {
        let got = metric(
            &gw,
            "gateway_ratelimit_decisions_total",
            &[("route", "api"), ("tier", tier), ("outcome", "allowed")],
        )
        .await;
        assert_eq!(got, n, "{tier}");
    }
}

#[tokio::test]
async fn tiers_by_jwt_claim_keyed_by_sub() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    away_from_window_end(3600, 30);
    let up = free_port();
    let _u = upstream(up);
    let secret = "auth-service-secret-0123456789abcdef";
    let gw = gateway(&format!(
        r#"_format_version: "3.0"
consumers:
- username: auth-service
  jwt_secrets: [{{key: auth-service, secret: {secret}}}]
services:
- name: svc
  url: http://127.0.0.1:{up}
  routes:
  - name: api
    paths: [/api]
    plugins:
    - name: jwt
    - name: rate-limiting
      config:
        tier_claim: tier
        limit_key_claim: sub
        default_tier: free
        tiers:
          free: {{hour: 2}}
          pro: {{hour: 4}}
"#
    ));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    let token = |sub: &str, tier: Option<&str>| {
        let mut claims = serde_json::json!({"iss": "auth-service", "sub": sub, "exp": exp});
        if let Some(t) = tier {
            claims["tier"] = serde_json::Value::String(t.to_string());
        }
        let t = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign");
        format!("Bearer {t}")
    };
    let c = client();
    let url = gw.url("/api");
    // One consumer (the auth service), a counter per user, a limit per tier.
    for (sub, tier, want) in [
        ("u-pro", Some("pro"), 4),
        ("u-free", Some("free"), 2),
        ("u-gold", Some("gold"), 2),
        ("u-none", None, 2),
    ] {
        let auth = token(sub, tier);
        let (n, status) = admitted(&c, &url, &[("authorization", &auth)], 10).await;
        assert_eq!((n, status), (want, 429), "{sub}");
    }
    // Another token for the same sub shares the counter.
    let r = get(&c, &url, &[("authorization", &token("u-pro", Some("pro")))]).await;
    assert_eq!((r.status, r.h("x-ratelimit-limit-hour")), (429, Some("4")));
    for (tier, n) in [("pro", 4.0), ("free", 6.0)] {
        let got = metric(
            &gw,
            "gateway_ratelimit_decisions_total",
            &[("route", "api"), ("tier", tier), ("outcome", "allowed")],
        )
        .await;
        assert_eq!(got, n, "{tier}");
    }
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn a_single_redis_host_that_is_a_cluster_node_is_used_as_a_cluster() {
    // ElastiCache in cluster mode hands the task one configuration endpoint as
    // `redis.host`. Keys on other shards must not answer MOVED (store down, local
    // fallback, limits per task): the gateway discovers cluster mode from that one node.
    away_from_window_end(3600, 30);
    let up = free_port();
    let _u = upstream(up);
    let cluster = redis_cluster(3);
    let seed = cluster.ports[0];
    let cfg = config(
        up,
        &[(
            "/c",
            &redis_cfg(
                "minute: 10, hour: 10",
                &format!("host: 127.0.0.1, port: {seed}"),
                ", fault_tolerant: false",
            ),
        )],
    );
    let (g1, g2) = (gateway(&cfg), gateway(&cfg));
    for u in 0..12 {
        let user = format!("user-{u}");
        let (codes, remaining) = spread(&[&g1, &g2], "/c", &user, 14, 7).await;
        assert_eq!(codes.get(&200), Some(&10), "{user}: {codes:?}");
        assert_eq!(codes.get(&429), Some(&4), "{user}: {codes:?}");
        assert_eq!(remaining, (0..10).collect::<Vec<u64>>(), "{user}");
    }
    // The users' keys landed on several shards, not only on the seed.
    let sizes: Vec<u64> = cluster
        .ports
        .iter()
        .map(|p| redis_cli(*p, &["dbsize"]).trim().parse().unwrap_or(0))
        .collect();
    assert_eq!(sizes.iter().sum::<u64>(), 24, "{sizes:?}");
    assert!(sizes.iter().filter(|s| **s > 0).count() >= 2, "{sizes:?}");
}
