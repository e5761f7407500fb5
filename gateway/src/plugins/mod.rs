//! Plugins: Kong's plugin model (configured globally, per service, route, consumer or
//! consumer group; run by priority) on the gateway's request phases.
//!
//! Adding a plugin: write `plugins/<name>.rs` with a `Config` (serde, deny_unknown_fields)
//! and a type implementing [`Plugin`], then add it to [`PluginSpec`] (parse + build).

pub mod acl;
pub mod auth;
pub mod basic_auth;
pub mod bot_detection;
pub mod correlation_id;
pub mod cors;
pub mod file_log;
pub mod hmac_auth;
pub mod http_log;
pub mod ip_restriction;
pub mod jwks;
pub mod jwt;
pub mod key_auth;
pub mod ldap_auth;
pub mod log_queue;
pub mod log_serializer;
pub mod lru;
pub mod opentelemetry;
pub mod prometheus;
pub mod proxy_cache;
pub mod rate_limiting;
pub mod request_size_limiting;
pub mod request_termination;
pub mod request_transformer;
pub mod response_ratelimiting;
pub mod response_transformer;
pub mod statsd;
pub mod trace_propagation;
pub mod transform;

use std::sync::Arc;

use serde::de::DeserializeOwned;

pub use crate::config::SpecError;
pub use crate::core::plugin::{BuildContext, BuildError, Flow, Plugin, PluginFactory};

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
            .or_else(|| msg.strip_prefix("missing field `"))
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
    BasicAuth(basic_auth::Config),
    HmacAuth(hmac_auth::Config),
    LdapAuth(ldap_auth::Config),
    Acl(acl::Config),
    OpenTelemetry(opentelemetry::Config),
    Prometheus(prometheus::Config),
    RateLimiting(Box<rate_limiting::Config>),
    RequestTransformer(request_transformer::Config),
    ResponseTransformer(response_transformer::Config),
    RequestTermination(request_termination::Config),
    RequestSizeLimiting(request_size_limiting::Config),
    IpRestriction(ip_restriction::Config),
    FileLog(file_log::Config),
    HttpLog(Box<http_log::Config>),
    Statsd(Box<statsd::Config>),
    BotDetection(bot_detection::Config),
    ProxyCache(Box<proxy_cache::Config>),
    ResponseRateLimiting(Box<response_ratelimiting::Config>),
}

impl PluginSpec {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
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
            "basic-auth" => PluginSpec::BasicAuth(parse_config(config)?),
            "hmac-auth" => {
                let c: hmac_auth::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::HmacAuth(c)
            }
            "ldap-auth" => {
                let c: ldap_auth::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::LdapAuth(c)
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
            "file-log" => {
                let c: file_log::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::FileLog(c)
            }
            "http-log" => {
                let c: http_log::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::HttpLog(Box::new(c))
            }
            "statsd" => {
                let c: statsd::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::Statsd(Box::new(c))
            }
            "bot-detection" => {
                let c: bot_detection::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::BotDetection(c)
            }
            "proxy-cache" => {
                let c: proxy_cache::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::ProxyCache(Box::new(c))
            }
            "response-ratelimiting" => {
                let c: response_ratelimiting::Config = parse_config(config)?;
                c.validate()?;
                PluginSpec::ResponseRateLimiting(Box::new(c))
            }
            _ => return Err(SpecError::Unknown),
        })
    }

    /// Builds the running instance. Expensive work (regexes, keys) happens here, once.
    pub fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Plugin>, BuildError> {
        Ok(match self {
            PluginSpec::CorrelationId(c) => Arc::new(correlation_id::CorrelationId::new(c.clone())),
            PluginSpec::Cors(c) => Arc::new(cors::Cors::new(c.clone())?),
            PluginSpec::Jwt(c) => Arc::new(jwt::Jwt::new(c.clone(), ctx)?),
            PluginSpec::KeyAuth(c) => Arc::new(key_auth::KeyAuth::new(c.clone(), ctx)?),
            PluginSpec::BasicAuth(c) => Arc::new(basic_auth::BasicAuth::new(c.clone(), ctx)?),
            PluginSpec::HmacAuth(c) => Arc::new(hmac_auth::HmacAuth::new(c.clone(), ctx)?),
            PluginSpec::LdapAuth(c) => Arc::new(ldap_auth::LdapAuth::new(c.clone(), ctx)?),
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
            PluginSpec::FileLog(c) => Arc::new(file_log::FileLog::new(c.clone(), ctx)?),
            PluginSpec::HttpLog(c) => Arc::new(http_log::HttpLog::new((**c).clone(), ctx)?),
            PluginSpec::Statsd(c) => Arc::new(statsd::Statsd::new((**c).clone(), ctx)?),
            PluginSpec::BotDetection(c) => {
                Arc::new(bot_detection::BotDetection::new(c.clone(), ctx)?)
            }
            PluginSpec::ProxyCache(c) => {
                Arc::new(proxy_cache::ProxyCache::new((**c).clone(), ctx)?)
            }
            PluginSpec::ResponseRateLimiting(c) => Arc::new(
                response_ratelimiting::ResponseRateLimiting::new((**c).clone(), ctx)?,
            ),
        })
    }
}

