//! prometheus.yml as Prometheus parses it (defaults and validation rules included). Sections
//! only a Prometheus server uses load with a warning; fields the agent does not implement are
//! a warning when ignoring them is harmless and an error otherwise. Every warning and error
//! names the file, the line and the field.

use crate::duration::{de_opt_duration, format_duration};
use crate::labels::Labels;
use crate::locate::LineIndex;
use crate::relabel::{self, RelabelConfig, Rule};
use serde::Deserialize;
use serde::de::IgnoredAny;
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
    #[error("{}: field `{path}`: {message}", at(file, *line))]
    Parse {
        file: PathBuf,
        line: Option<usize>,
        path: String,
        message: String,
    },
    #[error("{}: field `{field}`: {message}", at(file, *line))]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        field: String,
        message: String,
    },
}

fn at(file: &Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", file.display()),
        None => file.display().to_string(),
    }
}

/// A field that loads but is not used (or not fully), with where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: field `{}`: {}",
            at(&self.file, self.line),
            self.field,
            self.message
        )
    }
}

/// Prometheus fields this agent does not implement, and why ignoring them is not an option.
/// They are rejected by name (with their line) instead of as "unknown field".
const REFUSED: &[(&str, &str)] = &[
    (
        "scrape_config_files",
        "not supported: move the scrape configs into this file",
    ),
    (
        "oauth2",
        "not supported: requests would go out without the credentials it provides",
    ),
    (
        "http_headers",
        "not supported: requests would go out without these headers",
    ),
    (
        "proxy_connect_header",
        "not supported: the proxy would see CONNECT requests without these headers",
    ),
    (
        "azuread",
        "not supported: use sigv4, basic_auth or authorization",
    ),
    (
        "google_iam",
        "not supported: use sigv4, basic_auth or authorization",
    ),
    (
        "username_ref",
        "not supported (secret references need a secret manager): use username or username_file",
    ),
    (
        "password_ref",
        "not supported (secret references need a secret manager): use password or password_file",
    ),
    (
        "credentials_ref",
        "not supported (secret references need a secret manager): use credentials or credentials_file",
    ),
    (
        "ca_ref",
        "not supported (secret references need a secret manager): use ca or ca_file",
    ),
    (
        "cert_ref",
        "not supported (secret references need a secret manager): use cert or cert_file",
    ),
    (
        "key_ref",
        "not supported (secret references need a secret manager): use key or key_file",
    ),
];

/// Service discovery mechanisms of Prometheus that the agent does not implement.
const UNSUPPORTED_SD: &[&str] = &[
    "aws",
    "azure",
    "digitalocean",
    "dockerswarm",
    "ecs",
    "elasticache",
    "eureka",
    "gce",
    "hetzner",
    "http",
    "ionos",
    "kubernetes",
    "kuma",
    "lightsail",
    "linode",
    "marathon",
    "msk",
    "nerve",
    "nomad",
    "oci",
    "openstack",
    "outscale",
    "ovhcloud",
    "puppetdb",
    "rds",
    "scaleway",
    "serverset",
    "stackit",
    "triton",
    "uyuni",
    "vultr",
];

/// A better message for serde's "unknown field `x`" when `x` is a Prometheus field.
fn explain_unknown(message: &str) -> Option<(String, String)> {
    let rest = &message[message.find("unknown field `")? + "unknown field `".len()..];
    let name = &rest[..rest.find('`')?];
    if let Some(sd) = name.strip_suffix("_sd_configs")
        && UNSUPPORTED_SD.contains(&sd)
    {
        return Some((
            name.to_string(),
            format!(
                "{name} is not supported by metrics-agent (supported: static_configs, file_sd_configs, dns_sd_configs, ec2_sd_configs, consul_sd_configs, docker_sd_configs): ignoring it would scrape none of the targets it discovers"
            ),
        ));
    }
    REFUSED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, why)| (n.to_string(), format!("{n}: {why}")))
}

/// The whole file. Server-only sections are kept as their presence only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub global: Option<GlobalConfig>,
    #[serde(default)]
    pub scrape_configs: Option<Vec<ScrapeConfig>>,
    #[serde(default)]
    pub remote_write: Option<Vec<RemoteWriteConfig>>,
    #[serde(default)]
    pub rule_files: Option<IgnoredAny>,
    #[serde(default)]
    pub alerting: Option<IgnoredAny>,
    #[serde(default)]
    pub remote_read: Option<IgnoredAny>,
    #[serde(default)]
    pub storage: Option<IgnoredAny>,
    #[serde(default)]
    pub tracing: Option<IgnoredAny>,
    #[serde(default)]
    pub otlp: Option<IgnoredAny>,
    #[serde(default)]
    pub runtime: Option<IgnoredAny>,
}

/// Server-only top-level sections and what the agent does with them.
const SERVER_ONLY: [(&str, &str); 7] = [
    ("rule_files", "the agent evaluates no rules"),
    ("alerting", "the agent sends no alerts"),
    ("remote_read", "the agent answers no queries"),
    (
        "storage",
        "the agent has no TSDB (its queue is the WAL, see --wal-*)",
    ),
    ("tracing", "the agent exports no traces"),
    ("otlp", "the agent has no OTLP receiver"),
    ("runtime", "Go runtime tuning does not apply"),
];

// dup: typed structs of the original schema: alike in shape, each its own fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub scrape_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub scrape_timeout: Option<Duration>,
    #[serde(default)]
    pub scrape_protocols: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub evaluation_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub rule_query_offset: Option<Duration>,
    #[serde(default)]
    pub query_log_file: Option<String>,
    #[serde(default)]
    pub scrape_failure_log_file: Option<String>,
    #[serde(default)]
    pub external_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub body_size_limit: Option<String>,
    #[serde(default)]
    pub sample_limit: Option<u64>,
    #[serde(default)]
    pub target_limit: Option<u64>,
    #[serde(default)]
    pub label_limit: Option<u64>,
    #[serde(default)]
    pub label_name_length_limit: Option<u64>,
    #[serde(default)]
    pub label_value_length_limit: Option<u64>,
    #[serde(default)]
    pub keep_dropped_targets: Option<u64>,
    #[serde(default)]
    pub metric_name_validation_scheme: Option<String>,
    #[serde(default)]
    pub metric_name_escaping_scheme: Option<String>,
    #[serde(default)]
    pub scrape_native_histograms: Option<bool>,
    #[serde(default)]
    pub convert_classic_histograms_to_nhcb: Option<bool>,
    #[serde(default)]
    pub always_scrape_classic_histograms: Option<bool>,
    #[serde(default)]
    pub extra_scrape_metrics: Option<bool>,
}

// dup: typed structs of the original schema: alike in shape, each its own fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub username_file: Option<PathBuf>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

// dup: typed structs of the original schema: alike in shape, each its own fields.
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

// dup: typed structs of the original schema: alike in shape, each its own fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfigRaw {
    pub files: Vec<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub refresh_interval: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSdConfigRaw {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub refresh_interval: Option<Duration>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

/// One `filters` entry of `ec2_sd_configs` (an EC2 DescribeInstances filter).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2FilterRaw {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// Declares a struct with Prometheus' inline HTTP client fields appended.
macro_rules! with_http_client {
    ($(#[$m:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        pub struct $name {
            $($body)*
            #[serde(default)]
            pub basic_auth: Option<BasicAuth>,
            #[serde(default)]
            pub authorization: Option<Authorization>,
            #[serde(default)]
            pub bearer_token: Option<String>,
            #[serde(default)]
            pub bearer_token_file: Option<PathBuf>,
            #[serde(default)]
            pub tls_config: Option<TlsConfig>,
            #[serde(default)]
            pub proxy_url: Option<String>,
            #[serde(default)]
            pub no_proxy: Option<String>,
            #[serde(default)]
            pub proxy_from_environment: Option<bool>,
            #[serde(default)]
            pub follow_redirects: Option<bool>,
            #[serde(default)]
            pub enable_http2: Option<bool>,
        }

        impl $name {
            fn http_fields(&self) -> HttpFields<'_> {
                HttpFields {
                    basic_auth: &self.basic_auth,
                    authorization: &self.authorization,
                    bearer_token: &self.bearer_token,
                    bearer_token_file: &self.bearer_token_file,
                    tls_config: &self.tls_config,
                    proxy_url: &self.proxy_url,
                    no_proxy: &self.no_proxy,
                    proxy_from_environment: self.proxy_from_environment.unwrap_or(false),
                    follow_redirects: self.follow_redirects.unwrap_or(true),
                    enable_http2: self.enable_http2,
                }
            }
        }
    };
}

struct HttpFields<'a> {
    basic_auth: &'a Option<BasicAuth>,
    authorization: &'a Option<Authorization>,
    bearer_token: &'a Option<String>,
    bearer_token_file: &'a Option<PathBuf>,
    tls_config: &'a Option<TlsConfig>,
    proxy_url: &'a Option<String>,
    no_proxy: &'a Option<String>,
    proxy_from_environment: bool,
    follow_redirects: bool,
    enable_http2: Option<bool>,
}

with_http_client! {
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2SdConfigRaw {
    #[serde(default)]
    pub endpoint: Option<String>,
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
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub refresh_interval: Option<Duration>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub filters: Option<Vec<Ec2FilterRaw>>,
}
}

with_http_client! {
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulSdConfigRaw {
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub datacenter: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub tag_separator: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub allow_stale: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub refresh_interval: Option<Duration>,
    #[serde(default)]
    pub services: Option<Vec<String>>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub node_meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub health_filter: Option<String>,
}
}

