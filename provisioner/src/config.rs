//! Environment files (`provisioner/envs/<env>.toml`): typed, strict, validated.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        #[source]
        source: Invalid,
    },
}

/// A value of the env file that is out of range or inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Value(String),
    #[error("'{cidr}': {problem}")]
    Cidr { cidr: String, problem: &'static str },
    #[error("subnet index {0} out of range")]
    SubnetIndex(u32),
    #[error(
        "{field}: image '{image}' is mutable (no tag or `:latest`); pin it to a version tag or an @sha256 digest"
    )]
    MutableImage { field: String, image: String },
}

impl From<String> for Invalid {
    fn from(msg: String) -> Invalid {
        Invalid::Value(msg)
    }
}

impl From<&str> for Invalid {
    fn from(msg: &str) -> Invalid {
        Invalid::Value(msg.to_string())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Environment name, used in tags (`env`) and names.
    pub name: String,
    /// Project name, used in tags (`project`) and names.
    pub project: String,
    /// Directory with `grafana/*.json` and `prometheus/*.yml`, relative to
    /// the env file.
    #[serde(default = "default_dashboards_dir")]
    pub dashboards_dir: PathBuf,
    /// A throw-away environment (staging, dev): `down` may lift RDS deletion
    /// protection and delete secrets without a recovery window, and images
    /// may be mutable tags. Off by default: every other environment is
    /// treated as production (see [`EnvConfig::validate`]).
    #[serde(default)]
    pub disposable: bool,
    pub network: Network,
    pub database: Database,
    pub redis: Redis,
    pub service: Service,
    pub dns: Dns,
    pub alarms: Alarms,
    /// The WAFv2 web ACL in front of the ALB (defaults when absent).
    #[serde(default)]
    pub waf: Waf,
    #[serde(default)]
    pub grafana: Option<Grafana>,
    /// The environment's own Grafana (an ECS service behind the ALB).
    #[serde(default)]
    pub grafana_service: GrafanaService,
    pub gateway: GatewayEnv,
}

fn default_dashboards_dir() -> PathBuf {
    PathBuf::from("../../dashboards")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// VPC CIDR, /16 to /24 (subnets are carved as 16 equal blocks).
    pub cidr: String,
    /// Availability zones to spread subnets over (2 or 3).
    pub az_count: usize,
    /// NAT gateways: 1 (shared) or one per AZ.
    pub nat_gateways: usize,
    pub flow_log_retention_days: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub instance_class: String,
    pub engine_version: String,
    pub allocated_storage_gb: i32,
    pub multi_az: bool,
    pub backup_retention_days: i32,
    pub deletion_protection: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub node_type: String,
    pub shards: i32,
    pub replicas_per_shard: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Fargate task CPU units and memory (MiB).
    pub cpu: u32,
    pub memory: u32,
    pub desired_count: i32,
    pub min_count: i32,
    pub max_count: i32,
    pub cpu_target_percent: f64,
    /// Image the first `up` deploys; later images come from `deploy`.
    pub gateway_image: String,
    pub metrics_agent_image: String,
    pub gateway_workers: u32,
    /// Seconds ECS waits after SIGTERM (connection draining).
    pub stop_timeout_seconds: i32,
    pub log_retention_days: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    pub domain: String,
    /// Use an existing ACM certificate; without it one is requested for
    /// `domain` (DNS validation).
    #[serde(default)]
    pub certificate_arn: Option<String>,
    /// A Route 53 hosted zone holding `domain` (e.g. `staging.example.com`):
    /// the provisioner then writes the ALB's alias record and the
    /// certificate's DNS validation record into it.
    #[serde(default)]
    pub hosted_zone: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alarms {
    /// ALB 5xx responses per minute that trigger the alarm (and a rollback).
    pub http_5xx_per_minute: f64,
    pub cpu_high_percent: f64,
    pub evaluation_periods: i32,
    /// Name of the Secrets Manager secret holding the PagerDuty integration
    /// URL the SNS topic delivers to (created outside the provisioner).
    pub pagerduty_key_secret: String,
    /// ALB p99 target response time (seconds) above which the latency alarm fires.
    #[serde(default = "default_latency_p99_seconds")]
    pub latency_p99_seconds: f64,
    /// ECS service memory utilisation (percent) above which its alarm fires.
    #[serde(default = "default_high_percent")]
    pub memory_high_percent: f64,
    /// RDS free storage (GiB) below which its alarm fires.
    #[serde(default = "default_db_free_storage_gb")]
    pub db_free_storage_gb: f64,
    /// ElastiCache engine CPU (percent, per node) above which its alarm fires.
    #[serde(default = "default_redis_cpu_percent")]
    pub redis_cpu_high_percent: f64,
    /// ElastiCache used memory (percent of maxmemory, per node) above which its
    /// alarm fires.
    #[serde(default = "default_high_percent")]
    pub redis_memory_high_percent: f64,
}

fn default_latency_p99_seconds() -> f64 {
    1.0
}

fn default_high_percent() -> f64 {
    85.0
}

fn default_db_free_storage_gb() -> f64 {
    5.0
}

fn default_redis_cpu_percent() -> f64 {
    80.0
}

/// The WAFv2 web ACL: AWS's managed common rule set plus a per-client-IP
/// rate-based rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waf {
    /// Requests one client IP may send in any 5-minute window before the
    /// rate-based rule blocks it (WAF's range: 10..=2000000000).
    #[serde(default = "default_waf_rate_limit")]
    pub rate_limit_per_5min: i64,
}

impl Default for Waf {
    fn default() -> Waf {
        Waf {
            rate_limit_per_5min: default_waf_rate_limit(),
        }
    }
}

fn default_waf_rate_limit() -> i64 {
    2000
}

// dup: typed structs of the original schema: alike in shape, each its own fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grafana {
    /// Base URL; the `GRAFANA_URL` environment variable overrides it.
    pub url: String,
    /// Environment variable holding the API key (service account token).
    #[serde(default = "default_grafana_key_env")]
    pub api_key_env: String,
    #[serde(default)]
    pub folder_uid: Option<String>,
}

