//! Prometheus as the remote-write receiver of a test, with instant and range queries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::{http_get, urlencode};
use crate::{find_on_path, free_port, wait_until};

/// A Prometheus server used as the remote-write receiver.
pub struct Prometheus {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl Prometheus {
    pub fn start(dir: &Path) -> Prometheus {
        let mut p = Prometheus {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
            extra_args: Vec::new(),
        };
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(
            dir.join("prometheus.yml"),
            "global: {scrape_interval: 1m}\nstorage:\n  tsdb:\n    out_of_order_time_window: 1h\n",
        )
        .expect("write prometheus.yml");
        p.restart();
        p
    }

    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.join("prometheus.log")).expect("log");
        let child = Command::new(find_on_path("prometheus"))
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--web.enable-remote-write-receiver")
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        self.child = Some(child);
        let port = self.port;
        wait_until("prometheus ready", Duration::from_secs(60), || {
            matches!(http_get(port, "/-/ready"), Some((200, _)))
        });
    }

    /// Graceful stop (SIGTERM) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Instant query; returns the `result` array.
    pub fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        let Some((200, body)) = http_get(self.port, &path) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Raw samples `(ts_ms, value)` of the single series matching `selector` over `range`.
    pub fn raw_samples(&self, selector: &str, range: &str) -> Vec<(i64, f64)> {
        let r = self.query(&format!("{selector}[{range}]"));
        let Some(series) = r.first() else {
            return Vec::new();
        };
        series["values"]
            .as_array()
            .map(|vals| {
                vals.iter()
                    .filter_map(|p| {
                        let ts = p[0].as_f64()?;
                        let v: f64 = p[1].as_str()?.parse().ok()?;
                        Some(((ts * 1000.0).round() as i64, v))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn scalar(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        r.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
