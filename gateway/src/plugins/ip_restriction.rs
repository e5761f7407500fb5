//! Kong's `ip-restriction`: `deny` is checked first, then `allow`; a rejected client gets
//! `status` (403) with `message` or "IP address not allowed: <ip>" in Kong's error
//! template. The client address is the one the gateway determined (`--trusted-ips`,
//! `--real-ip-header`), as Kong uses `remote_addr` after its real-ip handling.

use std::net::IpAddr;

use crate::core::Session;
use async_trait::async_trait;
use serde::Deserialize;

use super::{BuildError, Flow, Plugin, SpecError};
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    pub status: Option<u16>,
    pub message: Option<String>,
}

pub use crate::net::cidr::{Cidr, canonical};

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Err(SpecError::at(
                "allow",
                "at least one of these fields must be non-empty: 'allow', 'deny'",
            ));
        }
        for (field, list) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, c) in list.iter().enumerate() {
                Cidr::parse(c)
                    .map_err(|m| SpecError::at(format!("{field}[{i}]"), m.to_string()))?;
            }
        }
        if let Some(s) = self.status
            && !(100..=599).contains(&s)
        {
            return Err(SpecError::at(
                "status",
                "value should be between 100 and 599",
            ));
        }
        Ok(())
    }
}

pub struct IpRestriction {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    status: u16,
    message: Option<String>,
    /// Blocked requests since the last warning.
    blocked: std::sync::atomic::AtomicU64,
    /// At most one warning per second.
    warn_pace: governor::DefaultDirectRateLimiter,
}

impl IpRestriction {
    pub fn new(cfg: Config) -> Result<IpRestriction, BuildError> {
        let parse = |l: &[String]| {
            l.iter()
                .map(|c| Cidr::parse(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(BuildError::other)
        };
        Ok(IpRestriction {
            allow: parse(&cfg.allow)?,
            deny: parse(&cfg.deny)?,
            status: cfg.status.unwrap_or(403),
            message: cfg.message,
            blocked: std::sync::atomic::AtomicU64::new(0),
            warn_pace: governor::RateLimiter::direct(governor::Quota::per_second(
                std::num::NonZeroU32::MIN,
            )),
        })
    }
}

#[async_trait]
impl Plugin for IpRestriction {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "ip-restriction"
    }

    fn priority(&self) -> i32 {
        990
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let accept = session
            .req_header()
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(ip) = st
            .client_addr
            .as_deref()
            .and_then(|a| a.parse::<IpAddr>().ok())
        else {
            return Ok(Flow::Respond(LocalResponse::error(
                403,
                "Cannot identify the client IP address, unix domain sockets are not supported.",
                &st.request_id,
                accept.as_deref(),
            )));
        };
        let blocked = self.deny.iter().any(|c| c.contains(ip))
            || (!self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(ip)));
        if blocked {
            let msg = self
                .message
                .clone()
                .unwrap_or_else(|| format!("IP address not allowed: {}", canonical(ip)));
            // Blocked requests are counted and logged at debug level only: a warning per
            // request would let any blocked client flood the log. One warning per second
            // at most says that blocking happens.
            self.blocked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(client = %ip, "{msg}");
            if self.warn_pace.check().is_ok() {
                let n = self.blocked.swap(0, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    blocked = n,
                    "ip-restriction: requests blocked since the last report"
                );
            }
            return Ok(Flow::Respond(LocalResponse::error(
                self.status,
                &msg,
                &st.request_id,
                accept.as_deref(),
            )));
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        let c = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(c.contains("2001:db8::1".parse().expect("ip")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("cidr")
                .contains("1.2.3.4".parse().expect("ip"))
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
