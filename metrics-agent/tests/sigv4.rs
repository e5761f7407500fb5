//! remote_write's `sigv4` block end to end: the agent signs with credentials from
//! aws-config's default chain (here the ECS container credentials endpoint, served by the
//! test with short-lived keys) and from an assumed role (moto's STS). A receiver in the test
//! checks every request's signature against the secret it handed out and sees the keys
//! replaced before they expire. Everything runs on 127.0.0.1.

mod common;

use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
use common::moto::Moto;
use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// One request the receiver got: its SigV4 headers and whether the signature verified.
#[derive(Debug, Clone)]
struct Seen {
    key: String,
    scope: String,
    token: Option<String>,
    verified: Option<bool>,
}

/// Reads one HTTP request: lowercase headers and the body.
fn read_request(s: &mut TcpStream) -> Option<(String, BTreeMap<String, String>, Vec<u8>)> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let path = lines.next()?.split_whitespace().nth(1)?.to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((path, headers, body))
}

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Serves on a thread until dropped.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(
        handle: impl Fn(&str, &BTreeMap<String, String>, &[u8]) -> (String, String) + Send + 'static,
    ) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                if let Some((path, headers, body)) = read_request(&mut s) {
                    let (status, body) = handle(&path, &headers, &body);
                    respond(&mut s, &status, "application/json", &body);
                }
            }
        });
        Server { port, stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Secrets handed out by the credentials endpoint: access key -> secret.
type Secrets = Arc<Mutex<BTreeMap<String, String>>>;

/// A remote-write receiver that checks each request's SigV4 signature (when it knows the
/// secret of the key) and answers 204, or 403 for a bad signature.
fn receiver(secrets: Secrets, seen: Arc<Mutex<Vec<Seen>>>) -> Server {
    let port_cell: Arc<Mutex<u16>> = Arc::new(Mutex::new(0));
    let pc = port_cell.clone();
    let server = Server::start(move |path, h, body| {
        let auth = h.get("authorization").cloned().unwrap_or_default();
        let cred = auth
            .split("Credential=")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_default()
            .to_string();
        let (key, scope) = cred.split_once('/').unwrap_or((&cred, ""));
        let token = h.get("x-amz-security-token").cloned();
        let secret = secrets.lock().expect("lock").get(key).cloned();
        let verified = secret.map(|secret| {
            let date = h.get("x-amz-date").cloned().unwrap_or_default();
            let Ok(t) = DateTime::from_str(&to_rfc3339(&date), DateTimeFormat::DateTime) else {
                return false;
            };
            let Ok(time) = SystemTime::try_from(t) else {
                return false;
            };
            let creds = aws_credential_types::Credentials::new(
                key,
                secret,
                token.clone(),
                None,
                "receiver",
            );
            let region = scope.split('/').nth(1).unwrap_or_default();
            let url = format!("http://127.0.0.1:{}{path}", *pc.lock().expect("lock"));
            metrics_agent::sigv4::sign("POST", &url, body, &creds, region, "aps", time)
                .map(|want| {
                    want.iter()
                        .any(|(k, v)| *k == "authorization" && *v == auth)
                })
                .unwrap_or(false)
        });
        seen.lock().expect("lock").push(Seen {
            key: key.to_string(),
            scope: scope.to_string(),
            token,
            verified,
        });
        if verified == Some(false) {
            (
                "403 Forbidden".into(),
                "{\"message\":\"bad signature\"}".into(),
            )
        } else {
            ("204 No Content".into(), String::new())
        }
    });
    *port_cell.lock().expect("lock") = server.port;
    server
}

/// `20150830T123600Z` -> `2015-08-30T12:36:00Z`.
fn to_rfc3339(amz: &str) -> String {
    if amz.len() != 16 {
        return String::new();
    }
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &amz[0..4],
        &amz[4..6],
        &amz[6..8],
        &amz[9..11],
        &amz[11..13],
        &amz[13..15]
    )
}

fn config(dir: &std::path::Path, receiver_port: u16, sigv4: &str) -> std::path::PathBuf {
    let target = format!("127.0.0.1:{}", free_port());
    let text = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: t\n    static_configs: [{{targets: ['{target}']}}]\n\
remote_write:\n  - url: http://127.0.0.1:{receiver_port}/api/v1/write\n    queue_config: {{max_shards: 1, min_backoff: 50ms, max_backoff: 500ms}}\n    sigv4:\n{sigv4}"
    );
    let file = dir.join("agent.yml");
    std::fs::write(&file, text).expect("write config");
    file
}

