//! How the gateway is deployed behind a load balancer: the configuration handed over as
//! a string (`GATEWAY_CONFIG_STRING`, as the ECS task does) and the X-Forwarded-* of a
//! trusted proxy passed on, while an untrusted client's are replaced.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

fn config(up: u16) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: all\n    paths: [/]\n"
    )
}

#[tokio::test]
async fn configuration_from_gateway_config_string() {
    let up = free_port();
    let _u = upstream(up);
    let (port, status) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("run")
        .args(["--proxy-listen", &format!("127.0.0.1:{port}")])
        .args(["--status-listen", &format!("127.0.0.1:{status}")])
        .args(["--workers", "1", "--access-log", "off"])
        .env_remove("GATEWAY_CONFIG")
        .env("GATEWAY_CONFIG_STRING", config(up))
        .env("GATEWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _p = Proc::new(child);
    assert!(wait_port(port, Duration::from_secs(20)), "did not start");
    let (s, v) = get_json(&client(), &format!("http://127.0.0.1:{port}/from-env")).await;
    assert_eq!(s, 200);
    assert_eq!(v["path"], "/from-env");
    // `gateway check` reads it too.
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("check")
        .env_remove("GATEWAY_CONFIG")
        .env("GATEWAY_CONFIG_STRING", config(up))
        .output()
        .expect("check");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("GATEWAY_CONFIG_STRING: ok"));
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_are_passed_on() {
    let up = free_port();
    let _u = upstream(up);
    let c = client();
    let send = |gw: &Gw| {
        c.get(gw.url("/x"))
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "api.example.com")
            .header("X-Forwarded-Port", "443")
            .header("X-Forwarded-For", "203.0.113.7")
            .send()
    };
    // Untrusted client: its claims are replaced by what the gateway saw.
    let plain = gateway(&config(up));
    let v: serde_json::Value = send(&plain)
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-host"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-port"], plain.port.to_string(), "{h}");
    // Trusted proxy (the ALB): passed on, and the client address comes from it.
    let behind = gateway_with(
        &config(up),
        GwOpts {
            extra: vec![
                "--trusted-ips".into(),
                "127.0.0.1".into(),
                "--real-ip-header".into(),
                "X-Forwarded-For".into(),
                "--real-ip-recursive".into(),
            ],
            tls: None,
        },
    );
    let v: serde_json::Value = send(&behind)
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
    assert_eq!(h["x-forwarded-host"], "api.example.com", "{h}");
    assert_eq!(h["x-forwarded-port"], "443", "{h}");
    assert_eq!(h["x-real-ip"], "203.0.113.7", "{h}");
}

#[test]
fn via_is_appended_in_both_directions() {
    // An upstream that shows the Via it got and sends its own.
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut via = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("via:") {
                    via = v.trim().to_string();
                }
                if line == "\r\n" {
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nVia: 1.1 upstream-proxy\r\ncontent-length: {}\r\n\r\n{via}",
                        via.len()
                    );
                    let _ = (&s).write_all(resp.as_bytes());
                    via.clear();
                }
            }
        }
    });
    let gw = gateway(&config(up));
    let resp = raw(
        gw.port,
        b"GET /v HTTP/1.1\r\nHost: x\r\nVia: 1.1 client-proxy\r\nConnection: close\r\n\r\n",
    );
    let lower = resp.to_ascii_lowercase();
    let v = env!("CARGO_PKG_VERSION");
    assert!(
        lower.contains(&format!("via: 1.1 upstream-proxy, 1.1 gateway/{v}\r\n")),
        "{resp}"
    );
    assert!(
        resp.ends_with(&format!("1.1 client-proxy, 1.1 gateway/{v}")),
        "{resp}"
    );
}

#[tokio::test]
async fn url_wins_over_the_fields_next_to_it() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&format!(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:{up}/v1\n  host: 127.0.0.1\n  port: 1\n  path: /ignored\n  routes:\n  - name: r\n    paths: [/api]\n"
    ));
    let (s, v) = get_json(&client(), &gw.url("/api/x")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["path"], "/v1/x");
}

#[test]
fn correlation_id_tracker_has_kongs_format() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&format!(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: r\n    paths: [/]\nplugins:\n- name: correlation-id\n  config: {{generator: tracker, echo_downstream: true}}\n"
    ));
    // Two requests on one connection: server_addr-server_port-pid-connection-requests-time.
    let resp = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).ok();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    };
    let ids: Vec<String> = resp
        .lines()
        .filter_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("kong-request-id:")
                .map(|v| v.trim().to_string())
        })
        .collect();
    assert_eq!(ids.len(), 2, "{resp}");
    let parts: Vec<Vec<&str>> = ids.iter().map(|i| i.split('-').collect()).collect();
    for p in &parts {
        assert_eq!(p.len(), 6, "{ids:?}");
        assert_eq!(p[0], "127.0.0.1");
        assert_eq!(p[1], gw.port.to_string());
        assert_eq!(p[2], gw.proc.child.id().to_string());
        let (secs, ms) = p[5].split_once('.').expect("time with milliseconds");
        assert!(secs.parse::<u64>().is_ok() && ms.len() == 3, "{ids:?}");
    }
    assert_eq!(parts[0][3], parts[1][3], "same connection serial: {ids:?}");
    assert_eq!((parts[0][4], parts[1][4]), ("1", "2"), "{ids:?}");
}

#[tokio::test]
async fn routes_of_a_disabled_service_match_nothing() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&format!(
        "_format_version: \"3.0\"\nservices:\n- name: off\n  enabled: false\n  url: http://127.0.0.1:1\n  routes:\n  - name: api\n    paths: [/api]\n- name: on\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: rest\n    paths: [/]\n"
    ));
    // As in Kong: the disabled service's route is gone, so the catch-all takes it.
    let (s, v) = get_json(&client(), &gw.url("/api/x")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["path"], "/api/x");
}
