//! Kong's `rate-limiting` plugin, exact: fixed windows as Kong's (same period starts,
//! keys and headers), but every decision checks and counts all windows atomically and
//! counts only admitted requests. Policies: `local` (process memory) and `redis` (one
//! Lua step per decision, single node or Redis Cluster, TLS, AUTH), with a local
//! fallback when Redis fails and `fault_tolerant` is set.
//!
//! Extensions: `tiers` (limits per tier name) chosen by a JWT claim (`tier_claim`) or
//! the consumer's groups, with `default_tier`; `limit_key_claim` keys the counter by a
//! claim (e.g. `sub`). Kong's own tier shape (a rate-limiting plugin per consumer group)
//! works through plugin precedence.

mod config;
mod local;
pub mod redis_store;
pub mod window;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::ResponseHeader;
use crate::core::Session;
use async_trait::async_trait;

pub use config::Config;
use config::{Checked, LimitBy};
pub use config::{Limits, RedisConfig, RedisTarget, resolve_redis};
pub use local::LocalStore;
pub use redis_store::RedisStore;
use window::{Decision, Limit};

use super::{BuildContext, BuildError, Flow, Plugin};
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

enum Backend {
    Local,
    Redis(Arc<RedisStore>),
}

pub struct RateLimiting {
    cfg: Config,
    checked: Checked,
    /// `<route_id>:<service_id>` of the plugin's own scope (Kong's key prefix).
    scope_ids: String,
    /// The consumer group this instance is configured on (its tier label).
    scope_group: Option<String>,
    header: Option<http::HeaderName>,
    backend: Backend,
}

/// What one request is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'a> {
    pub tier: &'a str,
    pub limits: &'a [Limit],
    pub identifier: String,
}

const EMPTY_UUID: &str = "00000000-0000-0000-0000-000000000000";
/// Identifiers longer than this are replaced by a digest (bounded keys).
const MAX_IDENTIFIER: usize = 200;

/// The route and service ids of the plugin's scope as Kong puts them in counter keys
/// (the declared id, else the stable one derived from the name; Kong's null UUID when the
/// plugin is not on one). Shared with response-ratelimiting.
pub(crate) fn scope_ids(ctx: &BuildContext<'_>) -> (String, String) {
    let decl = ctx.decl;
    let route_id = ctx
        .scope
        .route
        .and_then(|ri| decl.routes.get(ri))
        .map(|r| {
            r.id.clone()
                .unwrap_or_else(|| crate::config::stable_id("route", &r.name))
        })
        .unwrap_or_else(|| EMPTY_UUID.into());
    let service_id = ctx
        .scope
        .service
        .and_then(|si| decl.services.get(si))
        .map(|s| {
            s.id.clone()
                .unwrap_or_else(|| crate::config::stable_id("service", &s.name))
        })
        .unwrap_or_else(|| EMPTY_UUID.into());
    (route_id, service_id)
}

