//! Kong's `response-ratelimiting`: named limits counted by the upstream. The access
//! phase reads each limit's usage (nothing counted yet) and, with
//! `block_on_first_violation`, refuses a request when a limit has nothing left (429
//! "API rate limit exceeded for '<name>'"). The upstream's response says what to count
//! in `X-Kong-Limit: <name>=<n>, ...` (the header is removed); the response gets
//! `X-RateLimit-Limit-<name>-<period>` / `X-RateLimit-Remaining-<name>-<period>`, and a
//! response counting against a limit already used up becomes an empty 429. The counts
//! are added after the response (Kong's log phase).
//!
//! Counters live in rate-limiting's stores: the process-wide `LocalStore` (`local`) or a
//! shared `RedisStore` (`redis`; one key per name and period, all of a request's keys
//! under one hash tag).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;

use super::rate_limiting::window::{Limit, Window};
use super::rate_limiting::{Limits, LocalStore, RedisConfig, RedisStore, resolve_redis};
use super::{BuildContext, BuildError, Flow, Plugin, SpecError};
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;
use crate::core::{ResponseHeader, Session};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    #[default]
    Consumer,
    Credential,
    Ip,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Local,
    Redis,
    /// Kong's database policy: refused at load (no database here; Kong in DB-less mode
    /// refuses it too).
    Cluster,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_header")]
    pub header_name: String,
    #[serde(default)]
    pub limit_by: LimitBy,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default = "yes")]
    pub fault_tolerant: bool,
    pub redis: Option<RedisConfig>,
    #[serde(default)]
    pub block_on_first_violation: bool,
    #[serde(default)]
    pub hide_client_headers: bool,
    pub limits: BTreeMap<String, Limits>,
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
}

fn default_header() -> String {
    "x-kong-limit".into()
}

fn yes() -> bool {
    true
}

/// One named limit, checked: its windows, shortest first.
#[derive(Debug, Clone)]
struct Named {
    name: String,
    limits: Vec<Limit>,
}

impl Config {
    // dup: both rate-limiting configs have Kong's flat redis_* fields; each maps its own.
    fn checked(
        &self,
    ) -> Result<(Vec<Named>, Option<super::rate_limiting::RedisTarget>), SpecError> {
        if self.limits.is_empty() {
            return Err(SpecError::at("limits", "length must be at least 1"));
        }
        let mut named = Vec::new();
        for (name, l) in &self.limits {
            named.push(Named {
                name: name.clone(),
                limits: l.checked(&format!("limits.{name}"))?,
            });
        }
        if http::HeaderName::from_bytes(self.header_name.as_bytes()).is_err() {
            return Err(SpecError::at("header_name", "not a valid header name"));
        }
        let redis = match self.policy {
            Policy::Local => None,
            Policy::Cluster => {
                return Err(SpecError::at(
                    "policy",
                    "expected one of: local, redis (the `cluster` policy needs Kong's database)",
                ));
            }
            Policy::Redis => {
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
                Some(resolve_redis(
                    self.redis.clone().unwrap_or_default(),
                    &flat,
                )?)
            }
        };
        Ok((named, redis))
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        self.checked().map(|_| ())
    }
}

enum Backend {
    Local,
    Redis(Arc<RedisStore>),
}

pub struct ResponseRateLimiting {
    cfg: Config,
    named: Vec<Named>,
    header: http::HeaderName,
    /// `<route_id>:<service_id>` of the plugin's own scope (Kong's key prefix).
    scope_ids: String,
    backend: Backend,
}

/// What the access phase read, for the response and log phases.
#[derive(Clone)]
struct Usage {
    identifier: Arc<str>,
    now_ms: u64,
    /// Per named limit (in `named` order): current count per window.
    counts: Arc<Vec<Vec<u64>>>,
    /// Parsed from the upstream's header: (index into `named`, amount).
    increments: Vec<(usize, u64)>,
    /// The response was turned into a 429: nothing is counted.
    stopped: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Kong's `tonumber` on an increment: a number, else nothing. Counts here are whole:
/// a fraction is rounded down, a negative amount ignored.
fn parse_amount(s: &str) -> Option<u64> {
    let n: f64 = s.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| n.floor() as u64)
}

