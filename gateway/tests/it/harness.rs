//! Test harness: real processes on free loopback ports (the gateway binary and
//! `echo-upstream`), killed when the guard drops.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port, never the same twice in this test process (tests run in
/// parallel, and a port released by one could otherwise be handed to another).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&p) {
            given.push(p);
            return p;
        }
    }
}

pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

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
    Proc { child }
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
    let proc = Proc { child };
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

/// A plain `redis-server` on `port`.
pub fn redis_server(port: u16) -> Proc {
    redis_server_with(port, &[])
}

/// A `redis-server` on `port` (no persistence, DEBUG allowed from loopback) with extra
/// arguments (auth, TLS), up when this returns.
pub fn redis_server_with(port: u16, extra: &[&str]) -> Proc {
    let dir = std::env::temp_dir().join(format!("gw-redis-{port}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args([
            "--port",
            &port.to_string(),
            "--enable-debug-command",
            "local",
        ])
        .arg("--dir")
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server (apt-get install redis-server)");
    let proc = Proc { child };
    let listen = extra
        .windows(2)
        .find(|w| w[0] == "--tls-port")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(port);
    assert!(
        wait_port(listen, Duration::from_secs(10)),
        "redis-server {listen} did not start"
    );
    proc
}

/// Runs `redis-cli` and returns its stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A free port whose cluster bus port (port + 10000) is free too.
pub fn free_cluster_port() -> u16 {
    loop {
        let p = 20_000 + free_port() % 10_000;
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
}

pub struct RedisCluster {
    pub nodes: Vec<Proc>,
    pub ports: Vec<u16>,
    pub dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts (again) the node on `ports[i]`; it keeps its identity and slots.
    pub fn start_node(&self, i: usize) -> Proc {
        let p = self.ports[i];
        let conf = self.dir.path().join(format!("nodes-{p}.conf"));
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &p.to_string(), "--cluster-enabled", "yes"])
            .args(["--cluster-node-timeout", "1000"])
            .arg("--cluster-config-file")
            .arg(&conf)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        assert!(wait_port(p, Duration::from_secs(10)), "cluster node {p}");
        Proc { child }
    }

    /// Waits until every node reports `cluster_state:ok`.
    pub fn wait_ok(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self
                .ports
                .iter()
                .all(|p| redis_cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// A Redis Cluster of `masters` primaries and no replicas (node timeout 1 s), made with
/// `redis-cli --cluster create`, with every slot served when this returns.
pub fn redis_cluster(masters: usize) -> RedisCluster {
    let mut c = RedisCluster {
        nodes: Vec::new(),
        ports: (0..masters).map(|_| free_cluster_port()).collect(),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    c.nodes = (0..masters).map(|i| c.start_node(i)).collect();
    let addrs: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(
        out.status.success(),
        "cluster create: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        c.wait_ok(Duration::from_secs(20)),
        "redis cluster did not become ready"
    );
    c
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