with_http_client! {
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSdConfigRaw {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub filters: Option<Vec<Ec2FilterRaw>>,
    #[serde(default)]
    pub host_networking_host: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub refresh_interval: Option<Duration>,
    #[serde(default)]
    pub match_first_network: Option<bool>,
}
}

with_http_client! {
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub scrape_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub scrape_timeout: Option<Duration>,
    #[serde(default)]
    pub scrape_protocols: Option<Vec<String>>,
    #[serde(default)]
    pub fallback_scrape_protocol: Option<String>,
    #[serde(default)]
    pub metrics_path: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub params: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default)]
    pub honor_timestamps: Option<bool>,
    #[serde(default)]
    pub track_timestamps_staleness: Option<bool>,
    #[serde(default)]
    pub enable_compression: Option<bool>,
    #[serde(default)]
    pub body_size_limit: Option<String>,
    #[serde(default)]
    pub sample_limit: Option<u64>,
    #[serde(default)]
    pub target_limit: Option<u64>,
    #[serde(default)]
    pub label_limit: Option<u64>,
    #[serde(default)]
    pub label_name_length_limit: Option<u64>,
    #[serde(default)]
    pub label_value_length_limit: Option<u64>,
    #[serde(default)]
    pub keep_dropped_targets: Option<u64>,
    #[serde(default)]
    pub scrape_failure_log_file: Option<String>,
    #[serde(default)]
    pub metric_name_validation_scheme: Option<String>,
    #[serde(default)]
    pub metric_name_escaping_scheme: Option<String>,
    #[serde(default)]
    pub scrape_native_histograms: Option<bool>,
    #[serde(default)]
    pub scrape_classic_histograms: Option<bool>,
    #[serde(default)]
    pub always_scrape_classic_histograms: Option<bool>,
    #[serde(default)]
    pub convert_classic_histograms_to_nhcb: Option<bool>,
    #[serde(default)]
    pub native_histogram_bucket_limit: Option<u64>,
    #[serde(default)]
    pub native_histogram_min_bucket_factor: Option<f64>,
    #[serde(default)]
    pub extra_scrape_metrics: Option<bool>,
    #[serde(default)]
    pub static_configs: Option<Vec<StaticConfig>>,
    #[serde(default)]
    pub file_sd_configs: Option<Vec<FileSdConfigRaw>>,
    #[serde(default)]
    pub dns_sd_configs: Option<Vec<DnsSdConfigRaw>>,
    #[serde(default)]
    pub ec2_sd_configs: Option<Vec<Ec2SdConfigRaw>>,
    #[serde(default)]
    pub consul_sd_configs: Option<Vec<ConsulSdConfigRaw>>,
    #[serde(default)]
    pub docker_sd_configs: Option<Vec<DockerSdConfigRaw>>,
    #[serde(default)]
    pub relabel_configs: Option<Vec<RelabelConfig>>,
    #[serde(default)]
    pub metric_relabel_configs: Option<Vec<RelabelConfig>>,
}
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

/// Loads; the agent sends no metric metadata.
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
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub use_fips_sts_endpoint: Option<bool>,
}

with_http_client! {
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    pub url: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub remote_timeout: Option<Duration>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub write_relabel_configs: Option<Vec<RelabelConfig>>,
    #[serde(default)]
    pub send_exemplars: Option<bool>,
    #[serde(default)]
    pub send_native_histograms: Option<bool>,
    #[serde(default)]
    pub round_robin_dns: Option<bool>,
    #[serde(default)]
    pub protobuf_message: Option<String>,
    #[serde(default)]
    pub queue_config: Option<QueueConfig>,
    #[serde(default)]
    pub metadata_config: Option<MetadataConfig>,
    #[serde(default)]
    pub sigv4: Option<SigV4Config>,
}
}

/// A credential written inline or read from a file at each use (so rotated files are
/// picked up, as Prometheus does).
#[derive(Debug, Clone)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

/// A credential file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", .path.display())]
pub struct SecretError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PartialEq for SecretError {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.source.kind() == other.source.kind()
    }
}

impl Secret {
    pub fn read(&self) -> Result<String, SecretError> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .map_err(|source| SecretError {
                    path: p.clone(),
                    source,
                }),
        }
    }
}

/// Credentials attached to an HTTP request.
#[derive(Debug, Clone)]
pub enum Auth {
    Basic { username: Secret, password: Secret },
    Header { kind: String, credentials: Secret },
}

impl Auth {
    /// Adds the credentials to a request (files are read now).
    pub fn apply(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, SecretError> {
        Ok(match self {
            Auth::Basic { username, password } => {
                req.basic_auth(username.read()?, Some(password.read()?))
            }
            Auth::Header { kind, credentials } => req.header(
                "Authorization",
                format!("{kind} {}", credentials.read()?).as_str(),
            ),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// A `tls_config` with its PEM files read.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_pem: Option<Vec<u8>>,
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Vec<u8>>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

impl Tls {
    /// True when the defaults (system roots, no client certificate) do.
    pub fn is_default(&self) -> bool {
        self.ca_pem.is_none()
            && self.cert_pem.is_none()
            && self.server_name.is_none()
            && !self.insecure_skip_verify
            && self.min_version.is_none()
            && self.max_version.is_none()
    }
}

/// Prometheus' HTTP client settings of a scrape job or remote_write endpoint.
#[derive(Debug, Clone)]
pub struct HttpClient {
    pub auth: Option<Auth>,
    pub tls: Tls,
    pub proxy_url: Option<String>,
    pub no_proxy: Option<String>,
    pub proxy_from_environment: bool,
    pub follow_redirects: bool,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient {
            auth: None,
            tls: Tls::default(),
            proxy_url: None,
            no_proxy: None,
            proxy_from_environment: false,
            follow_redirects: true,
        }
    }
}

/// Per-scrape limits; 0 means no limit. Over a limit the scrape fails (`up` 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub body_size: u64,
    pub sample: usize,
    pub target: usize,
    pub label: usize,
    pub label_name_length: usize,
    pub label_value_length: usize,
}

/// Targets as a discovery mechanism (or `static_configs`) hands them over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetGroup {
    /// Unique per mechanism and group (file and index, DNS name, ...).
    pub source: String,
    /// Per-target labels: `__address__` and `__meta_*`.
    pub targets: Vec<BTreeMap<String, String>>,
    /// Labels of the whole group.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSd {
    /// Absolute paths or patterns (`*` in the file name).
    pub files: Vec<PathBuf>,
    pub refresh_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsType {
    Srv,
    A,
    Aaaa,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSd {
    pub names: Vec<String>,
    pub kind: DnsType,
    pub port: u16,
    pub refresh_interval: Duration,
}

/// AWS credentials and region as Prometheus' `sigv4` and `ec2_sd_configs` take them:
/// static keys when both are set, else the SDK's default chain (optionally with a named
/// profile); `role_arn` assumes that role with those credentials. (Debug shows the secret,
/// as for the other credentials here: the reload compares jobs by their Debug text, so a
/// changed secret restarts the job. It is never logged.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsAuth {
    /// None: the SDK's region chain (environment, profile, instance metadata).
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// STS through its FIPS endpoint (for `role_arn`).
    pub use_fips_sts_endpoint: bool,
}

/// A validated `ec2_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Sd {
    pub auth: AwsAuth,
    /// Replaces the EC2 API endpoint (`endpoint`).
    pub endpoint: Option<String>,
    pub refresh_interval: Duration,
    pub port: u16,
    /// DescribeInstances filters: name and values.
    pub filters: Vec<(String, Vec<String>)>,
    /// `tls_config.ca`/`ca_file`: the only roots trusted for the EC2 and STS endpoints.
    pub ca_pem: Option<Vec<u8>>,
}

/// A validated `consul_sd_configs` entry.
#[derive(Debug, Clone)]
pub struct ConsulSd {
    /// `host:port` of the Consul agent or server.
    pub server: String,
    pub path_prefix: String,
    pub scheme: String,
    /// Sent as `X-Consul-Token`.
    pub token: Option<Secret>,
    /// None: the agent's own datacenter (from /v1/agent/self).
    pub datacenter: Option<String>,
    pub namespace: Option<String>,
    pub partition: Option<String>,
    pub tag_separator: String,
    pub allow_stale: bool,
    pub refresh_interval: Duration,
    pub services: Vec<String>,
    pub tags: Vec<String>,
    pub node_meta: BTreeMap<String, String>,
    pub filter: Option<String>,
    pub health_filter: Option<String>,
    /// TLS, proxy and credentials (`username`/`password` become basic auth).
    pub http: HttpClient,
}

/// A validated `docker_sd_configs` entry.
#[derive(Debug, Clone)]
pub struct DockerSd {
    /// The Docker daemon: `unix:///path`, `tcp://host:port`, `http(s)://host:port`.
    pub host: String,
    pub port: u16,
    /// `/containers/json` filters: name and values.
    pub filters: Vec<(String, Vec<String>)>,
    pub host_networking_host: String,
    pub refresh_interval: Duration,
    pub match_first_network: bool,
    /// Used for http(s) hosts (as in Prometheus).
    pub http: HttpClient,
}

/// One resolved scrape target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    pub enable_compression: bool,
    pub limits: Limits,
    pub metric_relabel: Vec<Rule>,
    pub http: HttpClient,
    pub scheme: String,
    pub metrics_path: String,
    pub params: BTreeMap<String, Vec<String>>,
    pub relabel: Vec<Rule>,
    pub static_groups: Vec<TargetGroup>,
    pub file_sd: Vec<FileSd>,
    pub dns_sd: Vec<DnsSd>,
    pub ec2_sd: Vec<Ec2Sd>,
    pub consul_sd: Vec<ConsulSd>,
    pub docker_sd: Vec<DockerSd>,
    /// The targets of `static_configs`, relabeled.
    pub targets: Vec<Target>,
}

/// SigV4 settings (`auth.region` None: the SDK's region chain).
#[derive(Debug, Clone)]
pub struct SigV4 {
    pub auth: AwsAuth,
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
    pub http: HttpClient,
}

/// The validated configuration the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub external_labels: Labels,
    pub jobs: Vec<ScrapeJob>,
    pub remote_writes: Vec<RemoteWrite>,
    /// Fields that loaded but are unused; log them.
    pub warnings: Vec<Warning>,
}