impl ResponseRateLimiting {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<ResponseRateLimiting, BuildError> {
        let (named, redis) = cfg.checked()?;
        let (route_id, service_id) = super::rate_limiting::scope_ids(ctx);
        let header = http::HeaderName::from_bytes(cfg.header_name.as_bytes())
            .map_err(|e| BuildError::Invalid(format!("header_name: {e}")))?;
        let backend = match &redis {
            Some(t) => Backend::Redis(RedisStore::shared(t)),
            None => Backend::Local,
        };
        Ok(ResponseRateLimiting {
            cfg,
            named,
            header,
            scope_ids: format!("{route_id}:{service_id}"),
            backend,
        })
    }

    /// Kong's `get_identifier`: the consumer (or its credential), the credential, else
    /// the client address.
    fn identifier(&self, st: &RequestState) -> String {
        let rt = st.rt.as_ref();
        let id = match self.cfg.limit_by {
            LimitBy::Consumer => st
                .consumer
                .and_then(|c| rt?.decl.consumers.get(c).map(|c| c.id.clone()))
                .or_else(|| st.credential.clone()),
            LimitBy::Credential => st.credential.clone(),
            LimitBy::Ip => None,
        };
        id.unwrap_or_else(|| st.client_addr.clone().unwrap_or_default())
    }

    /// The local store's key of one named limit (its windows are inside the entry).
    fn local_key(&self, identifier: &str, name: &str) -> String {
        format!("response-ratelimit:{}:{identifier}:{name}", self.scope_ids)
    }

    /// The Redis key of one named limit and window (Kong's layout, with the scope and
    /// identifier as a hash tag so a request's keys share a cluster slot).
    fn redis_key(&self, identifier: &str, name: &str, w: Window, now_ms: u64) -> String {
        format!(
            "response-ratelimit:{{{}:{identifier}}}:{}:{name}:{}",
            self.scope_ids,
            w.start_ms(now_ms),
            w.name()
        )
    }

    async fn read_usage(
        &self,
        identifier: &str,
        now: u64,
    ) -> Result<Vec<Vec<u64>>, super::rate_limiting::redis_store::StoreError> {
        match &self.backend {
            Backend::Local => Ok(self
                .named
                .iter()
                .map(|n| {
                    let windows: Vec<Window> = n.limits.iter().map(|l| l.window).collect();
                    LocalStore::global().counts(&self.local_key(identifier, &n.name), &windows, now)
                })
                .collect()),
            Backend::Redis(r) => {
                let keys: Vec<String> = self
                    .named
                    .iter()
                    .flat_map(|n| {
                        n.limits
                            .iter()
                            .map(|l| self.redis_key(identifier, &n.name, l.window, now))
                    })
                    .collect();
                let flat = r.counts(&keys).await?;
                let mut it = flat.into_iter();
                Ok(self
                    .named
                    .iter()
                    .map(|n| n.limits.iter().map(|_| it.next().unwrap_or(0)).collect())
                    .collect())
            }
        }
    }

    /// Counts a response's increments (Kong's log phase).
    fn count(&self, u: &Usage) {
        for &(i, amount) in &u.increments {
            if amount == 0 {
                continue;
            }
            let Some(n) = self.named.get(i) else { continue };
            match &self.backend {
                Backend::Local => {
                    let windows: Vec<Window> = n.limits.iter().map(|l| l.window).collect();
                    LocalStore::global().add(
                        &self.local_key(&u.identifier, &n.name),
                        &windows,
                        amount,
                        u.now_ms,
                    );
                }
                Backend::Redis(r) => {
                    let keys: Vec<(String, u64)> = n
                        .limits
                        .iter()
                        .map(|l| {
                            let ttl = l
                                .window
                                .end_ms(u.now_ms)
                                .saturating_sub(u.now_ms)
                                .div_ceil(1000)
                                + 1;
                            (
                                self.redis_key(&u.identifier, &n.name, l.window, u.now_ms),
                                ttl,
                            )
                        })
                        .collect();
                    let r = r.clone();
                    let fallback = self.cfg.fault_tolerant;
                    let local_key = self.local_key(&u.identifier, &n.name);
                    let windows: Vec<Window> = n.limits.iter().map(|l| l.window).collect();
                    let now = u.now_ms;
                    let Ok(handle) = tokio::runtime::Handle::try_current() else {
                        continue;
                    };
                    handle.spawn(async move {
                        if let Err(e) = r.add(&keys, amount).await {
                            tracing::debug!(error = %e, "response-ratelimiting: counting in redis failed");
                            if fallback {
                                LocalStore::global().add(&local_key, &windows, amount, now);
                            }
                        }
                    });
                }
            }
        }
    }
}