/// The environment's own Grafana: the official image as an ECS service
/// behind the ALB, with the AMP data source and every dashboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaService {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A host of its own (ALB host-header rule), e.g. `grafana.example.com`;
    /// the HTTPS listener's certificate must cover it. Without it Grafana is
    /// served under `https://<dns.domain>/grafana/`.
    #[serde(default)]
    pub host: Option<String>,
    /// Fargate task CPU units and memory (MiB).
    #[serde(default = "default_grafana_cpu")]
    pub cpu: u32,
    #[serde(default = "default_grafana_memory")]
    pub memory: u32,
}

impl Default for GrafanaService {
    fn default() -> GrafanaService {
        GrafanaService {
            enabled: true,
            host: None,
            cpu: default_grafana_cpu(),
            memory: default_grafana_memory(),
        }
    }
}

impl GrafanaService {
    /// The external URL of the provisioned Grafana (no trailing slash).
    pub fn url(&self, domain: &str) -> String {
        match &self.host {
            Some(h) => format!("https://{h}"),
            None => format!("https://{domain}{}", crate::consts::GRAFANA_PATH),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_grafana_cpu() -> u32 {
    512
}

fn default_grafana_memory() -> u32 {
    1024
}

/// What the gateway of this environment serves: its declarative configuration
/// (a Kong 3.x file in the repository, rendered by `gateway_config`) and the
/// upstream services it fronts (the task's egress is opened to exactly these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayEnv {
    /// The kong.yml template, relative to the env file (default
    /// `<name>/kong.yml`).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Origins of the environment's frontend (`{{ frontend_origins }}`, CORS).
    #[serde(default)]
    pub frontend_origins: Vec<String>,
    /// The services the gateway fronts.
    #[serde(default)]
    pub upstreams: Vec<UpstreamEnv>,
}

/// One service the gateway fronts: a URL, or a Cloud Map (service discovery)
/// name with its port. `{{ upstream.<name>.host|port|target|url }}` in the
/// kong.yml template render its parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamEnv {
    pub name: String,
    /// `http(s)://host[:port][/path]`.
    #[serde(default)]
    pub url: Option<String>,
    /// `service.namespace:port` (Cloud Map / ECS service discovery).
    #[serde(default)]
    pub service: Option<String>,
    /// Where the service lives (the egress rule's peer). Default: the VPC for
    /// a Cloud Map name, anywhere (`0.0.0.0/0`) for a URL.
    #[serde(default)]
    pub cidr: Option<String>,
}

/// An upstream with its address resolved from the env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// The URL as written (`scheme://host:port` for a Cloud Map name).
    pub url: String,
    pub cidr: String,
}