/// How `${...}` references in the file are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvMode {
    /// Prometheus' behaviour: only `external_labels` values are expanded; unset is empty.
    Prometheus,
    /// The ECS sidecar's whole-file `${NAME}`/`${NAME:-default}`; unset is an error.
    ExpandAll,
}

/// Headers remote_write may not set (Prometheus' list).
const RESERVED_HEADERS: [&str; 17] = [
    "authorization",
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

struct Ctx<'a> {
    file: &'a Path,
    dir: PathBuf,
    index: LineIndex,
    warnings: Vec<Warning>,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let field = field.into();
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: self.index.line_of(&field),
            field,
            message: message.into(),
        }
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let field = field.into();
        self.warnings.push(Warning {
            file: self.file.to_path_buf(),
            line: self.index.line_of(&field),
            field,
            message: message.into(),
        });
    }

    /// A path relative to the config file's directory, as Prometheus resolves them.
    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || p.as_os_str().is_empty() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn read_file(&self, field: &str, p: &Path) -> Result<Vec<u8>, ConfigError> {
        let p = self.path(p);
        std::fs::read(&p).map_err(|e| self.err(field, format!("cannot read {}: {e}", p.display())))
    }

    /// An inline value or a `_file` variant (at most one; the file must be readable now).
    fn secret(
        &self,
        field: &str,
        inline: &Option<String>,
        file: &Option<PathBuf>,
    ) -> Result<Option<Secret>, ConfigError> {
        match (inline.as_deref().filter(|s| !s.is_empty()), file) {
            (Some(_), Some(_)) => Err(self.err(
                field,
                "at most one of the inline value and the _file variant may be set",
            )),
            (Some(v), None) => Ok(Some(Secret::Inline(v.to_string()))),
            (None, Some(p)) => {
                let f = format!("{field}_file");
                self.read_file(&f, p)?;
                Ok(Some(Secret::File(self.path(p))))
            }
            (None, None) => Ok(None),
        }
    }

    fn http(&mut self, prefix: &str, h: HttpFields<'_>) -> Result<HttpClient, ConfigError> {
        let bearer = self.secret(
            &format!("{prefix}.bearer_token"),
            h.bearer_token,
            h.bearer_token_file,
        )?;
        let auth = match (h.basic_auth, h.authorization, bearer) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(self.err(
                    format!("{prefix}.authorization"),
                    "at most one of basic_auth, authorization and bearer_token/bearer_token_file may be set",
                ));
            }
            (Some(b), None, None) => {
                let f = format!("{prefix}.basic_auth");
                let username = self
                    .secret(&format!("{f}.username"), &b.username, &b.username_file)?
                    .unwrap_or(Secret::Inline(String::new()));
                let password = self
                    .secret(&format!("{f}.password"), &b.password, &b.password_file)?
                    .unwrap_or(Secret::Inline(String::new()));
                Some(Auth::Basic { username, password })
            }
            (None, Some(a), None) => {
                let f = format!("{prefix}.authorization");
                let kind = a
                    .kind
                    .clone()
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| "Bearer".into());
                if kind.eq_ignore_ascii_case("basic") {
                    return Err(self.err(
                        format!("{f}.type"),
                        "authorization type cannot be \"Basic\": use basic_auth",
                    ));
                }
                let credentials = self
                    .secret(
                        &format!("{f}.credentials"),
                        &a.credentials,
                        &a.credentials_file,
                    )?
                    .unwrap_or(Secret::Inline(String::new()));
                Some(Auth::Header { kind, credentials })
            }
            (None, None, Some(credentials)) => Some(Auth::Header {
                kind: "Bearer".into(),
                credentials,
            }),
            (None, None, None) => None,
        };
        let tls = match h.tls_config {
            None => Tls::default(),
            Some(t) => self.tls(&format!("{prefix}.tls_config"), t)?,
        };
        if let Some(u) = h.proxy_url.as_deref().filter(|u| !u.is_empty()) {
            if h.proxy_from_environment {
                return Err(self.err(
                    format!("{prefix}.proxy_from_environment"),
                    "cannot be used together with proxy_url",
                ));
            }
            if reqwest::Proxy::all(u).is_err() {
                return Err(self.err(
                    format!("{prefix}.proxy_url"),
                    format!("{u:?} is not a proxy URL"),
                ));
            }
        } else if h.no_proxy.is_some() {
            return Err(self.err(
                format!("{prefix}.no_proxy"),
                "if no_proxy is configured, proxy_url must also be configured",
            ));
        }
        // enable_http2: HTTP/2 or HTTP/1.1 carry the same bytes; nothing collected changes.
        let _ = h.enable_http2;
        Ok(HttpClient {
            auth,
            tls,
            proxy_url: h.proxy_url.clone().filter(|u| !u.is_empty()),
            no_proxy: h.no_proxy.clone(),
            proxy_from_environment: h.proxy_from_environment,
            follow_redirects: h.follow_redirects,
        })
    }

    fn tls(&mut self, f: &str, t: &TlsConfig) -> Result<Tls, ConfigError> {
        let pem = |cx: &Self,
                   name: &str,
                   inline: &Option<String>,
                   file: &Option<PathBuf>|
         -> Result<Option<Vec<u8>>, ConfigError> {
            match (inline.as_deref().filter(|s| !s.is_empty()), file) {
                (Some(_), Some(_)) => Err(cx.err(
                    format!("{f}.{name}_file"),
                    format!("at most one of {name} and {name}_file may be set"),
                )),
                (Some(v), None) => Ok(Some(v.as_bytes().to_vec())),
                (None, Some(p)) => cx.read_file(&format!("{f}.{name}_file"), p).map(Some),
                (None, None) => Ok(None),
            }
        };
        let ca_pem = pem(self, "ca", &t.ca, &t.ca_file)?;
        let cert_pem = pem(self, "cert", &t.cert, &t.cert_file)?;
        let key_pem = pem(self, "key", &t.key, &t.key_file)?;
        if cert_pem.is_some() != key_pem.is_some() {
            return Err(self.err(
                format!("{f}.key_file"),
                "a client certificate needs its key (cert/cert_file and key/key_file go together)",
            ));
        }
        let version = |cx: &mut Self, name: &str, v: &Option<String>, min: bool| match v.as_deref()
        {
            None | Some("") => Ok(None),
            Some("TLS12") => Ok(Some(TlsVersion::Tls12)),
            Some("TLS13") => Ok(Some(TlsVersion::Tls13)),
            Some("TLS10" | "TLS11") if min => {
                cx.warn(
                    format!("{f}.{name}"),
                    "the agent speaks TLS 1.2 and 1.3 only; older versions are not offered",
                );
                Ok(None)
            }
            Some(other) => Err(cx.err(
                format!("{f}.{name}"),
                format!("unsupported TLS version {other:?} (the agent supports TLS12 and TLS13)"),
            )),
        };
        let min_version = version(self, "min_version", &t.min_version, true)?;
        let max_version = version(self, "max_version", &t.max_version, false)?;
        if let (Some(TlsVersion::Tls13), Some(TlsVersion::Tls12)) = (min_version, max_version) {
            return Err(self.err(
                format!("{f}.max_version"),
                "max_version must be greater than or equal to min_version",
            ));
        }
        if let Some(n) = &t.server_name
            && rustls::pki_types::ServerName::try_from(n.as_str()).is_err()
        {
            return Err(self.err(
                format!("{f}.server_name"),
                format!("{n:?} is not a valid server name"),
            ));
        }
        Ok(Tls {
            ca_pem,
            cert_pem,
            key_pem,
            server_name: t.server_name.clone().filter(|s| !s.is_empty()),
            insecure_skip_verify: t.insecure_skip_verify,
            min_version,
            max_version,
        })
    }
}

fn rule_err(cx: &Ctx<'_>, e: relabel::RulesError) -> ConfigError {
    let m = e.to_string();
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

/// A byte size that does not parse (`body_size_limit`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?} (e.g. 10MB, 512KiB)")]
pub struct Base2BytesError(pub String);

/// Parses Prometheus' byte sizes (`body_size_limit`): `0`, or numbers with units
/// `B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB`, `PB`/`PiB`, `EB`/`EiB` (all powers of
/// 1024), possibly combined (`1GB512MB`).
pub fn parse_base2_bytes(s: &str) -> Result<u64, Base2BytesError> {
    if s == "0" {
        return Ok(0);
    }
    let bad = || Base2BytesError(s.to_string());
    let mut rest = s;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if n == 0 {
            return Err(bad());
        }
        let num: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult: f64 = match &rest[..u] {
            "B" => 1.0,
            "KB" | "KiB" => 1024.0,
            "MB" | "MiB" => 1024.0f64.powi(2),
            "GB" | "GiB" => 1024.0f64.powi(3),
            "TB" | "TiB" => 1024.0f64.powi(4),
            "PB" | "PiB" => 1024.0f64.powi(5),
            "EB" | "EiB" => 1024.0f64.powi(6),
            _ => return Err(bad()),
        };
        rest = &rest[u..];
        total += num * mult;
    }
    if total >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(total as u64)
}

