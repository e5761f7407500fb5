//! The plugin's configuration: Kong's `rate-limiting` schema (with the deprecated flat
//! `redis_*` shorthands) plus this gateway's extensions (tiers, Redis Cluster nodes),
//! checked once at load with the failing field's path.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::window::{Limit, Window};
use crate::plugins::SpecError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub second: Option<f64>,
    pub minute: Option<f64>,
    pub hour: Option<f64>,
    pub day: Option<f64>,
    pub month: Option<f64>,
    pub year: Option<f64>,
    #[serde(default)]
    pub limit_by: LimitBy,
    pub header_name: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default = "yes")]
    pub fault_tolerant: bool,
    #[serde(default)]
    pub hide_client_headers: bool,
    #[serde(default = "default_error_code")]
    pub error_code: u16,
    #[serde(default = "default_error_message")]
    pub error_message: String,
    /// Kong: -1 is synchronous; a positive value batches counters (redis only). This
    /// gateway always decides synchronously and atomically.
    pub sync_rate: Option<f64>,
    pub redis: Option<RedisConfig>,
    // Deprecated flat shorthands of `redis.*` (Kong 3.x accepts both).
    pub redis_host: Option<String>,
    pub redis_port: Option<u16>,
    pub redis_username: Option<String>,
    pub redis_password: Option<String>,
    pub redis_database: Option<i64>,
    pub redis_ssl: Option<bool>,
    pub redis_ssl_verify: Option<bool>,
    pub redis_server_name: Option<String>,
    pub redis_timeout: Option<u64>,
    // Extensions: tiers.
    /// Limits per tier name; replaces the top-level limits.
    pub tiers: Option<BTreeMap<String, Limits>>,
    /// The tier used when none is found (unknown claim value, no claim, no group).
    pub default_tier: Option<String>,
    /// JWT claim naming the tier (e.g. `tier`).
    pub tier_claim: Option<String>,
    /// JWT claim whose value is the counter's identifier (e.g. `sub`).
    pub limit_key_claim: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_error_code() -> u16 {
    429
}
fn default_error_message() -> String {
    "API rate limit exceeded".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    #[default]
    Consumer,
    Credential,
    Ip,
    Service,
    Header,
    Path,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Local,
    Redis,
    /// Kong's database policy: rejected at load (no database here).
    Cluster,
}

/// Limits of one tier.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub second: Option<f64>,
    pub minute: Option<f64>,
    pub hour: Option<f64>,
    pub day: Option<f64>,
    pub month: Option<f64>,
    pub year: Option<f64>,
}

impl Limits {
    fn get(&self, w: Window) -> Option<f64> {
        match w {
            Window::Second => self.second,
            Window::Minute => self.minute,
            Window::Hour => self.hour,
            Window::Day => self.day,
            Window::Month => self.month,
            Window::Year => self.year,
        }
    }

    /// Checks Kong's rules and returns the limits, shortest window first. A fractional
    /// limit admits as many requests as Kong's `remaining > 0` test does (its ceiling).
    pub fn checked(&self, path: &str) -> Result<Vec<Limit>, SpecError> {
        let at = |f: &str| {
            if path.is_empty() {
                f.to_string()
            } else {
                format!("{path}.{f}")
            }
        };
        let mut out: Vec<(Window, f64)> = Vec::new();
        for w in Window::ALL {
            if let Some(v) = self.get(w) {
                if !(v.is_finite() && v > 0.0) {
                    return Err(SpecError::at(at(w.name()), "value must be greater than 0"));
                }
                if let Some((pw, pv)) = out.iter().find(|(_, pv)| *pv > v) {
                    return Err(SpecError::at(
                        at(w.name()),
                        format!(
                            "The limit for {}({v:.1}) cannot be lower than the limit for {}({pv:.1})",
                            w.name(),
                            pw.name()
                        ),
                    ));
                }
                out.push((w, v));
            }
        }
        if out.is_empty() {
            return Err(SpecError::at(
                path,
                "at least one of these fields must be non-empty: 'second', 'minute', 'hour', 'day', 'month', 'year'",
            ));
        }
        Ok(out
            .into_iter()
            .map(|(window, v)| Limit {
                window,
                limit: v.ceil() as u64,
            })
            .collect())
    }
}

