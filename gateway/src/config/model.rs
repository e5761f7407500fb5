//! Typed model of Kong's declarative configuration (`_format_version: "3.0"`).
//!
//! Every struct rejects unknown fields; the fields accepted are the ones Kong 3.9's
//! schema accepts for the entity, so an existing `kong.yml` parses unchanged.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value as Json;

/// Top level of a declarative file. Sections are kept as raw YAML values here and
/// deserialized item by item (see `config::load`) so that every bad item is reported,
/// not only the first one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocument {
    #[serde(rename = "_format_version")]
    pub format_version: Option<String>,
    #[serde(rename = "_transform", default)]
    pub transform: Option<bool>,
    #[serde(rename = "_comment", default)]
    pub comment: Option<String>,
    /// Kong's `_ignore`: anything, skipped.
    #[serde(rename = "_ignore", default)]
    pub ignore: Option<Vec<serde_norway::Value>>,
    #[serde(rename = "_workspace", default)]
    pub workspace: Option<String>,
    #[serde(rename = "_info", default)]
    pub info: Option<serde_norway::Value>,
    #[serde(default)]
    pub services: Vec<serde_norway::Value>,
    #[serde(default)]
    pub routes: Vec<serde_norway::Value>,
    #[serde(default)]
    pub consumers: Vec<serde_norway::Value>,
    #[serde(default)]
    pub consumer_groups: Vec<serde_norway::Value>,
    #[serde(default)]
    pub plugins: Vec<serde_norway::Value>,
    #[serde(default)]
    pub upstreams: Vec<serde_norway::Value>,
    #[serde(default)]
    pub targets: Vec<serde_norway::Value>,
    #[serde(default)]
    pub certificates: Vec<serde_norway::Value>,
    #[serde(default)]
    pub ca_certificates: Vec<serde_norway::Value>,
    #[serde(default)]
    pub snis: Vec<serde_norway::Value>,
    #[serde(default)]
    pub jwt_secrets: Vec<serde_norway::Value>,
    #[serde(default)]
    pub keyauth_credentials: Vec<serde_norway::Value>,
    #[serde(default)]
    pub basicauth_credentials: Vec<serde_norway::Value>,
    #[serde(default)]
    pub hmacauth_credentials: Vec<serde_norway::Value>,
    #[serde(default)]
    pub acls: Vec<serde_norway::Value>,
    #[serde(default)]
    pub vaults: Vec<serde_norway::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: Option<String>,
    pub id: Option<String>,
    pub url: Option<String>,
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_timeout_ms")]
    pub connect_timeout: u64,
    #[serde(default = "default_timeout_ms")]
    pub write_timeout: u64,
    #[serde(default = "default_timeout_ms")]
    pub read_timeout: u64,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    pub tls_verify: Option<bool>,
    pub tls_verify_depth: Option<u32>,
    pub client_certificate: Option<Json>,
    pub ca_certificates: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub routes: Vec<serde_norway::Value>,
    #[serde(default)]
    pub plugins: Vec<serde_norway::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Option<String>,
    pub id: Option<String>,
    /// Reference to the service, when the route is declared at top level.
    pub service: Option<EntityRef>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, OneOrMany>,
    #[serde(default = "default_protocols")]
    pub protocols: Vec<String>,
    #[serde(default = "default_true")]
    pub strip_path: bool,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub regex_priority: i64,
    #[serde(default = "default_path_handling")]
    pub path_handling: String,
    #[serde(default = "default_https_redirect")]
    pub https_redirect_status_code: u16,
    #[serde(default = "default_true")]
    pub request_buffering: bool,
    #[serde(default = "default_true")]
    pub response_buffering: bool,
    #[serde(default)]
    pub snis: Vec<String>,
    pub sources: Option<Json>,
    pub destinations: Option<Json>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub plugins: Vec<serde_norway::Value>,
}

/// A header value list in a route: Kong accepts a list; a single string is accepted too.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A foreign key: Kong accepts a bare name/id or `{name: ..}` / `{id: ..}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EntityRef {
    Key(String),
    Object(RefObject),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefObject {
    pub id: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
}

