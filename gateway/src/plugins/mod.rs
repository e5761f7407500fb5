//! Plugins: Kong's plugin model (configured globally, per service, route, consumer or
//! consumer group; run by priority) on the gateway's request phases.
//!
//! Adding a plugin: write `plugins/<name>.rs` with a `Config` (serde, deny_unknown_fields)
//! and a type implementing [`Plugin`], then add it to [`PluginSpec`] (parse + build).

pub mod acl;
pub mod auth;
pub mod chain;
pub mod correlation_id;
pub mod cors;
pub mod ip_restriction;
pub mod jwks;
pub mod jwt;
pub mod key_auth;
pub mod opentelemetry;
pub mod prometheus;
pub mod rate_limiting;
pub mod request_size_limiting;
pub mod request_termination;
pub mod request_transformer;
pub mod response_transformer;
pub mod transform;

use std::sync::Arc;

use crate::core::Session;
use crate::core::{RequestHeader, ResponseHeader};
use async_trait::async_trait;
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
    Cors(cors::Config),
    Jwt(jwt::Config),
    KeyAuth(key_auth::Config),
    Acl(acl::Config),
    OpenTelemetry(opentelemetry::Config),
    Prometheus(prometheus::Config),
    RateLimiting(Box<rate_limiting::Config>),
    RequestTransformer(request_transformer::Config),
    ResponseTransformer(response_transformer::Config),
    RequestTermination(request_termination::Config),
    RequestSizeLimiting(request_size_limiting::Config),
    IpRestriction(ip_restriction::Config),
}

impl PluginSpec {
    pub fn parse(name: &str, config: &serde_norway::Value) -> Result<PluginSpec, SpecError> {
        Ok(match name {
            "correlation-id" => PluginSpec::CorrelationId(parse_config(config)?),
            "cors" => {
                let c: cors::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::Cors(c)
            }
            "jwt" => {
                let c: jwt::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::Jwt(c)
            }
            "key-auth" => {
                let c: key_auth::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::KeyAuth(c)
            }
            "acl" => {
                let c: acl::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::Acl(c)
            }
            "prometheus" => PluginSpec::Prometheus(parse_config(config)?),
            "opentelemetry" => {
                let c: opentelemetry::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::OpenTelemetry(c)
            }
            "rate-limiting" => {
                let c: rate_limiting::Config = parse_config(config)?;
                c.check()?;
                PluginSpec::RateLimiting(Box::new(c))
            }
            "request-transformer" => {
                let c: request_transformer::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::RequestTransformer(c)
            }
            "response-transformer" => {
                let c: response_transformer::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::ResponseTransformer(c)
            }
            "request-termination" => {
                let c: request_termination::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::RequestTermination(c)
            }
            "request-size-limiting" => {
                let c: request_size_limiting::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::RequestSizeLimiting(c)
            }
            "ip-restriction" => {
                let c: ip_restriction::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::IpRestriction(c)
            }
            _ => return Err(SpecError::Unknown),
        })
    }

    /// Builds the running instance. Expensive work (regexes, keys) happens here, once.
    pub fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Plugin>, String> {
        Ok(match self {
            PluginSpec::CorrelationId(c) => Arc::new(correlation_id::CorrelationId::new(c.clone())),
            PluginSpec::Cors(c) => Arc::new(cors::Cors::new(c.clone())?),
            PluginSpec::Jwt(c) => Arc::new(jwt::Jwt::new(c.clone(), ctx)?),
            PluginSpec::KeyAuth(c) => Arc::new(key_auth::KeyAuth::new(c.clone(), ctx)?),
            PluginSpec::Acl(c) => Arc::new(acl::Acl::new(c.clone(), ctx)?),
            PluginSpec::Prometheus(c) => Arc::new(prometheus::Prometheus::new(c.clone())),
            PluginSpec::OpenTelemetry(c) => {
                Arc::new(opentelemetry::OpenTelemetry::new(c.clone(), ctx)?)
            }
            PluginSpec::RateLimiting(c) => {
                Arc::new(rate_limiting::RateLimiting::new((**c).clone(), ctx)?)
            }
            PluginSpec::RequestTransformer(c) => {
                Arc::new(request_transformer::RequestTransformer::new(c.clone())?)
            }
            PluginSpec::ResponseTransformer(c) => {
                Arc::new(response_transformer::ResponseTransformer::new(c.clone())?)
            }
            PluginSpec::RequestTermination(c) => {
                Arc::new(request_termination::RequestTermination::new(c.clone()))
            }
            PluginSpec::RequestSizeLimiting(c) => {
                Arc::new(request_size_limiting::RequestSizeLimiting::new(c.clone()))
            }
            PluginSpec::IpRestriction(c) => {
                Arc::new(ip_restriction::IpRestriction::new(c.clone())?)
            }
        })
    }
}

/// What plugins may need from the whole configuration when they are built.
pub struct BuildContext<'a> {
    pub decl: &'a crate::config::Declarative,
    /// The background runtime for plugin tasks (JWKS refresh); None in `gateway check`.
    pub bg: Option<&'a tokio::runtime::Handle>,
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

    /// Called for every plugin of the route before any access phase runs, with the
    /// consumer not yet known: the opentelemetry plugin starts (or continues) the trace
    /// here, so the other plugins' access phases are timed only when it is sampled.
    fn start_trace(&self, _req: &RequestHeader, _st: &mut RequestState) {}

    /// False for plugins without an access phase: the proxy then skips the call (and the
    /// boxed future it costs).
    fn has_access(&self) -> bool {
        true
    }

    /// Before routing-dependent work: may answer the request itself.
    async fn access(
        &self,
        _session: &mut Session,
        _st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Edits the request sent upstream.
    fn upstream_request(&self, _req: &mut RequestHeader, _st: &mut RequestState) {}

    /// Edits the response headers sent to the client (proxied and local responses).
    fn response_header(&self, _resp: &mut ResponseHeader, _st: &mut RequestState) {}

    /// Edits the response body; `body` is the whole body when the plugin asked for buffering.
    fn response_body(&self, _body: &mut bytes::BytesMut, _st: &mut RequestState) {}

    /// After the response went out (Kong's log phase): metrics, traces.
    fn log(&self, _st: &RequestState, _status: u16) {}
    /// True when the plugin needs the whole request body in `request_body` (asked once,
    /// after the access phase). The proxy then buffers the body up to the gateway's body
    /// limit and sends it upstream chunked, since its length may change.
    fn buffers_request(&self, _req: &RequestHeader, _st: &RequestState) -> bool {
        false
    }

    /// Edits the request body; `body` is the whole body when the plugin asked for buffering.
    /// A plugin either rewrites it completely or leaves it untouched.
    fn request_body(&self, _body: &mut bytes::BytesMut, _st: &mut RequestState) {}

    /// True when the plugin needs the whole response body in `response_body`.
    fn buffers_response(&self, _resp: &ResponseHeader) -> bool {
        false
    }
}