// dup: the shape of every plugin file (its own Config, checks and hook types).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: Option<i64>,
    pub ssl: Option<bool>,
    pub ssl_verify: Option<bool>,
    pub server_name: Option<String>,
    pub timeout: Option<u64>,
    pub connect_timeout: Option<u64>,
    pub send_timeout: Option<u64>,
    pub read_timeout: Option<u64>,
    /// Accepted for Kong compatibility; connections here are multiplexed.
    pub keepalive_pool_size: Option<u64>,
    pub keepalive_backlog: Option<u64>,
    /// Extension: Redis Cluster seed nodes (`host:port` or Kong Enterprise's `{ip, port}`).
    pub cluster_nodes: Option<Vec<ClusterNode>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClusterNode {
    Addr(String),
    Entry {
        #[serde(alias = "host")]
        ip: String,
        #[serde(default = "default_redis_port")]
        port: u16,
    },
}

fn default_redis_port() -> u16 {
    6379
}

/// Where and how to reach Redis, resolved from `redis.*` and the flat shorthands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisTarget {
    pub nodes: Vec<(String, u16)>,
    pub cluster: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: i64,
    pub ssl: bool,
    pub ssl_verify: bool,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

/// A checked configuration: limits (or tiers) and the resolved Redis target.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Limits when no tiers are configured.
    pub limits: Vec<Limit>,
    /// Tier name -> limits.
    pub tiers: BTreeMap<String, Vec<Limit>>,
    pub default_tier: Option<String>,
    pub redis: Option<RedisTarget>,
}

impl Config {
    /// Every semantic check, with the field path of the first problem.
    pub fn check(&self) -> Result<Checked, SpecError> {
        let top = Limits {
            second: self.second,
            minute: self.minute,
            hour: self.hour,
            day: self.day,
            month: self.month,
            year: self.year,
        };
        let has_top = top != Limits::default();
        let mut tiers = BTreeMap::new();
        let mut limits = Vec::new();
        match &self.tiers {
            Some(t) => {
                if has_top {
                    return Err(SpecError::at(
                        "tiers",
                        "set limits either at the top level or per tier, not both",
                    ));
                }
                if t.is_empty() {
                    return Err(SpecError::at("tiers", "at least one tier is required"));
                }
                for (name, l) in t {
                    tiers.insert(name.clone(), l.checked(&format!("tiers.{name}"))?);
                }
                match &self.default_tier {
                    None => {
                        return Err(SpecError::at(
                            "default_tier",
                            "required when tiers are configured",
                        ));
                    }
                    Some(d) if !t.contains_key(d) => {
                        return Err(SpecError::at(
                            "default_tier",
                            format!("`{d}` is not one of the configured tiers"),
                        ));
                    }
                    Some(_) => {}
                }
            }
            None => {
                limits = top.checked("")?;
                for (f, set) in [
                    ("default_tier", self.default_tier.is_some()),
                    ("tier_claim", self.tier_claim.is_some()),
                ] {
                    if set {
                        return Err(SpecError::at(f, "only meaningful with `tiers`"));
                    }
                }
            }
        }
        match self.limit_by {
            LimitBy::Header if self.header_name.as_deref().is_none_or(str::is_empty) => {
                return Err(SpecError::at(
                    "header_name",
                    "required field missing (limit_by is `header`)",
                ));
            }
            LimitBy::Header => {
                let h = self.header_name.as_deref().unwrap_or_default();
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(SpecError::at("header_name", "not a valid header name"));
                }
            }
            LimitBy::Path if self.path.as_deref().is_none_or(str::is_empty) => {
                return Err(SpecError::at(
                    "path",
                    "required field missing (limit_by is `path`)",
                ));
            }
            _ => {}
        }
        if !(100..=599).contains(&self.error_code) {
            return Err(SpecError::at(
                "error_code",
                "value should be between 100 and 599",
            ));
        }
        if let Some(s) = self.sync_rate
            && s != -1.0
        {
            if self.policy != Policy::Redis {
                return Err(SpecError::at(
                    "sync_rate",
                    "a sync_rate other than -1 requires the redis policy",
                ));
            }
            if s < 0.02 {
                return Err(SpecError::at(
                    "sync_rate",
                    "value must be -1 or at least 0.02",
                ));
            }
        }
        let redis = match self.policy {
            Policy::Local => None,
            Policy::Cluster => {
                return Err(SpecError::at(
                    "policy",
                    "the `cluster` policy needs Kong's database; use `local` or `redis`",
                ));
            }
            Policy::Redis => Some(self.redis_target()?),
        };
        Ok(Checked {
            limits,
            tiers,
            default_tier: self.default_tier.clone(),
            redis,
        })
    }

    // dup: both rate-limiting configs have Kong's flat redis_* fields; each maps its own.
    fn redis_target(&self) -> Result<RedisTarget, SpecError> {
        let flat = RedisConfig {
            host: self.redis_host.clone(),
            port: self.redis_port,
            username: self.redis_username.clone(),
            password: self.redis_password.clone(),
            database: self.redis_database,
            ssl: self.redis_ssl,
            ssl_verify: self.redis_ssl_verify,
            server_name: self.redis_server_name.clone(),
            timeout: self.redis_timeout,
            ..RedisConfig::default()
        };
        resolve_redis(self.redis.clone().unwrap_or_default(), &flat)
    }
}

