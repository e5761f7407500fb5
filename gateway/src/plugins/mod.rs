//! Plugins: Kong's plugin model (configured globally, per service, route, consumer or
//! consumer group; run by priority) on the gateway's request phases.
//!
//! Adding a plugin: write `plugins/<name>.rs` with a `Config` (serde, deny_unknown_fields)
//! and a type implementing [`Plugin`], then add it to [`PluginSpec`] (parse + build).

pub mod correlation_id;
pub mod rate_limiting;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use serde::de::DeserializeOwned;

use crate::respond::LocalResponse;
use crate::state::RequestState;

/// A configuration error inside a plugin's `config`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpecError {
    #[error("unknown plugin")]
    Unknown,
    #[error("{message}")]
    Invalid { path: String, message: String },
}

impl SpecError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Parses a plugin's `config` into its typed form, with the failing field's path.
pub fn parse_config<T: DeserializeOwned>(v: &serde_norway::Value) -> Result<T, SpecError> {
    let v = if v.is_null() {
        serde_norway::Value::Mapping(Default::default())
    } else {
        v.clone()
    };
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        let msg = e.inner().to_string();
        if let Some(field) = msg
            .strip_prefix("unknown field `")
            .and_then(|s| s.split('`').next())
            && !path.ends_with(field)
        {
            path = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
        }
        SpecError::Invalid { path, message: msg }
    })
}

/// A parsed plugin configuration, ready to be built into a running instance.
#[derive(Debug, Clone)]
pub enum PluginSpec {
    CorrelationId(correlation_id::Config),
    RateLimiting(Box<rate_limiting::Config>),
}

impl PluginSpec {
    pub fn parse(name: &str, config: &serde_norway::Value) -> Result<PluginSpec, SpecError> {
        Ok(match name {
            "correlation-id" => PluginSpec::CorrelationId(parse_config(config)?),
            "rate-limiting" => {
                let c: rate_limiting::Config = parse_config(config)?;
                c.check()?;
                PluginSpec::RateLimiting(Box::new(c))
            }
            _ => return Err(SpecError::Unknown),
        })
    }

    /// Builds the running instance. Expensive work (regexes, keys) happens here, once.
    pub fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Plugin>, String> {
        Ok(match self {
            PluginSpec::CorrelationId(c) => Arc::new(correlation_id::CorrelationId::new(c.clone())),
            PluginSpec::RateLimiting(c) => {
                Arc::new(rate_limiting::RateLimiting::new((**c).clone(), ctx)?)
            }
        })
    }
}

/// What plugins may need from the whole configuration when they are built.
pub struct BuildContext<'a> {
    pub decl: &'a crate::config::Declarative,
    /// Where the instance being built is configured.
    pub scope: &'a crate::config::PluginScope,
}

/// What the access phase decided.
pub enum Flow {
    Continue,
    Respond(LocalResponse),
}

/// One running plugin instance. Every hook has a no-op default.
#[async_trait]
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Kong's PRIORITY: higher runs first.
    fn priority(&self) -> i32;

    /// Before routing-dependent work: may answer the request itself.
    async fn access(
        &self,
        _session: &mut Session,
        _st: &mut RequestState,
    ) -> pingora::Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Edits the request sent upstream.
    fn upstream_request(&self, _req: &mut RequestHeader, _st: &mut RequestState) {}

    /// Edits the response headers sent to the client (proxied and local responses).
    fn response_header(&self, _resp: &mut ResponseHeader, _st: &mut RequestState) {}

    /// Edits the response body; `body` is the whole body when the plugin asked for buffering.
    fn response_body(&self, _body: &mut bytes::BytesMut, _st: &mut RequestState) {}

    /// True when the plugin needs the whole response body in `response_body`.
    fn buffers_response(&self, _resp: &ResponseHeader) -> bool {
        false
    }
}
