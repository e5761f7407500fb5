//! Test harness: real processes on free loopback ports (the gateway binary and
//! `echo-upstream`), killed when the guard drops.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use test_support::redis::{redis_cli, redis_cluster, redis_server, redis_server_with};
pub use test_support::{Proc, free_port, wait_port};

/// An `echo-upstream` answering on one port, named by that port.
pub fn upstream(port: u16) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_echo-upstream"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--name",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn echo-upstream");
    assert!(
        wait_port(port, Duration::from_secs(10)),
        "upstream {port} did not start"
    );
    Proc::new(child)
}

pub struct Gw {
    pub proc: Proc,
    pub port: u16,
    pub status: u16,
    pub tls_port: Option<u16>,
    pub _dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Gw {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    pub fn status_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.status)
    }
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }
}

pub struct GwOpts {
    pub extra: Vec<String>,
    pub tls: Option<(String, String)>,
}

pub fn gateway(config: &str) -> Gw {
    gateway_with(
        config,
        GwOpts {
            extra: vec![],
            tls: None,
        },
    )
}

pub fn gateway_with(config: &str, opts: GwOpts) -> Gw {
    gateway_with_env(config, opts, &[])
}

/// A gateway with extra environment variables (e.g. `SSL_CERT_FILE` for a test CA).
pub fn gateway_with_env(config: &str, opts: GwOpts, env: &[(&str, &str)]) -> Gw {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, config).expect("write config");
    let port = free_port();
    let status = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.arg("run")
        .arg("--config")
        .arg(&path)
        .args(["--proxy-listen", &format!("127.0.0.1:{port}")])
        .args(["--status-listen", &format!("127.0.0.1:{status}")])
        .args(["--workers", "2", "--access-log", "off"])
        .args(&opts.extra)
        .env("GATEWAY_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut tls_port = None;
    if let Some((cert, key)) = &opts.tls {
        let cp = dir.path().join("cert.pem");
        let kp = dir.path().join("key.pem");
        std::fs::write(&cp, cert).expect("cert");
        std::fs::write(&kp, key).expect("key");
        let tp = free_port();
        cmd.arg("--ssl-cert")
            .arg(&cp)
            .arg("--ssl-cert-key")
            .arg(&kp);
        cmd.args(["--proxy-ssl-listen", &format!("127.0.0.1:{tp}")]);
        tls_port = Some(tp);
    }
    let child = cmd.spawn().expect("spawn gateway");
    let proc = Proc::new(child);
    assert!(
        wait_port(status, Duration::from_secs(20)),
        "gateway did not start"
    );
    assert!(
        wait_port(port, Duration::from_secs(5)),
        "proxy port did not open"
    );
    Gw {
        proc,
        port,
        status,
        tls_port,
        _dir: dir,
        config: path,
    }
}

/// A raw HTTP/1.1 exchange: the bytes sent as given, the response read until close or timeout.
pub fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            // Headers are in; read the body if Content-Length says how much.
            let text = String::from_utf8_lossy(&out).to_string();
            if let Some(cl) = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
            {
                let head = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
                if out.len() >= head + cl {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(8)
        .build()
        .expect("client")
}

pub async fn get_json(c: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let r = c.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// Polls until `f` returns true or the timeout passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits, if needed, so that `window_secs`-long fixed windows do not roll over within
/// the next `need_secs` seconds.
pub fn away_from_window_end(window_secs: u64, need_secs: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let into = now % window_secs as f64;
    let left = window_secs as f64 - into;
    if left < need_secs as f64 {
        std::thread::sleep(Duration::from_secs_f64(left + 0.05));
    }
}

/// A response read whole: status, headers and body.
pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Got {
    /// A header's value ("" when absent or not text).
    pub fn h(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}