impl Upstream {
    /// `host:port`, as a Kong target.
    pub fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

fn host_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl UpstreamEnv {
    /// The upstream's scheme, host, port and egress peer; `vpc_cidr` is the
    /// default peer of a Cloud Map name.
    pub fn resolve(&self, vpc_cidr: &str) -> Result<Upstream, Invalid> {
        let bad = |what: &str| Invalid::Value(format!("gateway.upstreams '{}': {what}", self.name));
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !name_ok {
            return Err(bad("name must be lower-case letters, digits, '-' and '_'"));
        }
        let (scheme, host, port, url, default_cidr) = match (&self.url, &self.service) {
            (Some(u), None) => {
                let parsed = reqwest::Url::parse(u).map_err(|e| bad(&format!("url: {e}")))?;
                let scheme = parsed.scheme().to_string();
                if scheme != "http" && scheme != "https" {
                    return Err(bad("url must be http:// or https://"));
                }
                let host = parsed
                    .host_str()
                    .ok_or_else(|| bad("url has no host"))?
                    .to_string();
                let port = parsed
                    .port_or_known_default()
                    .ok_or_else(|| bad("url has no port"))?;
                (scheme, host, port, u.clone(), "0.0.0.0/0".to_string())
            }
            (None, Some(s)) => {
                let (host, port) = s
                    .rsplit_once(':')
                    .ok_or_else(|| bad("service must be `name.namespace:port`"))?;
                let port: u16 = port
                    .parse()
                    .map_err(|_| bad("service port must be a number in 1..=65535"))?;
                let url = format!("http://{host}:{port}");
                (
                    "http".to_string(),
                    host.to_string(),
                    port,
                    url,
                    vpc_cidr.to_string(),
                )
            }
            _ => return Err(bad("give exactly one of `url` and `service`")),
        };
        if !host_ok(&host) {
            return Err(bad(&format!("'{host}' is not a DNS name")));
        }
        if port == 0 {
            return Err(bad("port 0"));
        }
        let cidr = self.cidr.clone().unwrap_or(default_cidr);
        parse_cidr(&cidr)?;
        Ok(Upstream {
            name: self.name.clone(),
            scheme,
            host,
            port,
            url,
            cidr,
        })
    }
}

fn default_grafana_key_env() -> String {
    "GRAFANA_API_KEY".to_string()
}

/// A loaded env file plus where it came from.
#[derive(Debug, Clone)]
pub struct Env {
    pub cfg: EnvConfig,
    pub path: PathBuf,
}

impl Env {
    /// Resolves `<env>` to a file: an existing path is used as is, otherwise
    /// `<envs_dir>/<env>.toml`.
    pub fn resolve(env: &str, envs_dir: &Path) -> PathBuf {
        let p = Path::new(env);
        if env.ends_with(".toml") && p.exists() {
            p.to_path_buf()
        } else {
            envs_dir.join(format!("{env}.toml"))
        }
    }

    pub fn load(path: &Path) -> Result<Env, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        let cfg: EnvConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: display.clone(),
            source,
        })?;
        cfg.validate().map_err(|source| ConfigError::Invalid {
            path: display,
            source,
        })?;
        Ok(Env {
            cfg,
            path: path.to_path_buf(),
        })
    }

    pub fn dashboards_dir(&self) -> PathBuf {
        let base = self.path.parent().unwrap_or(Path::new("."));
        base.join(&self.cfg.dashboards_dir)
    }

    /// The gateway's kong.yml template: `[gateway] config`, or
    /// `<name>/kong.yml`, next to the env file.
    pub fn gateway_config_path(&self) -> PathBuf {
        let base = self.path.parent().unwrap_or(Path::new("."));
        match &self.cfg.gateway.config {
            Some(p) => base.join(p),
            None => base.join(&self.cfg.name).join("kong.yml"),
        }
    }
}

