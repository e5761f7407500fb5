//! Logging plugins (file-log, http-log, statsd) against real receivers on loopback: a
//! file, an HTTP server written here, UDP and TCP sockets.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::harness::*;

const KEY_CONSUMER: &str = "consumers:
- username: alice
  custom_id: cust-1
  id: 7b0b8b5a-1c59-4c1e-9e55-0c6a2a0d3c11
  keyauth_credentials:
  - key: alice-secret-key
    id: 3f1e1d2c-6a7b-4c8d-9e0f-1a2b3c4d5e6f
";

async fn send(c: &reqwest::Client, url: String) -> u16 {
    c.get(url).send().await.expect("send").status().as_u16()
}

#[tokio::test]
async fn file_log_appends_kongs_record() {
    let up = free_port();
    let _u = upstream(up);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.log");
    let cfg = format!(
        "_format_version: \"3.0\"
services:
- name: api
  id: 0d5b5a1e-6a66-4b8f-9a4b-0b0a6f5e0c01
  url: http://127.0.0.1:{up}
  routes:
  - name: api-route
    id: 4b1c2d3e-0000-4000-8000-000000000001
    paths: [/api]
    plugins:
    - name: key-auth
    - name: file-log
      config:
        path: {}
{KEY_CONSUMER}",
        log.display()
    );
    let gw = gateway(&cfg);
    let c = client();
    let r = c
        .get(gw.url("/api/things?a=1&b&a=2&c=x+y"))
        .header("apikey", "alice-secret-key")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .header("x-multi", "one")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let request_id = r.headers()["x-kong-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    let _ = r.bytes().await;
    // Rejected by key-auth before file-log's priority: still logged (Kong's log phase runs
    // for every response).
    assert_eq!(send(&c, gw.url("/api/denied")).await, 401);

    let written = eventually(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.lines().count() == 2 }
    })
    .await;
    assert!(
        written,
        "two lines written: {:?}",
        std::fs::read_to_string(&log)
    );
    let text = std::fs::read_to_string(&log).expect("log");
    let v: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("line")).expect("json");
    assert_eq!(v["request"]["method"], "GET");
    assert_eq!(v["request"]["id"], request_id.as_str());
    assert_eq!(v["request"]["uri"], "/api/things?a=1&b&a=2&c=x+y");
    assert_eq!(
        v["request"]["url"],
        format!("http://127.0.0.1:{}/api/things?a=1&b&a=2&c=x+y", gw.port)
    );
    assert_eq!(
        v["request"]["querystring"],
        serde_json::json!({"a": ["1", "2"], "b": true, "c": "x y"})
    );
    assert_eq!(v["request"]["headers"]["authorization"], "REDACTED");
    assert_eq!(v["request"]["headers"]["x-multi"], "one");
    // Kong logs the other headers as sent, key-auth's key included.
    assert_eq!(v["request"]["headers"]["apikey"], "alice-secret-key");
    assert!(v["request"]["size"].as_u64().expect("size") > 50);
    assert_eq!(v["response"]["status"], 200);
    assert_eq!(v["response"]["headers"]["x-upstream"], up.to_string());
    assert!(v["response"]["headers"]["x-kong-upstream-latency"].is_string());
    assert!(v["response"]["size"].as_u64().expect("size") > 100);
    assert_eq!(v["upstream_uri"], "/things?a=1&b&a=2&c=x+y");
    assert_eq!(v["upstream_status"], "200");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["source"], "service");
    assert_eq!(v["route"]["name"], "api-route");
    assert_eq!(v["route"]["id"], "4b1c2d3e-0000-4000-8000-000000000001");
    assert_eq!(v["service"]["name"], "api");
    assert_eq!(v["service"]["port"], up);
    assert_eq!(v["consumer"]["username"], "alice");
    assert_eq!(v["consumer"]["custom_id"], "cust-1");
    assert_eq!(
        v["authenticated_entity"]["id"],
        "3f1e1d2c-6a7b-4c8d-9e0f-1a2b3c4d5e6f"
    );
    assert_eq!(v["tries"][0]["ip"], "127.0.0.1");
    assert_eq!(v["tries"][0]["port"], up);
    assert_eq!(v["workspace_name"], "default");
    let started = v["started_at"].as_u64().expect("started_at");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    assert!(started <= now && now - started < 60_000);
    let lat = &v["latencies"];
    assert!(lat["request"].as_u64().expect("request") >= lat["kong"].as_u64().expect("kong"));
    assert!(lat["proxy"].as_i64().expect("proxy") >= 0);
    // The consumer's credentials never appear.
    assert!(!text.contains("keyauth_credentials"));

    let d: serde_json::Value =
        serde_json::from_str(text.lines().nth(1).expect("second")).expect("json");
    assert_eq!(d["response"]["status"], 401);
    assert_eq!(d["source"], "exit");
    assert_eq!(d["latencies"]["proxy"], -1);
    assert!(d.get("consumer").is_none());
    assert_eq!(d["upstream_status"], "");
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[tokio::test]
async fn file_log_reopen_follows_a_rotated_file() {
    let up = free_port();
    let _u = upstream(up);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("rotated.log");
    let cfg = format!(
        "_format_version: \"3.0\"
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: r
    paths: [/r]
plugins:
- name: file-log
  config:
    path: {}
    reopen: true
",
        log.display()
    );
    let gw = gateway(&cfg);
    let c = client();
    // A global file-log also logs a request no route matched.
    assert_eq!(send(&c, gw.url("/nowhere")).await, 404);
    let one = eventually(Duration::from_secs(5), || {
        let n = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        async move { n == 1 }
    })
    .await;
    assert!(one, "first line");
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).expect("log").trim()).expect("json");
    assert_eq!(first["response"]["status"], 404);
    assert!(first.get("route").is_none());
    // Rotation: the file is moved away; the next line goes to a new file at `path`.
    std::fs::rename(&log, dir.path().join("rotated.log.1")).expect("rename");
    assert_eq!(send(&c, gw.url("/r/x")).await, 200);
    let again = eventually(Duration::from_secs(5), || {
        let n = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        async move { n == 1 }
    })
    .await;
    assert!(again, "a new file with one line");
    let v: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).expect("log").trim()).expect("json");
    assert_eq!(v["request"]["uri"], "/r/x");
    let old = std::fs::read_to_string(dir.path().join("rotated.log.1")).expect("old");
    assert_eq!(old.lines().count(), 1);
}

