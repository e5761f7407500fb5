//! Load balancing: weighted round-robin, least-connections, failover and recovery.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

fn upstream_config(alg: &str, targets: &[(u16, u32)], health: &str) -> String {
    let mut s = format!(
        "_format_version: \"3.0\"\nupstreams:\n- name: pool\n  algorithm: {alg}\n{health}  targets:\n"
    );
    for (p, w) in targets {
        s.push_str(&format!("  - target: 127.0.0.1:{p}\n    weight: {w}\n"));
    }
    s.push_str("services:\n- name: svc\n  url: http://pool\n  retries: 3\n  connect_timeout: 1000\n  routes:\n  - name: all\n    paths: [/]\n");
    s.push_str("plugins:\n- name: prometheus\n  config: {upstream_health_metrics: true}\n");
    s
}

async fn hit(c: &reqwest::Client, url: &str) -> Option<String> {
    let r = c.get(url).send().await.ok()?;
    if r.status().as_u16() != 200 {
        return None;
    }
    r.headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn weighted_round_robin_distribution() {
    let (a, b) = (free_port(), free_port());
    let (_ua, _ub) = (upstream(a), upstream(b));
    let gw = gateway(&upstream_config("round-robin", &[(a, 300), (b, 100)], ""));
    let c = client();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..400 {
        let who = hit(&c, &gw.url("/x")).await.expect("200");
        *counts.entry(who).or_default() += 1;
    }
    assert_eq!(counts.get(&a.to_string()), Some(&300), "{counts:?}");
    assert_eq!(counts.get(&b.to_string()), Some(&100), "{counts:?}");
}

#[tokio::test]
async fn least_connections_avoids_the_busy_target() {
    let (slow, fast) = (free_port(), free_port());
    let slow_proc = Proc::new(
        Command::new(env!("CARGO_BIN_EXE_echo-upstream"))
            .args([
                "--listen",
                &format!("127.0.0.1:{slow}"),
                "--name",
                &slow.to_string(),
                "--delay-ms",
                "200",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    assert!(wait_port(slow, Duration::from_secs(5)));
    let _fast = upstream(fast);
    let gw = gateway(&upstream_config(
        "least-connections",
        &[(slow, 100), (fast, 100)],
        "",
    ));
    let url = gw.url("/x");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut out = Vec::new();
            for _ in 0..25 {
                out.push(hit(&c, &url).await.expect("200"));
            }
            out
        }));
    }
    let mut counts: HashMap<String, u32> = HashMap::new();
    for t in tasks {
        for who in t.await.expect("task") {
            *counts.entry(who).or_default() += 1;
        }
    }
    let fast_n = *counts.get(&fast.to_string()).unwrap_or(&0);
    let total: u32 = counts.values().sum();
    assert_eq!(total, 200);
    // Round-robin would send half to each; least-connections keeps the slow one near its
    // in-flight share.
    assert!(fast_n * 100 / total >= 75, "{counts:?}");
    drop(slow_proc);
}

#[tokio::test]
async fn failover_on_dead_target_and_recovery() {
    let (a, b) = (free_port(), free_port());
    let ua = upstream(a);
    let _ub = upstream(b);
    let health = "  healthchecks:\n    active:\n      http_path: /health\n      timeout: 0.5\n      healthy: {interval: 0.2, successes: 1}\n      unhealthy: {interval: 0.2, tcp_failures: 1, http_failures: 1, timeouts: 1}\n    passive:\n      unhealthy: {tcp_failures: 1}\n";
    let gw = gateway(&upstream_config(
        "round-robin",
        &[(a, 100), (b, 100)],
        health,
    ));
    let c = client();
    let mut seen = HashMap::new();
    for _ in 0..20 {
        *seen
            .entry(hit(&c, &gw.url("/x")).await.expect("200"))
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both targets serve: {seen:?}");

    // Kill A: no request fails (connect errors retry on B), and A is taken out.
    drop(ua);
    for i in 0..60 {
        let who = hit(&c, &gw.url("/x")).await;
        assert_eq!(who, Some(b.to_string()), "request {i} after the kill");
    }
    let (code, body) = get_json(&c, &gw.status_url("/metrics")).await;
    assert_eq!(code, 200);
    let text = body.as_str().unwrap_or("").to_string();
    assert!(
        text.contains(&format!("kong_upstream_target_health{{address=\"127.0.0.1:{a}\",state=\"unhealthy\",subsystem=\"http\",target=\"127.0.0.1:{a}\",upstream=\"pool\"}} 1")),
        "{text}"
    );

    // A comes back: the active checker heals it and it gets traffic again.
    let _ua2 = upstream(a);
    let url = gw.url("/x");
    let back = eventually(Duration::from_secs(10), || {
        let c = c.clone();
        let url = url.clone();
        async move {
            let mut any = false;
            for _ in 0..4 {
                if hit(&c, &url).await == Some(a.to_string()) {
                    any = true;
                }
            }
            any
        }
    })
    .await;
    assert!(back, "target {a} never came back");
}

#[tokio::test]
async fn all_targets_down_gives_503_and_not_ready() {
    let a = free_port();
    let health = "  healthchecks:\n    active:\n      http_path: /health\n      timeout: 0.3\n      healthy: {interval: 0.2, successes: 1}\n      unhealthy: {interval: 0.2, tcp_failures: 1}\n";
    let gw = gateway(&upstream_config("round-robin", &[(a, 100)], health));
    let c = client();
    let ok = eventually(Duration::from_secs(5), || {
        let c = c.clone();
        let url = gw.status_url("/status/ready");
        async move { get_json(&c, &url).await.0 == 503 }
    })
    .await;
    assert!(ok, "readiness never failed");
    let r = c.get(gw.url("/x")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 503);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["message"], "failure to get a peer from the ring-balancer");
    let _u = upstream(a);
    let ok = eventually(Duration::from_secs(5), || {
        let c = c.clone();
        let url = gw.status_url("/status/ready");
        async move { get_json(&c, &url).await.0 == 200 }
    })
    .await;
    assert!(ok, "readiness never recovered");
}

