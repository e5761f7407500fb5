//! The prometheus.yml subset the agent understands. Unknown keys are errors naming the field.

use crate::duration::{de_duration, de_opt_duration, format_duration};
use crate::labels::Labels;
use crate::relabel::{self, RelabelConfig, Rule};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read config: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file}:{line}: ${{{name}}} is not set (give it a value, or a default with ${{{name}:-value}}; $$ is a literal $)"
    )]
    Env {
        file: PathBuf,
        line: usize,
        name: String,
    },
    #[error("{file}: field `{path}`: {message}")]
    Parse {
        file: PathBuf,
        path: String,
        message: String,
    },
    #[error("{file}: field `{field}`: {message}")]
    Invalid {
        file: PathBuf,
        field: String,
        message: String,
    },
}

fn default_scrape_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_scrape_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub global: GlobalConfig,
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
    #[serde(default)]
    pub remote_write: Vec<RemoteWriteConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    #[serde(default = "default_scrape_interval", deserialize_with = "de_duration")]
    pub scrape_interval: Duration,
    #[serde(default = "default_scrape_timeout", deserialize_with = "de_duration")]
    pub scrape_timeout: Duration,
    /// Accepted because most existing files carry it; the agent evaluates no rules.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub evaluation_interval: Option<Duration>,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            scrape_interval: default_scrape_interval(),
            scrape_timeout: default_scrape_timeout(),
            evaluation_interval: None,
            external_labels: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub credentials: Option<String>,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub scrape_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub scrape_timeout: Option<Duration>,
    #[serde(default)]
    pub metrics_path: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default)]
    pub honor_timestamps: Option<bool>,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub sample_limit: Option<usize>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub authorization: Option<Authorization>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default)]
    pub capacity: Option<usize>,
    #[serde(default)]
    pub max_shards: Option<usize>,
    #[serde(default)]
    pub min_shards: Option<usize>,
    #[serde(default)]
    pub max_samples_per_send: Option<usize>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub batch_send_deadline: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub min_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_backoff: Option<Duration>,
    #[serde(default)]
    pub retry_on_http_429: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub sample_age_limit: Option<Duration>,
}

/// Accepted so existing files load; only `send: false` is valid (the agent sends no metadata).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MetadataConfig {
    #[serde(default)]
    pub send: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub send_interval: Option<Duration>,
    #[serde(default)]
    pub max_samples_per_send: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigV4Config {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub secret_key: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub role_arn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    pub url: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub remote_timeout: Option<Duration>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub write_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub queue_config: QueueConfig,
    #[serde(default)]
    pub metadata_config: Option<MetadataConfig>,
    #[serde(default)]
    pub sigv4: Option<SigV4Config>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub authorization: Option<Authorization>,
}

/// Credentials attached to an HTTP request.
#[derive(Debug, Clone)]
pub enum Auth {
    Basic { username: String, password: String },
    Header(String),
}

/// One resolved scrape target.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// Target labels (job, instance, static and relabeled labels), without `__` labels.
    pub labels: Labels,
}

/// A validated scrape job.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    pub name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub sample_limit: usize,
    pub metric_relabel: Vec<Rule>,
    pub auth: Option<Auth>,
    pub targets: Vec<Target>,
}

/// SigV4 settings with the region resolved.
#[derive(Debug, Clone)]
pub struct SigV4 {
    pub region: String,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

/// A validated remote_write endpoint.
#[derive(Debug, Clone)]
pub struct RemoteWrite {
    pub name: String,
    pub url: String,
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub write_relabel: Vec<Rule>,
    pub shards: usize,
    pub max_samples_per_send: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub retry_on_429: bool,
    pub sigv4: Option<SigV4>,
    pub auth: Option<Auth>,
}

/// The validated configuration the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub external_labels: Labels,
    pub jobs: Vec<ScrapeJob>,
    pub remote_writes: Vec<RemoteWrite>,
}

