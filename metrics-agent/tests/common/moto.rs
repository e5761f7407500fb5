//! moto's AWS emulator (`moto_server`, installed by `.ci/deps/provisioner.sh`) on a free
//! loopback port, owned by one test; over HTTPS too (test_support's moto is plain HTTP).

use super::{Proc, free_port, http_get, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::moto::moto_binary;

pub struct Moto {
    pub url: String,
    _child: Proc,
}

impl Moto {
    pub fn start(dir: &Path) -> Moto {
        let port = free_port();
        let moto = Moto::spawn(dir, port, &[]);
        wait_until("moto ready", Duration::from_secs(60), || {
            matches!(http_get(port, "/moto-api/"), Some((200, _)))
        });
        moto
    }

    /// Over HTTPS with this certificate and key (PEM files).
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Moto {
        let port = free_port();
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        let moto = Moto::spawn(dir, port, &["-c", &c, "-k", &k]);
        wait_until("moto listening", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        moto
    }

    fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Moto {
        let log = std::fs::File::create(dir.join("moto.log")).expect("moto log");
        let child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn moto_server");
        let scheme = if extra.is_empty() { "http" } else { "https" };
        Moto {
            url: format!("{scheme}://127.0.0.1:{port}"),
            _child: Proc::new(child),
        }
    }
}