impl EntityRef {
    /// The name, username or id the reference uses.
    pub fn key(&self) -> Option<&str> {
        match self {
            EntityRef::Key(k) => Some(k),
            EntityRef::Object(o) => o
                .name
                .as_deref()
                .or(o.username.as_deref())
                .or(o.id.as_deref()),
        }
    }
}

// dup: typed structs of the original schema: alike in shape, each its own fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    pub id: Option<String>,
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    #[serde(default = "default_none")]
    pub hash_on: String,
    #[serde(default = "default_none")]
    pub hash_fallback: String,
    pub hash_on_header: Option<String>,
    pub hash_fallback_header: Option<String>,
    pub hash_on_cookie: Option<String>,
    #[serde(default = "default_cookie_path")]
    pub hash_on_cookie_path: String,
    pub hash_on_query_arg: Option<String>,
    pub hash_fallback_query_arg: Option<String>,
    pub hash_on_uri_capture: Option<String>,
    pub hash_fallback_uri_capture: Option<String>,
    #[serde(default = "default_slots")]
    pub slots: u32,
    pub host_header: Option<String>,
    pub client_certificate: Option<Json>,
    #[serde(default)]
    pub use_srv_name: bool,
    #[serde(default)]
    pub healthchecks: Healthchecks,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub targets: Vec<serde_norway::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub target: String,
    pub id: Option<String>,
    /// Reference to the upstream, when the target is declared at top level.
    pub upstream: Option<EntityRef>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: Option<f64>,
    pub updated_at: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthchecks {
    #[serde(default)]
    pub active: ActiveHealthcheck,
    #[serde(default)]
    pub passive: PassiveHealthcheck,
    #[serde(default)]
    pub threshold: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthcheck {
    #[serde(rename = "type", default = "default_hc_type")]
    pub kind: String,
    #[serde(default = "default_hc_timeout")]
    pub timeout: f64,
    #[serde(default = "default_hc_concurrency")]
    pub concurrency: u32,
    #[serde(default = "default_hc_path")]
    pub http_path: String,
    pub https_sni: Option<String>,
    #[serde(default = "default_true")]
    pub https_verify_certificate: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, OneOrMany>,
    #[serde(default = "active_healthy_default")]
    pub healthy: HealthyThresholds,
    #[serde(default = "active_unhealthy_default")]
    pub unhealthy: UnhealthyThresholds,
}

impl Default for ActiveHealthcheck {
    fn default() -> Self {
        ActiveHealthcheck {
            kind: default_hc_type(),
            timeout: default_hc_timeout(),
            concurrency: default_hc_concurrency(),
            http_path: default_hc_path(),
            https_sni: None,
            https_verify_certificate: true,
            headers: BTreeMap::new(),
            healthy: active_healthy_default(),
            unhealthy: active_unhealthy_default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthcheck {
    #[serde(rename = "type", default = "default_hc_type")]
    pub kind: String,
    #[serde(default = "passive_healthy_default")]
    pub healthy: HealthyThresholds,
    #[serde(default = "passive_unhealthy_default")]
    pub unhealthy: UnhealthyThresholds,
}

impl Default for PassiveHealthcheck {
    fn default() -> Self {
        PassiveHealthcheck {
            kind: default_hc_type(),
            healthy: passive_healthy_default(),
            unhealthy: passive_unhealthy_default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthyThresholds {
    #[serde(default)]
    pub interval: f64,
    /// None until defaults are filled in (they differ between active and passive checks).
    #[serde(default)]
    pub http_statuses: Option<Vec<u16>>,
    #[serde(default)]
    pub successes: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnhealthyThresholds {
    #[serde(default)]
    pub interval: f64,
    #[serde(default)]
    pub http_statuses: Option<Vec<u16>>,
    #[serde(default)]
    pub tcp_failures: u32,
    #[serde(default)]
    pub timeouts: u32,
    #[serde(default)]
    pub http_failures: u32,
}

fn active_healthy_default() -> HealthyThresholds {
    HealthyThresholds {
        interval: 0.0,
        http_statuses: Some(vec![200, 302]),
        successes: 0,
    }
}

fn active_unhealthy_default() -> UnhealthyThresholds {
    UnhealthyThresholds {
        interval: 0.0,
        http_statuses: Some(vec![429, 404, 500, 501, 502, 503, 504, 505]),
        tcp_failures: 0,
        timeouts: 0,
        http_failures: 0,
    }
}

fn passive_healthy_default() -> HealthyThresholds {
    HealthyThresholds {
        interval: 0.0,
        http_statuses: Some(vec![
            200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306,
            307, 308,
        ]),
        successes: 0,
    }
}

fn passive_unhealthy_default() -> UnhealthyThresholds {
    UnhealthyThresholds {
        interval: 0.0,
        http_statuses: Some(vec![429, 500, 503]),
        tcp_failures: 0,
        timeouts: 0,
        http_failures: 0,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub jwt_secrets: Vec<serde_norway::Value>,
    #[serde(default)]
    pub keyauth_credentials: Vec<serde_norway::Value>,
    #[serde(default)]
    pub basicauth_credentials: Vec<serde_norway::Value>,
    #[serde(default)]
    pub hmacauth_credentials: Vec<serde_norway::Value>,
    #[serde(default)]
    pub acls: Vec<serde_norway::Value>,
    #[serde(default)]
    pub plugins: Vec<serde_norway::Value>,
    /// Consumer-group membership (Kong's declarative shape lists group names).
    #[serde(default)]
    pub groups: Vec<EntityRef>,
}

// dup: typed structs of the original schema: alike in shape, each its own fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerGroup {
    pub name: String,
    pub id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub consumers: Vec<EntityRef>,
    #[serde(default)]
    pub plugins: Vec<serde_norway::Value>,
}

/// A plugin instance as written in the file; `config` is parsed by the plugin itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    pub name: String,
    pub id: Option<String>,
    pub instance_name: Option<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub config: serde_norway::Value,
    #[serde(default)]
    pub protocols: Vec<String>,
    pub service: Option<EntityRef>,
    pub route: Option<EntityRef>,
    pub consumer: Option<EntityRef>,
    pub consumer_group: Option<EntityRef>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub ordering: Option<Json>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub id: Option<String>,
    pub cert: String,
    pub key: String,
    pub cert_alt: Option<String>,
    pub key_alt: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub snis: Vec<serde_norway::Value>,
}

fn default_true() -> bool {
    true
}
fn default_retries() -> u32 {
    5
}
fn default_timeout_ms() -> u64 {
    60_000
}
fn default_protocols() -> Vec<String> {
    vec!["http".into(), "https".into()]
}
// dup: typed structs of the original schema: alike in shape, each its own fields.
fn default_path_handling() -> String {
    "v0".into()
}
fn default_https_redirect() -> u16 {
    426
}
fn default_algorithm() -> String {
    "round-robin".into()
}
fn default_none() -> String {
    "none".into()
}
fn default_cookie_path() -> String {
    "/".into()
}
fn default_slots() -> u32 {
    10_000
}
fn default_weight() -> u32 {
    100
}
fn default_hc_type() -> String {
    "http".into()
}
fn default_hc_timeout() -> f64 {
    1.0
}
fn default_hc_concurrency() -> u32 {
    10
}
fn default_hc_path() -> String {
    "/".into()
}

impl Healthchecks {
    /// Fills the status lists a file left out with Kong's defaults for each check kind.
    pub fn fill_defaults(&mut self) {
        let a = &mut self.active;
        if a.healthy.http_statuses.is_none() {
            a.healthy.http_statuses = active_healthy_default().http_statuses;
        }
        if a.unhealthy.http_statuses.is_none() {
            a.unhealthy.http_statuses = active_unhealthy_default().http_statuses;
        }
        let p = &mut self.passive;
        if p.healthy.http_statuses.is_none() {
            p.healthy.http_statuses = passive_healthy_default().http_statuses;
        }
        if p.unhealthy.http_statuses.is_none() {
            p.unhealthy.http_statuses = passive_unhealthy_default().http_statuses;
        }
    }
}

impl HealthyThresholds {
    pub fn statuses(&self) -> &[u16] {
        self.http_statuses.as_deref().unwrap_or(&[])
    }
}

impl UnhealthyThresholds {
    pub fn statuses(&self) -> &[u16] {
        self.http_statuses.as_deref().unwrap_or(&[])
    }
}