const RESERVED_HEADERS: [&str; 5] = [
    "content-encoding",
    "content-type",
    "user-agent",
    "x-prometheus-remote-write-version",
    "host",
];

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn read_secret(
        &self,
        field: &str,
        inline: &Option<String>,
        file: &Option<PathBuf>,
    ) -> Result<String, ConfigError> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(self.err(
                field,
                "at most one of the inline value and the _file variant may be set",
            )),
            (Some(v), None) => Ok(v.clone()),
            (None, Some(p)) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .map_err(|e| self.err(field, format!("cannot read {}: {e}", p.display()))),
            (None, None) => Ok(String::new()),
        }
    }

    fn auth(
        &self,
        prefix: &str,
        basic: &Option<BasicAuth>,
        authz: &Option<Authorization>,
    ) -> Result<Option<Auth>, ConfigError> {
        match (basic, authz) {
            (Some(_), Some(_)) => Err(self.err(
                format!("{prefix}.authorization"),
                "basic_auth and authorization are mutually exclusive",
            )),
            (Some(b), None) => Ok(Some(Auth::Basic {
                username: b.username.clone(),
                password: self.read_secret(
                    &format!("{prefix}.basic_auth.password"),
                    &b.password,
                    &b.password_file,
                )?,
            })),
            (None, Some(a)) => {
                let kind = a.kind.clone().unwrap_or_else(|| "Bearer".into());
                if kind.eq_ignore_ascii_case("basic") {
                    return Err(self.err(
                        format!("{prefix}.authorization.type"),
                        "use basic_auth for Basic credentials",
                    ));
                }
                let cred = self.read_secret(
                    &format!("{prefix}.authorization.credentials"),
                    &a.credentials,
                    &a.credentials_file,
                )?;
                Ok(Some(Auth::Header(format!("{kind} {cred}"))))
            }
            (None, None) => Ok(None),
        }
    }
}

fn rule_err(cx: &Ctx<'_>, m: String) -> ConfigError {
    match m.split_once(": ") {
        Some((field, msg)) => cx.err(field, msg),
        None => cx.err(m.clone(), m),
    }
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Reads, expands (`${NAME}`, `${NAME:-default}` from the process environment), parses
/// and validates a config file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    load_with(file, |name| std::env::var(name).ok())
}

/// [`load`] with its own variable lookup.
pub fn load_with(
    file: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let text = crate::env_expand::expand(&text, lookup).map_err(|u| ConfigError::Env {
        file: file.to_path_buf(),
        line: u.line,
        name: u.name,
    })?;
    parse(file, &text)
}

/// Parses and validates config text; `file` is only used in error messages.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let de = serde_norway::Deserializer::from_str(text);
    let raw: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
        file: file.to_path_buf(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    validate(file, raw)
}

