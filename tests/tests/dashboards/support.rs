//! Shared helpers: paths, external tools, processes on free loopback ports, a tiny HTTP/1.1
//! client, and reading the dashboards and alert rules.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
pub use test_support::http::urlencode;
pub use test_support::{Proc, free_port, wait_port};

/// The repository root (the parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

pub fn dashboards_dir() -> PathBuf {
    repo_root().join("dashboards")
}

/// A binary of the workspace package `package` (`gateway`, `echo-upstream`,
/// `metrics-agent`), next to this test's `deps/` dir.
pub fn workspace_bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // .../target/debug/deps/dashboards-<hash> -> .../target/debug/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p {package} --bins` \
         (same CARGO_TARGET_DIR and profile as the tests; `cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// An external tool from `$<ENV>` or the PATH. `None` (with a message) when it is absent
/// outside CI; in CI (`CI=true`) a missing tool fails the test.
pub fn tool(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "`{name}` not found (PATH or ${env}); CI must install it: bash .ci/deps/dashboards.sh"
        );
        eprintln!(
            "SKIPPED: `{name}` not found (PATH or ${env}); install it with `bash .ci/deps/dashboards.sh`"
        );
    }
    found
}

/// A response: status and body.
pub struct Resp {
    pub status: u16,
    pub body: String,
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`).
pub fn http(method: &str, port: u16, path: &str, body: Option<(&str, &[u8])>) -> Resp {
    try_http(method, port, path, &[], body)
        .unwrap_or_else(|e| panic!("{method} 127.0.0.1:{port}{path}: {e}"))
}

pub fn try_http(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nUser-Agent: suite-tests\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some((ctype, b)) = body {
        req.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    if let Some((_, b)) = body {
        out.extend_from_slice(b);
    }
    s.write_all(&out)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let l = l.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("transfer-encoding:") {
            chunked = v.contains("chunked");
        } else if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut rest = &raw[head_end + 4..];
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("truncated chunk size"))?;
            let size_line = String::from_utf8_lossy(&rest[..eol]).to_string();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            if rest.len() < size + 2 {
                return Err(bad("truncated chunk"));
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body
    } else {
        let n = length.unwrap_or(rest.len()).min(rest.len());
        rest[..n].to_vec()
    };
    Ok(Resp {
        status,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// The four dashboards: (file stem, parsed JSON).
pub const DASHBOARDS: &[&str] = &["gateway-overview", "ecs-tasks", "database", "redis"];

pub fn load_dashboard(name: &str) -> Value {
    let path = dashboards_dir()
        .join("grafana")
        .join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
pub fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(inner) = p.get("panels") {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// One PromQL expression of a dashboard panel target.
pub struct PanelExpr {
    pub dashboard: String,
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

pub fn panel_exprs(name: &str, dash: &Value) -> Vec<PanelExpr> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(PanelExpr {
                    dashboard: name.to_string(),
                    panel: p["title"].as_str().unwrap_or("?").to_string(),
                    ref_id: t["refId"].as_str().unwrap_or("?").to_string(),
                    expr: e.to_string(),
                });
            }
        }
    }
    out
}

/// The template variables of a dashboard.
pub fn variables(dash: &Value) -> Vec<&Value> {
    dash["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

/// The query of a `query` variable (string or the Grafana 10 object form).
pub fn variable_query(v: &Value) -> Option<String> {
    match &v["query"] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("query").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Replaces Grafana's variables with what a "All" selection sends Prometheus:
/// `$__rate_interval` -> 1m, `$__interval` -> 15s, `$__range` -> 5m, dashboard variables
/// -> `.*`. Panics on a variable it does not know.
pub fn substitute(expr: &str, var_names: &[String]) -> String {
    let mut s = expr
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    let mut names: Vec<&String> = var_names.iter().collect();
    // Longest first so that `$job` does not eat the start of `$jobs`.
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        s = s.replace(&format!("${{{n}}}"), ".*");
        s = s.replace(&format!("${n}"), ".*");
    }
    let leftover = s.char_indices().find(|(i, c)| {
        *c == '$' && {
            let next = s[i + 1..].chars().next();
            // `${1}` (label_replace group) is PromQL, not Grafana.
            next.is_some_and(|n| n.is_ascii_alphabetic() || n == '_')
                || (next == Some('{')
                    && s[i + 2..]
                        .chars()
                        .next()
                        .is_some_and(|n| !n.is_ascii_digit()))
        }
    });
    assert!(
        leftover.is_none(),
        "unknown Grafana variable left in `{s}` (from `{expr}`)"
    );
    s
}

/// One alerting or recording rule from alerts.yml.
pub struct Rule {
    pub group: String,
    pub name: String,
    pub expr: String,
    pub value: serde_norway::Value,
}

pub fn load_rules() -> Vec<Rule> {
    let path = dashboards_dir().join("prometheus").join("alerts.yml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups").iter() {
        let group = g["name"].as_str().expect("group name").to_string();
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or_else(|| r["record"].as_str())
                .expect("rule has alert or record")
                .to_string();
            let expr = r["expr"].as_str().expect("rule has expr").to_string();
            out.push(Rule {
                group: group.clone(),
                name,
                expr,
                value: r.clone(),
            });
        }
    }
    out
}