/// The plugins this gateway implements: parses their configurations for the loader and
/// builds running instances for the runtime.
pub struct Registry;

/// The registry, as the loader and the runtime take it.
pub static REGISTRY: Registry = Registry;

impl crate::config::PluginCatalog for Registry {
    fn parse(
        &self,
        name: &str,
        config: &serde_norway::Value,
        warnings: &mut Vec<crate::config::SpecWarning>,
    ) -> Result<crate::config::ParsedPlugin, SpecError> {
        let spec = PluginSpec::parse(name, config)?;
        match &spec {
            PluginSpec::Cors(c) => warnings.extend(c.warnings()),
            PluginSpec::RequestTransformer(c) => warnings.extend(c.warnings()),
            PluginSpec::HttpLog(c) => warnings.extend(c.warnings()),
            PluginSpec::Statsd(c) => warnings.extend(c.warnings()),
            _ => {}
        }
        Ok(Arc::new(spec))
    }

    fn check_credential(
        &self,
        kind: crate::config::CredentialKind,
        value: &serde_norway::Value,
    ) -> Result<(), SpecError> {
        use crate::config::CredentialKind;
        match kind {
            CredentialKind::JwtSecret => jwt::check_secret(value).map(|_| ()),
            CredentialKind::KeyAuth => key_auth::check_key(value).map(|_| ()),
            CredentialKind::BasicAuth => basic_auth::check_credential(value).map(|_| ()),
            CredentialKind::HmacAuth => hmac_auth::check_credential(value).map(|_| ()),
            CredentialKind::Acl => acl::check_acl(value).map(|_| ()),
        }
    }

    fn transform_credential(
        &self,
        kind: crate::config::CredentialKind,
        consumer_id: &str,
        value: &mut serde_norway::Value,
    ) {
        if kind == crate::config::CredentialKind::BasicAuth {
            basic_auth::hash_stored_password(consumer_id, value);
        }
    }
}

impl PluginFactory for Registry {
    fn build(
        &self,
        def: &crate::config::PluginDef,
        ctx: &BuildContext<'_>,
    ) -> Result<Arc<dyn Plugin>, BuildError> {
        let Some(spec) = def.spec.downcast_ref::<PluginSpec>() else {
            return Err(BuildError::NotParsed {
                path: def.path.clone(),
                name: def.name.clone(),
            });
        };
        spec.build(ctx)
    }

    fn health_metrics(&self, decl: &crate::config::Declarative) -> bool {
        decl.plugins.iter().any(|p| {
            matches!(p.spec.downcast_ref::<PluginSpec>(), Some(PluginSpec::Prometheus(c)) if c.upstream_health_metrics)
        })
    }
}

/// Load options with this gateway's plugins, skipping the ones named.
pub fn load_options(ignore_plugins: Vec<String>) -> crate::config::LoadOptions {
    crate::config::LoadOptions {
        ignore_plugins,
        catalog: crate::config::Catalog(Arc::new(Registry)),
        refuse_env: false,
        strict: false,
    }
}

/// Config parsing for the plugins' unit tests.
#[cfg(test)]
pub(crate) mod test_config {
    use super::{SpecError, parse_config};
    use serde::de::DeserializeOwned;

    /// Parses `yaml` as a plugin's config and checks it with `validate`.
    pub fn parse<C: DeserializeOwned>(
        yaml: &str,
        validate: fn(&C) -> Result<(), SpecError>,
    ) -> Result<C, SpecError> {
        let c: C = parse_config(&serde_norway::from_str(yaml).expect("test value"))?;
        validate(&c)?;
        Ok(c)
    }

    /// The field path of the error `r` must be.
    pub fn err_path<C: std::fmt::Debug>(r: Result<C, SpecError>) -> String {
        match r {
            Err(SpecError::Invalid { path, .. }) => path,
            other => panic!("expected an error, got {other:?}"),
        }
    }
}