fn validate(file: &Path, raw: FileConfig) -> Result<Config, ConfigError> {
    let cx = Ctx { file };
    let g = &raw.global;
    if g.scrape_interval.is_zero() {
        return Err(cx.err("global.scrape_interval", "must be greater than 0"));
    }
    if g.scrape_timeout > g.scrape_interval {
        return Err(cx.err(
            "global.scrape_timeout",
            "must not be greater than scrape_interval",
        ));
    }
    if g.evaluation_interval.is_some() {
        tracing::warn!(
            "global.evaluation_interval is accepted but unused: the agent evaluates no rules"
        );
    }
    let mut external_labels = Labels::new();
    for (k, v) in &g.external_labels {
        if !valid_label_name(k) || k.starts_with("__") {
            return Err(cx.err(format!("global.external_labels.{k}"), "invalid label name"));
        }
        external_labels.set(k.clone(), v.clone());
    }

    let mut jobs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, sc) in raw.scrape_configs.iter().enumerate() {
        let f = format!("scrape_configs[{i}]");
        if sc.job_name.is_empty() {
            return Err(cx.err(format!("{f}.job_name"), "must not be empty"));
        }
        if !seen.insert(sc.job_name.clone()) {
            return Err(cx.err(
                format!("{f}.job_name"),
                format!("duplicate job name {:?}", sc.job_name),
            ));
        }
        let interval = sc.scrape_interval.unwrap_or(g.scrape_interval);
        let timeout = sc.scrape_timeout.unwrap_or(g.scrape_timeout.min(interval));
        if interval.is_zero() {
            return Err(cx.err(format!("{f}.scrape_interval"), "must be greater than 0"));
        }
        if timeout > interval {
            return Err(cx.err(
                format!("{f}.scrape_timeout"),
                "must not be greater than scrape_interval",
            ));
        }
        let scheme = sc.scheme.clone().unwrap_or_else(|| "http".into());
        if scheme != "http" && scheme != "https" {
            return Err(cx.err(format!("{f}.scheme"), "must be http or https"));
        }
        let metrics_path = sc.metrics_path.clone().unwrap_or_else(|| "/metrics".into());
        if !metrics_path.starts_with('/') {
            return Err(cx.err(format!("{f}.metrics_path"), "must start with /"));
        }
        let relabel = relabel::compile_all(&format!("{f}.relabel_configs"), &sc.relabel_configs)
            .map_err(|m| rule_err(&cx, m))?;
        let metric_relabel = relabel::compile_all(
            &format!("{f}.metric_relabel_configs"),
            &sc.metric_relabel_configs,
        )
        .map_err(|m| rule_err(&cx, m))?;
        let auth = cx.auth(&f, &sc.basic_auth, &sc.authorization)?;
        let mut targets = Vec::new();
        for (j, st) in sc.static_configs.iter().enumerate() {
            for (k, l) in &st.labels {
                if !valid_label_name(k) {
                    return Err(cx.err(
                        format!("{f}.static_configs[{j}].labels.{k}"),
                        "invalid label name",
                    ));
                }
                let _ = l;
            }
            for (t_idx, addr) in st.targets.iter().enumerate() {
                if addr.is_empty() || addr.contains('/') {
                    return Err(cx.err(
                        format!("{f}.static_configs[{j}].targets[{t_idx}]"),
                        format!("{addr:?} is not a host:port address"),
                    ));
                }
                let mut l = Labels::new();
                l.set("__address__".into(), addr.clone());
                l.set("__scheme__".into(), scheme.clone());
                l.set("__metrics_path__".into(), metrics_path.clone());
                l.set("__scrape_interval__".into(), format_duration(interval));
                l.set("__scrape_timeout__".into(), format_duration(timeout));
                l.set("job".into(), sc.job_name.clone());
                for (pk, pv) in &sc.params {
                    if let Some(first) = pv.first() {
                        l.set(format!("__param_{pk}"), first.clone());
                    }
                }
                for (k, v) in &st.labels {
                    l.set(k.clone(), v.clone());
                }
                if let Some(t) = resolve_target(l, &relabel, &sc.params) {
                    targets.push(t);
                }
            }
        }
        jobs.push(ScrapeJob {
            name: sc.job_name.clone(),
            interval,
            timeout,
            honor_labels: sc.honor_labels,
            honor_timestamps: sc.honor_timestamps.unwrap_or(true),
            sample_limit: sc.sample_limit.unwrap_or(0),
            metric_relabel,
            auth,
            targets,
        });
    }

    let mut remote_writes = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, rw) in raw.remote_write.iter().enumerate() {
        let f = format!("remote_write[{i}]");
        if !(rw.url.starts_with("http://") || rw.url.starts_with("https://")) {
            return Err(cx.err(format!("{f}.url"), "must be an http:// or https:// URL"));
        }
        let name = rw.name.clone().unwrap_or_else(|| format!("rw{i}"));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(cx.err(format!("{f}.name"), "may only contain [A-Za-z0-9_-]"));
        }
        if !names.insert(name.clone()) {
            return Err(cx.err(
                format!("{f}.name"),
                format!("duplicate remote_write name {name:?}"),
            ));
        }
        let mut headers = Vec::new();
        for (k, v) in &rw.headers {
            if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                return Err(cx.err(
                    format!("{f}.headers.{k}"),
                    "is reserved by the remote_write protocol",
                ));
            }
            headers.push((k.clone(), v.clone()));
        }
        let write_relabel = relabel::compile_all(
            &format!("{f}.write_relabel_configs"),
            &rw.write_relabel_configs,
        )
        .map_err(|m| rule_err(&cx, m))?;
        let q = &rw.queue_config;
        if q.capacity.is_some() || q.batch_send_deadline.is_some() || q.min_shards.is_some() {
            tracing::info!(
                "{f}.queue_config: capacity, min_shards and batch_send_deadline are accepted; the agent sends from its on-disk queue as soon as samples are durable"
            );
        }
        let shards = q.max_shards.unwrap_or(4);
        if shards == 0 {
            return Err(cx.err(format!("{f}.queue_config.max_shards"), "must be at least 1"));
        }
        let max_samples_per_send = q.max_samples_per_send.unwrap_or(2000);
        if max_samples_per_send == 0 {
            return Err(cx.err(
                format!("{f}.queue_config.max_samples_per_send"),
                "must be at least 1",
            ));
        }
        if q.sample_age_limit.is_some() {
            return Err(cx.err(
                format!("{f}.queue_config.sample_age_limit"),
                "not supported: the age bound is the WAL's --wal-max-age",
            ));
        }
        if let Some(m) = &rw.metadata_config
            && m.send.unwrap_or(true)
        {
            return Err(cx.err(
                format!("{f}.metadata_config.send"),
                "metric metadata is not sent by this agent; set send: false",
            ));
        }
        let sigv4 = match &rw.sigv4 {
            None => None,
            Some(s) => {
                if s.profile.is_some() {
                    return Err(cx.err(
                        format!("{f}.sigv4.profile"),
                        "not supported: use env or ECS task-role credentials",
                    ));
                }
                if s.role_arn.is_some() {
                    return Err(cx.err(
                        format!("{f}.sigv4.role_arn"),
                        "not supported: use the ECS task role",
                    ));
                }
                if s.access_key.is_some() != s.secret_key.is_some() {
                    return Err(cx.err(
                        format!("{f}.sigv4.secret_key"),
                        "access_key and secret_key must be set together",
                    ));
                }
                let region = s
                    .region
                    .clone()
                    .or_else(|| std::env::var("AWS_REGION").ok())
                    .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                    .ok_or_else(|| {
                        cx.err(format!("{f}.sigv4.region"), "required (or set AWS_REGION)")
                    })?;
                Some(SigV4 {
                    region,
                    access_key: s.access_key.clone(),
                    secret_key: s.secret_key.clone(),
                })
            }
        };
        let auth = cx.auth(&f, &rw.basic_auth, &rw.authorization)?;
        if sigv4.is_some() && auth.is_some() {
            return Err(cx.err(
                format!("{f}.sigv4"),
                "sigv4 cannot be combined with basic_auth/authorization",
            ));
        }
        remote_writes.push(RemoteWrite {
            name,
            url: rw.url.clone(),
            timeout: rw.remote_timeout.unwrap_or(Duration::from_secs(30)),
            headers,
            write_relabel,
            shards,
            max_samples_per_send,
            min_backoff: q.min_backoff.unwrap_or(Duration::from_millis(30)),
            max_backoff: q.max_backoff.unwrap_or(Duration::from_secs(5)),
            retry_on_429: q.retry_on_http_429.unwrap_or(true),
            sigv4,
            auth,
        });
    }

    Ok(Config {
        scrape_interval: g.scrape_interval,
        scrape_timeout: g.scrape_timeout,
        external_labels,
        jobs,
        remote_writes,
    })
}

