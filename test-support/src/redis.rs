//! `redis-server` on loopback: one server (with extra arguments such as auth or TLS), or
//! a cluster made with `redis-cli --cluster create`; `redis-cli` for checks.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Proc, free_cluster_port, free_port, wait_port};

/// The `redis-server` binary: `$REDIS_SERVER`, else the one on the PATH.
fn redis_server_bin() -> std::ffi::OsString {
    std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into())
}

/// A plain `redis-server` on `port`.
pub fn redis_server(port: u16) -> Proc {
    redis_server_with(port, &[])
}

/// A `redis-server` on `port` (no persistence, DEBUG allowed from loopback) with extra
/// arguments (auth, TLS, memory limits), up when this returns.
pub fn redis_server_with(port: u16, extra: &[&str]) -> Proc {
    let dir = std::env::temp_dir().join(format!("test-redis-{port}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let child = Command::new(redis_server_bin())
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
    let proc = Proc {
        name: "redis-server",
        child,
    };
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

/// A `redis-server` on a free port.
pub struct Redis {
    pub proc: Proc,
    pub port: u16,
}

/// Starts a plain `redis-server` on a free port.
pub fn start_redis() -> Redis {
    let port = free_port();
    Redis {
        proc: redis_server(port),
        port,
    }
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
        let child = Command::new(redis_server_bin())
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
        Proc {
            name: "redis-server (cluster node)",
            child,
        }
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