/// The Redis target from a `redis` record and the deprecated flat `redis_*` shorthands
/// (given as a record, `flat`; the record wins). Shared by rate-limiting and
/// response-ratelimiting, whose Kong schemas have the same Redis fields.
pub fn resolve_redis(r: RedisConfig, flat: &RedisConfig) -> Result<RedisTarget, SpecError> {
    let host = r.host.clone().or_else(|| flat.host.clone());
    let port = r.port.or(flat.port).unwrap_or(6379);
    let mut nodes = Vec::new();
    let cluster = r.cluster_nodes.as_ref().is_some_and(|n| !n.is_empty());
    if cluster {
        for (i, n) in r.cluster_nodes.iter().flatten().enumerate() {
            let node = match n {
                ClusterNode::Addr(a) => match a.rsplit_once(':') {
                    Some((h, p)) if !h.is_empty() => match p.parse::<u16>() {
                        Ok(p) => (h.trim_matches(['[', ']']).to_string(), p),
                        Err(_) => {
                            return Err(SpecError::at(
                                format!("redis.cluster_nodes[{i}]"),
                                "expected host:port",
                            ));
                        }
                    },
                    _ => (a.clone(), 6379),
                },
                ClusterNode::Entry { ip, port } => (ip.clone(), *port),
            };
            if node.0.is_empty() {
                return Err(SpecError::at(
                    format!("redis.cluster_nodes[{i}]"),
                    "empty host",
                ));
            }
            nodes.push(node);
        }
    } else {
        match host.filter(|h| !h.is_empty()) {
            Some(h) => nodes.push((h, port)),
            None => {
                return Err(SpecError::at(
                    "redis.host",
                    "required field missing (policy is `redis`; set redis.host or redis.cluster_nodes)",
                ));
            }
        }
    }
    let database = r.database.or(flat.database).unwrap_or(0);
    if database < 0 {
        return Err(SpecError::at("redis.database", "must be 0 or more"));
    }
    if cluster && database != 0 {
        return Err(SpecError::at(
            "redis.database",
            "Redis Cluster has only database 0",
        ));
    }
    let timeout_ms = r
        .read_timeout
        .or(r.timeout)
        .or(flat.timeout)
        .unwrap_or(2000);
    if timeout_ms == 0 {
        return Err(SpecError::at("redis.timeout", "must be greater than 0"));
    }
    Ok(RedisTarget {
        nodes,
        cluster,
        username: r.username.or_else(|| flat.username.clone()),
        password: r.password.or_else(|| flat.password.clone()),
        database,
        ssl: r.ssl.or(flat.ssl).unwrap_or(false),
        // Verified unless the file says `ssl_verify: false` (Kong's default is off: a
        // man in the middle could then count for us).
        ssl_verify: r.ssl_verify.or(flat.ssl_verify).unwrap_or(true),
        timeout_ms,
        connect_timeout_ms: r.connect_timeout.unwrap_or(timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::parse_config;

    fn parse(y: &str) -> Result<Checked, SpecError> {
        let v: serde_norway::Value =
            serde_norway::from_str(y).map_err(|e| SpecError::at("", e.to_string()))?;
        parse_config::<Config>(&v)?.check()
    }

    fn err_path(y: &str) -> String {
        crate::plugins::test_config::err_path(parse(y))
    }

    #[test]
    fn kong_fields_and_defaults() {
        let c = parse("minute: 5\nhour: 100\nlimit_by: ip\npolicy: local\nsync_rate: -1")
            .map_err(|e| e.to_string());
        let c = c.as_ref().map(|c| c.limits.clone());
        assert_eq!(
            c,
            Ok(vec![
                Limit {
                    window: Window::Minute,
                    limit: 5
                },
                Limit {
                    window: Window::Hour,
                    limit: 100
                }
            ])
        );
    }

    // dup: typed structs of the original schema: alike in shape, each its own fields.
    #[test]
    fn rejects_bad_configs_with_paths() {
        assert_eq!(err_path("limit_by: ip"), "");
        assert_eq!(err_path("minute: 10\nhour: 5"), "hour");
        assert_eq!(err_path("minute: 0"), "minute");
        assert_eq!(err_path("minute: 1\nlimit_by: header"), "header_name");
        assert_eq!(err_path("minute: 1\nlimit_by: path"), "path");
        assert_eq!(err_path("minute: 1\npolicy: cluster"), "policy");
        assert_eq!(err_path("minute: 1\npolicy: redis"), "redis.host");
        assert_eq!(err_path("minute: 1\nbogus: 1"), "bogus");
        assert_eq!(err_path("minute: 1\nsync_rate: 1"), "sync_rate");
        assert_eq!(
            err_path("tiers: {free: {minute: 1}}\ndefault_tier: gold"),
            "default_tier"
        );
        assert_eq!(
            err_path("tiers: {free: {minute: 10, hour: 1}}\ndefault_tier: free"),
            "tiers.free.hour"
        );
        assert_eq!(
            err_path("minute: 1\ntiers: {free: {minute: 1}}\ndefault_tier: free"),
            "tiers"
        );
        assert_eq!(
            err_path("minute: 1\npolicy: redis\nredis: {cluster_nodes: ['a:1'], database: 2}"),
            "redis.database"
        );
    }

    #[test]
    fn redis_shorthands_and_cluster_nodes() {
        let c = parse("minute: 1\npolicy: redis\nredis_host: r1\nredis_port: 6380\nredis_password: p\nredis_timeout: 50")
            .ok()
            .and_then(|c| c.redis);
        let r = c.as_ref();
        assert_eq!(
            r.map(|r| r.nodes.clone()),
            Some(vec![("r1".to_string(), 6380)])
        );
        assert_eq!(r.map(|r| r.timeout_ms), Some(50));
        assert_eq!(r.and_then(|r| r.password.clone()).as_deref(), Some("p"));
        let c = parse("minute: 1\npolicy: redis\nredis: {cluster_nodes: ['10.0.0.1:7000', {ip: 10.0.0.2, port: 7001}], ssl: true}")
            .ok()
            .and_then(|c| c.redis);
        let r = c.as_ref();
        assert_eq!(r.map(|r| r.cluster), Some(true));
        assert_eq!(
            r.map(|r| r.nodes.clone()),
            Some(vec![
                ("10.0.0.1".to_string(), 7000),
                ("10.0.0.2".to_string(), 7001)
            ])
        );
        assert_eq!(r.map(|r| r.ssl), Some(true));
    }

    #[test]
    fn tiers_config() {
        let c = parse(
            "tiers: {free: {minute: 100}, pro: {minute: 1000}, enterprise: {minute: 5000}}\ndefault_tier: free\ntier_claim: tier\nlimit_key_claim: sub",
        );
        let c = c.map_err(|e| e.to_string());
        assert_eq!(c.as_ref().map(|c| c.tiers.len()), Ok(3));
        assert_eq!(
            c.as_ref().ok().and_then(|c| c.tiers.get("pro").cloned()),
            Some(vec![Limit {
                window: Window::Minute,
                limit: 1000
            }])
        );
    }
}
