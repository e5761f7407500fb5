//! `consul_sd_configs`: services from Consul's catalog and their instances from its health
//! API, both through blocking queries (`index` + `wait`), as Prometheus does: the catalog
//! (`/v1/catalog/services`) is watched when no fixed service list is given (or tags or a
//! filter are), each watched service (`/v1/health/service/<name>`) has its own watch, and a
//! watch waits at least `refresh_interval` between queries. A failed query is retried after
//! 15 s and keeps the previous targets.

use crate::config::{ConsulSd, TargetGroup};
use crate::discovery::{Update, host_port};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long a blocking query may wait on the server (Prometheus' watchTimeout).
const WATCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause after a failed query (Prometheus' retryInterval).
const RETRY_INTERVAL: Duration = Duration::from_secs(15);

/// One entry of `/v1/health/service/<name>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: Node,
    pub service: Service,
    pub checks: Option<Vec<Check>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Node {
    pub node: String,
    pub address: String,
    pub tagged_addresses: Option<BTreeMap<String, String>>,
    pub meta: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Option<Vec<String>>,
    pub address: String,
    pub meta: Option<BTreeMap<String, String>>,
    pub port: i64,
    pub namespace: String,
    pub partition: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Check {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub status: String,
}

/// Consul's HealthChecks.AggregatedStatus: maintenance, then critical, then warning, then
/// passing; an unknown status gives "".
pub fn aggregated_status(checks: &[Check]) -> &'static str {
    let (mut warning, mut critical, mut maint) = (false, false, false);
    for c in checks {
        if c.check_id == "_node_maintenance" || c.check_id.starts_with("_service_maintenance:") {
            maint = true;
            continue;
        }
        match c.status.as_str() {
            "passing" => {}
            "warning" => warning = true,
            "critical" => critical = true,
            _ => return "",
        }
    }
    if maint {
        "maintenance"
    } else if critical {
        "critical"
    } else if warning {
        "warning"
    } else {
        "passing"
    }
}

/// The target group of one service's instances, with Prometheus' `__meta_consul_*` labels.
pub fn service_group(
    name: &str,
    datacenter: &str,
    separator: &str,
    entries: &[ServiceEntry],
) -> TargetGroup {
    let mut targets = Vec::with_capacity(entries.len());
    for e in entries {
        let (n, s) = (&e.node, &e.service);
        let tags = s.tags.as_deref().unwrap_or_default().join(separator);
        let host = if s.address.is_empty() {
            &n.address
        } else {
            &s.address
        };
        let mut l = BTreeMap::new();
        let mut set = |k: String, v: &str| {
            l.insert(k, v.to_string());
        };
        set("__address__".into(), &host_port(host, s.port));
        set("__meta_consul_address".into(), &n.address);
        set("__meta_consul_node".into(), &n.node);
        set("__meta_consul_namespace".into(), &s.namespace);
        set("__meta_consul_partition".into(), &s.partition);
        set(
            "__meta_consul_tags".into(),
            &format!("{separator}{tags}{separator}"),
        );
        set("__meta_consul_service_address".into(), &s.address);
        set("__meta_consul_service_port".into(), &s.port.to_string());
        set("__meta_consul_service_id".into(), &s.id);
        set(
            "__meta_consul_health".into(),
            aggregated_status(e.checks.as_deref().unwrap_or_default()),
        );
        let sanitize = crate::discovery::sanitize_label_name;
        for (k, v) in n.meta.iter().flatten() {
            set(format!("__meta_consul_metadata_{}", sanitize(k)), v);
        }
        for (k, v) in s.meta.iter().flatten() {
            set(format!("__meta_consul_service_metadata_{}", sanitize(k)), v);
        }
        for (k, v) in n.tagged_addresses.iter().flatten() {
            set(format!("__meta_consul_tagged_address_{}", sanitize(k)), v);
        }
        targets.push(l);
    }
    TargetGroup {
        source: name.to_string(),
        targets,
        labels: BTreeMap::from([
            ("__meta_consul_service".to_string(), name.to_string()),
            ("__meta_consul_dc".to_string(), datacenter.to_string()),
        ]),
    }
}

/// Why a Consul query failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{path}: HTTP {status}: {body}")]
    Status {
        path: String,
        status: u16,
        body: String,
    },
    #[error("{path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Secret(#[from] crate::config::SecretError),
    #[error("invalid server URL: {0}")]
    Url(String),
    #[error("invalid Config.Datacenter in /v1/agent/self")]
    NoDatacenter,
}

struct Client {
    http: reqwest::Client,
    base: String,
    sd: ConsulSd,
}

impl Client {
    /// GET `path` with the common query parameters; returns the body and `X-Consul-Index`.
    async fn get(
        &self,
        path: &str,
        extra: &[(&str, String)],
        index: Option<u64>,
        filter: Option<&str>,
    ) -> Result<(bytes::Bytes, u64), ConsulError> {
        let mut q: Vec<(&str, String)> = extra.to_vec();
        let sd = &self.sd;
        if let Some(dc) = &sd.datacenter {
            q.push(("dc", dc.clone()));
        }
        if let Some(ns) = &sd.namespace {
            q.push(("ns", ns.clone()));
        }
        if let Some(p) = &sd.partition {
            q.push(("partition", p.clone()));
        }
        if let Some(i) = index {
            if sd.allow_stale {
                q.push(("stale", String::new()));
            }
            if i > 0 {
                q.push(("index", i.to_string()));
            }
            q.push(("wait", format!("{}ms", WATCH_TIMEOUT.as_millis())));
            for (k, v) in &sd.node_meta {
                q.push(("node-meta", format!("{k}:{v}")));
            }
            if let Some(f) = filter {
                q.push(("filter", f.to_string()));
            }
        }
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| ConsulError::Url(e.to_string()))?;
        if !q.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &q {
                if v.is_empty() {
                    pairs.append_key_only(k);
                } else {
                    pairs.append_pair(k, v);
                }
            }
        }
        let mut req = self.http.get(url);
        if let Some(t) = &sd.token {
            req = req.header("X-Consul-Token", t.read()?);
        }
        if let Some(a) = &sd.http.auth {
            req = a.apply(req)?;
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = resp.bytes().await?;
        if status != 200 {
            return Err(ConsulError::Status {
                path: path.to_string(),
                status,
                body: String::from_utf8_lossy(&body).chars().take(256).collect(),
            });
        }
        Ok((body, index))
    }

    fn parse<T: serde::de::DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, ConsulError> {
        serde_json::from_slice(body).map_err(|source| ConsulError::Json {
            path: path.to_string(),
            source,
        })
    }

    /// The datacenter of the agent Prometheus talks to.
    async fn agent_datacenter(&self) -> Result<String, ConsulError> {
        let path = "/v1/agent/self";
        let (body, _) = self.get(path, &[], None, None).await?;
        let v: serde_json::Value = Self::parse(path, &body)?;
        v["Config"]["Datacenter"]
            .as_str()
            .map(str::to_string)
            .ok_or(ConsulError::NoDatacenter)
    }

    async fn services(
        &self,
        index: u64,
    ) -> Result<(BTreeMap<String, Vec<String>>, u64), ConsulError> {
        let path = "/v1/catalog/services";
        let (body, idx) = self
            .get(path, &[], Some(index), self.sd.filter.as_deref())
            .await?;
        let m: BTreeMap<String, Option<Vec<String>>> = Self::parse(path, &body)?;
        Ok((
            m.into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
            idx,
        ))
    }

    async fn health(
        &self,
        name: &str,
        index: u64,
    ) -> Result<(Vec<ServiceEntry>, u64), ConsulError> {
        let path = format!(
            "/v1/health/service/{}",
            crate::discovery::percent_encode(name)
        );
        let tags: Vec<(&str, String)> = self.sd.tags.iter().map(|t| ("tag", t.clone())).collect();
        let (body, idx) = self
            .get(&path, &tags, Some(index), self.sd.health_filter.as_deref())
            .await?;
        Ok((Self::parse(&path, &body)?, idx))
    }
}

