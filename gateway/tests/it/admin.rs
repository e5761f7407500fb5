//! Who may replace the configuration (`POST /config`), and secrets that must never come
//! back out of it: posted files do not expand the environment, errors never quote an
//! environment value, cross-site requests and requests without the admin token fail.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

const SECRET: &str = "s3cr3t-value-from-the-environment";

fn base(up: u16) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: main\n    paths: [/]\n"
    )
}

/// A config whose jwt credential takes its algorithm from the environment: invalid,
/// so the error is about the value read from the environment.
fn leaky(up: u16) -> String {
    format!(
        "{}consumers:\n- username: u\n  jwt_secrets:\n  - key: k\n    algorithm: ${{{{ env \"GW_TEST_SECRET\" }}}}\n    secret: x\n",
        base(up)
    )
}

fn post(port: u16, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let mut r = c
            .post(format!("http://127.0.0.1:{port}/config"))
            .body(body.to_string());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await.expect("post");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    })
}

#[test]
fn posted_configs_do_not_read_the_environment_and_errors_never_quote_it() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway_with(
        &base(up),
        GwOpts {
            extra: vec![],
            tls: None,
        },
    );
    // The reference is refused before any lookup: nothing of the environment is read.
    let (status, body) = post(gw.status, &leaky(up), &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("--allow-posted-env"), "{body}");
    assert!(!body.contains(SECRET), "{body}");

    // A file that references it: the error names the field, never the value.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, leaky(up)).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env("GW_TEST_SECRET", SECRET)
        .output()
        .expect("check");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("jwt_secrets[0]"), "{text}");
    assert!(!text.contains(SECRET), "the secret leaked: {text}");
    assert!(text.contains("<redacted>"), "{text}");
}

#[test]
fn post_config_refuses_cross_site_requests() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&base(up));
    let (s, _) = post(gw.status, &base(up), &[("Origin", "https://evil.example")]);
    assert_eq!(s, 403);
    let (s, _) = post(gw.status, &base(up), &[("Content-Type", "text/plain")]);
    assert_eq!(s, 415);
    let (s, _) = post(
        gw.status,
        &base(up),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(s, 415);
    let (s, body) = post(
        gw.status,
        &base(up),
        &[("Content-Type", "application/yaml")],
    );
    assert_eq!(s, 201, "{body}");
}

#[test]
fn post_config_needs_the_admin_token_when_set_or_when_reachable_beyond_loopback() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway_with(
        &base(up),
        GwOpts {
            extra: vec!["--admin-token".into(), "tok-123".into()],
            tls: None,
        },
    );
    assert_eq!(post(gw.status, &base(up), &[]).0, 401);
    assert_eq!(
        post(gw.status, &base(up), &[("Authorization", "Bearer wrong")]).0,
        401
    );
    let (s, body) = post(gw.status, &base(up), &[("Authorization", "Bearer tok-123")]);
    assert_eq!(s, 201, "{body}");

    // Status listener on every address and no token: POST /config is refused, while the
    // other endpoints keep answering (health checks, metrics).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, base(up)).expect("write");
    let (port, status) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .args(["--proxy-listen", &format!("127.0.0.1:{port}")])
        .args(["--status-listen", &format!("0.0.0.0:{status}")])
        .args(["--workers", "1", "--access-log", "off"])
        .env("GATEWAY_LOG", "warn")
        .env_remove("GATEWAY_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _p = Proc::new(child);
    assert!(wait_port(status, Duration::from_secs(20)));
    let (s, body) = post(status, &base(up), &[]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("GATEWAY_ADMIN_TOKEN"), "{body}");
}
