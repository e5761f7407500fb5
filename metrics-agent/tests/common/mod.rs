//! Shared pieces of the end-to-end tests: a real Prometheus receiver, synthetic scrape
//! targets, an ECS Task Metadata v4 fixture server, and the agent process.
// Each test binary uses a part of this module (and of the re-exported helpers).
#![allow(dead_code, unused_imports)]

pub mod moto;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use test_support::http::{http_get, urlencode};
pub use test_support::prometheus::Prometheus;
pub use test_support::{Proc, find_on_path, free_port, wait_until};

/// A synthetic scrape target on its own thread. Every scrape increments the counter, so the
/// values Prometheus stores can be checked exactly.
pub struct Target {
    pub port: u16,
    pub scrapes: Arc<AtomicU64>,
    pub flappy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    TextGzip,
    OpenMetrics,
    /// `n` extra series with long labels (for the WAL cap test).
    Bulk(usize),
}

impl Target {
    pub fn start(flavor: Flavor) -> Target {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let scrapes = Arc::new(AtomicU64::new(0));
        let flappy = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (sc, fl, st) = (scrapes.clone(), flappy.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        serve_target(s, flavor, &sc, &fl);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Target {
            port,
            scrapes,
            flappy,
            stop,
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(s: &mut TcpStream) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).to_string())
}

fn serve_target(mut s: TcpStream, flavor: Flavor, scrapes: &AtomicU64, flappy: &AtomicBool) {
    let Some(req) = read_request(&mut s) else {
        return;
    };
    let gzip_ok = req.to_ascii_lowercase().contains("accept-encoding: gzip");
    let n = scrapes.fetch_add(1, Ordering::SeqCst) + 1;
    let mut body = String::new();
    let om = flavor == Flavor::OpenMetrics;
    body.push_str("# HELP synthetic_requests Requests served.\n");
    if om {
        body.push_str("# TYPE synthetic_requests counter\n");
        body.push_str(&format!(
            "synthetic_requests_total{{path=\"/a\"}} {n} # {{trace_id=\"abc\"}} 1.0\n"
        ));
        body.push_str("synthetic_requests_created{path=\"/a\"} 1700000000.0\n");
    } else {
        body.push_str("# TYPE synthetic_requests_total counter\n");
        body.push_str(&format!("synthetic_requests_total{{path=\"/a\"}} {n}\n"));
    }
    body.push_str("synthetic_temperature_celsius{room=\"lab \\\"1\\\"\"} 21.5\n");
    if flappy.load(Ordering::SeqCst) {
        body.push_str("synthetic_flappy 1\n");
    }
    if let Flavor::Bulk(k) = flavor {
        for i in 0..k {
            body.push_str(&format!(
                "synthetic_bulk{{idx=\"{i}\",padding=\"{}\"}} {n}\n",
                "x".repeat(64)
            ));
        }
    }
    if om {
        body.push_str("# EOF\n");
    }
    let ctype = if om {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let (bytes, enc) = if gzip_ok && flavor == Flavor::TextGzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = e.write_all(body.as_bytes());
        (e.finish().unwrap_or_default(), "Content-Encoding: gzip\r\n")
    } else {
        (body.into_bytes(), "")
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n{enc}Content-Length: {}\r\nConnection: close\r\n\r\n",
        bytes.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&bytes);
}

/// Serves the ECS Task Metadata v4 fixtures under `/v4/<id>`.
pub struct EcsFixture {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl EcsFixture {
    pub fn start() -> EcsFixture {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ecs");
        let task = std::fs::read_to_string(fixtures.join("task_fargate.json")).expect("fixture");
        let stats =
            std::fs::read_to_string(fixtures.join("task_stats_fargate_v1.json")).expect("fixture");
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
                let Some(req) = read_request(&mut s) else {
                    continue;
                };
                let path = req.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match path {
                    "/v4/e2e-task/task" => ("200 OK", task.as_str()),
                    "/v4/e2e-task/task/stats" => ("200 OK", stats.as_str()),
                    _ => ("404 Not Found", "{}"),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        EcsFixture { port, stop }
    }

    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}/v4/e2e-task", self.port)
    }
}

impl Drop for EcsFixture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The agent under test.
pub struct Agent {
    pub listen_port: u16,
    child: Option<Child>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
}

impl Agent {
    pub fn start(config: &Path, wal_dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Agent {
        let listen_port = free_port();
        let mut args = vec![
            "run".to_string(),
            "--config".into(),
            config.display().to_string(),
            "--wal-dir".into(),
            wal_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = Agent {
            listen_port,
            child: None,
            args,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: wal_dir.with_extension("log"),
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_metrics-agent"))
            .args(&self.args)
            .env(
                "METRICS_AGENT_LISTEN",
                format!("127.0.0.1:{}", self.listen_port),
            )
            .env("RUST_LOG", "warn")
            .env_remove("ECS_CONTAINER_METADATA_URI_V4")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        self.child = Some(child);
        let port = self.listen_port;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(port, "/ready"), Some((200, _))) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for agent ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGHUP (reload).
    pub fn hangup(&self) {
        let pid = self.child.as_ref().map(|c| c.id()).expect("agent running");
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -HUP {pid}");
    }

    /// `POST /-/reload`: (status, body).
    pub fn reload(&self) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.listen_port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        s.write_all(b"POST /-/reload HTTP/1.1\r\nHost: agent\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (status, body)
    }

    /// SIGKILL: no chance to flush or save anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        false
    }

    /// Value of one of the agent's own metrics with exactly these labels (any order).
    pub fn self_metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (_, body) = http_get(self.listen_port, "/metrics")?;
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        want.sort();
        body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, r)) => (n, r.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut got: Vec<String> = rest
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            got.sort();
            (n == name && got == want)
                .then(|| value.parse().ok())
                .flatten()
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Largest gap between consecutive samples, in ms.
pub fn max_gap(samples: &[(i64, f64)]) -> i64 {
    samples
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or(i64::MAX)
}