impl EnvConfig {
    /// Prefix of every resource name: `<project>-<env>`.
    pub fn prefix(&self) -> String {
        format!("{}-{}", self.project, self.name)
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
        };
        if !name_ok(&self.name) || !name_ok(&self.project) {
            return Err("name and project must be lower-case letters, digits and '-'".into());
        }
        if self.prefix().len() > 24 {
            return Err(Invalid::Value(format!(
                "'{}' is too long: <project>-<env> must fit in 24 characters (ALB and target group names are limited to 32)",
                self.prefix()
            )));
        }
        let (_, prefix) = parse_cidr(&self.network.cidr)?;
        if !(16..=24).contains(&prefix) {
            return Err(Invalid::Value(format!(
                "network.cidr prefix /{prefix} must be between /16 and /24"
            )));
        }
        if !(2..=3).contains(&self.network.az_count) {
            return Err("network.az_count must be 2 or 3".into());
        }
        if self.network.nat_gateways != 1 && self.network.nat_gateways != self.network.az_count {
            return Err("network.nat_gateways must be 1 or equal to az_count".into());
        }
        let s = &self.service;
        if !(2..=10).contains(&s.min_count)
            || !(2..=10).contains(&s.max_count)
            || s.min_count > s.max_count
        {
            return Err("service.min_count/max_count must be within 2..=10 and min <= max".into());
        }
        if s.desired_count < s.min_count || s.desired_count > s.max_count {
            return Err("service.desired_count must be between min_count and max_count".into());
        }
        if !(1.0..=100.0).contains(&s.cpu_target_percent) {
            return Err("service.cpu_target_percent must be in 1..=100".into());
        }
        if s.stop_timeout_seconds < 2 || s.stop_timeout_seconds > 120 {
            return Err("service.stop_timeout_seconds must be in 2..=120 (Fargate limit)".into());
        }
        if self.database.backup_retention_days < 1 {
            return Err("database.backup_retention_days must be at least 1".into());
        }
        if self.redis.shards < 1 || self.redis.replicas_per_shard < 0 {
            return Err("redis.shards must be >= 1 and replicas_per_shard >= 0".into());
        }
        if self.alarms.evaluation_periods < 1 {
            return Err("alarms.evaluation_periods must be >= 1".into());
        }
        let a = &self.alarms;
        for (field, v) in [
            ("alarms.latency_p99_seconds", a.latency_p99_seconds),
            ("alarms.db_free_storage_gb", a.db_free_storage_gb),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Invalid::Value(format!("{field} must be above 0")));
            }
        }
        for (field, v) in [
            ("alarms.memory_high_percent", a.memory_high_percent),
            ("alarms.redis_cpu_high_percent", a.redis_cpu_high_percent),
            (
                "alarms.redis_memory_high_percent",
                a.redis_memory_high_percent,
            ),
        ] {
            if !(1.0..=100.0).contains(&v) {
                return Err(Invalid::Value(format!("{field} must be in 1..=100")));
            }
        }
        if let Some(h) = &self.grafana_service.host
            && !host_ok(h)
        {
            return Err(Invalid::Value(format!(
                "grafana_service.host '{h}' is not a DNS name"
            )));
        }
        if !(10..=2_000_000_000).contains(&self.waf.rate_limit_per_5min) {
            return Err("waf.rate_limit_per_5min must be in 10..=2000000000 (WAF's range)".into());
        }
        if self.dns.domain.is_empty() {
            return Err("dns.domain must not be empty".into());
        }
        if let Some(zone) = &self.dns.hosted_zone {
            let z = zone.trim_end_matches('.').to_ascii_lowercase();
            let d = self.dns.domain.trim_end_matches('.').to_ascii_lowercase();
            if !host_ok(&z) || !(d == z || d.ends_with(&format!(".{z}"))) {
                return Err(Invalid::Value(format!(
                    "dns.hosted_zone '{zone}' must be a DNS name that holds dns.domain '{}'",
                    self.dns.domain
                )));
            }
        }
        self.upstreams()?;
        for o in &self.gateway.frontend_origins {
            let u = reqwest::Url::parse(o)
                .map_err(|e| Invalid::Value(format!("gateway.frontend_origins '{o}': {e}")))?;
            if !matches!(u.scheme(), "http" | "https") || u.path() != "/" || o.ends_with('/') {
                return Err(Invalid::Value(format!(
                    "gateway.frontend_origins '{o}': an origin is `scheme://host[:port]`"
                )));
            }
        }
        if self.disposable && self.name.contains("prod") {
            return Err(Invalid::Value(format!(
                "'{}' looks like production: it cannot be `disposable` (fast teardown)",
                self.name
            )));
        }
        if !self.disposable {
            for (field, image) in [
                ("service.gateway_image", &s.gateway_image),
                ("service.metrics_agent_image", &s.metrics_agent_image),
            ] {
                check_pinned_image(field, image)?;
            }
        }
        Ok(())
    }

    /// The upstreams of `[gateway]`, resolved; names are unique.
    pub fn upstreams(&self) -> Result<Vec<Upstream>, Invalid> {
        let mut out: Vec<Upstream> = Vec::new();
        for u in &self.gateway.upstreams {
            let r = u.resolve(&self.network.cidr)?;
            if out.iter().any(|o| o.name == r.name) {
                return Err(Invalid::Value(format!(
                    "gateway.upstreams: '{}' is named twice",
                    r.name
                )));
            }
            out.push(r);
        }
        Ok(out)
    }

    /// The image `deploy --image` may roll out: pinned unless disposable.
    pub fn check_deploy_image(&self, image: &str) -> Result<(), Invalid> {
        if self.disposable {
            return Ok(());
        }
        check_pinned_image(&self.name, image)
    }

    /// CIDR of subnet block `index` (16 equal blocks of the VPC range).
    pub fn subnet_cidr(&self, index: u32) -> Result<String, Invalid> {
        let (base, prefix) = parse_cidr(&self.network.cidr)?;
        let sub_prefix = prefix + 4;
        let size = 1u32 << (32 - sub_prefix);
        if index >= 16 {
            return Err(Invalid::SubnetIndex(index));
        }
        let addr = Ipv4Addr::from(u32::from(base) + index * size);
        Ok(format!("{addr}/{sub_prefix}"))
    }
}