impl RateLimiting {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<RateLimiting, BuildError> {
        let checked = cfg.check()?;
        let decl = ctx.decl;
        let (route_id, service_id) = scope_ids(ctx);
        let header = match (cfg.limit_by, &cfg.header_name) {
            (LimitBy::Header, Some(h)) => Some(
                http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|e| BuildError::Invalid(format!("header_name: {e}")))?,
            ),
            _ => None,
        };
        let backend = match &checked.redis {
            Some(t) => Backend::Redis(RedisStore::shared(t)),
            None => Backend::Local,
        };
        Ok(RateLimiting {
            scope_ids: format!("{route_id}:{service_id}"),
            scope_group: ctx
                .scope
                .consumer_group
                .and_then(|g| decl.consumer_groups.get(g))
                .map(|g| g.name.clone()),
            header,
            backend,
            checked,
            cfg,
        })
    }

    /// The tier, limits and identifier for this request.
    pub fn plan(&self, st: &RequestState, header: Option<&str>, path: &str) -> Plan<'_> {
        let claim = |name: &Option<String>| -> Option<String> {
            let v = st.jwt_claims.as_ref()?.get(name.as_deref()?)?;
            match v {
                serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        };
        let (tier, limits): (&str, &[Limit]) = if self.checked.tiers.is_empty() {
            (
                self.scope_group.as_deref().unwrap_or("default"),
                &self.checked.limits,
            )
        } else {
            let by_claim = claim(&self.cfg.tier_claim)
                .and_then(|t| self.checked.tiers.get_key_value(t.as_str()));
            let by_group = || {
                let rt = st.rt.as_ref()?;
                let c = rt.decl.consumers.get(st.consumer?)?;
                c.groups
                    .iter()
                    .filter_map(|g| rt.decl.consumer_groups.get(*g))
                    .find_map(|g| self.checked.tiers.get_key_value(g.name.as_str()))
            };
            let default = || {
                self.checked
                    .default_tier
                    .as_ref()
                    .and_then(|d| self.checked.tiers.get_key_value(d.as_str()))
            };
            match by_claim.or_else(by_group).or_else(default) {
                Some((name, l)) => (name.as_str(), l.as_slice()),
                None => ("default", &[]),
            }
        };
        let identifier = claim(&self.cfg.limit_key_claim)
            .or_else(|| self.identifier(st, header, path))
            .unwrap_or_else(|| st.client_addr.clone().unwrap_or_default());
        Plan {
            tier,
            limits,
            identifier: bounded(identifier),
        }
    }

    /// Kong's `get_identifier` (the caller falls back to the client IP).
    fn identifier(&self, st: &RequestState, header: Option<&str>, path: &str) -> Option<String> {
        let rt = st.rt.as_ref();
        match self.cfg.limit_by {
            LimitBy::Consumer => st
                .consumer
                .and_then(|c| rt?.decl.consumers.get(c).map(|c| c.id.clone()))
                .or_else(|| st.credential.clone()),
            LimitBy::Credential => st.credential.clone(),
            LimitBy::Ip => None,
            LimitBy::Service => st
                .service
                .and_then(|si| rt?.services.get(si).map(|s| s.id.clone())),
            LimitBy::Header => header.filter(|h| !h.is_empty()).map(str::to_string),
            LimitBy::Path => (self.cfg.path.as_deref() == Some(path)).then(|| path.to_string()),
        }
    }

    fn key_base(&self, identifier: &str) -> String {
        match self.backend {
            // The hash tag keeps every window of one decision in one cluster slot.
            Backend::Redis(_) => format!("ratelimit:{{{}:{identifier}}}", self.scope_ids),
            Backend::Local => format!("ratelimit:{}:{identifier}", self.scope_ids),
        }
    }

    /// Kong's headers for a decision: per-window limits and remaining, then the most
    /// constrained window's `RateLimit-*`. Empty when `hide_client_headers`.
    fn headers(&self, d: &Decision, now_ms: u64) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.cfg.hide_client_headers {
            return out;
        }
        for u in &d.usage {
            out.push((u.window.limit_header(), u.limit.to_string()));
            out.push((u.window.remaining_header(), u.remaining().to_string()));
        }
        if let Some(u) = d.most_constrained() {
            out.push(("RateLimit-Limit", u.limit.to_string()));
            out.push(("RateLimit-Remaining", u.remaining().to_string()));
            out.push(("RateLimit-Reset", u.window.reset_secs(now_ms).to_string()));
        }
        out
    }

    fn record(&self, st: &RequestState, tier: &str, outcome: &str) {
        let route = st
            .rt
            .as_ref()
            .zip(st.route.as_ref())
            .and_then(|(rt, m)| rt.decl.routes.get(m.route))
            .map(|r| r.name.as_str())
            .unwrap_or("");
        crate::metrics::rate_limiting()
            .decisions
            .with_label_values(&[route, tier, outcome])
            .inc();
    }
}

