//! Grafana dashboards through Grafana's HTTP API (`/api/dashboards/db`,
//! `/api/dashboards/uid/<uid>`, `/api/search`). Dashboards this provisioner
//! owns carry the tag `provisioner:<project>-<env>` and a content hash.
//! The environment's own Grafana (the `grafana` ECS service) is reached as
//! `admin` with the generated password; the provisioner gives it the AMP
//! data source (`/api/datasources`, SigV4 through the task role) and every
//! dashboard ([`Grafana::ensure_datasource`], [`Grafana::sync_dashboards`]).

use std::path::Path;

use serde_json::{Value, json};

use crate::desired::{DashboardFile, RuleFile};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::{GrafanaDashboardSpec, fnv1a};

/// Field added to uploaded dashboard models to detect drift.
pub const HASH_FIELD: &str = "provisionerContentHash";

/// How the provisioner authenticates to Grafana.
enum Auth {
    /// A service account token (an external Grafana).
    Bearer(String),
    /// `admin` and its password (the environment's own Grafana).
    Basic(String, String),
}

pub struct Grafana {
    pub base: String,
    auth: Auth,
    tag: String,
    folder_uid: Option<String>,
    http: reqwest::Client,
}

impl Grafana {
    pub fn new(
        base: &str,
        key: String,
        tag: String,
        folder_uid: Option<String>,
    ) -> Result<Grafana> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Grafana(e.to_string()))?;
        Ok(Grafana {
            base: base.trim_end_matches('/').to_string(),
            auth: Auth::Bearer(key),
            tag,
            folder_uid,
            http,
        })
    }

    /// The environment's own Grafana, as `user` with `password`.
    pub fn basic(base: &str, user: &str, password: String, tag: String) -> Result<Grafana> {
        let mut g = Grafana::new(base, String::new(), tag, None)?;
        g.auth = Auth::Basic(user.to_string(), password);
        Ok(g)
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Option<Value>> {
        let req = match &self.auth {
            Auth::Bearer(key) => req.bearer_auth(key),
            Auth::Basic(user, password) => req.basic_auth(user, Some(password)),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Grafana(format!("{what}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = resp
            .text()
            .await
            .map_err(|e| Error::Grafana(format!("{what}: {e}")))?;
        if !status.is_success() {
            return Err(Error::Grafana(format!("{what}: HTTP {status}: {body}")));
        }
        if body.trim().is_empty() {
            return Ok(Some(Value::Null));
        }
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| Error::Grafana(format!("{what}: bad JSON: {e}")))
    }

    pub async fn observe(&self) -> Result<Vec<Actual>> {
        let url = format!(
            "{}/api/search?type=dash-db&tag={}",
            self.base,
            encode(&self.tag)
        );
        let req = self.http.get(url);
        let hits = self.call(req, "search").await?.unwrap_or(Value::Null);
        let mut res = Vec::new();
        for hit in hits.as_array().into_iter().flatten() {
            let Some(uid) = hit["uid"].as_str() else {
                continue;
            };
            let req = self
                .http
                .get(format!("{}/api/dashboards/uid/{uid}", self.base));
            let Some(full) = self.call(req, "get dashboard").await? else {
                continue;
            };
            let d = &full["dashboard"];
            let spec = GrafanaDashboardSpec {
                uid: uid.to_string(),
                title: d["title"].as_str().unwrap_or_default().to_string(),
                content_hash: d[HASH_FIELD].as_str().unwrap_or_default().to_string(),
            };
            let url = full["meta"]["url"].as_str().unwrap_or_default();
            res.push(
                Actual::new(Key::new(Kind::GrafanaDashboard, uid), uid, &spec)
                    .output("url", format!("{}{url}", self.base)),
            );
        }
        Ok(res)
    }

    pub async fn upload(&self, d: &Desired) -> Result<Actual> {
        let spec: GrafanaDashboardSpec = d.spec()?;
        let raw = d.inputs.get("json").map(String::as_str).unwrap_or("{}");
        let model = prepare(raw, &spec, &self.tag)?;
        let mut body = json!({"dashboard": model, "overwrite": true, "message": "provisioner up"});
        if let Some(f) = &self.folder_uid {
            body["folderUid"] = json!(f);
        }
        let req = self
            .http
            .post(format!("{}/api/dashboards/db", self.base))
            .json(&body);
        let out = self
            .call(req, "save dashboard")
            .await?
            .ok_or_else(|| Error::Grafana("save dashboard: 404".into()))?;
        let url = out["url"].as_str().unwrap_or_default();
        Ok(Actual::new(d.key.clone(), &spec.uid, &spec)
            .output("url", format!("{}{url}", self.base)))
    }

    /// Whether Grafana answers `GET /api/health` with 200.
    pub async fn healthy(&self) -> bool {
        let url = format!("{}/api/health", self.base);
        match self.http.get(url).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Creates the data source `ds` (by its `uid`), or updates it when one
    /// with that uid exists. Returns `"created"` or `"updated"`.
    pub async fn ensure_datasource(&self, ds: &Value) -> Result<&'static str> {
        let uid = ds["uid"].as_str().unwrap_or_default();
        let url = format!("{}/api/datasources/uid/{}", self.base, encode(uid));
        let existing = self.call(self.http.get(&url), "get data source").await?;
        if existing.is_some() {
            self.call(self.http.put(&url).json(ds), "update data source")
                .await?;
            Ok("updated")
        } else {
            let req = self
                .http
                .post(format!("{}/api/datasources", self.base))
                .json(ds);
            self.call(req, "create data source").await?;
            Ok("created")
        }
    }

    /// Makes the owned dashboards exactly `files`: uploads the missing and
    /// changed ones (by content hash), deletes owned ones no longer in the
    /// repository. Returns (uploaded, deleted).
    pub async fn sync_dashboards(&self, files: &[DashboardFile]) -> Result<(usize, usize)> {
        let have = self.observe().await?;
        let mut uploaded = 0;
        for f in files {
            let d = crate::desired::dashboard_desired(f);
            let current = have.iter().find(|a| a.key == d.key);
            if current.is_none_or(|a| a.props != d.props) {
                self.upload(&d).await?;
                uploaded += 1;
            }
        }
        let mut deleted = 0;
        for a in &have {
            if !files.iter().any(|f| f.uid == a.id) {
                self.delete(a).await?;
                deleted += 1;
            }
        }
        Ok((uploaded, deleted))
    }

    pub async fn delete(&self, a: &Actual) -> Result<()> {
        let req = self
            .http
            .delete(format!("{}/api/dashboards/uid/{}", self.base, a.id));
        self.call(req, "delete dashboard").await?;
        Ok(())
    }
}

/// The Amazon Managed Prometheus data source: Grafana's Prometheus type
/// against the workspace's query endpoint (`.../workspaces/<id>/`), each
/// request signed with SigV4 by the AWS SDK's default credential chain,
/// which in the ECS task is the task role (`aps:QueryMetrics` ...).
pub fn amp_datasource(workspace_endpoint: &str, region: &str) -> Value {
    json!({
        "uid": crate::consts::GRAFANA_DATASOURCE_UID,
        "name": "Amazon Managed Prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": workspace_endpoint.trim_end_matches('/'),
        "isDefault": true,
        "jsonData": {
            "httpMethod": "POST",
            "sigV4Auth": true,
            "sigV4AuthType": "default",
            "sigV4Region": region,
        },
    })
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The model as uploaded: our uid/title, no numeric id, our ownership tag
/// and the content hash.
pub fn prepare(raw: &str, spec: &GrafanaDashboardSpec, tag: &str) -> Result<Value> {
    let mut model: Value = serde_json::from_str(raw).map_err(|e| Error::invalid(e.to_string()))?;
    if model.get("dashboard").is_some_and(Value::is_object) {
        model = model["dashboard"].take();
    }
    let Some(obj) = model.as_object_mut() else {
        return Err(Error::invalid(format!(
            "dashboard {} is not a JSON object",
            spec.uid
        )));
    };
    obj.insert("uid".into(), json!(spec.uid));
    obj.insert("title".into(), json!(spec.title));
    obj.insert("id".into(), Value::Null);
    obj.insert(HASH_FIELD.into(), json!(spec.content_hash));
    let tags = obj.entry("tags").or_insert_with(|| json!([]));
    if let Some(arr) = tags.as_array_mut()
        && !arr.iter().any(|t| t == tag)
    {
        arr.push(json!(tag));
    }
    Ok(model)
}

fn sorted_files(dir: &Path, exts: &[&str]) -> Result<Vec<std::path::PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: dir.display().to_string(),
                source,
            });
        }
    };
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| exts.contains(&e))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|source| Error::Io {
        path: p.display().to_string(),
        source,
    })
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("dashboard")
        .to_string()
}