/// Who served `path` with `headers` (None unless 200), and the response's Set-Cookie.
async fn hit_with(
    c: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (Option<String>, Vec<String>) {
    let mut rb = c.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let Ok(r) = rb.send().await else {
        return (None, Vec::new());
    };
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let who = (r.status().as_u16() == 200)
        .then(|| {
            r.headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .flatten();
    (who, cookies)
}

#[tokio::test]
async fn hash_on_cookie_issues_kongs_cookie_and_sticks() {
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let _ups: Vec<_> = ports.iter().map(|p| upstream(*p)).collect();
    let targets: Vec<(u16, u32)> = ports.iter().map(|p| (*p, 100)).collect();
    let hash = "  hash_on: cookie\n  hash_on_cookie: sticky\n  hash_on_cookie_path: /app\n";
    let gw = gateway(&upstream_config("consistent-hashing", &targets, hash));
    let c = client();
    // No cookie: Kong issues one, and the request is hashed on the issued value.
    let (first, cookies) = hit_with(&c, &gw.url("/x"), &[]).await;
    let first = first.expect("200");
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let cookie = &cookies[0];
    let value = cookie
        .strip_prefix("sticky=")
        .and_then(|s| s.split(';').next())
        .expect("sticky cookie");
    assert_eq!(value.len(), 36, "a UUID: {cookie}");
    assert!(
        cookie.ends_with("; Path=/app; Same-Site=Lax; HttpOnly"),
        "{cookie}"
    );
    // With the cookie: the same target every time, and no new cookie.
    let sent = format!("other=1; sticky={value}");
    for _ in 0..20 {
        let (who, cookies) = hit_with(&c, &gw.url("/y"), &[("cookie", &sent)]).await;
        assert_eq!(who.as_deref(), Some(first.as_str()));
        assert!(cookies.is_empty(), "{cookies:?}");
    }
    // Different cookie values spread over the targets.
    let mut seen = std::collections::HashSet::new();
    for i in 0..40 {
        let (who, _) = hit_with(&c, &gw.url("/z"), &[("cookie", &format!("sticky=v{i}"))]).await;
        seen.insert(who.expect("200"));
    }
    assert!(seen.len() > 1, "{seen:?}");
}

#[tokio::test]
async fn hash_on_query_arg_and_a_missing_input_hash_as_kong_does() {
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let _ups: Vec<_> = ports.iter().map(|p| upstream(*p)).collect();
    let targets: Vec<(u16, u32)> = ports.iter().map(|p| (*p, 100)).collect();
    let hash = "  hash_on: query_arg\n  hash_on_query_arg: user\n";
    let gw = gateway(&upstream_config("consistent-hashing", &targets, hash));
    let c = client();
    // One value: one target; several values hash as their sorted join.
    let (a, _) = hit_with(&c, &gw.url("/x?user=alice"), &[]).await;
    for _ in 0..10 {
        assert_eq!(hit_with(&c, &gw.url("/y?x=1&user=alice"), &[]).await.0, a);
    }
    let (ab, _) = hit_with(&c, &gw.url("/x?user=b&user=a"), &[]).await;
    assert_eq!(hit_with(&c, &gw.url("/x?user=a&user=b"), &[]).await.0, ab);
    // Without the argument Kong hashes the empty value: one stable target, not a rotation.
    let (none, _) = hit_with(&c, &gw.url("/x"), &[]).await;
    assert!(none.is_some());
    for _ in 0..12 {
        assert_eq!(hit_with(&c, &gw.url("/x"), &[]).await.0, none);
    }
}

/// A line of /etc/hosts owned by one test, removed when dropped.
struct HostsEntry {
    name: String,
}

impl HostsEntry {
    fn set(&self, ip: Option<&str>) -> std::io::Result<()> {
        let text = std::fs::read_to_string("/etc/hosts")?;
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.split_whitespace().any(|w| w == self.name))
            .map(str::to_string)
            .collect();
        if let Some(ip) = ip {
            lines.push(format!("{ip} {}", self.name));
        }
        std::fs::write("/etc/hosts", lines.join("\n") + "\n")
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        let _ = self.set(None);
    }
}

#[tokio::test]
async fn upstream_names_are_re_resolved_without_a_restart() {
    // A service host that does not resolve at start-up (503 "name resolution failed"),
    // then appears, then moves: followed by the background resolver, no reload.
    let entry = HostsEntry {
        name: format!("dns-follow-{}.test", std::process::id()),
    };
    if entry.set(None).is_err() {
        // /etc/hosts is the only resolver input a test can change; CI runs as root.
        panic!("this test needs a writable /etc/hosts (run as root)");
    }
    let port = free_port();
    let spawn = |ip: &str, name: &str| {
        Command::new(env!("CARGO_BIN_EXE_echo-upstream"))
            .args(["--listen", &format!("{ip}:{port}"), "--name", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn echo-upstream")
    };
    let mut a = spawn("127.0.0.1", "first");
    let mut b = spawn("127.0.0.2", "second");
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://{}:{port}\n  routes:\n  - name: all\n    paths: [/]\n",
        entry.name
    );
    let gw = gateway_with(
        &cfg,
        GwOpts {
            extra: vec!["--dns-refresh".into(), "1".into()],
            tls: None,
        },
    );
    let c = client();
    let r = c.get(gw.url("/x")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 503);
    entry.set(Some("127.0.0.1")).expect("hosts");
    assert!(
        eventually(Duration::from_secs(10), || async {
            hit(&c, &gw.url("/x")).await.as_deref() == Some("first")
        })
        .await,
        "the name that appeared was not picked up"
    );
    entry.set(Some("127.0.0.2")).expect("hosts");
    assert!(
        eventually(Duration::from_secs(10), || async {
            hit(&c, &gw.url("/x")).await.as_deref() == Some("second")
        })
        .await,
        "the address change was not followed"
    );
    let m = c
        .get(format!("http://127.0.0.1:{}/metrics", gw.status))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        m.lines()
            .any(|l| l.starts_with("gateway_dns_resolution_failures_total{target=\"dns-follow-")),
        "{m}"
    );
    let _ = (a.kill(), b.kill());
    let _ = (a.wait(), b.wait());
}

/// A TLS server with a self-signed certificate answering every request with `status`.
fn https_status_server(port: u16, status: std::sync::Arc<std::sync::atomic::AtomicU16>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![der], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, status) = (acceptor.clone(), status.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 2048];
                let _ = tls.read(&mut buf).await;
                let code = status.load(std::sync::atomic::Ordering::Relaxed);
                let resp =
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
}

#[tokio::test]
async fn https_active_health_checks_follow_the_status_and_verify_certificates() {
    let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(500));
    let (insecure, verified) = (free_port(), free_port());
    https_status_server(insecure, status.clone());
    https_status_server(verified, status.clone());
    let hc = |verify: bool| {
        format!(
            "  healthchecks:\n    active:\n      type: https\n      https_sni: localhost\n      https_verify_certificate: {verify}\n      http_path: /health\n      timeout: 0.5\n      healthy: {{interval: 0.2, successes: 1}}\n      unhealthy: {{interval: 0.2, http_failures: 1, tcp_failures: 1}}\n"
        )
    };
    let ready = |gw: &Gw, want: u16| {
        let c = client();
        let url = gw.status_url("/status/ready");
        async move {
            eventually(Duration::from_secs(8), || {
                let (c, url) = (c.clone(), url.clone());
                async move { get_json(&c, &url).await.0 == want }
            })
            .await
        }
    };
    // Certificate not verified: the probe's status decides.
    let gw = gateway(&upstream_config(
        "round-robin",
        &[(insecure, 100)],
        &hc(false),
    ));
    assert!(
        ready(&gw, 503).await,
        "a 500 over TLS did not take the target out"
    );
    status.store(200, std::sync::atomic::Ordering::Relaxed);
    assert!(
        ready(&gw, 200).await,
        "a 200 over TLS did not bring it back"
    );
    // Verified (Kong's default): a self-signed certificate fails the probe.
    let gw2 = gateway(&upstream_config(
        "round-robin",
        &[(verified, 100)],
        &hc(true),
    ));
    assert!(
        ready(&gw2, 503).await,
        "an untrusted certificate passed the probe"
    );
}
