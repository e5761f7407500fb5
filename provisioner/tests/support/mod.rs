//! Test harness: a moto server per test on a free loopback port, a scratch
//! envs directory, a Grafana-API-shaped receiver, and a runner for the real
//! `provisioner` binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

pub const REGION: &str = "us-east-1";
pub const GRAFANA_KEY: &str = "test-grafana-key";

pub use test_support::moto::Moto;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory with `envs/staging.toml`, `envs/production.toml`
/// (dashboards pointing at `dash/`) and dashboard/rule fixtures.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "provisioner-e2e-{}-{name}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("envs")).expect("mkdir envs");
        std::fs::create_dir_all(dir.join("dash/grafana")).expect("mkdir grafana");
        std::fs::create_dir_all(dir.join("dash/prometheus")).expect("mkdir prometheus");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("envs");
        for env in ["staging", "production"] {
            let text = std::fs::read_to_string(src.join(format!("{env}.toml"))).expect("read env");
            let text = text.replace(
                r#"dashboards_dir = "../../dashboards""#,
                r#"dashboards_dir = "../dash""#,
            );
            assert!(text.contains(r#""../dash""#), "env file layout changed");
            std::fs::write(dir.join(format!("envs/{env}.toml")), text).expect("write env");
            std::fs::create_dir_all(dir.join(format!("envs/{env}"))).expect("mkdir env dir");
            std::fs::copy(
                src.join(format!("{env}/kong.yml")),
                dir.join(format!("envs/{env}/kong.yml")),
            )
            .expect("copy kong.yml");
        }
        std::fs::write(
            dir.join("dash/grafana/gateway.json"),
            r#"{"uid": "gw-overview", "title": "Gateway overview", "tags": ["gateway"], "panels": []}"#,
        )
        .expect("write dashboard");
        std::fs::write(
            dir.join("dash/prometheus/gateway.yml"),
            "groups:\n- name: gateway\n  rules:\n  - alert: GatewayDown\n    expr: up{job=\"gateway\"} == 0\n    for: 2m\n",
        )
        .expect("write rules");
        Scratch { dir }
    }

    pub fn env_file(&self, env: &str) -> PathBuf {
        self.dir.join(format!("envs/{env}.toml"))
    }

    /// Replaces one exact line fragment in an env file.
    pub fn edit_env(&self, env: &str, from: &str, to: &str) {
        let p = self.env_file(env);
        let text = std::fs::read_to_string(&p).expect("read env");
        assert!(text.contains(from), "{from} not in {}", p.display());
        std::fs::write(&p, text.replacen(from, to, 1)).expect("write env");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs the real CLI against `moto`.
pub fn provisioner(
    moto: &Moto,
    scratch: &Scratch,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provisioner"));
    cmd.arg("--endpoint-url")
        .arg(&moto.url)
        .arg("--envs-dir")
        .arg(scratch.dir.join("envs"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", scratch.dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            scratch.dir.join("no-aws-credentials"),
        )
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("GRAFANA_API_KEY")
        .env_remove("GRAFANA_URL")
        .env_remove("PROVISIONER_FAIL_BEFORE")
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run provisioner");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// SDK configuration for verifying what the CLI did.
pub async fn sdk(moto: &Moto) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(&moto.url)
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            "testing", "testing", None, None, "static",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

/// One request the fake Grafana received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: String,
}

#[derive(Default)]
pub struct GrafanaState {
    pub dashboards: BTreeMap<String, Value>,
    /// Data sources by uid.
    pub datasources: BTreeMap<String, Value>,
    pub requests: Vec<Seen>,
    pub version: u64,
}

/// A small HTTP server speaking the parts of Grafana's API the provisioner
/// uses, recording every request.
pub struct FakeGrafana {
    pub url: String,
    pub state: Arc<Mutex<GrafanaState>>,
    stop: Arc<AtomicBool>,
    port: u16,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(stream: &mut TcpStream, status: u16, body: &Value) {
    let text = body.to_string();
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn handle(mut stream: TcpStream, state: &Mutex<GrafanaState>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut len = 0usize;
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                len = v.trim().parse().unwrap_or(0);
            } else if k == "authorization" {
                auth = v.trim().to_string();
            }
        }
    }
    let mut body = vec![0u8; len];
    if len > 0 && reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let mut st = state.lock().expect("grafana state");
    st.requests.push(Seen {
        method: method.clone(),
        path: path.to_string(),
        authorization: auth.clone(),
    });
    // Grafana's health endpoint needs no credentials.
    if (method.as_str(), path) == ("GET", "/api/health") {
        respond(&mut stream, 200, &json!({"database": "ok"}));
        return;
    }
    // The external Grafana's token, or `admin` of a provisioned one (the
    // test checks the password it recorded).
    if auth != format!("Bearer {GRAFANA_KEY}") && !auth.starts_with("Basic ") {
        respond(&mut stream, 401, &json!({"message": "Unauthorized"}));
        return;
    }
    match (method.as_str(), path) {
        ("GET", p) if p.starts_with("/api/datasources/uid/") => {
            let uid = &p["/api/datasources/uid/".len()..];
            match st.datasources.get(uid) {
                Some(ds) => respond(&mut stream, 200, ds),
                None => respond(
                    &mut stream,
                    404,
                    &json!({"message": "Data source not found"}),
                ),
            }
        }
        ("POST", "/api/datasources") | ("PUT", _) if path.starts_with("/api/datasources") => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let uid = v["uid"].as_str().unwrap_or_default().to_string();
            st.datasources.insert(uid, v);
            respond(&mut stream, 200, &json!({"message": "Datasource saved"}));
        }
        ("GET", "/api/search") => {
            let tag = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "tag")
                .map(|(_, v)| decode(v))
                .unwrap_or_default();
            let hits: Vec<Value> = st
                .dashboards
                .values()
                .filter(|d| d["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == tag.as_str())))
                .map(|d| json!({"uid": d["uid"], "title": d["title"], "type": "dash-db", "tags": d["tags"]}))
                .collect();
            respond(&mut stream, 200, &Value::Array(hits));
        }
        ("POST", "/api/dashboards/db") => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let d = v["dashboard"].clone();
            let Some(uid) = d["uid"].as_str().map(str::to_string) else {
                respond(&mut stream, 400, &json!({"message": "uid required"}));
                return;
            };
            st.version += 1;
            let version = st.version;
            st.dashboards.insert(uid.clone(), d);
            respond(
                &mut stream,
                200,
                &json!({"status": "success", "uid": uid, "url": format!("/d/{uid}/x"), "version": version}),
            );
        }
        ("GET", p) if p.starts_with("/api/dashboards/uid/") => {
            let uid = &p["/api/dashboards/uid/".len()..];
            match st.dashboards.get(uid) {
                Some(d) => respond(
                    &mut stream,
                    200,
                    &json!({"dashboard": d, "meta": {"url": format!("/d/{uid}/x")}}),
                ),
                None => respond(&mut stream, 404, &json!({"message": "Dashboard not found"})),
            }
        }
        ("DELETE", p) if p.starts_with("/api/dashboards/uid/") => {
            let uid = p["/api/dashboards/uid/".len()..].to_string();
            match st.dashboards.remove(&uid) {
                Some(_) => respond(
                    &mut stream,
                    200,
                    &json!({"title": uid, "message": "deleted"}),
                ),
                None => respond(&mut stream, 404, &json!({"message": "Dashboard not found"})),
            }
        }
        _ => respond(&mut stream, 404, &json!({"message": "no such route"})),
    }
}

impl FakeGrafana {
    pub fn start() -> FakeGrafana {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind grafana");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(GrafanaState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    handle(c, &st);
                }
            }
        });
        FakeGrafana {
            url: format!("http://127.0.0.1:{port}"),
            state,
            stop,
            port,
            handle: Some(handle),
        }
    }

    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("GRAFANA_URL", self.url.clone()),
            ("GRAFANA_API_KEY", GRAFANA_KEY.to_string()),
        ]
    }
}

impl Drop for FakeGrafana {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Counts of changes by action in a `--output json` document.
pub fn summary(v: &Value) -> (u64, u64, u64, u64, u64) {
    let s = &v["summary"];
    let n = |k: &str| s[k].as_u64().unwrap_or(u64::MAX);
    (
        n("create"),
        n("update"),
        n("replace"),
        n("delete"),
        n("unchanged"),
    )
}

/// `key -> action` of every non-no-op change.
pub fn changes(v: &Value) -> BTreeMap<String, String> {
    v["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["key"].as_str().unwrap_or_default().to_string(),
                        c["action"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Fields changed for one key.
pub fn changed_fields(v: &Value, key: &str) -> Vec<String> {
    v["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["key"] == key)
        .flat_map(|c| c["fields"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["field"].as_str().map(str::to_string))
        .collect()
}
