//! Helpers that start real PostgreSQL and Redis servers for collector tests.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Finds a server binary on PATH or under Debian's PostgreSQL directories.
pub fn find_binary(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    candidates.sort();
    candidates
        .pop()
        .unwrap_or_else(|| panic!("{name} not found on PATH or in /usr/lib/postgresql/*/bin; run .ci/deps/metrics-agent.sh"))
}

fn running_as_root(probe: &Path) -> bool {
    std::fs::metadata(probe)
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A child process killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown (and stops Redis too); SIGKILL as a fallback.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not start listening on {port}");
}

pub fn start_redis() -> Server {
    let bin = find_binary("redis-server");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let port = free_port();
    let child = Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn redis-server: {e}"));
    wait_port(port, "redis-server");
    Server {
        child,
        port,
        _dir: dir,
    }
}

/// Runs `cmd` as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn pg_command(bin: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        // setpriv execs the server directly, so killing the child kills the server.
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

pub fn start_postgres() -> Server {
    // Resolve symlinks (e.g. /usr/local/bin/initdb) so sibling binaries are found too.
    let initdb = find_binary("initdb");
    let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
    let postgres = initdb.with_file_name("postgres");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let as_postgres = running_as_root(dir.path());
    let data = dir.path().join("data");
    if as_postgres {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap_or_else(|e| panic!("chown: {e}"));
        assert!(st.success(), "chown failed");
    }
    let out = pg_command(&initdb, as_postgres)
        .args(["-D"])
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
        .output()
        .unwrap_or_else(|e| panic!("initdb: {e}"));
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let child = pg_command(&postgres, as_postgres)
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
        .arg(dir.path())
        .args([
            "-c",
            "shared_preload_libraries=pg_stat_statements",
            "-c",
            "fsync=off",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn postgres: {e}"));
    wait_port(port, "postgres");
    // The port opens before the server accepts connections ("starting up").
    let pg_isready = initdb.with_file_name("pg_isready");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new(&pg_isready)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-q",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "postgres did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    Server {
        child,
        port,
        _dir: dir,
    }
}