fn bounded(identifier: String) -> String {
    if identifier.len() <= MAX_IDENTIFIER {
        return identifier;
    }
    let a = crate::config::stable_id("ratelimit", &identifier);
    format!("sha:{a}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[async_trait]
impl Plugin for RateLimiting {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "rate-limiting"
    }

    fn priority(&self) -> i32 {
        910
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let req = session.req_header();
        let header = self
            .header
            .as_ref()
            .and_then(|h| req.headers.get(h))
            .and_then(|v| v.to_str().ok());
        let accept = || {
            req.headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
        };
        let plan = self.plan(st, header, req.uri.path());
        if plan.limits.is_empty() {
            return Ok(Flow::Continue);
        }
        let now = now_ms();
        let base = self.key_base(&plan.identifier);
        let (decision, fallback) = match &self.backend {
            Backend::Local => (LocalStore::global().decide(&base, plan.limits, now), false),
            Backend::Redis(r) => match r.decide(&base, plan.limits, now).await {
                Ok(d) => (d, false),
                Err(e) if self.cfg.fault_tolerant => {
                    tracing::debug!(error = %e, "rate-limiting falls back to local counters");
                    (LocalStore::global().decide(&base, plan.limits, now), true)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "rate-limiting redis failed (not fault tolerant)");
                    self.record(st, plan.tier, "error");
                    st.rate_limit_tier = Some(plan.tier.to_string());
                    return Ok(Flow::Respond(LocalResponse::error(
                        500,
                        "An unexpected error occurred",
                        &st.request_id,
                        accept(),
                    )));
                }
            },
        };
        let outcome = match (decision.admitted, fallback) {
            (true, false) => "allowed",
            (false, false) => "rejected",
            (true, true) => "fallback_allowed",
            (false, true) => "fallback_rejected",
        };
        self.record(st, plan.tier, outcome);
        st.rate_limit_tier = Some(plan.tier.to_string());
        let headers = self.headers(&decision, now);
        if !decision.admitted {
            let mut r = LocalResponse::error(
                self.cfg.error_code,
                &self.cfg.error_message,
                &st.request_id,
                accept(),
            );
            // Kong computes the reset only while building the client headers.
            let reset = headers
                .iter()
                .find(|(k, _)| *k == "RateLimit-Reset")
                .map(|(_, v)| v.clone());
            for (k, v) in headers {
                r = r.with_header(k, v);
            }
            if let Some(reset) = reset {
                r = r.with_header("Retry-After", reset);
            }
            return Ok(Flow::Respond(r));
        }
        for (k, v) in headers {
            if let Ok(name) = http::HeaderName::from_bytes(k.as_bytes()) {
                st.response_headers.push((name, v));
            }
        }
        Ok(Flow::Continue)
    }

    /// The headers went out through `st.response_headers` (lowercase names); HTTP/1.1
    /// clients get Kong's spelling, as some match header names case-sensitively.
    fn response_header(&self, resp: &mut ResponseHeader, _st: &mut RequestState) {
        if self.cfg.hide_client_headers {
            return;
        }
        for name in KONG_HEADER_NAMES {
            if let Some(v) = resp.headers.get(*name).cloned() {
                let _ = resp.insert_header(*name, v);
            }
        }
    }
}

const KONG_HEADER_NAMES: &[&str] = &[
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-RateLimit-Limit-Second",
    "X-RateLimit-Remaining-Second",
    "X-RateLimit-Limit-Minute",
    "X-RateLimit-Remaining-Minute",
    "X-RateLimit-Limit-Hour",
    "X-RateLimit-Remaining-Hour",
    "X-RateLimit-Limit-Day",
    "X-RateLimit-Remaining-Day",
    "X-RateLimit-Limit-Month",
    "X-RateLimit-Remaining-Month",
    "X-RateLimit-Limit-Year",
    "X-RateLimit-Remaining-Year",
];

#[cfg(test)]
mod tests;