/// Refuses image references that can change under the same name: no tag
/// (an implicit `:latest`) or `:latest` itself. A version tag or a digest
/// (`@sha256:...`) pins what runs. Non-disposable environments require it
/// (env file and `deploy --image`).
/// `field` names where the image came from, for the error.
pub fn check_pinned_image(field: &str, image: &str) -> Result<(), Invalid> {
    if image.contains("@sha256:") {
        return Ok(());
    }
    // The tag follows the last ':' after the last '/' (a registry port such
    // as `host:5000/x` is not a tag).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() && tag != "latest" => Ok(()),
        _ => Err(Invalid::MutableImage {
            field: field.to_string(),
            image: image.to_string(),
        }),
    }
}

/// Parses `a.b.c.d/n`, requiring the address to be the network address.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u32), Invalid> {
    let bad = |problem| Invalid::Cidr {
        cidr: s.to_string(),
        problem,
    };
    let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("not a CIDR block"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad("bad IPv4 address"))?;
    let prefix: u32 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
    if prefix > 32 {
        return Err(bad("prefix length above 32"));
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    if u32::from(addr) & !mask != 0 {
        return Err(bad("host bits set"));
    }
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("envs")
    }

    #[test]
    fn shipped_env_files_load_and_follow_the_seeds() {
        let st = Env::load(&envs_dir().join("staging.toml")).expect("staging");
        assert_eq!(st.cfg.network.az_count, 2);
        assert_eq!(st.cfg.service.min_count, 2);
        assert_eq!(st.cfg.service.max_count, 10);
        assert!(!st.cfg.database.deletion_protection);
        let pr = Env::load(&envs_dir().join("production.toml")).expect("production");
        assert_eq!(pr.cfg.network.az_count, 3);
        assert_eq!(pr.cfg.network.nat_gateways, 3);
        assert!(pr.cfg.database.multi_az && pr.cfg.database.deletion_protection);
        assert!(pr.cfg.redis.replicas_per_shard >= 1);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let dir = std::env::temp_dir().join(format!("prov-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let text = std::fs::read_to_string(envs_dir().join("staging.toml")).expect("read");
        let bad = text.replacen("[network]", "[network]\nbogus = 1", 1);
        let p = dir.join("bad.toml");
        std::fs::write(&p, bad).expect("write");
        let err = Env::load(&p).expect_err("must fail");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn validation_catches_bad_values() {
        let mut c = Env::load(&envs_dir().join("staging.toml"))
            .expect("staging")
            .cfg;
        c.service.max_count = 11;
        assert!(c.validate().is_err());
        c.service.max_count = 10;
        c.service.desired_count = 1;
        assert!(c.validate().is_err());
        c.service.desired_count = 2;
        c.network.az_count = 4;
        assert!(c.validate().is_err());
        c.network.az_count = 2;
        c.network.cidr = "10.0.0.1/16".into();
        assert!(c.validate().is_err());
        c.network.cidr = "10.0.0.0/16".into();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn production_like_envs_refuse_mutable_images() {
        let mut c = Env::load(&envs_dir().join("production.toml"))
            .expect("production")
            .cfg;
        assert!(!c.disposable);
        c.service.gateway_image = "public.ecr.aws/edge-suite/gateway:latest".into();
        let err = c.validate().expect_err(":latest refused").to_string();
        assert!(
            err.contains("service.gateway_image") && err.contains("pin"),
            "{err}"
        );
        c.service.gateway_image = "public.ecr.aws/edge-suite/gateway".into();
        assert!(c.validate().is_err(), "no tag means latest");
        c.service.gateway_image = "registry:5000/edge-suite/gateway".into();
        assert!(c.validate().is_err(), "a registry port is not a tag");
        c.service.gateway_image = "public.ecr.aws/edge-suite/gateway@sha256:abc".into();
        assert!(c.validate().is_ok());
        c.service.gateway_image = "registry:5000/edge-suite/gateway:1.2.3".into();
        assert!(c.validate().is_ok());
        // A disposable (staging/dev) environment may follow `:latest`.
        let st = Env::load(&envs_dir().join("staging.toml"))
            .expect("staging")
            .cfg;
        assert!(st.disposable);
        assert!(st.service.gateway_image.ends_with(":latest"));
        assert!(st.check_deploy_image("r/gateway:latest").is_ok());
        let pr = Env::load(&envs_dir().join("production.toml"))
            .expect("production")
            .cfg;
        let err = pr
            .check_deploy_image("r/gateway:latest")
            .expect_err("deploy of :latest refused")
            .to_string();
        assert!(
            err.starts_with("production: image 'r/gateway:latest' is mutable"),
            "{err}"
        );
        assert!(pr.check_deploy_image("r/gateway:4f2a9c1").is_ok());
    }

    #[test]
    fn production_cannot_be_disposable() {
        let mut c = Env::load(&envs_dir().join("production.toml"))
            .expect("production")
            .cfg;
        c.disposable = true;
        let err = c.validate().expect_err("refused").to_string();
        assert!(err.contains("production"), "{err}");
    }

    #[test]
    fn subnets_are_carved_in_sixteenths() {
        let mut c = Env::load(&envs_dir().join("staging.toml"))
            .expect("staging")
            .cfg;
        c.network.cidr = "10.20.0.0/16".into();
        assert_eq!(c.subnet_cidr(0).as_deref(), Ok("10.20.0.0/20"));
        assert_eq!(c.subnet_cidr(4).as_deref(), Ok("10.20.64.0/20"));
        assert_eq!(c.subnet_cidr(15).as_deref(), Ok("10.20.240.0/20"));
        assert!(c.subnet_cidr(16).is_err());
        assert!(parse_cidr("10.0.0.0").is_err());
        assert!(parse_cidr("10.0.0.0/33").is_err());
    }
}