#[test]
fn sigv4_signs_with_container_credentials_refreshed_before_expiry() {
    let dir = tempfile::tempdir().expect("tmp");
    let secrets: Secrets = Arc::default();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let rx = receiver(secrets.clone(), seen.clone());
    // The ECS container credentials endpoint: AKID<n>, expiring 5 minutes and 3 seconds
    // from now, so the agent must fetch again about 3 seconds later.
    let hits = Arc::new(AtomicU64::new(0));
    let (h, s) = (hits.clone(), secrets.clone());
    let creds = Server::start(move |path, headers, _| {
        if path != "/creds" || headers.get("authorization").map(String::as_str) != Some("tok-e2e") {
            return ("404 Not Found".into(), "{}".into());
        }
        let n = h.fetch_add(1, Ordering::SeqCst) + 1;
        let (key, secret) = (format!("AKIDE2E{n}"), format!("secret-{n}"));
        s.lock().expect("lock").insert(key.clone(), secret.clone());
        let exp = SystemTime::now() + Duration::from_secs(303);
        let exp = DateTime::from(exp)
            .fmt(DateTimeFormat::DateTime)
            .expect("format");
        (
            "200 OK".into(),
            format!(
                r#"{{"AccessKeyId":"{key}","SecretAccessKey":"{secret}","Token":"session-{n}","Expiration":"{exp}"}}"#
            ),
        )
    });
    let cfg = config(dir.path(), rx.port, "      region: eu-west-1\n");
    let creds_url = format!("http://127.0.0.1:{}/creds", creds.port);
    let none = dir.path().join("none");
    let none = none.to_str().expect("utf8");
    let agent = Agent::start(
        &cfg,
        &dir.path().join("wal"),
        &["--no-ecs"],
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &creds_url),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok-e2e"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", none),
            ("AWS_SHARED_CREDENTIALS_FILE", none),
        ],
    );
    wait_until(
        "requests signed with a second set of keys",
        Duration::from_secs(30),
        || {
            let s = seen.lock().expect("lock");
            s.iter().any(|x| x.key == "AKIDE2E1") && s.iter().any(|x| x.key == "AKIDE2E2")
        },
    );
    let s = seen.lock().expect("lock").clone();
    assert!(
        s.iter().all(|x| x.verified == Some(true)),
        "every request verifies: {s:?}\n{}",
        agent.log()
    );
    for x in &s {
        let n = x.key.trim_start_matches("AKIDE2E");
        assert_eq!(x.token.as_deref(), Some(format!("session-{n}").as_str()));
        assert!(x.scope.ends_with("/eu-west-1/aps/aws4_request"), "{x:?}");
    }
    // Cached between refreshes: far fewer fetches than requests.
    assert!(
        hits.load(Ordering::SeqCst) < s.len() as u64,
        "{} fetches for {} requests",
        hits.load(Ordering::SeqCst),
        s.len()
    );
    let log = agent.log();
    assert!(!log.contains("secret-"), "a secret in the log: {log}");
}

#[test]
fn sigv4_role_arn_is_assumed_through_sts() {
    let dir = tempfile::tempdir().expect("tmp");
    let moto = Moto::start(dir.path());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let rx = receiver(Arc::default(), seen.clone());
    let cfg = config(
        dir.path(),
        rx.port,
        "      region: us-west-2\n      access_key: AKIDBASE\n      secret_key: base-secret\n      role_arn: arn:aws:iam::123456789012:role/amp-writer\n      external_id: e2e\n",
    );
    let none = dir.path().join("none");
    let none = none.to_str().expect("utf8");
    let agent = Agent::start(
        &cfg,
        &dir.path().join("wal"),
        &["--no-ecs"],
        &[
            ("AWS_ENDPOINT_URL_STS", &moto.url),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", none),
            ("AWS_SHARED_CREDENTIALS_FILE", none),
        ],
    );
    wait_until("a signed request", Duration::from_secs(30), || {
        !seen.lock().expect("lock").is_empty()
    });
    let s = seen.lock().expect("lock").clone();
    for x in &s {
        // The role's temporary credentials, not the base keys.
        assert!(x.key.starts_with("ASIA") || x.key.len() == 20, "{x:?}");
        assert_ne!(x.key, "AKIDBASE", "{x:?}\n{}", agent.log());
        assert!(x.token.as_deref().is_some_and(|t| !t.is_empty()), "{x:?}");
        assert!(x.scope.ends_with("/us-west-2/aps/aws4_request"), "{x:?}");
    }
    assert!(!agent.log().contains("base-secret"));
}

#[test]
fn sigv4_profile_gives_keys_and_region() {
    let dir = tempfile::tempdir().expect("tmp");
    let secrets: Secrets = Arc::default();
    secrets
        .lock()
        .expect("lock")
        .insert("AKIDPROFILE".into(), "profile-secret".into());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let rx = receiver(secrets, seen.clone());
    // No region in the block: it comes from the named profile, as do the keys.
    let cfg = config(dir.path(), rx.port, "      profile: monitoring\n");
    let aws_config = dir.path().join("aws-config");
    std::fs::write(
        &aws_config,
        "[default]\nregion = us-east-1\n\n[profile monitoring]\nregion = ap-southeast-2\n",
    )
    .expect("write");
    let aws_credentials = dir.path().join("aws-credentials");
    std::fs::write(
        &aws_credentials,
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret\n\n[monitoring]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n",
    )
    .expect("write");
    let envs = [
        ("AWS_CONFIG_FILE", aws_config.to_str().expect("utf8")),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            aws_credentials.to_str().expect("utf8"),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    // `check` loads it with a warning about the region (promtool accepts it too).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metrics-agent"))
        .args(["check", "--config"])
        .arg(&cfg)
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sigv4.region"), "{stderr}");
    let agent = Agent::start(&cfg, &dir.path().join("wal"), &["--no-ecs"], &envs);
    wait_until("a signed request", Duration::from_secs(30), || {
        seen.lock().expect("lock").len() >= 2
    });
    let s = seen.lock().expect("lock").clone();
    for x in &s {
        assert_eq!(x.key, "AKIDPROFILE", "{x:?}\n{}", agent.log());
        assert!(
            x.scope.ends_with("/ap-southeast-2/aps/aws4_request"),
            "{x:?}"
        );
        assert_eq!(x.verified, Some(true), "{x:?}");
        assert!(x.token.is_none(), "{x:?}");
    }
}