/// Reads, parses and validates a config file. `mode` says how `${...}` is treated;
/// `lookup` gives environment variables.
pub fn load_with(
    file: &Path,
    mode: EnvMode,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let text = match mode {
        EnvMode::Prometheus => text,
        EnvMode::ExpandAll => {
            crate::env_expand::expand(&text, &lookup).map_err(|u| ConfigError::Env {
                file: file.to_path_buf(),
                line: u.line,
                name: u.name,
            })?
        }
    };
    parse_with(file, &text, mode, lookup)
}

/// [`load_with`] with the process environment.
pub fn load(file: &Path, mode: EnvMode) -> Result<Config, ConfigError> {
    load_with(file, mode, |name| std::env::var(name).ok())
}

/// Parses and validates config text as Prometheus does (without the process environment).
#[cfg(test)]
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_with(file, text, EnvMode::Prometheus, |_| None)
}

/// Parses and validates config text; `file` names it in messages and anchors relative paths.
pub fn parse_with(
    file: &Path,
    text: &str,
    mode: EnvMode,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let index = LineIndex::build(text);
    // An empty file is a valid (empty) configuration, as in Prometheus.
    let syntax = |e: serde_norway::Error| {
        let mut message = e.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        ConfigError::Parse {
            file: file.to_path_buf(),
            line: e.location().map(|l| l.line()),
            path: ".".into(),
            message,
        }
    };
    // YAML first, so merge keys (`<<: *defaults`) apply as in Prometheus' YAML library.
    let mut value: serde_norway::Value = if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        serde_norway::Value::Null
    } else {
        serde_norway::from_str(text).map_err(syntax)?
    };
    value.apply_merge().map_err(syntax)?;
    let raw: FileConfig = if value.is_null() {
        // An empty file is a valid (empty) configuration, as in Prometheus.
        FileConfig {
            global: None,
            scrape_configs: None,
            remote_write: None,
            rule_files: None,
            alerting: None,
            remote_read: None,
            storage: None,
            tracing: None,
            otlp: None,
            runtime: None,
        }
    } else {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let mut path = e.path().to_string();
            let mut message = e.inner().to_string();
            if let Some(m) = message.strip_prefix(&format!("{path}: ")) {
                message = m.to_string();
            }
            if let Some((field, why)) = explain_unknown(&message) {
                path = if path == "." || path.is_empty() {
                    field
                } else if path == field || path.ends_with(&format!(".{field}")) {
                    path
                } else {
                    format!("{path}.{field}")
                };
                message = why;
            } else if let Some(f) = message
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                .filter(|f| !path.ends_with(&format!(".{f}")) && path != *f)
            {
                path = if path == "." {
                    f.to_string()
                } else {
                    format!("{path}.{f}")
                };
            }
            ConfigError::Parse {
                file: file.to_path_buf(),
                line: index.line_of(&path),
                path,
                message,
            }
        })?
    };
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut cx = Ctx {
        file,
        dir,
        index,
        warnings: Vec::new(),
    };
    validate(&mut cx, raw, mode, lookup)
}

struct GlobalDefaults {
    interval: Duration,
    timeout: Duration,
    limits: Limits,
}

fn limit(v: Option<u64>) -> usize {
    usize::try_from(v.unwrap_or(0)).unwrap_or(usize::MAX)
}

fn validate(
    cx: &mut Ctx<'_>,
    raw: FileConfig,
    mode: EnvMode,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    for (section, why) in SERVER_ONLY {
        let present = match section {
            "rule_files" => raw.rule_files.is_some(),
            "alerting" => raw.alerting.is_some(),
            "remote_read" => raw.remote_read.is_some(),
            "storage" => raw.storage.is_some(),
            "tracing" => raw.tracing.is_some(),
            "otlp" => raw.otlp.is_some(),
            _ => raw.runtime.is_some(),
        };
        if present {
            cx.warn(section, format!("server-only section ignored: {why}"));
        }
    }
    let g = raw.global.unwrap_or_default();
    let gd = global(cx, &g)?;
    let mut external_labels = Labels::new();
    for (k, v) in g.external_labels.iter().flatten() {
        let f = format!("global.external_labels.{k}");
        if !valid_label_name(k) || k.starts_with("__") {
            return Err(cx.err(f, "invalid label name"));
        }
        let value = match mode {
            EnvMode::ExpandAll => v.clone(),
            EnvMode::Prometheus => {
                let (value, empty) = crate::env_expand::expand_label_value(v, &lookup);
                for name in empty {
                    cx.warn(
                        f.clone(),
                        format!("environment variable {name} is empty or not set"),
                    );
                }
                value
            }
        };
        external_labels.set(k.clone(), value);
    }

    let mut jobs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, sc) in raw.scrape_configs.iter().flatten().enumerate() {
        let job = scrape_job(cx, &gd, i, sc)?;
        if !seen.insert(job.name.clone()) {
            return Err(cx.err(
                format!("scrape_configs[{i}].job_name"),
                format!("found multiple scrape configs with job name {:?}", job.name),
            ));
        }
        jobs.push(job);
    }

    let mut remote_writes = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, rw) in raw.remote_write.iter().flatten().enumerate() {
        let w = remote_write(cx, i, rw)?;
        if !names.insert(w.name.clone()) {
            return Err(cx.err(
                format!("remote_write[{i}].name"),
                format!("found multiple remote write configs with name {:?}", w.name),
            ));
        }
        remote_writes.push(w);
    }

    Ok(Config {
        scrape_interval: gd.interval,
        scrape_timeout: gd.timeout,
        external_labels,
        jobs,
        remote_writes,
        warnings: std::mem::take(&mut cx.warnings),
    })
}

// dup: same table shape as the other section's, on purpose: each lists its own fields.
fn global(cx: &mut Ctx<'_>, g: &GlobalConfig) -> Result<GlobalDefaults, ConfigError> {
    // Prometheus: an unset (or zero) interval is 1m; an explicit timeout must not exceed
    // it; an unset timeout is min(10s, interval).
    let interval = g
        .scrape_interval
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(60));
    let timeout = match g.scrape_timeout.filter(|d| !d.is_zero()) {
        Some(t) if t > interval => {
            return Err(cx.err(
                "global.scrape_timeout",
                "global scrape timeout greater than scrape interval",
            ));
        }
        Some(t) => t,
        None => interval.min(Duration::from_secs(10)),
    };
    for (field, set, why) in [
        (
            "evaluation_interval",
            g.evaluation_interval.is_some(),
            "unused: the agent evaluates no rules",
        ),
        (
            "rule_query_offset",
            g.rule_query_offset.is_some(),
            "unused: the agent evaluates no rules",
        ),
        (
            "query_log_file",
            g.query_log_file.is_some(),
            "unused: the agent answers no queries",
        ),
        (
            "scrape_failure_log_file",
            g.scrape_failure_log_file.is_some(),
            "unused: scrape failures go to the agent's log",
        ),
        (
            "keep_dropped_targets",
            g.keep_dropped_targets.is_some(),
            "unused: the agent has no targets page",
        ),
        (
            "scrape_protocols",
            g.scrape_protocols.is_some(),
            "the agent always negotiates OpenMetrics 1.0 and text 0.0.4",
        ),
        (
            "metric_name_escaping_scheme",
            g.metric_name_escaping_scheme.is_some(),
            "unused: the agent asks targets for OpenMetrics 1.0 and text 0.0.4",
        ),
        (
            "always_scrape_classic_histograms",
            g.always_scrape_classic_histograms == Some(false),
            "the agent always scrapes classic histograms",
        ),
    ] {
        if set {
            cx.warn(format!("global.{field}"), why);
        }
    }
    if let Some(s) = &g.metric_name_validation_scheme
        && !matches!(s.as_str(), "" | "utf8" | "legacy")
    {
        return Err(cx.err(
            "global.metric_name_validation_scheme",
            format!("unknown name validation method {s:?}, must be utf8 or legacy"),
        ));
    }
    refuse_true(
        cx,
        "global",
        "scrape_native_histograms",
        g.scrape_native_histograms,
    )?;
    refuse_true(
        cx,
        "global",
        "convert_classic_histograms_to_nhcb",
        g.convert_classic_histograms_to_nhcb,
    )?;
    refuse_true(cx, "global", "extra_scrape_metrics", g.extra_scrape_metrics)?;
    let body_size = match &g.body_size_limit {
        None => 0,
        Some(s) => {
            parse_base2_bytes(s).map_err(|m| cx.err("global.body_size_limit", m.to_string()))?
        }
    };
    Ok(GlobalDefaults {
        interval,
        timeout,
        limits: Limits {
            body_size,
            sample: limit(g.sample_limit),
            target: limit(g.target_limit),
            label: limit(g.label_limit),
            label_name_length: limit(g.label_name_length_limit),
            label_value_length: limit(g.label_value_length_limit),
        },
    })
}