/// What the HTTP receiver saw.
#[derive(Clone, Debug)]
struct Hit {
    uri: String,
    headers: http::HeaderMap,
    body: String,
}

#[derive(Default)]
struct Script {
    /// Statuses for the next requests (200 once empty).
    statuses: VecDeque<u16>,
    /// Hold the first request's answer until notified.
    hold_first: bool,
}

struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    release: Arc<tokio::sync::Notify>,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Hit> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if self.hits().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.hits()
    }
}

/// A real HTTP/1.1 log server: records every request, answers as scripted.
async fn receiver(script: Script) -> Receiver {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let hits = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(tokio::sync::Notify::new());
    let script = Arc::new(Mutex::new(script));
    let (h, rel) = (hits.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (h, rel, script) = (h.clone(), rel.clone(), script.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (h, rel, script) = (h.clone(), rel.clone(), script.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let first = {
                            let mut hits = h.lock().expect("hits");
                            hits.push(Hit {
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body: String::from_utf8_lossy(&body).to_string(),
                            });
                            hits.len() == 1
                        };
                        let (status, hold) = {
                            let mut s = script.lock().expect("script");
                            (s.statuses.pop_front().unwrap_or(200), first && s.hold_first)
                        };
                        if hold {
                            rel.notified().await;
                        }
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Receiver {
        port,
        hits,
        release,
    }
}

#[tokio::test]
async fn http_log_batches_retries_and_bounds_its_queue() {
    let up = free_port();
    let _u = upstream(up);
    let batch = receiver(Script::default()).await;
    let retry = receiver(Script {
        statuses: VecDeque::from([500]),
        hold_first: false,
    })
    .await;
    let bound = receiver(Script {
        statuses: VecDeque::new(),
        hold_first: true,
    })
    .await;
    let cfg = format!(
        "_format_version: \"3.0\"
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: batch
    paths: [/batch]
    plugins:
    - name: http-log
      config:
        http_endpoint: http://logger:s%40cret@127.0.0.1:{}/logs?dropped=1
        method: PUT
        content_type: application/json; charset=utf-8
        headers: {{X-Team: edge}}
        queue: {{max_batch_size: 3, max_coalescing_delay: 20}}
  - name: retry
    paths: [/retry]
    plugins:
    - name: http-log
      config:
        http_endpoint: http://127.0.0.1:{}/
        queue: {{initial_retry_delay: 0.05}}
  - name: bound
    paths: [/bound]
    plugins:
    - name: http-log
      config:
        http_endpoint: http://127.0.0.1:{}/
        queue: {{max_entries: 2}}
",
        batch.port, retry.port, bound.port
    );
    let gw = gateway(&cfg);
    let c = client();

    // Batching: three requests, one PUT with a JSON array of three records, well before
    // the 20 s coalescing delay (the batch is full).
    let t0 = Instant::now();
    for i in 0..3 {
        assert_eq!(send(&c, gw.url(&format!("/batch/{i}"))).await, 200);
    }
    let hits = batch.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1, "one batch");
    assert!(t0.elapsed() < Duration::from_secs(10));
    let h = &hits[0];
    assert_eq!(h.uri, "/logs", "Kong sends the endpoint's path only");
    assert_eq!(h.headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(h.headers["x-team"], "edge");
    let basic = base64::engine::general_purpose::STANDARD.encode("logger:s%40cret");
    assert_eq!(
        h.headers["authorization"],
        format!("Basic {basic}").as_str()
    );
    let arr: serde_json::Value = serde_json::from_str(&h.body).expect("json");
    let uris: Vec<&str> = arr
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["request"]["uri"].as_str().expect("uri"))
        .collect();
    assert_eq!(uris, ["/batch/0", "/batch/1", "/batch/2"]);

    // Retry: the first delivery gets a 500, the same record is sent again (a JSON object:
    // max_batch_size is 1).
    assert_eq!(send(&c, gw.url("/retry/x")).await, 200);
    let hits = retry.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 2, "sent, failed with 500, sent again");
    assert_eq!(hits[0].body, hits[1].body);
    let obj: serde_json::Value = serde_json::from_str(&hits[1].body).expect("json");
    assert_eq!(obj["request"]["uri"], "/retry/x");
    assert_eq!(hits[0].headers["content-type"], "application/json");

    // Queue bound: the log server holds the first delivery; meanwhile five more records
    // arrive for a queue of two: the three oldest are dropped.
    assert_eq!(send(&c, gw.url("/bound/1")).await, 200);
    assert_eq!(bound.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    for i in 2..=6 {
        assert_eq!(send(&c, gw.url(&format!("/bound/{i}"))).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    bound.release.notify_one();
    let hits = bound.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits_after = bound.hits();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits_after.len(), 3, "nothing else delivered");
    let uris: Vec<String> = hits_after
        .iter()
        .map(|h| {
            let v: serde_json::Value = serde_json::from_str(&h.body).expect("json");
            v["request"]["uri"].as_str().expect("uri").to_string()
        })
        .collect();
    assert_eq!(uris, ["/bound/1", "/bound/5", "/bound/6"]);
}

fn udp_collect(sock: &std::net::UdpSocket, want: usize, within: Duration) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut out = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 65536];
    while t0.elapsed() < within && out.len() < want {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    out
}

#[tokio::test]
async fn statsd_sends_kongs_metric_lines_over_udp_and_tcp() {
    let up = free_port();
    let _u = upstream(up);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let udp_port = udp.local_addr().expect("addr").port();
    let packed = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let packed_port = packed.local_addr().expect("addr").port();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    let tcp_port = tcp.local_addr().expect("addr").port();
    let cfg = format!(
        "_format_version: \"3.0\"
services:
- name: my.api
  url: http://127.0.0.1:{up}
  routes:
  - name: stats
    id: 9a8b7c6d-0000-4000-8000-00000000aaaa
    paths: [/stats]
    plugins:
    - name: key-auth
    - name: statsd
      config:
        host: 127.0.0.1
        port: {udp_port}
  - name: packed
    paths: [/packed]
    plugins:
    - name: statsd
      config:
        host: 127.0.0.1
        port: {packed_port}
        prefix: edge
        udp_packet_size: 1000
        allow_status_codes: [200-299]
        metrics:
        - {{name: request_count, stat_type: counter, sample_rate: 0.5}}
        - {{name: status_count, stat_type: counter, sample_rate: 1}}
        - {{name: request_size, stat_type: gauge, sample_rate: 1, service_identifier: service_host}}
  - name: tcp
    paths: [/tcp]
    plugins:
    - name: statsd
      config:
        host: 127.0.0.1
        port: {tcp_port}
        use_tcp: true
        tag_style: dogstatsd
        metrics:
        - {{name: request_count, stat_type: counter, sample_rate: 1}}
        - {{name: status_count, stat_type: counter, sample_rate: 1}}
{KEY_CONSUMER}"
    );
    let gw = gateway(&cfg);
    let c = client();
    let r = c
        .get(gw.url("/stats/x"))
        .header("apikey", "alice-secret-key")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let _ = r.bytes().await;
    let got = tokio::task::spawn_blocking(move || udp_collect(&udp, 12, Duration::from_secs(5)))
        .await
        .expect("join");
    let p = "kong.service.my_api";
    // Numbers vary: compare names and types, then the exact counter lines.
    let shapes: Vec<String> = got
        .iter()
        .map(|l| {
            let (name, rest) = l.split_once(':').expect("name:value");
            let kind = rest.split('|').nth(1).expect("type");
            format!("{name}|{kind}")
        })
        .collect();
    let ws = "00000000-0000-4000-8000-000000000000";
    assert_eq!(
        shapes,
        [
            format!("{p}.request.count|c"),
            format!("{p}.latency|ms"),
            format!("{p}.request.size|c"),
            format!("{p}.status.200|c"),
            format!("{p}.response.size|c"),
            format!("{p}.user.uniques|s"),
            format!("{p}.user.cust-1.request.count|c"),
            format!("{p}.upstream_latency|ms"),
            format!("{p}.kong_latency|ms"),
            format!("{p}.user.cust-1.status.200|c"),
            format!("{p}.workspace.{ws}.status.200|c"),
            "kong.route.9a8b7c6d-0000-4000-8000-00000000aaaa.user.cust-1.status.200|c".to_string(),
        ],
        "{got:?}"
    );
    for exact in [
        format!("{p}.request.count:1|c"),
        format!("{p}.status.200:1|c"),
        format!("{p}.user.uniques:cust-1|s"),
        format!("{p}.user.cust-1.request.count:1|c"),
    ] {
        assert!(got.contains(&exact), "{exact} in {got:?}");
    }

    // Packed into one datagram; a 404 is outside allow_status_codes and sends nothing.
    assert_eq!(send(&c, gw.url("/packed/status/404")).await, 404);
    assert_eq!(send(&c, gw.url("/packed/y")).await, 200);
    let got = tokio::task::spawn_blocking(move || {
        let first = udp_collect(&packed, 1, Duration::from_secs(5));
        let more = udp_collect(&packed, 1, Duration::from_millis(500));
        (first, more)
    })
    .await
    .expect("join");
    assert_eq!(got.0.len(), 1, "{got:?}");
    assert!(got.1.is_empty(), "the 404 sent nothing: {got:?}");
    let lines: Vec<&str> = got.0[0].split('\n').collect();
    assert_eq!(lines[0], "edge.service.my_api.request.count:1|c|@0.5");
    assert_eq!(lines[1], "edge.service.my_api.status.200:1|c");
    assert!(
        lines[2].starts_with("edge.service.127_0_0_1.request.size:") && lines[2].ends_with("|g"),
        "{lines:?}"
    );

    // TCP with DogStatsD tags: newline-terminated lines.
    assert_eq!(send(&c, gw.url("/tcp/z")).await, 200);
    let text = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let (mut s, _) = tcp.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .expect("join");
    let line = text.lines().next().expect("a line");
    assert!(
        line.starts_with("kong.request.count:1|c|#service:my.api,route:tcp,workspace:"),
        "{text}"
    );
    assert!(line.ends_with(",status:200"), "{text}");
    assert_eq!(
        text.lines().count(),
        1,
        "status_count is skipped with tags: {text}"
    );
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[test]
fn check_loads_logging_plugins_and_refuses_lua() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    let run = |text: &str| {
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let good = "_format_version: \"3.0\"
services:
- name: api
  url: http://127.0.0.1:9
  routes:
  - name: r
    paths: [/r]
plugins:
- name: file-log
  config: {path: /tmp/kong-file.log, reopen: true}
- name: http-log
  service: api
  config:
    http_endpoint: http://127.0.0.1:9/log
    retry_count: 10
    queue: {max_batch_size: 10, max_coalescing_delay: 1, max_entries: 100, max_bytes: 100000, max_retry_time: 5, initial_retry_delay: 0.1, max_retry_delay: 1, concurrency_limit: -1}
- name: statsd
  route: r
  config:
    host: 127.0.0.1
    metrics:
    - {name: latency, stat_type: timer}
    - {name: shdict_usage, stat_type: gauge, sample_rate: 1}
";
    let (ok, out) = run(good);
    assert!(ok, "{out}");
    assert!(out.contains("retry_count"), "deprecation warned: {out}");
    let lua = good.replace(
        "{path: /tmp/kong-file.log, reopen: true}",
        "{path: /tmp/kong-file.log, custom_fields_by_lua: {extra: return 1}}",
    );
    let (ok, out) = run(&lua);
    assert!(!ok);
    assert!(out.contains("custom_fields_by_lua"), "{out}");
    let bad = good.replace("stat_type: timer", "stat_type: timing");
    let (ok, out) = run(&bad);
    assert!(!ok);
    assert!(out.contains("metrics[0].stat_type"), "{out}");
}