/// Whether a catalog service is watched: by name (when a list is given) and by tags (it
/// must have all of them).
fn should_watch(sd: &ConsulSd, name: &str, tags: &[String]) -> bool {
    (sd.services.is_empty() || sd.services.iter().any(|s| s == name))
        && sd.tags.iter().all(|w| tags.contains(w))
}

enum Msg {
    Services(BTreeMap<String, Vec<String>>),
    Group(String, TargetGroup),
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.changed() => false,
    }
}

/// Watches one service's instances; sends its group whenever the index moves.
async fn watch_service(c: Arc<Client>, name: String, dc: String, tx: mpsc::Sender<Msg>) {
    let mut tick = tokio::time::interval(c.sd.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = 0;
    loop {
        match c.health(&name, last).await {
            Ok((entries, idx)) => {
                if idx != last {
                    last = idx;
                    let g = service_group(&name, &dc, &c.sd.tag_separator, &entries);
                    if tx.send(Msg::Group(name.clone(), g)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(service = %name, "consul_sd: error refreshing service: {e}");
                tokio::time::sleep(RETRY_INTERVAL).await;
                continue;
            }
        }
        tick.tick().await;
    }
}

/// Watches the catalog's service list.
async fn watch_catalog(c: Arc<Client>, tx: mpsc::Sender<Msg>) {
    let mut tick = tokio::time::interval(c.sd.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = 0;
    loop {
        tick.tick().await;
        match c.services(last).await {
            Ok((services, idx)) => {
                if idx != last {
                    last = idx;
                    if tx.send(Msg::Services(services)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!("consul_sd: error refreshing service list: {e}");
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
        }
    }
}

/// Runs one `consul_sd_configs` entry until stopped.
pub async fn run(
    key: String,
    sd: ConsulSd,
    tx: mpsc::Sender<Update>,
    mut stop: watch::Receiver<bool>,
) {
    let base = format!(
        "{}://{}{}",
        sd.scheme,
        sd.server.trim_end_matches('/'),
        sd.path_prefix.trim_end_matches('/')
    );
    let builder = reqwest::Client::builder().timeout(WATCH_TIMEOUT + Duration::from_secs(15));
    let http = match crate::http_client::build(&sd.http, builder) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(discovery = %key, "consul_sd: {e}");
            return;
        }
    };
    let client = Arc::new(Client { http, base, sd });
    let dc = loop {
        if let Some(dc) = &client.sd.datacenter {
            break dc.clone();
        }
        match client.agent_datacenter().await {
            Ok(dc) => break dc,
            Err(e) => {
                tracing::error!(discovery = %key, "consul_sd: error retrieving datacenter name: {e}");
                if !sleep_or_stop(RETRY_INTERVAL, &mut stop).await {
                    return;
                }
            }
        }
    };
    let (mtx, mut mrx) = mpsc::channel::<Msg>(64);
    let sd = &client.sd;
    let catalog = sd.services.is_empty() || !sd.tags.is_empty() || sd.filter.is_some();
    let mut watchers: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    if catalog {
        tasks.push(tokio::spawn(watch_catalog(client.clone(), mtx.clone())));
    } else {
        for name in &sd.services {
            watchers.insert(
                name.clone(),
                tokio::spawn(watch_service(
                    client.clone(),
                    name.clone(),
                    dc.clone(),
                    mtx.clone(),
                )),
            );
        }
    }
    let mut groups: BTreeMap<String, TargetGroup> = BTreeMap::new();
    loop {
        let msg = tokio::select! {
            m = mrx.recv() => m,
            _ = stop.changed() => None,
        };
        let Some(msg) = msg else { break };
        match msg {
            Msg::Services(services) => {
                for (name, tags) in &services {
                    if should_watch(&client.sd, name, tags) && !watchers.contains_key(name) {
                        let h = tokio::spawn(watch_service(
                            client.clone(),
                            name.clone(),
                            dc.clone(),
                            mtx.clone(),
                        ));
                        watchers.insert(name.clone(), h);
                    }
                }
                let gone: Vec<String> = watchers
                    .keys()
                    .filter(|n| !services.contains_key(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    if let Some(h) = watchers.remove(&name) {
                        h.abort();
                    }
                    groups.remove(&name);
                }
            }
            Msg::Group(name, g) => {
                if !watchers.contains_key(&name) {
                    continue;
                }
                groups.insert(name, g);
            }
        }
        if tx
            .send((key.clone(), groups.values().cloned().collect()))
            .await
            .is_err()
        {
            break;
        }
    }
    for h in watchers.into_values().chain(tasks) {
        h.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as Consul's API documentation shows it for /v1/health/service/<name>.
    const SAMPLE: &str = r#"[{
      "Node": {"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "foobar", "Address": "10.1.10.12",
               "Datacenter": "dc1", "TaggedAddresses": {"lan": "10.1.10.12", "wan": "10.1.10.12"},
               "Meta": {"instance_type": "t2.medium"}},
      "Service": {"ID": "redis", "Service": "redis", "Tags": ["primary"], "Address": "10.1.10.12",
                  "TaggedAddresses": {"lan": {"address": "10.1.10.12", "port": 8000}},
                  "Meta": {"redis_version": "4.0"}, "Port": 8000, "Weights": {"Passing": 10, "Warning": 1},
                  "Namespace": "default"},
      "Checks": [{"Node": "foobar", "CheckID": "service:redis", "Name": "Service 'redis' check",
                  "Status": "passing", "ServiceID": "redis", "ServiceName": "redis"},
                 {"Node": "foobar", "CheckID": "serfHealth", "Name": "Serf Health Status",
                  "Status": "warning", "ServiceID": "", "ServiceName": ""}]
    }, {
      "Node": {"Node": "baz", "Address": "10.1.10.13", "TaggedAddresses": null, "Meta": null},
      "Service": {"ID": "redis-2", "Service": "redis", "Tags": null, "Address": "", "Meta": null, "Port": 8001},
      "Checks": [{"CheckID": "_node_maintenance", "Status": "critical"}]
    }]"#;

    #[test]
    fn labels_follow_prometheus() {
        let entries: Vec<ServiceEntry> = serde_json::from_str(SAMPLE).expect("json");
        let g = service_group("redis", "dc1", ",", &entries);
        assert_eq!(g.labels["__meta_consul_service"], "redis");
        assert_eq!(g.labels["__meta_consul_dc"], "dc1");
        let got: Vec<(&str, &str)> = g.targets[0]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("__address__", "10.1.10.12:8000"),
                ("__meta_consul_address", "10.1.10.12"),
                ("__meta_consul_health", "warning"),
                ("__meta_consul_metadata_instance_type", "t2.medium"),
                ("__meta_consul_namespace", "default"),
                ("__meta_consul_node", "foobar"),
                ("__meta_consul_partition", ""),
                ("__meta_consul_service_address", "10.1.10.12"),
                ("__meta_consul_service_id", "redis"),
                ("__meta_consul_service_metadata_redis_version", "4.0"),
                ("__meta_consul_service_port", "8000"),
                ("__meta_consul_tagged_address_lan", "10.1.10.12"),
                ("__meta_consul_tagged_address_wan", "10.1.10.12"),
                ("__meta_consul_tags", ",primary,"),
            ]
        );
        // No service address: the node's; maintenance wins over critical; no tags: ",,".
        let t = &g.targets[1];
        assert_eq!(t["__address__"], "10.1.10.13:8001");
        assert_eq!(t["__meta_consul_health"], "maintenance");
        assert_eq!(t["__meta_consul_tags"], ",,");
    }

    #[test]
    fn services_are_watched_by_name_and_all_tags() {
        let mut sd = crate::config::parse(
            std::path::Path::new("p.yml"),
            "scrape_configs:\n  - job_name: c\n    consul_sd_configs: [{tags: [a, b]}]\n",
        )
        .expect("config")
        .jobs[0]
            .consul_sd[0]
            .clone();
        assert!(should_watch(
            &sd,
            "x",
            &["b".into(), "a".into(), "c".into()]
        ));
        assert!(!should_watch(&sd, "x", &["a".into()]));
        sd.services = vec!["y".into()];
        assert!(!should_watch(&sd, "x", &["a".into(), "b".into()]));
        assert!(should_watch(&sd, "y", &["a".into(), "b".into()]));
        assert_eq!(sd.server, "localhost:8500");
        assert_eq!(sd.refresh_interval, Duration::from_secs(30));
        assert!(sd.allow_stale);
    }

    #[test]
    fn config_rules_follow_prometheus() {
        let err = |sd: &str| {
            crate::config::parse(
                std::path::Path::new("p.yml"),
                &format!("scrape_configs:\n  - job_name: c\n    consul_sd_configs: [{sd}]\n"),
            )
            .expect_err("invalid")
            .to_string()
        };
        let e = err("{server: ' '}");
        assert!(
            e.contains("consul_sd_configs[0].server") && e.contains("requires a server address"),
            "{e}"
        );
        let e = err("{username: u, password: p, basic_auth: {username: x}}");
        assert!(
            e.contains("at most one of consul SD configuration username"),
            "{e}"
        );
        let e = err("{token: t, authorization: {credentials: c}}");
        assert!(e.contains("at most one of consul SD token"), "{e}");
        let ok = crate::config::parse(
            std::path::Path::new("p.yml"),
            "scrape_configs:\n  - job_name: c\n    consul_sd_configs: [{username: u, password: p, token: t}]\n",
        )
        .expect("valid");
        assert!(matches!(
            ok.jobs[0].consul_sd[0].http.auth,
            Some(crate::config::Auth::Basic { .. })
        ));
    }
}