/// Fields that would change what is collected when true: an error then.
fn refuse_true(
    cx: &Ctx<'_>,
    prefix: &str,
    field: &str,
    v: Option<bool>,
) -> Result<(), ConfigError> {
    if v == Some(true) {
        let why = match field {
            "scrape_native_histograms" => {
                "native histograms are not supported (the agent scrapes text formats and sends classic histograms)"
            }
            "convert_classic_histograms_to_nhcb" => {
                "native histograms are not supported: classic histograms are sent as they are"
            }
            "extra_scrape_metrics" => {
                "not supported: the agent adds only up, scrape_duration_seconds, scrape_samples_scraped, scrape_samples_post_metric_relabeling and scrape_series_added"
            }
            "track_timestamps_staleness" => {
                "not supported: series exposed with explicit timestamps get no stale markers"
            }
            _ => "not supported",
        };
        return Err(cx.err(format!("{prefix}.{field}"), why));
    }
    Ok(())
}

fn scrape_job(
    cx: &mut Ctx<'_>,
    gd: &GlobalDefaults,
    i: usize,
    sc: &ScrapeConfig,
) -> Result<ScrapeJob, ConfigError> {
    let f = format!("scrape_configs[{i}]");
    if sc.job_name.is_empty() {
        return Err(cx.err(format!("{f}.job_name"), "job_name is empty"));
    }
    let (interval, timeout) = job_timing(cx, &f, gd, sc)?;
    let scheme = sc
        .scheme
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "http".into());
    if scheme != "http" && scheme != "https" {
        return Err(cx.err(format!("{f}.scheme"), "must be http or https"));
    }
    let metrics_path = sc
        .metrics_path
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/metrics".into());
    check_job_features(cx, &f, sc)?;
    let limits = job_limits(cx, &f, gd, sc)?;
    let relabel_cfgs = sc.relabel_configs.as_deref().unwrap_or_default();
    let relabel = relabel::compile_all(&format!("{f}.relabel_configs"), relabel_cfgs)
        .map_err(|m| rule_err(cx, m))?;
    let metric_relabel = relabel::compile_all(
        &format!("{f}.metric_relabel_configs"),
        sc.metric_relabel_configs.as_deref().unwrap_or_default(),
    )
    .map_err(|m| rule_err(cx, m))?;
    let http = cx.http(&f, sc.http_fields())?;

    let static_groups = static_groups(cx, &f, sc, relabel_cfgs.is_empty())?;
    let file_sd = file_sd_configs(cx, &f, sc)?;
    let dns_sd = dns_sd_configs(cx, &f, sc)?;
    let ec2_sd = ec2_sd_configs(cx, &f, sc)?;
    let consul_sd = consul_sd_configs(cx, &f, sc)?;
    let docker_sd = docker_sd_configs(cx, &f, sc)?;

    let mut job = ScrapeJob {
        name: sc.job_name.clone(),
        interval,
        timeout,
        honor_labels: sc.honor_labels,
        honor_timestamps: sc.honor_timestamps.unwrap_or(true),
        enable_compression: sc.enable_compression.unwrap_or(true),
        limits,
        metric_relabel,
        http,
        scheme,
        metrics_path,
        params: sc.params.clone().unwrap_or_default(),
        relabel,
        static_groups,
        file_sd,
        dns_sd,
        ec2_sd,
        consul_sd,
        docker_sd,
        targets: Vec::new(),
    };
    job.targets = job.resolve(job.static_groups.iter());
    Ok(job)
}

/// A job's scrape interval and timeout (the globals' when unset or 0).
fn job_timing(
    cx: &Ctx<'_>,
    f: &str,
    gd: &GlobalDefaults,
    sc: &ScrapeConfig,
) -> Result<(Duration, Duration), ConfigError> {
    let interval = sc
        .scrape_interval
        .filter(|d| !d.is_zero())
        .unwrap_or(gd.interval);
    let timeout = match sc.scrape_timeout.filter(|d| !d.is_zero()) {
        Some(t) if t > interval => {
            return Err(cx.err(
                format!("{f}.scrape_timeout"),
                format!(
                    "scrape timeout greater than scrape interval for scrape config with job name {:?}",
                    sc.job_name
                ),
            ));
        }
        Some(t) => t,
        None => gd.timeout.min(interval),
    };
    Ok((interval, timeout))
}

// dup: same table shape as the other section's, on purpose: each lists its own fields.
/// Warns about fields that change nothing the agent does and refuses the ones it cannot do.
fn check_job_features(cx: &mut Ctx<'_>, f: &str, sc: &ScrapeConfig) -> Result<(), ConfigError> {
    // The same shape as the table in `global`, on purpose: each lists its own section's
    // fields (with `sc`/`g`), and a field's reason reads best next to the field.
    for (field, set, why) in [
        (
            "scrape_protocols",
            sc.scrape_protocols.is_some(),
            "the agent always negotiates OpenMetrics 1.0 and text 0.0.4",
        ),
        (
            "fallback_scrape_protocol",
            sc.fallback_scrape_protocol.is_some(),
            "a response without a known Content-Type is parsed as text 0.0.4",
        ),
        (
            "scrape_failure_log_file",
            sc.scrape_failure_log_file.is_some(),
            "unused: scrape failures go to the agent's log",
        ),
        (
            "keep_dropped_targets",
            sc.keep_dropped_targets.is_some(),
            "unused: the agent has no targets page",
        ),
        (
            "metric_name_escaping_scheme",
            sc.metric_name_escaping_scheme.is_some(),
            "unused: the agent asks targets for OpenMetrics 1.0 and text 0.0.4",
        ),
        (
            "native_histogram_bucket_limit",
            sc.native_histogram_bucket_limit.is_some(),
            "unused: the agent collects no native histograms",
        ),
        (
            "native_histogram_min_bucket_factor",
            sc.native_histogram_min_bucket_factor.is_some(),
            "unused: the agent collects no native histograms",
        ),
        (
            "always_scrape_classic_histograms",
            sc.always_scrape_classic_histograms == Some(false),
            "the agent always scrapes classic histograms",
        ),
        (
            "scrape_classic_histograms",
            sc.scrape_classic_histograms == Some(false),
            "the agent always scrapes classic histograms",
        ),
    ] {
        if set {
            cx.warn(format!("{f}.{field}"), why);
        }
    }
    if let Some(s) = &sc.metric_name_validation_scheme
        && !matches!(s.as_str(), "" | "utf8" | "legacy")
    {
        return Err(cx.err(
            format!("{f}.metric_name_validation_scheme"),
            format!("unknown name validation method {s:?}, must be utf8 or legacy"),
        ));
    }
    refuse_true(
        cx,
        f,
        "scrape_native_histograms",
        sc.scrape_native_histograms,
    )?;
    refuse_true(
        cx,
        f,
        "convert_classic_histograms_to_nhcb",
        sc.convert_classic_histograms_to_nhcb,
    )?;
    refuse_true(cx, f, "extra_scrape_metrics", sc.extra_scrape_metrics)?;
    refuse_true(
        cx,
        f,
        "track_timestamps_staleness",
        sc.track_timestamps_staleness,
    )?;
    Ok(())
}

/// A job's limits (the globals' where unset or 0).
fn job_limits(
    cx: &Ctx<'_>,
    f: &str,
    gd: &GlobalDefaults,
    sc: &ScrapeConfig,
) -> Result<Limits, ConfigError> {
    let or_global = |v: Option<u64>, g: usize| match limit(v) {
        0 => g,
        n => n,
    };
    let body_size = match &sc.body_size_limit {
        Some(s) => {
            match parse_base2_bytes(s)
                .map_err(|m| cx.err(format!("{f}.body_size_limit"), m.to_string()))?
            {
                0 => gd.limits.body_size,
                n => n,
            }
        }
        None => gd.limits.body_size,
    };
    Ok(Limits {
        body_size,
        sample: or_global(sc.sample_limit, gd.limits.sample),
        target: or_global(sc.target_limit, gd.limits.target),
        label: or_global(sc.label_limit, gd.limits.label),
        label_name_length: or_global(sc.label_name_length_limit, gd.limits.label_name_length),
        label_value_length: or_global(sc.label_value_length_limit, gd.limits.label_value_length),
    })
}

/// `static_configs` as target groups; addresses are checked when no relabeling can fix them.
fn static_groups(
    cx: &Ctx<'_>,
    f: &str,
    sc: &ScrapeConfig,
    no_relabeling: bool,
) -> Result<Vec<TargetGroup>, ConfigError> {
    let mut static_groups = Vec::new();
    for (j, st) in sc.static_configs.iter().flatten().enumerate() {
        let labels = st.labels.clone().unwrap_or_default();
        for k in labels.keys() {
            if !valid_label_name(k) {
                return Err(cx.err(
                    format!("{f}.static_configs[{j}].labels.{k}"),
                    format!("{k:?} is not a valid label name"),
                ));
            }
        }
        let mut targets = Vec::new();
        for (t, addr) in st.targets.iter().flatten().enumerate() {
            // Prometheus checks written addresses only when no relabeling could fix them.
            if no_relabeling && (addr.is_empty() || addr.contains('/')) {
                return Err(cx.err(
                    format!("{f}.static_configs[{j}].targets[{t}]"),
                    format!("{addr:?} is not a valid hostname"),
                ));
            }
            targets.push(BTreeMap::from([("__address__".to_string(), addr.clone())]));
        }
        static_groups.push(TargetGroup {
            source: j.to_string(),
            targets,
            labels,
        });
    }
    Ok(static_groups)
}