/// Kong's number formatting for header values (integers without a fraction).
fn num(n: i64) -> String {
    n.to_string()
}

#[async_trait]
impl Plugin for ResponseRateLimiting {
    fn name(&self) -> &'static str {
        "response-ratelimiting"
    }

    fn priority(&self) -> i32 {
        900
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let now = now_ms();
        let identifier = self.identifier(st);
        let counts = match self.read_usage(&identifier, now).await {
            Ok(c) => c,
            Err(e) if self.cfg.fault_tolerant => {
                tracing::debug!(error = %e, "response-ratelimiting: failed to get usage");
                return Ok(Flow::Continue);
            }
            Err(e) => {
                tracing::debug!(error = %e, "response-ratelimiting: failed to get usage (not fault tolerant)");
                let accept = session
                    .req_header()
                    .headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                return Ok(Flow::Respond(LocalResponse::error(
                    500,
                    "An unexpected error occurred",
                    &st.request_id,
                    accept,
                )));
            }
        };
        for (n, c) in self.named.iter().zip(&counts) {
            let mut least: Option<i64> = None;
            for (l, used) in n.limits.iter().zip(c) {
                let remaining = l.limit as i64 - *used as i64;
                if self.cfg.block_on_first_violation && remaining == 0 {
                    let accept = session
                        .req_header()
                        .headers
                        .get(http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok());
                    return Ok(Flow::Respond(LocalResponse::error(
                        429,
                        &format!("API rate limit exceeded for '{}'", n.name),
                        &st.request_id,
                        accept,
                    )));
                }
                least = Some(least.map_or(remaining, |m| m.min(remaining)));
            }
            if let Some(least) = least {
                let name = format!("x-ratelimit-remaining-{}", n.name);
                if let Ok(h) = http::HeaderName::from_bytes(name.as_bytes()) {
                    st.response_headers.push((h.clone(), num(least)));
                    st.upstream_headers.push((h, num(least)));
                }
            }
        }
        st.ext.insert(Usage {
            identifier: Arc::from(identifier.as_str()),
            now_ms: now,
            counts: Arc::new(counts),
            increments: Vec::new(),
            stopped: false,
        });
        Ok(Flow::Continue)
    }

    fn response_header(&self, resp: &mut ResponseHeader, st: &mut RequestState) {
        // Only the upstream's response says what to count.
        let increments: Vec<(usize, u64)> = if st.local_response {
            Vec::new()
        } else {
            let values: Vec<String> = resp
                .headers
                .get_all(&self.header)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            // One header is split on commas; several are taken one value each.
            let parts: Vec<&str> = match values.len() {
                1 => values[0].split(',').collect(),
                _ => values.iter().map(String::as_str).collect(),
            };
            let mut out: Vec<(usize, u64)> = Vec::new();
            for p in parts {
                let kv: Vec<&str> = p.split('=').collect();
                if kv.len() != 2 {
                    continue;
                }
                let name = kv[0].trim_matches(|c: char| c == ' ' || ('\t'..='\r').contains(&c));
                let Some(i) = self.named.iter().position(|n| n.name == name) else {
                    continue;
                };
                out.retain(|(j, _)| *j != i);
                if let Some(a) = parse_amount(kv[1]) {
                    out.push((i, a));
                }
            }
            out
        };
        let Some(mut u) = st.ext.get::<Usage>().cloned() else {
            return;
        };
        let mut stop = false;
        for (i, (n, counts)) in self.named.iter().zip(u.counts.iter()).enumerate() {
            let inc = increments
                .iter()
                .find(|(j, _)| *j == i)
                .map_or(0, |(_, a)| *a);
            for (l, used) in n.limits.iter().zip(counts) {
                let remaining = l.limit as i64 - *used as i64;
                if !self.cfg.hide_client_headers {
                    let limit_h = format!("x-ratelimit-limit-{}-{}", n.name, l.window.name());
                    let remain_h = format!("x-ratelimit-remaining-{}-{}", n.name, l.window.name());
                    let left = (remaining - inc as i64).max(0);
                    let _ = resp.insert_header(limit_h, num(l.limit as i64));
                    let _ = resp.insert_header(remain_h, num(left));
                }
                if inc > 0 && remaining <= 0 {
                    stop = true;
                }
            }
        }
        resp.headers.remove(&self.header);
        u.increments = increments;
        if stop {
            // Kong's `kong.response.exit(429)` from its header filter: no body.
            u.stopped = true;
            let _ = resp.set_status(429);
            resp.headers.remove(http::header::CONTENT_TYPE);
        }
        st.ext.insert(u);
    }

    /// A response turned into a 429 loses its body (the status is already 429 here:
    /// `response_header` runs first).
    fn buffers_response(&self, resp: &ResponseHeader) -> bool {
        resp.status == http::StatusCode::TOO_MANY_REQUESTS
    }

    fn response_body(&self, body: &mut bytes::BytesMut, st: &mut RequestState) {
        if st.ext.get::<Usage>().is_some_and(|u| u.stopped) {
            body.clear();
        }
    }

    fn log(&self, st: &RequestState, _status: u16) {
        if let Some(u) = st.ext.get::<Usage>()
            && !u.stopped
        {
            self.count(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<Config, String> {
        let v: serde_norway::Value = serde_norway::from_str(y).map_err(|e| e.to_string())?;
        let c: Config = super::super::parse_config(&v).map_err(|e| match e {
            SpecError::Invalid { path, message } => format!("{path}: {message}"),
            e => e.to_string(),
        })?;
        c.validate().map_err(|e| match e {
            SpecError::Invalid { path, message } => format!("{path}: {message}"),
            e => e.to_string(),
        })?;
        Ok(c)
    }

    #[test]
    fn kong_schema() {
        let c =
            parse("limits: {video: {second: 10, minute: 100}}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.header_name, "x-kong-limit");
        assert_eq!(c.limit_by, LimitBy::Consumer);
        assert_eq!(c.policy, Policy::Local);
        assert!(c.fault_tolerant && !c.block_on_first_violation && !c.hide_client_headers);
        let err = |y: &str| parse(y).err().unwrap_or_default();
        assert!(err("{}").contains("limits"), "{}", err("{}"));
        assert!(err("limits: {}").starts_with("limits:"));
        assert!(
            err("limits: {video: {}}").starts_with("limits.video:"),
            "{}",
            err("limits: {video: {}}")
        );
        assert!(err("limits: {video: {second: 0}}").starts_with("limits.video.second:"));
        assert!(
            err("limits: {video: {second: 10, minute: 5}}").contains("cannot be lower"),
            "{}",
            err("limits: {video: {second: 10, minute: 5}}")
        );
        assert!(err("limits: {video: {week: 1}}").contains("week"));
        assert!(err("{limits: {v: {second: 1}}, policy: cluster}").starts_with("policy:"));
        assert!(err("{limits: {v: {second: 1}}, policy: redis}").starts_with("redis.host:"));
        assert!(err("{limits: {v: {second: 1}}, limit_by: header}").contains("limit_by"));
        assert!(parse("{limits: {v: {second: 1}}, policy: redis, redis_host: 127.0.0.1}").is_ok());
        assert!(
            parse("{limits: {v: {second: 1}}, policy: redis, redis: {host: r, port: 6380, timeout: 100}}")
                .is_ok()
        );
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount(" 2 "), Some(2));
        assert_eq!(parse_amount("1.5"), Some(1));
        assert_eq!(parse_amount("x"), None);
        assert_eq!(parse_amount("-1"), None);
    }
}
