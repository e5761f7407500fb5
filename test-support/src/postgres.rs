//! A scratch PostgreSQL cluster on loopback: `initdb` into a temporary directory, then
//! `postgres` with `pg_stat_statements` preloaded and fsync off, ready for queries when
//! the start returns. As root the server runs as the `postgres` user (it refuses root).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Proc, free_port, wait_port};

/// A PostgreSQL binary: on the PATH (symlinks resolved, so sibling binaries are found
/// too), else the newest Debian `/usr/lib/postgresql/*/bin`.
pub fn find_postgres_bin(name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(std::fs::canonicalize(&p).unwrap_or(p));
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
    candidates.pop()
}

fn running_as_root(probe: &Path) -> bool {
    std::fs::metadata(probe)
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Runs `bin` as the `postgres` user when `as_postgres` (setpriv execs it directly, so
/// killing the child kills the server).
fn pg_command(bin: &Path, as_postgres: bool) -> Command {
    if as_postgres {
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

/// A running PostgreSQL server; stopped with a fast shutdown (SIGINT) when dropped.
pub struct Postgres {
    pub proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.proc.stop("INT", Duration::from_secs(10));
    }
}

/// Starts PostgreSQL with the `initdb` found by [`find_postgres_bin`]; panics when absent.
pub fn start_postgres() -> Postgres {
    let initdb = find_postgres_bin("initdb").unwrap_or_else(|| {
        panic!("initdb not found on PATH or in /usr/lib/postgresql/*/bin; run .ci/deps/metrics-agent.sh")
    });
    start_postgres_with(&initdb)
}

/// Starts PostgreSQL from the installation of `initdb` (its `postgres` and
/// `pg_isready` are siblings).
pub fn start_postgres_with(initdb: &Path) -> Postgres {
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
    let out = pg_command(initdb, as_postgres)
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
    let proc = Proc::spawn(
        "postgres",
        pg_command(&initdb.with_file_name("postgres"), as_postgres)
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
            .stderr(Stdio::null()),
    );
    assert!(
        wait_port(port, Duration::from_secs(30)),
        "postgres did not start listening on {port}"
    );
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
    Postgres {
        proc,
        port,
        _dir: dir,
    }
}