/// `file_sd_configs`: file names checked, paths relative to the config file.
fn file_sd_configs(cx: &Ctx<'_>, f: &str, sc: &ScrapeConfig) -> Result<Vec<FileSd>, ConfigError> {
    let mut file_sd = Vec::new();
    for (j, fs) in sc.file_sd_configs.iter().flatten().enumerate() {
        let mut files = Vec::new();
        for (k, name) in fs.files.iter().enumerate() {
            if !file_sd_name_ok(name) {
                return Err(cx.err(
                    format!("{f}.file_sd_configs[{j}].files[{k}]"),
                    format!("path name {name:?} is not valid for file discovery (a .json, .yml or .yaml file; `*` only in the file name)"),
                ));
            }
            files.push(cx.path(Path::new(name)));
        }
        file_sd.push(FileSd {
            files,
            refresh_interval: fs
                .refresh_interval
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(300)),
        });
    }
    Ok(file_sd)
}

/// `dns_sd_configs`: record types SRV, A and AAAA (A and AAAA need a port).
fn dns_sd_configs(cx: &Ctx<'_>, f: &str, sc: &ScrapeConfig) -> Result<Vec<DnsSd>, ConfigError> {
    let mut dns_sd = Vec::new();
    for (j, d) in sc.dns_sd_configs.iter().flatten().enumerate() {
        let p = format!("{f}.dns_sd_configs[{j}]");
        if d.names.is_empty() {
            return Err(cx.err(
                format!("{p}.names"),
                "DNS-SD config must contain at least one SRV record name",
            ));
        }
        let kind = match d
            .kind
            .as_deref()
            .unwrap_or("SRV")
            .to_ascii_uppercase()
            .as_str()
        {
            "SRV" => DnsType::Srv,
            "A" => DnsType::A,
            "AAAA" => DnsType::Aaaa,
            "MX" | "NS" => {
                return Err(cx.err(
                    format!("{p}.type"),
                    "MX and NS records are not supported by metrics-agent (SRV, A, AAAA are)",
                ));
            }
            other => {
                return Err(cx.err(
                    format!("{p}.type"),
                    format!("invalid DNS-SD records type {other}"),
                ));
            }
        };
        let port = d.port.unwrap_or(0);
        if kind != DnsType::Srv && port == 0 {
            return Err(cx.err(
                format!("{p}.port"),
                "a port is required in DNS-SD configs for all record types except SRV",
            ));
        }
        dns_sd.push(DnsSd {
            names: d.names.clone(),
            kind,
            port,
            refresh_interval: d
                .refresh_interval
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(30)),
        });
    }
    Ok(dns_sd)
}

/// `ec2_sd_configs`: Prometheus' defaults (port 80, refresh 60s); filters need values. Of
/// the HTTP client options, those that would change where or how the EC2 API is called
/// (TLS, proxy, credentials) are refused; `follow_redirects` and `enable_http2` load.
fn ec2_sd_configs(cx: &mut Ctx<'_>, f: &str, sc: &ScrapeConfig) -> Result<Vec<Ec2Sd>, ConfigError> {
    let mut out = Vec::new();
    for (j, e) in sc.ec2_sd_configs.iter().flatten().enumerate() {
        let p = format!("{f}.ec2_sd_configs[{j}]");
        let mut filters = Vec::new();
        for (k, flt) in e.filters.iter().flatten().enumerate() {
            if flt.values.is_empty() {
                return Err(cx.err(
                    format!("{p}.filters[{k}].values"),
                    "EC2 SD configuration filter values cannot be empty",
                ));
            }
            filters.push((flt.name.clone(), flt.values.clone()));
        }
        let http = cx.http(&p, e.http_fields())?;
        let t = &http.tls;
        let tls_beyond_ca = t.cert_pem.is_some()
            || t.server_name.is_some()
            || t.insecure_skip_verify
            || t.min_version.is_some()
            || t.max_version.is_some();
        let refused = [
            ("authorization", http.auth.is_some()),
            ("tls_config", tls_beyond_ca),
            ("proxy_url", http.proxy_url.is_some()),
            ("proxy_from_environment", http.proxy_from_environment),
        ];
        if let Some((field, _)) = refused.iter().find(|(_, set)| *set) {
            return Err(cx.err(
                format!("{p}.{field}"),
                "not supported in ec2_sd_configs: the EC2 API is called with the AWS SDK's own client, which takes a CA (tls_config.ca/ca_file) but no client certificate, server_name, insecure_skip_verify, TLS versions, proxy or HTTP credentials (credentials come from access_key/secret_key, profile, role_arn or the default chain)",
            ));
        }
        let auth = aws_auth(cx, &p, &e.region, &e.access_key, &e.secret_key);
        let endpoint = e.endpoint.clone().filter(|s| !s.is_empty());
        if let Some(u) = &endpoint
            && reqwest::Url::parse(u).is_err()
        {
            return Err(cx.err(format!("{p}.endpoint"), format!("{u:?} is not a URL")));
        }
        out.push(Ec2Sd {
            auth: AwsAuth {
                profile: e.profile.clone().filter(|s| !s.is_empty()),
                role_arn: e.role_arn.clone().filter(|s| !s.is_empty()),
                external_id: e.external_id.clone().filter(|s| !s.is_empty()),
                ..auth
            },
            endpoint,
            refresh_interval: e
                .refresh_interval
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(60)),
            port: e.port.unwrap_or(80),
            filters,
            ca_pem: http.tls.ca_pem.clone(),
        });
    }
    Ok(out)
}

/// `consul_sd_configs`: Prometheus' defaults (server `localhost:8500`, scheme `http`, tag
/// separator `,`, `allow_stale` true, refresh 30s) and rules (a server is required;
/// `username`/`password` are basic auth and exclude `basic_auth`; `token` excludes
/// `authorization`).
fn consul_sd_configs(
    cx: &mut Ctx<'_>,
    f: &str,
    sc: &ScrapeConfig,
) -> Result<Vec<ConsulSd>, ConfigError> {
    let mut out = Vec::new();
    for (j, c) in sc.consul_sd_configs.iter().flatten().enumerate() {
        let p = format!("{f}.consul_sd_configs[{j}]");
        let server = c.server.clone().unwrap_or_else(|| "localhost:8500".into());
        if server.trim().is_empty() {
            return Err(cx.err(
                format!("{p}.server"),
                "consul SD configuration requires a server address",
            ));
        }
        let mut http = cx.http(&p, c.http_fields())?;
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let (username, password) = (nonempty(&c.username), nonempty(&c.password));
        if username.is_some() || password.is_some() {
            if c.basic_auth.is_some() {
                return Err(cx.err(
                    format!("{p}.username"),
                    "at most one of consul SD configuration username and password and basic auth can be configured",
                ));
            }
            if http.auth.is_some() {
                return Err(cx.err(
                    format!("{p}.username"),
                    "at most one of basic_auth, authorization and bearer_token/bearer_token_file may be set",
                ));
            }
            http.auth = Some(Auth::Basic {
                username: Secret::Inline(username.unwrap_or_default()),
                password: Secret::Inline(password.unwrap_or_default()),
            });
        }
        let token = nonempty(&c.token);
        if token.is_some() && matches!(http.auth, Some(Auth::Header { .. })) {
            return Err(cx.err(
                format!("{p}.token"),
                "at most one of consul SD token, authorization, or oauth2 can be configured",
            ));
        }
        out.push(ConsulSd {
            server,
            path_prefix: c.path_prefix.clone().unwrap_or_default(),
            scheme: nonempty(&c.scheme).unwrap_or_else(|| "http".into()),
            token: token.map(Secret::Inline),
            datacenter: nonempty(&c.datacenter),
            namespace: nonempty(&c.namespace),
            partition: nonempty(&c.partition),
            tag_separator: nonempty(&c.tag_separator).unwrap_or_else(|| ",".into()),
            allow_stale: c.allow_stale.unwrap_or(true),
            refresh_interval: c
                .refresh_interval
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(30)),
            services: c.services.clone().unwrap_or_default(),
            tags: c.tags.clone().unwrap_or_default(),
            node_meta: c.node_meta.clone().unwrap_or_default(),
            filter: nonempty(&c.filter),
            health_filter: nonempty(&c.health_filter),
            http,
        });
    }
    Ok(out)
}

/// `docker_sd_configs`: Prometheus' defaults (port 80, refresh 60s, `host_networking_host`
/// localhost, `match_first_network` true); `host` is required and must be a URL.
fn docker_sd_configs(
    cx: &mut Ctx<'_>,
    f: &str,
    sc: &ScrapeConfig,
) -> Result<Vec<DockerSd>, ConfigError> {
    let mut out = Vec::new();
    for (j, d) in sc.docker_sd_configs.iter().flatten().enumerate() {
        let p = format!("{f}.docker_sd_configs[{j}]");
        let host = d.host.clone().unwrap_or_default();
        if host.is_empty() {
            return Err(cx.err(format!("{p}.host"), "host missing"));
        }
        match reqwest::Url::parse(&host) {
            Ok(u) if ["unix", "tcp", "http", "https"].contains(&u.scheme()) => {}
            Ok(u) => {
                return Err(cx.err(
                    format!("{p}.host"),
                    format!(
                        "unsupported protocol scheme {:?} (unix, tcp, http, https)",
                        u.scheme()
                    ),
                ));
            }
            Err(e) => return Err(cx.err(format!("{p}.host"), e.to_string())),
        }
        let mut filters = Vec::new();
        for flt in d.filters.iter().flatten() {
            filters.push((flt.name.clone(), flt.values.clone()));
        }
        out.push(DockerSd {
            host,
            port: d.port.unwrap_or(80),
            filters,
            host_networking_host: d
                .host_networking_host
                .clone()
                .unwrap_or_else(|| "localhost".into()),
            refresh_interval: d
                .refresh_interval
                .filter(|x| !x.is_zero())
                .unwrap_or(Duration::from_secs(60)),
            match_first_network: d.match_first_network.unwrap_or(true),
            http: cx.http(&p, d.http_fields())?,
        });
    }
    Ok(out)
}