/// Applies target relabeling and builds the scrape URL, as Prometheus does.
fn resolve_target(
    l: Labels,
    rules: &[Rule],
    params: &BTreeMap<String, Vec<String>>,
) -> Option<Target> {
    let mut l = relabel::apply(rules, l)?;
    let addr = l.get("__address__")?.to_string();
    let scheme = l.get("__scheme__").unwrap_or("http").to_string();
    let path = l.get("__metrics_path__").unwrap_or("/metrics").to_string();
    let mut query: Vec<(String, String)> = Vec::new();
    for (k, vals) in params {
        let over = l.get(&format!("__param_{k}")).map(str::to_string);
        match over {
            Some(v) => {
                query.push((k.clone(), v));
                for extra in vals.iter().skip(1) {
                    query.push((k.clone(), extra.clone()));
                }
            }
            None => query.extend(vals.iter().map(|v| (k.clone(), v.clone()))),
        }
    }
    for (n, v) in l.iter() {
        if let Some(k) = n.strip_prefix("__param_")
            && !params.contains_key(k)
        {
            query.push((k.to_string(), v.to_string()));
        }
    }
    let mut url = format!("{scheme}://{addr}{path}");
    if !query.is_empty() {
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
            .collect();
        url.push(if path.contains('?') { '&' } else { '?' });
        url.push_str(&q.join("&"));
    }
    if l.get("instance").is_none() {
        l.set("instance".into(), addr);
    }
    l.retain(|n, _| !n.starts_with("__"));
    Some(Target { url, labels: l })
}

fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("prometheus.yml"), text)
    }

    #[test]
    fn parses_a_typical_file() {
        let c = p(r#"
global:
  scrape_interval: 15s
  scrape_timeout: 5s
  evaluation_interval: 1m
  external_labels: {cluster: prod}
scrape_configs:
  - job_name: gateway
    metrics_path: /stats
    params: {format: [prometheus]}
    basic_auth: {username: u, password: p}
    static_configs:
      - targets: ['127.0.0.1:8001']
        labels: {tier: edge}
    relabel_configs:
      - source_labels: [__address__]
        regex: '(.*):\d+'
        target_label: host
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'go_.*'
        action: drop
remote_write:
  - url: http://127.0.0.1:9090/api/v1/write
    headers: {X-Scope-OrgID: team}
    queue_config: {max_shards: 2, max_samples_per_send: 500}
"#)
        .expect("valid");
        assert_eq!(c.scrape_interval, Duration::from_secs(15));
        let j = &c.jobs[0];
        assert_eq!(
            j.targets[0].url,
            "http://127.0.0.1:8001/stats?format=prometheus"
        );
        assert_eq!(j.targets[0].labels.get("host"), Some("127.0.0.1"));
        assert_eq!(j.targets[0].labels.get("instance"), Some("127.0.0.1:8001"));
        assert_eq!(j.targets[0].labels.get("tier"), Some("edge"));
        assert_eq!(j.targets[0].labels.get("__address__"), None);
        assert_eq!(c.remote_writes[0].shards, 2);
        assert_eq!(c.external_labels.get("cluster"), Some("prod"));
    }

    #[test]
    fn unknown_field_is_an_error_with_its_path() {
        let e = p("scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs: []\n")
            .expect_err("must be rejected");
        let s = e.to_string();
        assert!(s.contains("scrape_configs[0]"), "{s}");
        assert!(s.contains("kubernetes_sd_configs"), "{s}");
        let e = p("rule_files: [a.yml]\n")
            .expect_err("must be rejected")
            .to_string();
        assert!(e.contains("rule_files"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let e = p("remote_write:\n  - url: http://x/\n    headers: {User-Agent: me}\n")
            .expect_err("must be rejected")
            .to_string();
        assert!(e.contains("remote_write[0].headers.User-Agent"), "{e}");
        let e = p("scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: hashmod\n        target_label: x\n")
            .expect_err("must be rejected")
            .to_string();
        assert!(
            e.contains("scrape_configs[0].relabel_configs[0].modulus"),
            "{e}"
        );
        let e = p("global: {scrape_interval: 5s, scrape_timeout: 10s}\n")
            .expect_err("must be rejected")
            .to_string();
        assert!(e.contains("global.scrape_timeout"), "{e}");
        let e =
            p("remote_write:\n  - url: http://x/\n    sigv4: {region: us-east-1, role_arn: arn}\n")
                .expect_err("must be rejected")
                .to_string();
        assert!(e.contains("remote_write[0].sigv4.role_arn"), "{e}");
        let e = p("global: {scrape_interval: 5x}\n")
            .expect_err("must be rejected")
            .to_string();
        assert!(e.contains("global.scrape_interval"), "{e}");
    }

    #[test]
    fn relabel_can_drop_targets() {
        let c = p(r#"
scrape_configs:
  - job_name: a
    static_configs: [{targets: ['a:1', 'b:2']}]
    relabel_configs:
      - source_labels: [__address__]
        regex: 'b:.*'
        action: drop
"#)
        .expect("valid");
        assert_eq!(c.jobs[0].targets.len(), 1);
    }
}