/// `<dir>/grafana/*.json`; none is fine (zero uploads).
pub fn load_dashboards(dir: &Path) -> Result<Vec<DashboardFile>> {
    let mut out = Vec::new();
    for p in sorted_files(&dir.join("grafana"), &["json"])? {
        let text = read(&p)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("{}: {e}", p.display())))?;
        let model = if v.get("dashboard").is_some_and(Value::is_object) {
            &v["dashboard"]
        } else {
            &v
        };
        let uid = model["uid"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| stem(&p));
        let title = model["title"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| stem(&p));
        out.push(DashboardFile {
            uid,
            title,
            hash: fnv1a(text.as_bytes()),
            json: text,
        });
    }
    Ok(out)
}

/// `<dir>/prometheus/*.yml|yaml` that are Prometheus rules files (`groups:`).
/// Other YAML there (promtool unit tests with `rule_files:`/`tests:`) is
/// skipped with a note; unparsable YAML is an error.
pub fn load_rule_files(dir: &Path) -> Result<Vec<RuleFile>> {
    let mut out = Vec::new();
    for p in sorted_files(&dir.join("prometheus"), &["yml", "yaml"])? {
        let text = read(&p)?;
        let v: serde_norway::Value = serde_norway::from_str(&text)
            .map_err(|e| Error::invalid(format!("{}: {e}", p.display())))?;
        if v.get("groups").is_none() {
            let kind = if v.get("tests").is_some() || v.get("rule_files").is_some() {
                "a promtool unit-test file"
            } else {
                "not a rules file (no `groups:`)"
            };
            crate::progress::note(&format!("note: skipping {}: {kind}", p.display()));
            continue;
        }
        out.push(RuleFile {
            name: stem(&p),
            hash: fnv1a(text.as_bytes()),
            data: text,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One recorded request to [`grafana_api`].
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        auth: String,
        body: Value,
    }

    /// A real HTTP server on a loopback port answering the data-source
    /// part of Grafana's API (GET by uid: 404 until created; POST; PUT) and
    /// `/api/health`, recording every request. Serves `n` connections.
    fn grafana_api(
        n: usize,
    ) -> (
        String,
        std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
        std::thread::JoinHandle<()>,
    ) {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", l.local_addr().expect("addr"));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
        let log = seen.clone();
        let h = std::thread::spawn(move || {
            let mut stored: Option<Value> = None;
            for conn in l.incoming().take(n) {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut r = BufReader::new(c.try_clone().expect("clone"));
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let mut it = line.split_whitespace();
                let method = it.next().unwrap_or_default().to_string();
                let path = it.next().unwrap_or_default().to_string();
                let (mut len, mut auth) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            "authorization" => auth = v.trim().to_string(),
                            _ => {}
                        }
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (status, reply) = match (method.as_str(), path.as_str()) {
                    ("GET", "/api/health") => (200, json!({"database": "ok"})),
                    ("GET", p) if p.starts_with("/api/datasources/uid/") => match &stored {
                        Some(ds) => (200, ds.clone()),
                        None => (404, json!({"message": "Data source not found"})),
                    },
                    ("POST", "/api/datasources") => {
                        stored = Some(body.clone());
                        (200, json!({"message": "Datasource added", "id": 1}))
                    }
                    ("PUT", p) if p.starts_with("/api/datasources/uid/") => {
                        stored = Some(body.clone());
                        (200, json!({"message": "Datasource updated"}))
                    }
                    _ => (404, json!({"message": "no such route"})),
                };
                log.lock().expect("log").push(Seen {
                    method,
                    path,
                    auth,
                    body,
                });
                let text = reply.to_string();
                let _ = write!(
                    c,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        (base, seen, h)
    }

    #[tokio::test]
    async fn the_amp_data_source_is_created_then_updated_as_admin() {
        // health, GET(404) + POST, GET(200) + PUT
        let (base, seen, server) = grafana_api(5);
        let g = Grafana::basic(&base, "admin", "s3cret".into(), "provisioner:x".into())
            .expect("client");
        assert!(g.healthy().await);
        let ds = amp_datasource(
            "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/",
            "us-east-1",
        );
        assert_eq!(g.ensure_datasource(&ds).await.expect("create"), "created");
        assert_eq!(g.ensure_datasource(&ds).await.expect("update"), "updated");
        server.join().expect("server");
        let seen = seen.lock().expect("seen").clone();
        let calls: Vec<(&str, &str)> = seen
            .iter()
            .map(|s| (s.method.as_str(), s.path.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("GET", "/api/health"),
                ("GET", "/api/datasources/uid/amp"),
                ("POST", "/api/datasources"),
                ("GET", "/api/datasources/uid/amp"),
                ("PUT", "/api/datasources/uid/amp"),
            ]
        );
        // admin:s3cret, base64.
        assert!(
            seen[1..].iter().all(|s| s.auth == "Basic YWRtaW46czNjcmV0"),
            "{seen:?}"
        );
        let sent = &seen[2].body;
        assert_eq!(sent["type"], "prometheus");
        assert_eq!(
            sent["url"],
            "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1"
        );
        assert_eq!(sent["jsonData"]["sigV4Auth"], true);
        assert_eq!(sent["jsonData"]["sigV4AuthType"], "default");
        assert_eq!(sent["jsonData"]["sigV4Region"], "us-east-1");
        assert_eq!(seen[4].body, *sent);
    }

    /// The repository's own `dashboards/` (written by another team) must
    /// load as the env files point at it; an absent directory is fine.
    #[test]
    fn the_repository_dashboards_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
        let dashboards = load_dashboards(&dir).expect("dashboards/grafana/*.json parse");
        let mut uids: Vec<&str> = dashboards.iter().map(|d| d.uid.as_str()).collect();
        uids.sort();
        let n = uids.len();
        uids.dedup();
        assert_eq!(uids.len(), n, "dashboard uids are unique");
        for r in load_rule_files(&dir).expect("dashboards/prometheus rules parse") {
            assert!(!r.data.is_empty(), "{}", r.name);
        }
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("provisioner:a b"), "provisioner%3Aa%20b");
    }

    #[test]
    fn prepare_sets_identity_tag_and_hash() {
        let spec = GrafanaDashboardSpec {
            uid: "gw".into(),
            title: "Gateway".into(),
            content_hash: "abc".into(),
        };
        let m = prepare(
            r#"{"dashboard": {"id": 7, "tags": ["x"], "panels": []}}"#,
            &spec,
            "t",
        )
        .expect("ok");
        assert_eq!(m["uid"], "gw");
        assert_eq!(m["id"], Value::Null);
        assert_eq!(m["tags"], json!(["x", "t"]));
        assert_eq!(m[HASH_FIELD], "abc");
        assert!(prepare("[]", &spec, "t").is_err());
    }

    #[test]
    fn loaders_tolerate_missing_dirs_skip_test_files_and_reject_bad_yaml() {
        let dir = std::env::temp_dir().join(format!("prov-dash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load_dashboards(&dir).expect("ok").is_empty());
        assert!(load_rule_files(&dir).expect("ok").is_empty());
        std::fs::create_dir_all(dir.join("grafana")).expect("mkdir");
        std::fs::create_dir_all(dir.join("prometheus")).expect("mkdir");
        std::fs::write(
            dir.join("grafana/gw.json"),
            r#"{"title": "GW", "panels": []}"#,
        )
        .expect("w");
        std::fs::write(dir.join("prometheus/gw.yml"), "groups: []\n").expect("w");
        let d = load_dashboards(&dir).expect("ok");
        assert_eq!((d[0].uid.as_str(), d[0].title.as_str()), ("gw", "GW"));
        assert_eq!(load_rule_files(&dir).expect("ok")[0].name, "gw");
        std::fs::write(
            dir.join("prometheus/gw_test.yml"),
            "rule_files: [gw.yml]\ntests: []\n",
        )
        .expect("w");
        assert_eq!(load_rule_files(&dir).expect("test files skipped").len(), 1);
        std::fs::write(dir.join("prometheus/bad.yml"), "groups: [unclosed\n").expect("w");
        assert!(
            load_rule_files(&dir).is_err(),
            "unparsable YAML is an error"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