/// Region and static keys of an AWS block: the keys are used only when both are set (as
/// Prometheus does); one without the other is a warning, since the default chain is used.
fn aws_auth(
    cx: &mut Ctx<'_>,
    p: &str,
    region: &Option<String>,
    access_key: &Option<String>,
    secret_key: &Option<String>,
) -> AwsAuth {
    let ak = access_key.clone().filter(|s| !s.is_empty());
    let sk = secret_key.clone().filter(|s| !s.is_empty());
    let (access_key, secret_key) = match (ak, sk) {
        (Some(a), Some(s)) => (Some(a), Some(s)),
        (None, None) => (None, None),
        (a, _) => {
            let missing = if a.is_some() {
                "secret_key"
            } else {
                "access_key"
            };
            cx.warn(
                format!("{p}.{missing}"),
                "access_key and secret_key are used only together: credentials come from the default chain",
            );
            (None, None)
        }
    };
    AwsAuth {
        region: region.clone().filter(|s| !s.is_empty()),
        access_key,
        secret_key,
        ..AwsAuth::default()
    }
}

/// Prometheus' rule for file_sd names: `.json`/`.yml`/`.yaml`, a `*` only in the last element.
fn file_sd_name_ok(name: &str) -> bool {
    let lower_ok = [".json", ".yml", ".yaml", ".JSON", ".YML", ".YAML"]
        .iter()
        .any(|ext| name.ends_with(ext));
    let star_ok = match name.find('*') {
        None => true,
        Some(i) => !name[i..].contains('/'),
    };
    lower_ok && star_ok
}

fn remote_write(
    cx: &mut Ctx<'_>,
    i: usize,
    rw: &RemoteWriteConfig,
) -> Result<RemoteWrite, ConfigError> {
    let f = format!("remote_write[{i}]");
    match reqwest::Url::parse(&rw.url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
        _ => {
            return Err(cx.err(
                format!("{f}.url"),
                format!("{:?} is not an http:// or https:// URL", rw.url),
            ));
        }
    }
    // The name is also the WAL sub-directory: characters a directory name cannot safely
    // hold become `_`.
    let name = match rw.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => n
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        None => format!("rw{i}"),
    };
    let mut headers = Vec::new();
    for (k, v) in rw.headers.iter().flatten() {
        if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            return Err(cx.err(
                format!("{f}.headers.{k}"),
                format!("{k} is a reserved header. It must not be changed"),
            ));
        }
        headers.push((k.clone(), v.clone()));
    }
    let write_relabel = relabel::compile_all(
        &format!("{f}.write_relabel_configs"),
        rw.write_relabel_configs.as_deref().unwrap_or_default(),
    )
    .map_err(|m| rule_err(cx, m))?;
    match rw.protobuf_message.as_deref() {
        None | Some("") | Some("prometheus.WriteRequest") => {}
        Some("io.prometheus.write.v2.Request") => {
            return Err(cx.err(
                format!("{f}.protobuf_message"),
                "remote-write 2.0 is not supported: use prometheus.WriteRequest (1.0)",
            ));
        }
        Some(other) => {
            return Err(cx.err(
                format!("{f}.protobuf_message"),
                format!("unknown remote write protobuf message {other:?}"),
            ));
        }
    }
    for (field, set, why) in [
        (
            "send_exemplars",
            rw.send_exemplars == Some(true),
            "exemplars are not collected, so none are sent",
        ),
        (
            "send_native_histograms",
            rw.send_native_histograms == Some(true),
            "native histograms are not collected, so none are sent",
        ),
        (
            "round_robin_dns",
            rw.round_robin_dns == Some(true),
            "unused: connections use the resolver's order",
        ),
    ] {
        if set {
            cx.warn(format!("{f}.{field}"), why);
        }
    }
    let q = rw.queue_config.clone().unwrap_or_default();
    if q.capacity.is_some() || q.batch_send_deadline.is_some() || q.min_shards.is_some() {
        cx.warn(
            format!("{f}.queue_config"),
            "capacity, min_shards and batch_send_deadline have no effect: the agent sends from its on-disk queue as soon as samples are durable",
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
    if q.sample_age_limit.is_some_and(|d| !d.is_zero()) {
        return Err(cx.err(
            format!("{f}.queue_config.sample_age_limit"),
            "not supported: the age bound is the WAL's --wal-max-age",
        ));
    }
    if let Some(m) = &rw.metadata_config
        && m.send.unwrap_or(true)
    {
        cx.warn(
            format!("{f}.metadata_config"),
            "metric metadata is not sent by this agent (samples are)",
        );
    }
    let sigv4 = match &rw.sigv4 {
        None => None,
        Some(s) => {
            let p = format!("{f}.sigv4");
            if s.access_key.as_deref().is_some_and(|k| !k.is_empty())
                != s.secret_key.as_deref().is_some_and(|k| !k.is_empty())
            {
                return Err(cx.err(
                    format!("{p}.secret_key"),
                    "must provide a AWS SigV4 Access key and Secret Key if credentials are specified in the SigV4 config",
                ));
            }
            // As in Prometheus, a missing region comes from the SDK's chain (AWS_REGION,
            // AWS_DEFAULT_REGION, the profile, instance metadata) when the agent starts.
            let auth = aws_auth(cx, &p, &s.region, &s.access_key, &s.secret_key);
            if auth.region.is_none()
                && std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                cx.warn(
                    format!("{p}.region"),
                    "not set: the region comes from the AWS profile or instance metadata when the agent sends (sending fails, and data waits in the WAL, until one is found)",
                );
            }
            Some(SigV4 {
                auth: AwsAuth {
                    profile: s.profile.clone().filter(|x| !x.is_empty()),
                    role_arn: s.role_arn.clone().filter(|x| !x.is_empty()),
                    external_id: s.external_id.clone().filter(|x| !x.is_empty()),
                    use_fips_sts_endpoint: s.use_fips_sts_endpoint.unwrap_or(false),
                    ..auth
                },
            })
        }
    };
    let http = cx.http(&f, rw.http_fields())?;
    if sigv4.is_some() && http.auth.is_some() {
        return Err(cx.err(
            format!("{f}.sigv4"),
            "at most one of basic_auth, authorization, oauth2, sigv4, azuread or google_iam must be configured",
        ));
    }
    Ok(RemoteWrite {
        name,
        url: rw.url.clone(),
        timeout: rw
            .remote_timeout
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(30)),
        headers,
        write_relabel,
        shards,
        max_samples_per_send,
        min_backoff: q.min_backoff.unwrap_or(Duration::from_millis(30)),
        max_backoff: q.max_backoff.unwrap_or(Duration::from_secs(5)),
        retry_on_429: q.retry_on_http_429.unwrap_or(true),
        sigv4,
        http,
    })
}

impl ScrapeJob {
    /// Turns discovered target groups into scrape targets: job defaults, group labels,
    /// target labels, then `relabel_configs`; duplicates collapse into one target.
    pub fn resolve<'a>(&self, groups: impl Iterator<Item = &'a TargetGroup>) -> Vec<Target> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for g in groups {
            for t in &g.targets {
                let mut l = Labels::new();
                l.set("__scheme__".into(), self.scheme.clone());
                l.set("__metrics_path__".into(), self.metrics_path.clone());
                l.set("__scrape_interval__".into(), format_duration(self.interval));
                l.set("__scrape_timeout__".into(), format_duration(self.timeout));
                l.set("job".into(), self.name.clone());
                for (pk, pv) in &self.params {
                    if let Some(first) = pv.first() {
                        l.set(format!("__param_{pk}"), first.clone());
                    }
                }
                for (k, v) in &g.labels {
                    l.set(k.clone(), v.clone());
                }
                for (k, v) in t {
                    l.set(k.clone(), v.clone());
                }
                if let Some(t) = resolve_target(l, &self.relabel, &self.params)
                    && seen.insert(t.clone())
                {
                    out.push(t);
                }
            }
        }
        out
    }
}

