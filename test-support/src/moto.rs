//! A moto server (AWS APIs) per test on a free loopback port, logging to a file.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Where moto_server is: `$MOTO_SERVER`, the venv `.ci/deps/provisioner.sh`
/// makes, or `PATH`.
pub fn moto_binary() -> PathBuf {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return PathBuf::from(p);
    }
    if let Ok(home) = std::env::var("HOME") {
        for rel in [
            ".cache/edge-suite/moto-venv/bin/moto_server",
            ".local/bin/moto_server",
        ] {
            let p = Path::new(&home).join(rel);
            if p.exists() {
                return p;
            }
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("moto_server");
            if p.exists() {
                return p;
            }
        }
    }
    panic!("moto_server not found: run .ci/deps/provisioner.sh or set MOTO_SERVER");
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A moto server owned by one test; killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub url: String,
    pub log: PathBuf,
}

impl Moto {
    pub fn start(scratch: &Path) -> Moto {
        let bin = moto_binary();
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = scratch.join(format!("moto-{port}.log"));
            let out = std::fs::File::create(&log).expect("moto log file");
            let err = out.try_clone().expect("moto log file");
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut moto = Moto {
                child,
                port,
                url: format!("http://127.0.0.1:{port}"),
                log,
            };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if http_status(port, "/moto-api/") == Some(200) {
                    return moto;
                }
                if let Ok(Some(status)) = moto.child.try_wait() {
                    last_err = format!("moto_server exited with {status}");
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = moto.child.kill();
        }
        panic!("moto_server did not come up: {last_err}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