/// Applies target relabeling and builds the scrape URL, as Prometheus does.
fn resolve_target(
    l: Labels,
    rules: &[Rule],
    params: &BTreeMap<String, Vec<String>>,
) -> Option<Target> {
    let mut l = relabel::apply(rules, l)?;
    let addr = l.get("__address__")?.to_string();
    if addr.is_empty() || addr.contains('/') {
        tracing::warn!(address = %addr, "target dropped: __address__ is not a host[:port]");
        return None;
    }
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

    fn err(text: &str) -> String {
        p(text).expect_err("must be rejected").to_string()
    }

    #[test]
    fn parses_a_typical_file() {
        let c = p(r#"
global:
  scrape_interval: 15s
  scrape_timeout: 5s
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
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn server_only_sections_load_with_a_warning_naming_their_line() {
        let c = p(
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\nrule_files:\n  - alerts/*.yml\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['am:9093']\nremote_read:\n  - url: http://x/read\nstorage:\n  tsdb: {out_of_order_time_window: 10m}\ntracing: {endpoint: 'x:4317'}\nscrape_configs: []\n",
        )
        .expect("valid");
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        for (field, line) in [
            ("rule_files", 4),
            ("alerting", 6),
            ("remote_read", 10),
            ("storage", 12),
            ("tracing", 14),
            ("global.evaluation_interval", 3),
        ] {
            assert!(
                w.iter()
                    .any(|s| s.starts_with(&format!("prometheus.yml:{line}: field `{field}`"))),
                "{field}: {w:#?}"
            );
        }
        assert_eq!(w.len(), 6, "{w:#?}");
    }

    #[test]
    fn scrape_timeout_defaults_as_in_prometheus() {
        // Global: min(10s, interval). Job: min(global timeout, job interval).
        let c = p("global: {scrape_interval: 5s}\nscrape_configs:\n  - job_name: a\n  - job_name: b\n    scrape_interval: 1s\n  - job_name: c\n    scrape_interval: 1m\n")
            .expect("valid");
        assert_eq!(c.scrape_timeout, Duration::from_secs(5));
        let t: Vec<_> = c.jobs.iter().map(|j| (j.interval, j.timeout)).collect();
        assert_eq!(
            t,
            [
                (Duration::from_secs(5), Duration::from_secs(5)),
                (Duration::from_secs(1), Duration::from_secs(1)),
                (Duration::from_secs(60), Duration::from_secs(5)),
            ]
        );
        let c = p("scrape_configs:\n  - job_name: a\n    scrape_interval: 3s\n").expect("valid");
        assert_eq!(c.scrape_interval, Duration::from_secs(60));
        assert_eq!(c.scrape_timeout, Duration::from_secs(10));
        assert_eq!(c.jobs[0].timeout, Duration::from_secs(3));
        let e = err(
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 3s\n    scrape_timeout: 4s\n",
        );
        assert!(
            e.contains("prometheus.yml:4: field `scrape_configs[0].scrape_timeout`"),
            "{e}"
        );
        let e = err("global: {scrape_interval: 5s, scrape_timeout: 10s}\n");
        assert!(e.contains("global.scrape_timeout"), "{e}");
    }

    #[test]
    fn unknown_and_unsupported_fields_are_errors_with_their_line() {
        let e = err("scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs: []\n");
        assert!(
            e.starts_with("prometheus.yml:3: field `scrape_configs[0].kubernetes_sd_configs`"),
            "{e}"
        );
        assert!(e.contains("not supported"), "{e}");
        let e = err("scrape_configs:\n  - job_name: a\n    oauth2: {client_id: x}\n");
        assert!(
            e.starts_with("prometheus.yml:3: field `scrape_configs[0].oauth2`"),
            "{e}"
        );
        let e = err("scrape_configs:\n  - job_name: a\n    bogus: 1\n");
        assert!(e.contains("unknown field `bogus`"), "{e}");
        assert!(e.starts_with("prometheus.yml:3"), "{e}");
        let e = err("scrape_configs:\n  - job_name: a\n    scrape_native_histograms: true\n");
        assert!(
            e.starts_with("prometheus.yml:3: field `scrape_configs[0].scrape_native_histograms`"),
            "{e}"
        );
        // false is what the agent does anyway
        p("scrape_configs:\n  - job_name: a\n    scrape_native_histograms: false\n")
            .expect("valid");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let e = err("remote_write:\n  - url: http://x/\n    headers: {User-Agent: me}\n");
        assert!(e.contains("remote_write[0].headers.User-Agent"), "{e}");
        let e = err(
            "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: hashmod\n        target_label: x\n",
        );
        assert!(
            e.contains("scrape_configs[0].relabel_configs[0].modulus"),
            "{e}"
        );
        let e = err(
            "remote_write:\n  - url: http://x/\n    sigv4: {region: us-east-1, access_key: AKID}\n",
        );
        assert!(e.contains("remote_write[0].sigv4.secret_key"), "{e}");
        let e = err("global: {scrape_interval: 5x}\n");
        assert!(e.contains("global.scrape_interval"), "{e}");
        let e = err("scrape_configs:\n  - job_name: a\n  - job_name: a\n");
        assert!(e.contains("multiple scrape configs"), "{e}");
        let e = err(
            "scrape_configs:\n  - job_name: a\n    bearer_token: x\n    basic_auth: {username: u}\n",
        );
        assert!(e.contains("at most one of"), "{e}");
        let e = err(
            "scrape_configs:\n  - job_name: a\n    tls_config: {cert_file: /nonexistent.pem}\n",
        );
        assert!(e.contains("tls_config.cert_file"), "{e}");
        let e =
            err("scrape_configs:\n  - job_name: a\n    dns_sd_configs: [{names: [x], type: A}]\n");
        assert!(e.contains("a port is required"), "{e}");
        let e = err(
            "scrape_configs:\n  - job_name: a\n    file_sd_configs: [{files: [targets.txt]}]\n",
        );
        assert!(e.contains("not valid for file discovery"), "{e}");
    }

    #[test]
    fn relabel_can_drop_targets_and_static_urls_need_relabeling() {
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
        let e = err(
            "scrape_configs:\n  - job_name: a\n    static_configs: [{targets: ['http://a:1/x']}]\n",
        );
        assert!(e.contains("not a valid hostname"), "{e}");
        // blackbox style: the URL is a parameter, the address comes from relabeling
        let c = p(r#"
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params: {module: [http_2xx]}
    static_configs: [{targets: ['https://example.org/health']}]
    relabel_configs:
      - {source_labels: [__address__], target_label: __param_target}
      - {source_labels: [__param_target], target_label: instance}
      - {target_label: __address__, replacement: '127.0.0.1:9115'}
"#)
        .expect("valid");
        let t = &c.jobs[0].targets[0];
        assert_eq!(
            t.url,
            "http://127.0.0.1:9115/probe?module=http_2xx&target=https%3A%2F%2Fexample.org%2Fhealth"
        );
        assert_eq!(t.labels.get("instance"), Some("https://example.org/health"));
    }

    #[test]
    fn client_options_and_limits() {
        let dir = tempfile::tempdir().expect("tmp");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").expect("write");
        let text = format!(
            "global: {{sample_limit: 100, body_size_limit: 10MB}}\nscrape_configs:\n  - job_name: a\n    basic_auth: {{username: u, password_file: pw}}\n    label_limit: 30\n    proxy_url: http://127.0.0.1:3128\n    follow_redirects: false\n  - job_name: b\n    bearer_token_file: {}\n    sample_limit: 5\n    tls_config: {{insecure_skip_verify: true, server_name: example.org}}\n",
            pw.display()
        );
        let c = parse(&dir.path().join("prometheus.yml"), &text).expect("valid");
        let a = &c.jobs[0];
        assert_eq!(a.limits.sample, 100);
        assert_eq!(a.limits.body_size, 10 << 20);
        assert_eq!(a.limits.label, 30);
        assert!(!a.http.follow_redirects);
        assert_eq!(a.http.proxy_url.as_deref(), Some("http://127.0.0.1:3128"));
        match &a.http.auth {
            Some(Auth::Basic { password, .. }) => {
                assert_eq!(password.read().as_deref(), Ok("s3cret"))
            }
            other => panic!("{other:?}"),
        }
        let b = &c.jobs[1];
        assert_eq!(b.limits.sample, 5);
        assert!(b.http.tls.insecure_skip_verify);
        match &b.http.auth {
            Some(Auth::Header { kind, credentials }) => {
                assert_eq!(kind, "Bearer");
                assert_eq!(credentials.read().as_deref(), Ok("s3cret"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn base2_sizes() {
        assert_eq!(parse_base2_bytes("0"), Ok(0));
        assert_eq!(parse_base2_bytes("1KB"), Ok(1024));
        assert_eq!(parse_base2_bytes("1KiB"), Ok(1024));
        assert_eq!(parse_base2_bytes("1GB512MB"), Ok((1 << 30) + (512 << 20)));
        assert_eq!(parse_base2_bytes("100B"), Ok(100));
        assert!(parse_base2_bytes("100").is_err());
        assert!(parse_base2_bytes("1XB").is_err());
    }

    #[test]
    fn external_labels_expand_like_prometheus_and_the_rest_stays_literal() {
        let env = |n: &str| (n == "REGION").then(|| "eu-west-1".to_string());
        let text = "global:\n  external_labels:\n    region: ${REGION}\n    zone: ${ZONE}\nremote_write:\n  - url: http://x/${REGION}\n";
        let c = parse_with(Path::new("p.yml"), text, EnvMode::Prometheus, env).expect("valid");
        assert_eq!(c.external_labels.get("region"), Some("eu-west-1"));
        assert_eq!(c.external_labels.get("zone"), None);
        assert_eq!(c.remote_writes[0].url, "http://x/${REGION}");
        assert!(
            c.warnings.iter().any(|w| w.message.contains("ZONE")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn merge_keys_apply() {
        let c = p("scrape_configs:\n  - &job\n    job_name: a\n    scrape_interval: 5s\n    static_configs: [{targets: ['a:1']}]\n  - <<: *job\n    job_name: b\n")
            .expect("valid");
        assert_eq!(c.jobs[1].name, "b");
        assert_eq!(c.jobs[1].interval, Duration::from_secs(5));
        assert_eq!(c.jobs[1].targets.len(), 1);
        let e = err("global:\n  scrape_interval: [1\n");
        assert!(e.starts_with("prometheus.yml:"), "{e}");
    }

    #[test]
    fn empty_file_is_valid() {
        let c = p("# nothing\n").expect("valid");
        assert!(c.jobs.is_empty());
        let c = p("global:\nscrape_configs:\n").expect("valid");
        assert_eq!(c.scrape_interval, Duration::from_secs(60));
    }
}
